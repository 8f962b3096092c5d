"""The command line as a person uses it: help, listings, inspect, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, TINY_CLI
from rs_transfer.cli import main


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "inspect", "weights"):
        assert command in out


def test_list_models_and_weights(capsys) -> None:
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "resnetrs420" in out and "resnet152" in out
    assert main(["list", "weights"]) == 0
    out = capsys.readouterr().out
    assert "simclrv2-r152-1x-sk0" in out and "unit-range" in out


def test_inspect_reports_params_flops_and_load(tmp_path, capsys) -> None:
    from rs_transfer import create_model

    torch.save({"resnet": {}, "head": {}}, tmp_path / "empty.pth")
    torch.save(create_model("resnetrs50").state_dict(), tmp_path / "rs50.pth")
    assert main(["inspect", "resnetrs50", "--weights", str(tmp_path / "rs50.pth")]) == 0
    out = capsys.readouterr().out
    assert "35.69M" in out  # timm's count (Table 2 prints 36M)
    assert "FLOPs @ 3x160x160: 4.56B" in out  # Table 2: 4.6B at 160 (multiply-add = 2 FLOPs)
    assert "layer4 2048ch /32" in out and "loaded 402" in out and "imagenet" in out


def test_bad_input_is_one_line_without_traceback(tmp_path) -> None:
    cmd = [sys.executable, "-m", "rs_transfer.cli"]
    res = subprocess.run(cmd + ["inspect", "resnetrs5"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Closest: resnetrs50" in res.stderr and "Traceback" not in res.stderr
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    res = subprocess.run(cmd + ["inspect", "resnet50", "--weights", str(tmp_path / "bad.pth")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.pth does not fit" in res.stderr and "mismatched (1): conv1.weight" in res.stderr


# ---- issue 11 §3: every failure is one line with its fix ----------------------------------------------------------
RUN_MINI = ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", *TINY_CLI]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("option, message", [
    ("train_cfg.max_iters=abc", "train_cfg.max_iters='abc': expected an integer (the config has 20000)"),
    ("train_cfg.max_iters=0", "expected a positive integer"),
    ("max_iters=5", "variable of the config file, already used when the file was read, so setting it changes "
                    "nothing; set train_cfg.max_iters instead"),
    ("maxiters=5", "no such key; did you mean train_cfg.max_iters?"),
    ("no_such_key=1", "no part of the run reads a top-level 'no_such_key'"),
    ("optim_wrapper.optimizer.momentun=0.9", "did you mean optim_wrapper.optimizer.momentum?"),
    ("optim_wrapper.optimizer.foo=1", "SGD (what optim_wrapper.optimizer builds) has no argument 'foo'"),
    ("train_cfg.foo=1", "IterBasedTrainLoop (what train_cfg builds) has no argument 'foo'"),
    ("train_dataloader.batch_size=2.5", "expected an integer"),
    ("amp=fp8", "expected bf16, fp16 or None"),
    ("train_cfg.max_iters.x=1", "train_cfg.max_iters is 20000, not a dict"),
])
def test_cfg_options_errors_are_one_line(option: str, message: str, tmp_path, capsys) -> None:
    assert main(RUN_MINI + ["--work-dir", str(tmp_path), "--cfg-options", option]) == 2
    err = _one_line_error(capsys)
    assert message in err and err.startswith("rs-transfer run: error: --cfg-options "), err
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_cfg_options_that_something_reads_pass_the_check() -> None:
    from rs_transfer.runner.config import check_cfg_options, load_config
    from rs_transfer.tasks import get_task

    cfg, _ = load_config(get_task("cifar100"), "finetune", None)
    check_cfg_options(cfg, {"train_cfg.max_iters": 100, "train_cfg.val_begin": 1, "optim_wrapper.optimizer.lr": 1,
                            "optim_wrapper.clip_grad": None, "log_interval": 5, "checkpoint_interval": 10,
                            "amp": None, "load_from": None,
                            "model.backbone.out_indices": [3], "default_hooks.logger.interval": 1})


def test_run_has_trust_and_no_strict(tmp_path, capsys) -> None:
    """The loader's messages recommend --trust / --no-strict: `run` takes them, with inspect's meaning."""
    import argparse

    from rs_transfer import create_model

    sd = create_model("resnetrs50", **TINY).state_dict()
    sd.pop("layer1.0.conv1.weight")                                          # a backbone key missing
    torch.save({"model": sd, "args": argparse.Namespace(lr=0.1)}, tmp_path / "w.pth")  # needs full unpickling
    run = RUN_MINI + ["--weights", str(tmp_path / "w.pth"), "--work-dir", str(tmp_path / "wd")]
    assert main(run) == 2 and "--trust" in capsys.readouterr().err
    assert main(run + ["--trust"]) == 2 and "--no-strict" in capsys.readouterr().err
    assert main(run + ["--trust", "--no-strict"]) == 0
    res = json.loads((tmp_path / "wd" / "results.json").read_text())
    assert res["backbone_kwargs"]["weights_strict"] is False and res["backbone_kwargs"]["weights_trust"] is True


def test_study_table4_has_trust_and_no_strict(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["study", "table4", "--help"])
    out = capsys.readouterr().out
    assert "--trust" in out and "--no-strict" in out


def test_data_help_names_each_tasks_default_folder(capsys) -> None:
    from rs_transfer.tasks import get_task, is_available, list_tasks

    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "$RS_TRANSFER_HOME/data/FOLDER" in out and "~/.cache/rs-transfer" in out
    for name in list_tasks():
        if is_available(name):
            assert (get_task(name).data_dirname or name) in out, name


def _damage(root: Path) -> tuple[Path, Path]:
    """A JPEG cut in half and a mask PNG whose image data (IDAT) is corrupted: both headers stay valid."""
    voc = root / "VOCdevkit" / "VOC2012"
    first = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]   # a validation image
    jpg, png = voc / "JPEGImages" / f"{first}.jpg", voc / "SegmentationClass" / f"{first}.png"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    data = bytearray(png.read_bytes())
    i = 8
    while data[i + 4:i + 8] != b"IDAT":
        i += 12 + int.from_bytes(data[i:i + 4], "big")
    n = int.from_bytes(data[i:i + 4], "big")
    for k in range(i + 8 + n // 3, i + 8 + n - 2):
        data[k] ^= 0x5A
    png.write_bytes(bytes(data))
    return jpg, png


def test_data_check_deep_names_damaged_files(tmp_path, capsys) -> None:
    import shutil

    from rs_transfer.tasks.mini import ensure_mini
    from rs_transfer.tasks import get_task

    root = tmp_path / "voc"
    shutil.copytree(ensure_mini(get_task("voc-seg")), root)
    jpg, png = _damage(root)
    check = ["data", "check", "--task", "voc-seg", "--data-root", str(root)]
    assert main(check) == 0  # headers are fine: the ordinary check cannot see it
    capsys.readouterr()
    assert main(check + ["--deep", "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {jpg}: cannot decode (OSError: image file is truncated" in out
    assert f"damaged: {png}: cannot decode" in out and "decoded 64 files, 2 damaged (runs skip" in out
    assert main(check + ["--deep", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {d["path"] for d in report["deep"]["damaged"]} == {str(jpg), str(png)} and report["deep"]["decoded"] == 64


def test_unexpected_error_is_one_line(monkeypatch, capsys) -> None:
    import rs_transfer.commands.listing as listing

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(listing, "run", boom)
    assert main(["list", "models"]) == 1
    err = _one_line_error(capsys)
    assert "unexpected error: RuntimeError: something broke" in err and "RS_TRANSFER_DEBUG=1" in err
    monkeypatch.setenv("RS_TRANSFER_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["list", "models"])


@pytest.mark.parametrize("name, suffixes", [("voc-det", {".jpg", ".xml"}), ("ade20k", {".jpg", ".png"}),
                                            ("nyu-depth", {".jpg", ".png"})])
def test_deep_check_covers_each_dense_task(name: str, suffixes: set, tmp_path) -> None:
    """Every dense task lists its images and annotations for --deep; a cut annotation file is named."""
    import shutil

    from rs_transfer.tasks.datacheck import deep_check
    from rs_transfer.tasks.mini import ensure_mini
    from rs_transfer.tasks import get_task

    task = get_task(name)
    root = tmp_path / "data"
    shutil.copytree(ensure_mini(task), root)
    files = task.data_files(root)
    assert files and {p.suffix for p in files} == suffixes and all(p.is_file() for p in files)
    decoded, damaged = deep_check(task, root, progress=False)
    assert decoded == len(set(files)) and damaged == []
    victim = sorted(p for p in files if p.suffix != ".jpg")[0]
    victim.write_bytes(victim.read_bytes()[:40])
    assert [p for p, _ in deep_check(task, root, progress=False)[1]] == [victim]
