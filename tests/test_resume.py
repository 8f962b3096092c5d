"""Resume that tells the truth and survives a kill (issue 11 §2).

- ``--resume`` with nothing to resume from trains from scratch, says so, and records ``resumed_from: null``;
- a ``last_checkpoint`` naming a truncated file falls back to the newest complete checkpoint, saying which;
- a job killed during its final validation resumes to evaluate the final checkpoint;
- SIGTERM / SIGINT sent to a real ``rs-transfer run`` in the middle of training save a checkpoint at the iteration
  boundary and print the resume command; running it ends with exactly the uninterrupted run's metrics and weights;
- while training only one checkpoint is kept; a complete run keeps ``weights.safetensors`` (no optimizer state),
  whose metadata carries the input normalisation.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from safetensors.torch import load_file

from conftest import TINY, TINY_CLI
from rs_transfer.runner.checkpoints import find_resume_point, incomplete_reason
from rs_transfer.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]
KW = dict(preset="mini", model_overrides=TINY, seed=1)   # dropout on: the RNG state must be restored too


class Killed(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class KillAt(Hook):
    """A job that dies: after training iteration ``at`` (before that iteration's checkpoint), or, with
    ``at="final-val"``, when the last validation starts (after the final checkpoint was written)."""

    def __init__(self, at: int | str) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if isinstance(self.at, int) and runner.iter + 1 >= self.at:
            raise Killed(f"killed after iteration {runner.iter + 1}")

    def before_val_epoch(self, runner) -> None:
        if self.at == "final-val" and runner.iter >= runner.max_iters:
            raise Killed("killed during the final validation")


def _kill(at: int | str) -> dict:
    return {"custom_hooks": [dict(type="KillAt", at=at)]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every resumed one must reproduce."""
    return run_experiment("cifar100", "resnetrs50", work_dir=tmp_path_factory.mktemp("reference"), **KW)


def _same_weights(a: str, b: str) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def _checkpoint(path: Path) -> Path:
    torch.save({"meta": {"iter": 5}, "state_dict": {"w": torch.arange(1000.0)}}, path)
    return path


def test_find_resume_point_skips_incomplete_checkpoints(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "iter_5.pth")
    data = good.read_bytes()
    (tmp_path / "iter_10.pth").write_bytes(data[: len(data) // 2])            # cut by kill -9 mid-write
    damaged = bytearray(data)
    with zipfile.ZipFile(good) as zf:  # flip bytes inside the tensor data: the zip's CRC-32 catches it
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    damaged[start:start + 8] = bytes(b ^ 0xFF for b in damaged[start:start + 8])
    (tmp_path / "iter_8.pth").write_bytes(bytes(damaged))
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_10.pth"))
    point, notes = find_resume_point(tmp_path)
    assert point is not None and point.path == good and point.iteration == 5
    assert "iter_10.pth is truncated" in notes[0] and "iter_8.pth is damaged (CRC" in notes[1]
    assert incomplete_reason(good) is None
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_99.pth"))
    assert "names " + str(tmp_path / "iter_99.pth") + ", which does not exist" in find_resume_point(tmp_path)[1][0]
    for p in tmp_path.glob("iter_*.pth"):
        p.unlink()
    assert find_resume_point(tmp_path)[0] is None


def test_resume_with_nothing_to_resume_from_says_so(tmp_path: Path, reference: dict, capsys) -> None:
    empty = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path / "empty", resume=True, **KW)
    err = capsys.readouterr().err
    assert "nothing to resume from" in err and "training from scratch" in err
    assert empty["resumed_from"] is None and empty["metrics"] == reference["metrics"]
    # The first checkpoint of a run cut by kill -9 while writing it: not complete, so not a resume point.
    cut = tmp_path / "cut"
    cut.mkdir()
    data = _checkpoint(tmp_path / "whole.pth").read_bytes()
    (cut / "iter_15.pth").write_bytes(data[:300])
    (cut / "last_checkpoint").write_text(str(cut / "iter_15.pth"))
    res = run_experiment("cifar100", "resnetrs50", work_dir=cut, resume=True, **KW)
    err = capsys.readouterr().err
    assert "iter_15.pth is truncated" in err and "nothing to resume from" in err
    assert res["resumed_from"] is None and res["metrics"] == reference["metrics"]


def test_truncated_last_checkpoint_falls_back_to_newest_complete(tmp_path: Path, reference: dict, capsys) -> None:
    with pytest.raises(Killed):
        run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, cfg_options=_kill(20), **KW)
    # One checkpoint kept (the newest), written completely; no temporary files left behind.
    assert [p.name for p in tmp_path.glob("*.pth*")] == ["iter_15.pth"] and not list(tmp_path.glob(".iter_*"))
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_15.pth")
    data = (tmp_path / "iter_15.pth").read_bytes()
    (tmp_path / "iter_18.pth").write_bytes(data[: len(data) // 2])             # e.g. a full disk, an old writer
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_18.pth"))
    (tmp_path / ".iter_19.pth.tmp-12345").write_bytes(b"partial")              # a write a kill interrupted
    res = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, resume=True, **KW)
    err = capsys.readouterr().err
    assert "iter_18.pth is truncated" in err and f"resuming from {tmp_path / 'iter_15.pth'}" in err
    assert res["resumed_from"] == 15 and res["metrics"] == reference["metrics"]
    _same_weights(res["final_weights"], reference["final_weights"])
    # Complete: only the evaluated weights stay (no optimizer state, no resume state, no leftovers).
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob(".iter_*"))
    assert not (tmp_path / "last_checkpoint").exists()


def test_resumed_ema_continues_its_warm_up(tmp_path: Path) -> None:
    """The EMA's warm-up (rs_transfer/runner/ema.py) depends on the update count: a run killed after iteration 20 and
    resumed from iteration 15 ends on the same averaged weights as an uninterrupted one (the count is saved)."""
    ema = {"ema": dict(decay=0.99, reference_batch=8)}     # mini batch 16: two reference steps per step
    whole = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path / "whole", cfg_options=ema, **KW)
    with pytest.raises(Killed):
        run_experiment("cifar100", "resnetrs50", work_dir=tmp_path / "cut", cfg_options={**ema, **_kill(20)}, **KW)
    saved = torch.load(tmp_path / "cut" / "iter_15.pth", map_location="cpu", weights_only=False)
    assert int(saved["ema_state_dict"]["steps"]) == 15
    res = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path / "cut", resume=True, cfg_options=ema, **KW)
    assert res["resumed_from"] == 15 and res["metrics"] == whole["metrics"]
    _same_weights(res["final_weights"], whole["final_weights"])


def test_killed_during_final_validation_resumes_to_evaluate(tmp_path: Path, reference: dict) -> None:
    with pytest.raises(Killed):
        run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, cfg_options=_kill("final-val"), **KW)
    assert (tmp_path / "iter_30.pth").is_file() and not (tmp_path / "results.json").exists()
    from rs_transfer.runner.hooks import TIMING_KEY

    saved = torch.load(tmp_path / "iter_30.pth", weights_only=False)["message_hub"]["runtime_info"][TIMING_KEY]
    res = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, resume=True, **KW)
    assert res["resumed_from"] == 30 and res["metrics"] == reference["metrics"]
    # Training time is the sum over segments: this one trained nothing, so it is exactly the first segment's (as
    # its final checkpoint recorded it); the images are the uninterrupted run's; the re-run validation is timed.
    assert res["train_time_s"] == round(saved["train_time_s"], 3) > 0 and res["train_segments"] == 2
    assert res["train_images"] == reference["train_images"] == saved["train_images"]
    assert res["eval_time_s"] > 0


def test_final_weights_carry_normalisation_and_load(reference: dict) -> None:
    from rs_transfer import create_model, load_weights
    from rs_transfer.weights import read_checkpoint

    path = Path(reference["final_weights"])
    assert path.name == "weights.safetensors" and (path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    raw = read_checkpoint(path)
    assert raw.meta["normalization"] == "imagenet" and raw.meta["iteration"] == "30"
    assert json.loads(raw.meta["normalization_mean"]) == reference["weights"]["normalization"]["mean"]
    assert raw.meta["task"] == "cifar100" and raw.meta["backbone"] == "resnetrs50"
    assert not any("optimizer" in k or k.startswith("ema") for k in raw.state_dict)
    model = create_model("resnetrs50", num_classes=10, **TINY)
    report = load_weights(model, path)  # strict: every backbone key fits
    assert report.loaded > 0 and not report.missing and not report.mismatched


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- a real signal in the middle of a real run --------------------------------------------------------------------
CLI = [sys.executable, "-m", "rs_transfer.cli"]
# 150 iterations (schedule stretched to them): time to send the signal while training, even on a loaded machine.
RUN = ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--seed", "1", *TINY_CLI,
       "--cfg-options", "log_interval=1", "train_cfg.max_iters=150"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=600)


def _start_training(cmd: list[str], wd: Path, cwd: Path) -> subprocess.Popen:
    """Start ``cmd`` and return once the mmengine log in ``wd`` shows a training iteration (still running)."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = list(wd.glob("*/*.log"))
        if logs and re.search(r"Iter\(train\) \[\s*\d+/150\]", logs[0].read_text()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal could be sent"
    return proc


def _interrupt(wd: Path, signum: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start the run, wait until the mmengine log shows a training iteration, send ``signum``."""
    proc = _start_training(CLI + RUN + ["--work-dir", str(wd)], wd, wd.parent)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    stopped = re.search(r"stopped by (SIG\w+) after iteration (\d+)/150; checkpoint (\S+)", err)
    assert stopped, err[-3000:]
    assert stopped.group(1) == signal.Signals(signum).name and Path(stopped.group(3)).is_file()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), int(stopped.group(2))


@pytest.mark.slow
def test_sigterm_mid_run_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full = _run(RUN + ["--work-dir", str(tmp_path / "full")], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    wd = tmp_path / "preempted"
    stopped, at = _interrupt(wd, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM and 1 <= at < 150
    assert not (wd / "results.json").exists() and incomplete_reason(wd / f"iter_{at}.pth") is None
    resume = re.search(r"resume with: (.+)", stopped.stderr).group(1).strip()
    assert resume.startswith("rs-transfer run ") and resume.endswith(" --resume")
    done = _run(shlex.split(resume)[1:], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", wd))
    assert b["resumed_from"] == at and a["resumed_from"] is None
    assert b["metrics"] == a["metrics"] and b["config_hash"] == a["config_hash"]
    _same_weights(a["final_weights"], b["final_weights"])


@pytest.mark.slow
def test_sigint_saves_and_names_the_resume_command(tmp_path: Path) -> None:
    stopped, at = _interrupt(tmp_path / "wd", signal.SIGINT)
    assert stopped.returncode == 128 + signal.SIGINT and "Traceback" not in stopped.stderr
    assert re.search(r"resume with: rs-transfer run .* --resume", stopped.stderr)
    assert find_resume_point(tmp_path / "wd")[0].iteration == at


def test_a_preempted_study_stops_instead_of_failing_the_cell(tmp_path: Path, monkeypatch) -> None:
    """RunInterrupted is not a UserError: a study does not record the cell as failed and go on, it stops (and the
    CLI prints the command that resumes it)."""
    import rs_transfer.runner as runner_mod
    from rs_transfer.errors import RunInterrupted
    from rs_transfer.studies.table4 import run_table4

    calls = []

    def preempted(*args, **kwargs):
        calls.append(args)
        raise RunInterrupted("stopped by SIGTERM after iteration 3/30", signum=signal.SIGTERM)

    monkeypatch.setattr(runner_mod, "run_experiment", preempted)
    with pytest.raises(RunInterrupted):
        run_table4(backbone="resnetrs50", weights=[None, None], out_dir=tmp_path, tasks=["cifar100"], preset="mini",
                   paper=False, log=lambda *a: None)
    assert len(calls) == 1


def test_resume_command_adds_resume_once() -> None:
    from rs_transfer.cli import resume_command

    assert resume_command(["run", "--task", "x", "--cfg-options", "a=[1,2]"]) == \
        "rs-transfer run --task x --cfg-options 'a=[1,2]' --resume"
    assert resume_command(["run", "--task", "x", "--resume"]).count("--resume") == 1
    assert resume_command(["study", "table4", "--launcher", "slurm"]).startswith("rs-transfer study table4")


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_the_same_iteration(tmp_path: Path) -> None:
    """2 gloo processes under torchrun (which forwards SIGTERM to its workers): the ranks agree on the iteration,
    rank 0 writes one checkpoint and prints one message, and the same torchrun command with --resume finishes."""
    wd = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "rs_transfer.cli"]
    args = RUN + ["--launcher", "pytorch", "--work-dir", str(wd)]
    proc = _start_training(torchrun + args, wd, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    stops = re.findall(r"stopped by SIGTERM after iteration (\d+)/150", err)
    assert len(stops) == 1, err[-3000:]
    at = int(stops[0])
    assert [p.name for p in wd.glob("iter_*.pth")] == [f"iter_{at}.pth"]
    assert incomplete_reason(wd / f"iter_{at}.pth") is None
    done = subprocess.run(torchrun + args + ["--resume"], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((wd / "results.json").read_text())
    assert res["resumed_from"] == at and res["world_size"] == 2


def test_a_run_from_scratch_removes_an_earlier_runs_checkpoints(tmp_path: Path, capsys) -> None:
    with pytest.raises(Killed):
        run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, cfg_options=_kill(20), **KW)
    assert (tmp_path / "iter_15.pth").is_file()
    with pytest.raises(Killed):  # no --resume, killed before its own first checkpoint
        run_experiment("cifar100", "resnetrs50", work_dir=tmp_path, cfg_options=_kill(8), **KW)
    assert "held checkpoints of an earlier run (iter_15.pth) that this run does not resume from: it starts from " \
        "scratch, so they are removed" in capsys.readouterr().err
    assert find_resume_point(tmp_path)[0] is None  # a later --resume cannot pick up the other run's state
