"""Issue 23 (runner and study side): a number that cannot be computed honestly is an error, never a value; bad
input gets one line naming the problem, before anything is created."""
from __future__ import annotations

import argparse
import errno
import io
import pickle
from pathlib import Path

import pytest
import torch

from conftest import TINY
from rs_transfer.errors import UserError


def test_backbone_values_the_constructor_refuses_are_one_line_errors() -> None:
    from rs_transfer.runner import prepare_run

    with pytest.raises(UserError, match=r"backbone resnetrs50 cannot be built with width=-1: .*negative"):
        prepare_run("cifar100", "resnetrs50", model_overrides={"width": -1}, check_data=False)


@pytest.mark.parametrize("seed", [-1, 99999999999])
def test_a_seed_numpy_cannot_take_is_refused_before_the_work_dir_exists(tmp_path: Path, seed: int) -> None:
    from rs_transfer.runner import run_experiment

    with pytest.raises(UserError, match=rf"--seed {seed}: a seed is an integer in 0\.\.4294967295"):
        run_experiment("cifar100", "resnetrs50", preset="mini", seed=seed, work_dir=tmp_path / "wd")
    assert not (tmp_path / "wd").exists()


def test_a_work_dir_that_cannot_be_written_is_named(tmp_path: Path, monkeypatch) -> None:
    from rs_transfer.runner.experiment import check_work_dir

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--work-dir .*/file is a file; choose a folder"):
        check_work_dir(tmp_path / "file")
    with pytest.raises(UserError, match=r"--work-dir .*/file/run sits under .*/file, which is a file"):
        check_work_dir(tmp_path / "file" / "run")

    def read_only(self, data):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(UserError, match=r"cannot write to --work-dir .*: the file system is read-only"):
        check_work_dir(tmp_path / "ro")


def test_non_finite_or_integer_weights_are_refused(tmp_path: Path) -> None:
    from rs_transfer import create_model, load_weights
    from rs_transfer.weights import CheckpointError

    sd = create_model("resnetrs50", **TINY).state_dict()
    sd["conv1.0.weight"] = sd["conv1.0.weight"].clone().fill_(float("nan"))
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or Inf \(conv1.0.weight\)"):
        load_weights(create_model("resnetrs50", **TINY), tmp_path / "nan.pth")
    sd = create_model("resnetrs50", **TINY).state_dict()
    sd["fc.weight"] = sd["fc.weight"].to(torch.int8)   # even a head tensor of the right shape is not cast
    torch.save(sd, tmp_path / "int8.pth")
    with pytest.raises(CheckpointError, match=r"not floating point where the model's are \(fc.weight: int8\)"):
        load_weights(create_model("resnetrs50", **TINY), tmp_path / "int8.pth")


def test_a_diverging_run_stops_with_one_line_and_writes_no_result(tmp_path: Path) -> None:
    from rs_transfer.runner import run_experiment

    with pytest.raises(UserError, match=r"training stopped: loss = nan at iteration \d+"):
        run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path,
                       cfg_options={"optim_wrapper.optimizer.lr": 1e30, "train_cfg.max_iters": 4})
    assert not (tmp_path / "results.json").exists()


class Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_payload_resume_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    from mmengine.config import Config

    from rs_transfer.runner.checkpoints import prepare_resume

    torch.save({"state_dict": {}, "meta": {"iter": 5}, "payload": Payload()}, tmp_path / "iter_5.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_5.pth"))
    with pytest.raises(UserError, match=r"--resume: .*iter_5.pth was refused for safety: .*full unpickling"):
        prepare_resume(Config(dict(resume=False)), tmp_path)


def test_a_full_disk_names_the_space_a_checkpoint_needs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rs_transfer.runner.checkpoints import _save_error

    model = torch.nn.Linear(1024, 256)   # 1 MiB of float32
    runner = SimpleNamespace(model=model, hooks=[],
                             optim_wrapper=SimpleNamespace(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    err = _save_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path, runner)
    assert isinstance(err, UserError) and "needs about 1 MiB" in str(err) and "no space left" in str(err)


def test_a_complete_run_leaves_no_temporaries(tmp_path: Path) -> None:
    from rs_transfer.runner.checkpoints import remove_training_checkpoints

    for name in (".weights.safetensors.k2j3.tmp", ".iter_30.pth.tmp-1234", "iter_30.pth", "keep.txt"):
        (tmp_path / name).write_bytes(b"")
    remove_training_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_weights_convert_never_overwrites(tmp_path: Path, capsys) -> None:
    from rs_transfer.cli import main

    (tmp_path / "out.pth").write_bytes(b"x")
    assert main(["weights", "convert", "src.pth", str(tmp_path), "--model", "resnet50"]) == 2
    assert "is a folder; give the file to write" in capsys.readouterr().err
    assert main(["weights", "convert", "src.pth", str(tmp_path / "out.pth"), "--model", "resnet50"]) == 2
    assert "exists; remove it or choose another name" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, path: str = "rs-transfer"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_and_positional_says_what_it_is() -> None:
    from rs_transfer.cli import build_parser

    bare = [f"{path} {a.option_strings or a.dest}" for path, p in _parsers(build_parser()) for a in p._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not bare, "options without help text: " + "; ".join(bare)


def test_warnings_print_as_one_line_without_source_paths() -> None:
    from rs_transfer.cli import show_warning

    out = io.StringIO()
    show_warning(UserWarning("WARNING: nothing declares the input normalisation\nsecond line"), UserWarning,
                 "/x/rs_transfer/weights/loader.py", 178, file=out)
    show_warning(FutureWarning("`reduce_zero_label` is deprecated"), FutureWarning,
                 "/venv/lib/python3.11/site-packages/mmseg/datasets/basesegdataset.py", 99, file=out)
    assert out.getvalue().splitlines() == [
        "warning: nothing declares the input normalisation",
        "warning: `reduce_zero_label` is deprecated (FutureWarning in mmseg)"]


def test_a_study_checks_its_whole_grid_before_the_first_cell(tmp_path: Path, monkeypatch) -> None:
    import rs_transfer.runner as runner_mod
    from rs_transfer.studies.table4 import run_table4

    def never(*a, **k):
        raise AssertionError("no cell may run")

    monkeypatch.setattr(runner_mod, "run_experiment", never)
    kw = dict(backbone="resnet50", out_dir=tmp_path, tasks=["cifar100"], preset="mini", log=lambda *_: None)
    with pytest.raises(UserError, match="lists scratch more than once"):
        run_table4(weights=[None, None], **kw)
    with pytest.raises(UserError, match=r"checkpoint not found|unknown|not found"):
        run_table4(weights=[None, str(tmp_path / "missing.pth")], **kw)
    with pytest.raises(UserError, match="unknown protocol"):
        run_table4(weights=[None], protocols=["finetune", "lineer"], **kw)
    with pytest.raises(UserError, match="has no argument|unknown|typo|not a key"):
        run_table4(weights=[None], cfg_options={"optim_wrapper.optimizer.lrr": 0.1}, **kw)


def test_zero_rows_or_seeds_is_a_usage_error(capsys) -> None:
    from rs_transfer.cli import main

    for argv in (["study", "table5", "--rows", "0"], ["study", "table1", "--rows", "0"],
                 ["study", "table4", "--backbone", "resnet50", "--weights", "none", "--seeds", "0"]):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2 and "must be at least 1" in capsys.readouterr().err
