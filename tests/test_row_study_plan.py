"""The row studies table5 and scaling as plans (issue 21): --dry-run writes plan.json with one cell per row (grid
cell) and seed; each cell's hash is the one its own run records when the cell job runs its `rs-transfer run`
arguments; the study then collects those runs without running anything; --executor slurm submits one array and, with
--gpus-per-cell 2, finds the cells again by their 2-process identity.

`rs-transfer run` goes through a stand-in for run_experiment that records what run_experiment records (results.json
with the resolved config of the same prepare_run), so no training runs here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rs_transfer.atomic import write_json_atomic
from rs_transfer.cli import main


def _plan(wd: Path) -> dict:
    return json.loads((wd / "plan.json").read_text())


@pytest.fixture
def runs(monkeypatch) -> dict[str, Any]:
    """`rs-transfer run` with a stand-in run_experiment; returns ``{"world": world size of its runs (1; a test may
    set it), "calls": the work dirs it ran, "value": its headline value from its cfg_options (a test may set it)}``."""
    import rs_transfer.runner as runner


    def fake(task: str, backbone: str, *, launcher: str = "none", resume: bool = False, tracking: Any = None,
             **kw: Any) -> dict[str, Any]:
        from rs_transfer.runner import prepare_run

        state["calls"].append(Path(kw["work_dir"]).name)
        prep = prepare_run(task, backbone, world_size=state["world"], check_data=False, **kw)
        prep.work_dir.mkdir(parents=True, exist_ok=True)
        res = {"task": task, "backbone": backbone, "protocol": kw.get("protocol", "finetune"), "metric": "top1",
               "value": state["value"](kw.get("cfg_options") or {}),
               "metrics": {"top1": 50.0, "top5": 70.0}, "preset": kw.get("preset"), "config": prep.resolved,
               "config_hash": prep.config_hash, "weights": prep.weights, "work_dir": str(prep.work_dir),
               "data_root": str(prep.data_root), "train_time_s": 10.0, "train_images_per_s": 48.0, "device": "cpu"}
        write_json_atomic(prep.work_dir / "results.json", res)
        return res

    state: dict[str, Any] = {"world": 1, "calls": [], "value": lambda options: 50.0}
    monkeypatch.setattr(runner, "run_experiment", fake)
    return state


def _run_cells(plan: dict) -> None:
    """What each cell job does: `rs-transfer run RUN_ARGS --work-dir WD` (tests/test_executor.py runs the real
    job script through fake SLURM)."""
    for cell in plan["cells"]:
        assert cell["run_args"], cell["info"]
        assert main(["run", *cell["run_args"], "--work-dir", cell["work_dir"]]) == 0


def _no_runner(*args: Any, **kwargs: Any) -> dict:
    raise AssertionError(f"the study ran a cell that was done: {kwargs.get('work_dir')}")


TABLE5 = ["study", "table5", "--preset", "mini", "--rows", "2", "--seeds", "2"]
SCALING = ["study", "scaling", "--preset", "mini", "--depths", "50", "101", "--resolutions", "80", "--epochs", "1",
           "--latency-batch", "1"]


@pytest.mark.parametrize("study, names", [
    (TABLE5, ["00_baseline", "00_baseline-seed1", "01_dropout", "01_dropout-seed1"]),
    ([*SCALING, "--seeds", "2"], ["d50-w1-r80-e1", "d50-w1-r80-e1-seed1", "d101-w1-r80-e1", "d101-w1-r80-e1-seed1"]),
])
def test_dry_run_plans_each_row_and_seed_with_the_runs_own_hash(study: list[str], names: list[str], tmp_path: Path,
                                                               runs, capsys) -> None:
    wd = tmp_path / "runs"
    args = [*study, "--work-dir", str(wd), "--out", str(tmp_path / "rep")]
    assert main([*args, "--dry-run"]) == 0
    assert f"{len(names)} cells: 0 done, {len(names)} to run" in capsys.readouterr().out
    plan = _plan(wd)
    assert plan["study"] == study[1] and [c["name"] for c in plan["cells"]] == names
    assert all(c["state"] == "to run" and c["config_hash"] and c["world_size"] == 1 for c in plan["cells"])
    assert len({c["config_hash"] for c in plan["cells"]}) == len(names)       # seeds and rows differ
    assert not any(wd.glob("*/results.json")) and not (tmp_path / "rep.md").exists()   # nothing ran

    _run_cells(plan)      # each cell's own run, from its plan entry
    for cell in plan["cells"]:
        assert json.loads((Path(cell["work_dir"]) / "results.json").read_text())["config_hash"] == cell["config_hash"]
    assert main([*args, "--dry-run"]) == 0
    assert f"{len(names)} cells: {len(names)} done, 0 to run" in capsys.readouterr().out
    assert [c["state"] for c in _plan(wd)["cells"]] == ["done"] * len(names)

    # The study collects the runs the cells made (the same identity): nothing runs again, the report is written.
    from rs_transfer.studies import scaling, table5

    if study[1] == "table5":
        report = table5.run_study(preset="mini", max_rows=2, seeds=2, work_dir=wd, out=tmp_path / "rep",
                                  runner=_no_runner)
    else:
        report = scaling.run_study(depths=[50, 101], widths=[1.0], resolutions=[80], epochs=[1], preset="mini",
                                   seeds=2, work_dir=wd, out=tmp_path / "rep", latency_batch=1, runner=_no_runner)
    assert report is not None and all(r["reused"] and r["seeds"] == 2 for r in report["rows"])
    assert (tmp_path / "rep.md").exists()


def test_another_cfg_option_makes_the_planned_cells_stale(tmp_path: Path, runs, capsys) -> None:
    """table5 reuses only a row's own folder: a changed option shows every done cell as stale, not done."""
    wd = tmp_path / "runs"
    args = [*TABLE5, "--rows", "1", "--seeds", "1", "--work-dir", str(wd), "--out", str(tmp_path / "rep")]
    assert main([*args, "--dry-run"]) == 0
    _run_cells(_plan(wd))
    assert main([*args, "--cfg-options", "train_cfg.max_epochs=2", "--dry-run"]) == 0
    assert "1 cells: 0 done, 1 to run" in capsys.readouterr().out
    assert [c["state"] for c in _plan(wd)["cells"]] == ["stale"]


def test_scaling_submits_one_array_and_collects_by_the_cells_world_size(tmp_path: Path, fake_slurm, runs,
                                                                       monkeypatch, capsys) -> None:
    """--gpus-per-cell 2: the plan's identity is the 2-process one (not the login node's WORLD_SIZE); once the
    cells ran with 2 processes the same command submits nothing and writes the report (the collecting loop uses
    the cells' world size too)."""
    from rs_transfer.runner import prepare_run

    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")    # submitted jobs stay PENDING
    monkeypatch.setenv("WORLD_SIZE", "8")
    wd = tmp_path / "runs"
    args = [*SCALING, "--work-dir", str(wd), "--out", str(tmp_path / "rep"), "--executor", "slurm",
            "--gpus-per-cell", "2", "--timeout-min", "30"]
    assert main(args) == 0
    assert "submitted 2 cell(s) as SLURM job array" in capsys.readouterr().out
    scripts = list((fake_slurm / "submitted").glob("*.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1%2" in scripts[0].read_text()
    plan = _plan(wd)
    cell = plan["cells"][0]
    assert cell["world_size"] == 2 and cell["config_hash"] == prepare_run(
        "imagenet", "resnetrs50", world_size=2, work_dir=cell["work_dir"], check_data=False,
        **_kwargs_of(cell)).config_hash
    assert not (tmp_path / "rep.md").exists()

    runs["world"] = 2     # the cell jobs: 2 processes each
    _run_cells(plan)
    runs["calls"].clear()
    monkeypatch.setattr("rs_transfer.studies.scaling.inference_ms", lambda *a, **k: 1.0)
    assert main(args) == 0
    assert len(list((fake_slurm / "submitted").glob("*.sh"))) == 1       # nothing submitted twice
    assert runs["calls"] == []                                            # nor run here
    assert "| 101 | 1 | 80 | 1 | 50.0" in (tmp_path / "rep.md").read_text()


def _kwargs_of(cell: dict) -> dict[str, Any]:
    """prepare_run keyword arguments of a planned cell's `rs-transfer run` arguments (its seed, options)."""
    from rs_transfer.runner import parse_cfg_options

    a = cell["run_args"]

    def opts(flag: str) -> list[str]:
        if flag not in a:
            return []
        i = a.index(flag) + 1
        out = []
        while i < len(a) and not a[i].startswith("--"):
            out.append(a[i])
            i += 1
        return out

    return dict(preset=a[a.index("--preset") + 1], seed=int(a[a.index("--seed") + 1]),
                cfg_options=parse_cfg_options(opts("--cfg-options")),
                model_overrides=parse_cfg_options(opts("--backbone-options")))


def test_paper_sweep_grid_is_seven_lrs_by_eight_weight_decays_divided_by_the_lr(tmp_path: Path) -> None:
    """SimCLR B.8.1 (Kornblith et al.'s grid): 7 LRs 1e-4..0.1 x 7 weight decays 1e-6..1e-3 "as well as no weight
    decay", each value divided by the learning rate before it reaches the optimizer."""
    from rs_transfer.studies.sweep import LR_GRID, WD_GRID, _points

    assert LR_GRID[0] == 1e-4 and LR_GRID[-1] == 0.1 and len(LR_GRID) == 7
    assert WD_GRID[0] == 0.0 and WD_GRID[1] == 1e-6 and WD_GRID[-1] == 1e-3 and len(WD_GRID) == 8
    _, _, points = _points("dtd", "resnet50", work_dir=tmp_path, preset="paper", seed=0, cfg_options=None,
                           holdout=0.2, grid=None, kwargs={"protocol": "finetune"})
    assert len(points) == 56
    for lr, wd, kw in points:
        assert kw["cfg_options"]["optim_wrapper.optimizer.lr"] == lr
        assert kw["cfg_options"]["optim_wrapper.optimizer.weight_decay"] == pytest.approx(wd / lr)
    assert sum(kw["cfg_options"]["optim_wrapper.optimizer.weight_decay"] == 0.0 for _, _, kw in points) == 7


def test_sweep_dry_run_plans_the_points_then_the_final_run(tmp_path: Path, runs, capsys) -> None:
    """`study sweep --dry-run` (and `run --sweep --dry-run`): the grid points with their states and the identity their
    own runs record; the final run is planned once every point is done; the sweep then reuses every point and runs
    only the final one, and reuses that too when run again."""
    from rs_transfer.studies.sweep import run_sweep

    root = tmp_path / "sw"
    args = ["study", "sweep", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
            "--work-dir", str(root), "--dry-run"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "4 cells: 0 done, 4 to run" in text and "final run" in text and "planned once the 4 point(s)" in text
    plan = _plan(root)
    assert plan["study"] == "sweep" and [c["name"] for c in plan["cells"]] == [
        "sweep/lr0.001_wd1e-06", "sweep/lr0.001_wd0.0001", "sweep/lr0.01_wd1e-06", "sweep/lr0.01_wd0.0001"]
    assert len({c["config_hash"] for c in plan["cells"]}) == 4 and not any(root.rglob("results.json"))
    # `rs-transfer run --sweep --dry-run` is the same plan (its defaults are the study's); without --sweep: an error
    run_args = ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--work-dir", str(root)]
    (root / "plan.json").unlink()
    assert main([*run_args, "--sweep", "--dry-run"]) == 0 and "4 cells: 0 done, 4 to run" in capsys.readouterr().out
    assert [(c["name"], c["config_hash"], c["run_args"]) for c in _plan(root)["cells"]] == [
        (c["name"], c["config_hash"], c["run_args"]) for c in plan["cells"]]
    assert main([*run_args, "--dry-run"]) == 2 and "a single run has no plan" in capsys.readouterr().err
    _run_cells({"cells": plan["cells"][1:]})     # three points done, one to run
    assert main(args) == 0
    assert "4 cells: 3 done, 1 to run" in capsys.readouterr().out
    assert [c["state"] for c in _plan(root)["cells"]] == ["to run", "done", "done", "done"]
    _run_cells({"cells": _plan(root)["cells"][:1]})
    assert main(args) == 0
    assert "5 cells: 4 done, 1 to run" in capsys.readouterr().out
    final = _plan(root)["cells"][-1]
    assert final["name"] == "final" and "optim_wrapper.optimizer.lr=0.001" in final["run_args"]
    runs["calls"].clear()
    res = run_sweep("cifar100", "resnetrs50", preset="mini", work_dir=root)
    assert runs["calls"] == ["sw"] and res["config_hash"] == final["config_hash"]   # points reused, final as planned
    runs["calls"].clear()
    assert run_sweep("cifar100", "resnetrs50", preset="mini", work_dir=root) == res and runs["calls"] == []


def test_sweep_on_slurm_submits_the_points_then_the_final_run_then_writes_the_result(
        tmp_path: Path, fake_slurm, runs, monkeypatch, capsys) -> None:
    """`study sweep --executor slurm`, one stage per call: the points not done as one array (the same command again
    submits nothing), then only the final run with the best point's LR / weight decay, then the sweep's results.json
    from those runs (nothing runs here); every hash is the cells' own 2-process one."""
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")    # submitted jobs stay PENDING
    runs["world"] = 2                             # the cell jobs: 2 processes each
    lr, wd = "optim_wrapper.optimizer.lr", "optim_wrapper.optimizer.weight_decay"
    runs["value"] = lambda o: 100 * o[lr] + 1e4 * o[lr] * o[wd]     # grows with LR and with the grid's value
    root = tmp_path / "sw"
    args = ["study", "sweep", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
            "--work-dir", str(root), "--executor", "slurm", "--gpus-per-cell", "2", "--timeout-min", "30"]

    def scripts() -> list[str]:
        return [p.read_text() for p in sorted((fake_slurm / "submitted").glob("*.sh"))]

    def jobs() -> dict:
        return json.loads((root / "slurm" / "jobs.json").read_text())

    assert main([*args, "--dry-run"]) == 0
    _run_cells({"cells": _plan(root)["cells"][:1]})    # one point already done: three to submit
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "submitted 3 cell(s) as SLURM job array" in out and f"rs-transfer study status {root}" in out
    assert len(scripts()) == 1 and "#SBATCH --array=0-2%3" in scripts()[0]
    plan = _plan(root)
    points = plan["cells"]
    assert len(points) == 4 and all(c["world_size"] == 2 for c in points)
    assert sorted(jobs()) == sorted(c["name"] for c in points[1:])
    assert not (root / "results.json").exists()

    assert main(args) == 0                            # the points are queued: nothing submitted twice
    assert "not submitted again" in capsys.readouterr().out and len(scripts()) == 1

    _run_cells({"cells": points[1:]})                 # the array's cells ran, each from its plan entry
    assert main(args) == 0
    assert "submitted 1 cell(s)" in capsys.readouterr().out
    assert len(scripts()) == 2 and "--job-name=sweep-final" in scripts()[1]   # submitit: a batch of one is one job
    assert "--ntasks-per-node=2" in scripts()[1] and "--array" not in scripts()[1]
    final = _plan(root)["cells"][-1]
    assert final["name"] == "final" and final["world_size"] == 2 and set(jobs()) == {c["name"] for c in points[1:]} | {
        "final"}
    assert "optim_wrapper.optimizer.lr=0.01" in final["run_args"]                  # the best point: the last one
    assert "optim_wrapper.optimizer.weight_decay=0.01" in final["run_args"]       # its value 1e-4 / its LR
    assert main(args) == 0 and len(scripts()) == 2   # the final run is queued: not submitted again
    assert not (root / "results.json").exists()
    capsys.readouterr()

    _run_cells({"cells": [final]})
    runs["calls"].clear()
    assert main(args) == 0
    assert "best lr 0.01, weight decay 0.0001" in capsys.readouterr().out
    assert runs["calls"] == [] and len(scripts()) == 2      # nothing ran here, nothing more submitted
    res = json.loads((root / "results.json").read_text())
    assert res["config_hash"] == final["config_hash"]
    assert res["sweep"]["best"]["lr"] == 0.01 and len(res["sweep"]["grid"]) == 4
    assert [g["work_dir"] for g in res["sweep"]["grid"]] == [c["work_dir"] for c in points]


@pytest.mark.parametrize("study, task", [
    (["study", "table1", "--preset", "mini", "--rows", "1"], "imagenet"),
    (["study", "table5", "--preset", "mini", "--rows", "1"], "kinetics400"),
])
def test_epoch_based_cells_count_their_samples_and_flops(study: list[str], task: str, tmp_path: Path,
                                                         capsys) -> None:
    """An epoch-based row trains epochs x the training set it lists; its FLOPs are 3 x the forward of the model the
    run builds at its training input, and evaluation is the forward at the evaluation input (every view of a video)
    x the evaluation samples x the validations. Counted here independently: the task's own data check and torch's
    counter on the backbone built from the run's resolved config."""
    import torch
    from mmengine.registry import MODELS
    from torch.utils.flop_counter import FlopCounterMode

    from rs_transfer.runner import prepare_run
    from rs_transfer.tasks import get_task

    wd = tmp_path / "runs"
    assert main([*study, "--work-dir", str(wd), "--out", str(tmp_path / "rep"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cell, = _plan(wd)["cells"]
    backbone = cell["run_args"][cell["run_args"].index("--backbone") + 1]
    prep = prepare_run(task, backbone, work_dir=Path(cell["work_dir"]), check_data=False,
                       **_run_kwargs(cell["run_args"]))   # the row's options, back from its run arguments
    assert prep.config_hash == cell["config_hash"]
    cfg = prep.cfg
    counts = get_task(task).check_data(prep.data_root).counts
    epochs, interval = int(cfg.train_cfg.max_epochs), int(cfg.train_cfg.val_interval)
    assert cell["train_samples"] == epochs * counts["train"] > 0
    assert f"{epochs} epochs x {counts['train']:,} training samples listed in" in out

    model = MODELS.build(cfg.model.backbone).eval()
    tr, va = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    if task == "kinetics400":
        train_shape = (1, 3, tr.num_frames, tr.crop_size, tr.crop_size)
        eval_shape, views = (1, 3, va.num_frames, va.test_size, va.test_size), va.num_clips * va.num_crops
    else:
        train_shape, eval_shape, views = (1, 3, tr.resolution, tr.resolution), (1, 3, va.resolution, va.resolution), 1

    def forward(shape: tuple[int, ...]) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(shape))
        return int(counter.get_total_flops())

    assert cell["train_flops"] == 3 * forward(train_shape) * cell["train_samples"]
    validations = epochs // interval + (epochs % interval != 0)
    assert cell["eval_flops"] == views * forward(eval_shape) * counts["val"] * validations > 0


def _run_kwargs(run_args: list[str]) -> dict[str, Any]:
    """run_experiment keyword arguments back from a cell's `rs-transfer run` arguments (the options a row sets)."""
    from rs_transfer.runner import parse_cfg_options

    out: dict[str, Any] = {"preset": run_args[run_args.index("--preset") + 1],
                           "seed": int(run_args[run_args.index("--seed") + 1])}
    for flag, key in (("--cfg-options", "cfg_options"), ("--backbone-options", "model_overrides")):
        if flag in run_args:
            i = run_args.index(flag) + 1
            values = []
            while i < len(run_args) and not run_args[i].startswith("--"):
                values.append(run_args[i])
                i += 1
            out[key] = parse_cfg_options(values)
    return out
