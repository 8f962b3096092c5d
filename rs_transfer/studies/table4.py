"""Studies: a grid of runs (weights x tasks x protocols x seeds) on the one runner, resumable, ending in a report.

A study directory holds one folder per run (``<task>/<backbone>-<weights>-<protocol>-seed<k>``), ``study.json``
(the grid and the state of every cell) and the report. Re-running the same command skips runs whose results.json
exists AND recorded the configuration the cell would run now (:func:`expected_hash`; another ``--cfg-options``,
seed or code default runs again), and resumes a run that left a checkpoint, so an interrupted study continues
where it stopped. Tasks whose
module does not exist yet are recorded as missing (shown as "—" in the report), never filled in.
"""
from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rs_transfer.atomic import write_json_atomic
from rs_transfer.errors import UserError
from rs_transfer.results import read_results
from rs_transfer.runner.distributed import LAUNCHERS, launched_world_size
from rs_transfer.runner.tracking import Tracking, for_study, log_report
from rs_transfer.runner.tracking import add_argument as add_tracking
from rs_transfer.studies.args import positive_int
from rs_transfer.studies.cells import PLAN_NAME, PlannedCell, write_plan
from rs_transfer.studies.executor import SlurmOptions, add_executor_arguments, slurm_options
from rs_transfer.studies.htmlpage import write_table4_html
from rs_transfer.studies.plan import expected_hash_or_none
from rs_transfer.studies.planning import measured_throughput, plan_cell, plan_table, submit_plan
from rs_transfer.studies.report import build_report, weights_label, write_report
from rs_transfer.studies.reuse import reusable


def run_dir(out: Path, task: str, backbone: str, weights: str | None, protocol: str, seed: int) -> Path:
    return out / task / f"{backbone}-{weights_label(weights)}-{protocol}-seed{seed}"


def _denominators(res: dict[str, Any]) -> dict[str, Any]:
    """The counts behind a cell's number, where its task reports them (Kinetics: eval_videos, missing, corrupt)."""
    m = res.get("metrics") or {}
    keys = {"eval_videos": "eval_videos", "missing": "eval_missing", "corrupt": "eval_corrupt"}
    return {k: m[v] for k, v in keys.items() if v in m}


def _planned(out: Path, task: str, backbone: str, wd: Path, world: int, kwargs: dict[str, Any],
             measured: dict, flops: bool = False, gpu: tuple[str, float] | None = None) -> PlannedCell | None:
    """The plan entry of one cell (None for a task not available or a protocol the task lacks: not runnable)."""
    from rs_transfer.tasks import TaskNotAvailable, get_task

    try:
        if kwargs["protocol"] not in get_task(task).protocols:
            return None
    except TaskNotAvailable:
        return None
    return plan_cell(out, str(wd.relative_to(out)), task, backbone, wd, world, kwargs, measured, flops=flops,
                     gpu=gpu)


def _matches(res: dict[str, Any], task: str, backbone: str, weights: str | None, preset: str) -> bool:
    return (res.get("task") == task and res.get("backbone") == backbone and res.get("preset") == preset
            and weights_label(res.get("weights")) == weights_label(weights))


def _check_grid(backbone: str, weights: Sequence[str | None], tasks: Sequence[str], protocols: Sequence[str],
                seeds: int, preset: str, model_overrides: dict | None, cfg_options: dict | None) -> None:
    """Every name, task, protocol and option of the grid is checked before the first cell runs: a typo in the
    last weight source must not surface hours later. Unavailable tasks are allowed (shown as missing)."""
    from rs_transfer.runner import prepare_run
    from rs_transfer.tasks import PROTOCOLS, TaskNotAvailable, get_task
    from rs_transfer.weights import resolve

    if seeds < 1:
        raise UserError(f"--seeds {seeds}: at least one seed, or nothing runs")
    labels = [weights_label(w) for w in weights]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise UserError(f"--weights lists {', '.join(twice)} more than once; each row is one weight source (the "
                        "report would merge them into one row), so name each source once")
    for w in weights:
        if w is not None:
            resolve(w)   # an unknown name or a missing file, now
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}")
    for task in tasks:
        try:
            the_task = get_task(task)
        except TaskNotAvailable:
            continue
        for protocol in protocols:
            if protocol in the_task.protocols:  # the options of every (task, protocol), without reading weights
                prepare_run(task, backbone, preset=preset, protocol=protocol, cfg_options=cfg_options,
                            model_overrides=model_overrides, work_dir=Path("_check_"), check_data=False)


def run_table4(*, backbone: str, weights: Sequence[str | None], out_dir: str | Path,
               tasks: Sequence[str] | None = None, protocols: Sequence[str] = ("finetune",), seeds: int = 1,
               preset: str = "paper", baseline: str | None = None, paper: bool = True,
               model_overrides: dict | None = None, cfg_options: dict | None = None, launcher: str = "none",
               data_roots: dict[str, str] | None = None, log=print,
               normalization: str | dict[str | None, str] | None = None, trust: bool = False,
               strict: bool = True, alpha: float = 0.05, executor: str = "local", dry_run: bool = False,
               slurm_opts: SlurmOptions | None = None, gpu: tuple[str, float] | None = None,
               tracking: Tracking | None = None) -> dict[str, Any]:
    """Run every (weights, task, protocol, seed) cell not done yet, then write the report. Returns study.json.
    ``normalization``: an explicit input normalisation for every weight source, or ``{source: normalisation}``;
    ``alpha``: the report's significance level for paired differences to the baseline (after BH).
    ``dry_run``: write and print the plan only. ``executor="slurm"``: submit the cells to run as one job array
    (``slurm_opts``); the report is written once every cell is done (the same call again collects it).
    ``gpu``: ``(device name, MFU)`` for FLOPs-based estimates of cells without a measured throughput."""
    from rs_transfer.runner import run_experiment
    from rs_transfer.tasks import TABLE4_TASKS, TaskNotAvailable, get_task

    out = Path(out_dir)
    tasks = list(tasks or TABLE4_TASKS)
    _check_grid(backbone, weights, tasks, protocols, seeds, preset, model_overrides, cfg_options)
    slurm = executor == "slurm"
    if slurm and slurm_opts is None:
        raise UserError("--executor slurm needs the SLURM options (rs_transfer.studies.executor.SlurmOptions)")
    # The cell's own world size: a slurm cell job's tasks, not this planning process's environment.
    world = slurm_opts.tasks if slurm and slurm_opts else launched_world_size(launcher)
    cells: list[dict[str, Any]] = []
    planned: list[PlannedCell] = []
    # Every command first writes the plan (OUT/plan.json, what `study status` reads), local ones too.
    measured = measured_throughput(out)
    for w in weights:
        norm = normalization.get(w) if isinstance(normalization, dict) else normalization
        for task, protocol, seed in itertools.product(tasks, protocols, range(seeds)):
            kwargs = dict(weights=w, preset=preset, protocol=protocol, seed=seed, cfg_options=cfg_options,
                          model_overrides=model_overrides, data_root=(data_roots or {}).get(task),
                          normalization=norm, trust=trust, strict=strict)
            pc = _planned(out, task, backbone, run_dir(out, task, backbone, w, protocol, seed), world, kwargs,
                          measured, flops=dry_run or slurm, gpu=gpu)
            if pc is not None:
                planned.append(pc)
    plan_by_dir = {c.work_dir: c for c in planned}
    write_plan(out, "table4", planned, executor=executor, backbone=backbone, preset=preset,
               slurm=asdict(slurm_opts) if slurm_opts else None)
    failures = 0
    for w in weights:
        norm = normalization.get(w) if isinstance(normalization, dict) else normalization
        for task in tasks:
            for protocol in protocols:
                for seed in range(seeds):
                    wd = run_dir(out, task, backbone, w, protocol, seed)
                    cell = {"task": task, "weights": w, "protocol": protocol, "seed": seed, "work_dir": str(wd)}
                    cells.append(cell)
                    kwargs = dict(weights=w, preset=preset, protocol=protocol, seed=seed, cfg_options=cfg_options,
                                  model_overrides=model_overrides, data_root=(data_roots or {}).get(task),
                                  normalization=norm, trust=trust, strict=strict)
                    pc = plan_by_dir.get(str(wd.absolute()))
                    if dry_run or slurm:
                        cell["state"] = pc.state if pc else "n/a"
                        continue
                    done = read_results(wd)
                    if done is not None and _matches(done, task, backbone, w, preset):
                        expected = pc.config_hash if pc is not None else expected_hash_or_none(
                            task, backbone, work_dir=wd, world_size=world, **kwargs)
                        if reusable(done, expected, str(wd)):
                            cell.update(state="done", value=done["value"], skipped=True,
                                        **_denominators(done))
                            log(f"[skip] {wd} (results.json exists with the same config hash)")
                            continue
                        log(f"[stale] {wd}: results.json ran another configuration (config hash differs); "
                            "running it again")
                        cell["stale"] = True   # until it runs again: a failed re-run leaves the old number

                    try:
                        the_task = get_task(task)
                        if protocol not in the_task.protocols:
                            cell.update(state="n/a", reason=f"{task} has no {protocol} protocol")
                            continue
                    except TaskNotAvailable as err:
                        cell.update(state="missing", reason=str(err))
                        log(f"[missing] {task}: task not available yet")
                        continue
                    resume = (wd / "last_checkpoint").is_file()
                    log(f"[{'resume' if resume else 'run'}] {task} {backbone} {weights_label(w)} {protocol} "
                        f"seed {seed} -> {wd}")
                    t0 = time.time()
                    try:
                        res = run_experiment(task, backbone, weights=w, preset=preset, protocol=protocol,
                                             work_dir=wd, seed=seed, cfg_options=cfg_options,
                                             model_overrides=model_overrides, launcher=launcher, resume=resume,
                                             data_root=(data_roots or {}).get(task), normalization=norm,
                                             trust=trust, strict=strict, tracking=tracking)
                        cell.update(state="done", value=res["value"], seconds=round(time.time() - t0, 1),
                                    **_denominators(res))
                        cell.pop("stale", None)
                    except UserError as err:  # missing data, weights not cached...: the rest of the grid goes on
                        failures += 1
                        cell.update(state="failed", reason=str(err))
                        log(f"[failed] {task} {weights_label(w)} seed {seed}: {err}")
                    write_json_atomic(out / "study.json", {"study": "table4", "backbone": backbone,
                                                           "preset": preset, "cells": cells})
    if dry_run or slurm:
        if dry_run:
            log(plan_table(planned))
            log(f"plan: {out / PLAN_NAME}")
            return {"study": "table4", "plan": str(out / PLAN_NAME), "cells": cells, "failures": 0, "report": {}}
        pending = submit_plan(out, planned, slurm_opts, name=f"table4-{backbone}", log=log)  # type: ignore[arg-type]
        if pending:
            log(f"{pending} cell(s) not done yet: `rs-transfer study status {out}` shows them; run this command "
                "again when they finish to write the report")
            return {"study": "table4", "plan": str(out / PLAN_NAME), "cells": cells, "failures": 0,
                    "report": {}, "pending": pending}
        for cell in cells:   # every cell done: study.json is derived from the cells' own results.json
            res = read_results(cell["work_dir"])
            if res is not None:
                cell.update(state="done", value=res["value"], **_denominators(res))
    base = baseline or (f"{backbone} / {weights_label(weights[0])}" + (" [mini]" if preset == "mini" else "")
                        if weights else None)
    try:
        rep = build_report([out], tasks=tasks, baseline=base, paper=paper, alpha=alpha)
    except UserError:  # the baseline row has no results (yet): report without differences
        rep = build_report([out], tasks=tasks, baseline=None, paper=paper, alpha=alpha)
    files = write_report(rep, out)
    files["html"] = write_table4_html(rep, out, dirs=[out])
    log_report(tracking, list(files.values()))
    study = {"study": "table4", "backbone": backbone, "preset": preset, "weights": list(weights), "tasks": tasks,
             "protocols": list(protocols), "seeds": seeds, "cells": cells, "failures": failures,
             "report": {k: str(v) for k, v in files.items()}}
    write_json_atomic(out / "study.json", study)
    return study


# ---- CLI (`rs-transfer study table4`) ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", required=True, help="registered model, e.g. resnet152")
    p.add_argument("--weights", nargs="+", required=True,
                   help="weight sources (named or files); 'none' = random initialisation. The first is the baseline")
    p.add_argument("--normalization", nargs="+", metavar="NORM",
                   help="input normalisation: one value for every --weights (imagenet, unit, swav, MEAN,STD), or "
                        "SRC=NORM pairs (default: what each source declares; else ImageNet, with a warning)")
    p.add_argument("--tasks", nargs="+", help="default: the five Table 4 tasks")
    p.add_argument("--protocols", nargs="+", default=["finetune"], help="e.g. finetune linear knn")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="seeds 0..N-1 per cell (mean and 95 %% interval over seeds, then test samples, in the report)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level for the paired differences to the baseline, after the "
                        "Benjamini-Hochberg correction (default 0.05)")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"],
                   help="paper: the paper's protocols; mini: tiny generated data in each task's real format, a few "
                        "iterations (minutes on a CPU; checks the machinery, not a benchmark)")
    p.add_argument("--out", default="studies/table4", help="study folder (default: studies/table4)")
    p.add_argument("--baseline", help="row for differences (default: the first --weights)")
    p.add_argument("--paper", dest="paper", action="store_true", default=None,
                   help="add the paper's Table 4 rows to the report (default: only for --preset paper)")
    p.add_argument("--no-paper", dest="paper", action="store_false", help="leave the paper's rows out")
    p.add_argument("--backbone-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="extra ResNetRS arguments for every run")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", default=[], help="config overrides, every run")
    p.add_argument("--launcher", default="none", choices=LAUNCHERS,
                   help="how this process was started: none (one process), pytorch (torchrun), slurm (srun); "
                        "every cell then runs on those processes (default: none)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load --weights even if backbone keys differ (as `run --no-strict`)")
    add_tracking(p)
    p.add_argument("--trust", action="store_true",
                   help="allow full unpickling of --weights files (only for files you trust)")
    add_executor_arguments(p)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options

    weights = [None if w.lower() in ("none", "scratch") else w for w in args.weights]
    if args.gpu and not 0 < args.assume_mfu <= 1:
        raise UserError(f"--assume-mfu is a fraction in (0, 1], not {args.assume_mfu}")
    norm = _normalization_arg(args.normalization)
    paper = args.paper if args.paper is not None else args.preset == "paper"
    study = run_table4(backbone=args.backbone, weights=weights, out_dir=args.out, tasks=args.tasks,
                       protocols=args.protocols, seeds=args.seeds, preset=args.preset, baseline=args.baseline,
                       paper=paper, model_overrides=parse_cfg_options(args.backbone_options),
                       cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                       normalization=norm, trust=args.trust, strict=args.strict, alpha=args.alpha,
                       executor=args.executor, dry_run=args.dry_run,
                       tracking=for_study(args.tracking, "table4", args.out),
                       gpu=(args.gpu, args.assume_mfu) if args.gpu else None,
                       slurm_opts=slurm_options(args, args.out) if args.executor == "slurm" else None)
    if not study["report"]:   # a dry run, or cells still running on the cluster
        return 0
    from pathlib import Path

    print(Path(study["report"]["md"]).read_text())
    print("report: " + ", ".join(study["report"].values()))
    return 1 if study["failures"] else 0


def _normalization_arg(values: list[str] | None) -> str | dict[str, str] | None:
    """``--normalization unit`` (every source) or ``--normalization ./a.pth=unit b=imagenet`` (per source)."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    from rs_transfer.errors import UserError

    pairs = [v.rpartition("=") for v in values]
    if any(not sep for _, sep, _ in pairs):
        raise UserError("--normalization takes one value for every --weights, or SRC=NORM pairs, not a mix")
    return {src: norm for src, _, norm in pairs}
