"""The console a person reads: fast start-up, a short header, progress (bar on a terminal, compact lines in a
file), mmengine's full log in the work dir (on the console only with --verbose), no terminal escapes in errors."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rs_transfer.cli import main, plain
from rs_transfer.runner.console import NOISE, ProgressHook, header_lines, route_logger

from conftest import TINY_CLI

HEAVY = ("torch", "torchvision", "mmengine", "mmcv", "mmdet", "mmseg", "timm", "matplotlib")


@pytest.mark.parametrize("argv", [["--help"], ["list", "tasks"], ["list", "weights"], ["list", "models"],
                                  ["list", "models", "--family", "resnetrs3d"], ["run", "--help"],
                                  ["study", "table4", "--help"],
                                  ["run", "--task", "cifar100"]])  # the last: an argument error
def test_commands_that_do_not_train_import_nothing_heavy(argv: list[str]) -> None:
    """Start-up cost is imports (torch + mmengine: seconds); these commands must not pay it. Checked on
    sys.modules in a fresh interpreter, not by timing."""
    code = ("import sys\nfrom rs_transfer.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nheavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
            "print('HEAVY=' + ','.join(heavy))\nsys.exit(rc)" % (HEAVY,))
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 2), proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HEAVY="))
    assert line == "HEAVY=", f"{argv} imported {line[6:]}"


def test_list_tasks_reads_the_same_metadata_the_task_modules_define(capsys) -> None:
    from rs_transfer.commands.listing import task_metadata
    from rs_transfer.tasks import get_task, list_tasks

    for name in list_tasks():
        task = get_task(name)
        assert task_metadata(name) == {"title": task.title, "metric": task.metric}
    assert main(["list", "tasks"]) == 0
    assert "cifar100     top1     CIFAR-100 top-1" in capsys.readouterr().out


# ---- progress -------------------------------------------------------------------------------------------------
class _Buffer:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def mean(self, window: int) -> float:
        return sum(self.values[-window:]) / len(self.values[-window:])


class _Hub:
    def __init__(self) -> None:
        self.losses: list[float] = []

    def get_scalar(self, key: str) -> _Buffer:
        if key != "train/loss" or not self.losses:
            raise KeyError(key)
        return _Buffer(self.losses)


def _drive(hook: ProgressHook, *, total: int = 30, start: int = 0, rank: int = 0) -> None:
    """What mmengine's IterBasedTrainLoop calls, with RuntimeInfoHook's train/loss history."""
    runner = types.SimpleNamespace(rank=rank, iter=start, max_iters=total, message_hub=_Hub(),
                                   val_dataloader=[0, 1])
    hook.before_train(runner)
    for i in range(start, total):
        runner.iter = i
        runner.message_hub.losses.append(10.0 - i * 0.1)
        hook.after_train_iter(runner, i, outputs={"loss": runner.message_hub.losses[-1]})
    runner.iter = total
    hook.before_val_epoch(runner)
    for i in range(2):
        hook.after_val_iter(runner, i)
    hook.after_val_epoch(runner, {"accuracy/top1": 12.5, "accuracy/top5": 50.0})
    hook.after_train(runner)


def test_progress_in_a_file_is_one_compact_line_every_ten_percent() -> None:
    out = io.StringIO()
    _drive(ProgressHook(out, tty=False))
    lines = out.getvalue().splitlines()
    train = [x for x in lines if x.startswith("train ")]
    assert [x.split()[1] for x in train] == [f"{p}%" for p in range(10, 101, 10)]
    assert "iter 3/30" in train[0] and "loss 9.9" in train[0] and "eta 0:00:00" in train[-1]
    # the loss shown is the mean of the last 10 iterations (what mmengine's LoggerHook prints)
    assert f"loss {sum(10.0 - i * 0.1 for i in range(20, 30)) / 10:.4g}" in train[-1]
    assert "val @ iter 30: top1 12.5, top5 50" in lines
    assert lines[-1].startswith("trained 30 iteration(s) in ")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_progress_resumed_counts_from_the_checkpoint_and_other_ranks_print_nothing() -> None:
    out = io.StringIO()
    _drive(ProgressHook(out, tty=False), start=15)
    lines = out.getvalue().splitlines()
    assert lines[0] == "resuming at iteration 15/30"
    assert [x.split()[1] for x in lines if x.startswith("train ")] == [f"{p}%" for p in range(60, 101, 10)]
    assert lines[-1].startswith("trained 15 iteration(s)")
    quiet = io.StringIO()
    _drive(ProgressHook(quiet, tty=False), rank=1)
    _drive(ProgressHook(quiet, tty=True), rank=1)
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_is_a_live_bar_with_loss() -> None:
    out = io.StringIO()
    _drive(ProgressHook(out, tty=True))
    text = out.getvalue()
    assert "\r" in text and "30/30" in text and "loss" in text and "100%" in text
    assert "val @ iter 30: top1 12.5" in text


# ---- logger routing ------------------------------------------------------------------------------------------
def test_route_logger_keeps_info_in_the_file_and_warnings_on_the_console(tmp_path: Path) -> None:
    from mmengine.logging import MMLogger

    console = io.StringIO()
    old = sys.stdout
    sys.stdout = console  # MMLogger's console handler binds sys.stdout when it is created
    try:
        logger = MMLogger.get_instance("test-console-route", log_file=str(tmp_path / "run.log"))
    finally:
        sys.stdout = old
    route_logger(logger, quiet=True)
    logger.info("paramwise_options -- backbone.stem.0.weight:lr=0.1")
    logger.warning("something the user must see")
    logger.warning(f"Dataset Foo {NOISE[0]}. ``dataset_meta`` in visualizer will be None.")
    for h in logger.handlers:
        h.flush()
    shown = console.getvalue()
    assert "something the user must see" in shown
    assert "paramwise_options" not in shown and NOISE[0] not in shown
    assert "\x1b" not in shown  # not a terminal: no colour codes
    saved = (tmp_path / "run.log").read_text()
    assert "paramwise_options" in saved and "something the user must see" in saved and NOISE[0] in saved


def test_header_names_task_backbone_weights_normalisation_protocol_and_global_batch(tmp_path: Path) -> None:
    ctx = types.SimpleNamespace(task="cifar100", backbone="resnetrs50", weights="resnetrs50.tf_in1k",
                                normalization={"name": "imagenet", "mean": [123.675, 116.28, 103.53],
                                               "std": [58.395, 57.12, 57.375]},
                                protocol="finetune", preset="paper", seed=1, work_dir=tmp_path, world_size=4)
    text = "\n".join(header_lines(ctx, {"global_batch_size": 512, "per_process_batch_size": 64,
                                        "accumulation": 2}))
    for part in ("cifar100", "resnetrs50", "resnetrs50.tf_in1k", "imagenet (mean 123.675, 116.28, 103.53",
                 "protocol finetune", "512 = 64 per process x 4 process(es) x 2 accumulation", str(tmp_path)):
        assert part in text
    legacy = "\n".join(header_lines(ctx, {"batch_size_per_process": 8, "accumulative_counts": 1}))
    assert "global batch:  32 = 8 per process x 4 process(es)" in legacy  # facts without global_batch_size


def test_error_lines_carry_no_terminal_escapes() -> None:
    assert plain("\x1b[31mbad\x1b[0m " + repr("\x1b[1;33mWARNING\x1b[0m")) == "bad 'WARNING'"


# ---- a real mini run -----------------------------------------------------------------------------------------
def _mini(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", *TINY_CLI,
            "--work-dir", str(tmp_path), *extra]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_mini_run_console_fits_on_one_screen_and_verbose_shows_the_full_log(tmp_path: Path, capsys) -> None:
    assert main(_mini(tmp_path / "quiet")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 30, out
    assert lines[0].startswith("rs-transfer run: cifar100 | resnetrs50 | protocol finetune | preset mini")
    assert "paramwise_options" not in out and "Config:" not in out and "Hooks will be executed" not in out
    assert sum(x.startswith("train ") for x in lines) == 10  # not a terminal: a line every 10 %
    log = Path(next(x for x in lines if "full log:" in x).split("full log:")[1].split()[0])
    assert log.is_file() and "Config:" in log.read_text() and "Iter(train)" in log.read_text()
    res = json.loads((tmp_path / "quiet" / "results.json").read_text())
    assert res["preset"] == "mini"
    # the config mmengine dumps into the work dir (unformatted since yapf is off) is Python that loads back as run
    from mmengine.config import Config

    (dump,) = (tmp_path / "quiet").glob("*.py")
    dumped = Config.fromfile(str(dump))
    assert dumped.train_cfg.max_iters == res["config"]["train_cfg"]["max_iters"] and dumped.model.backbone.depth == 50

    # linear probe: no mmengine Runner, same console and log file
    assert main(_mini(tmp_path / "linear", "--protocol", "linear")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 12 and not any("init_weights" in x for x in lines), lines
    log = Path(next(x for x in lines if "full log:" in x).split("full log:")[1].split()[0])
    assert "init_weights" in log.read_text()

    assert main(_mini(tmp_path / "verbose", "--verbose")) == 0
    out = capsys.readouterr().out
    assert "Config:" in out and "Iter(train)" in out and not any(x.startswith("train ") for x in out.splitlines())
