"""``rs-transfer study transfer12``: Kornblith, Shlens & Le 2019's classification transfer suite for several weight
sources (datasets x sources), one protocol per study (linear, finetune or fewshot), and its report.

Cells: (source, dataset, [shots k for fewshot], seed), each a run in ``OUT/<task>/<backbone>-<weights>-<protocol>
[-kK]-seed<s>`` on the one runner. A finished cell is reused only through THE reuse rule
(:func:`rs_transfer.studies.reuse.reusable` against :func:`rs_transfer.studies.plan.expected_hash_or_none`); the
frozen features are cached in ``OUT/features`` (``tasks/_frozen.py``: a second seed, another k or the linear probe
reuse them). A few-shot cell probes one k with ``--episodes`` draws (``probe.shots=[k]``), so each k has its own
identity and the draws are part of it.

Like the other studies it is a plan of cells (``rs_transfer/studies/planning.py``): ``--dry-run`` prints the plan and
writes ``OUT/plan.json``; ``--executor slurm`` submits the cells not done as one SLURM array and the same command
again collects them and writes the report. Each planned cell carries the feature cache as its environment
(:func:`feature_env`, ``PlannedCell.env``), so a cell job on a compute node caches into ``OUT/features`` too.

Report (``OUT/report.{md,csv,json,png}``): per protocol (and k) a table of datasets x sources (mean over seeds of
the task's headline metric: top-1, mean per-class accuracy, 11-point mAP), the mean over datasets and the mean
log-odds (Kornblith et al.'s average of log(p / (1 - p)), p the accuracy as a fraction, clipped to [0.001,
0.999]), both over the datasets every source has; Spearman's rank correlation of the mean log-odds with ImageNet
top-1 over the sources that record it (the weight catalog, or ``--imagenet-top1 SOURCE=VALUE``; three sources at
least); and a plot of mean log-odds against ImageNet top-1 (Kornblith et al.'s Figure 1 layout).

Birdsnap (the suite's 12th dataset) is left out: it has no stable release (the image URLs of its list have decayed).
Reference rows (linear and finetune): SimCLR's Table 8 (ResNet-50 (4x)) and Table B.5 (ResNet-50), SimCLR and its
supervised baselines under Kornblith et al.'s protocol, from ``results/paper_transfer12.json``; shown apart from the
study's rows and never part of its rank correlation. Kornblith et al.'s own per-network tables are not included
(README, "Transfer suite").
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.studies.args import positive_int
from rs_transfer.studies.executor import SlurmOptions, add_executor_arguments, slurm_options

# the report lives in transfer12_report.py; its names are re-exported here (tests and users import them from here)
from rs_transfer.studies.transfer12_report import (build_report, log_odds, paper_rows, to_csv,  # noqa: F401
                                                  to_markdown, to_png, write)

PROTOCOL_CHOICES = ("linear", "finetune", "fewshot")


def parse_source(text: str, backbone: str) -> tuple[str, str | None]:
    """``SOURCE`` (on ``--backbone``) or ``BACKBONE@SOURCE``; ``none`` = random initialisation."""
    bb, sep, src = text.partition("@")
    if not sep:
        bb, src = backbone, text
    return bb, None if src.lower() in ("none", "scratch") else src


def source_label(backbone: str, weights: str | None) -> str:
    from rs_transfer.studies.report import weights_label

    return f"{backbone} / {weights_label(weights)}"


def imagenet_top1(weights: str | None, given: dict[str, float]) -> float | None:
    """``--imagenet-top1`` first, else the weight catalog's ``imagenet_top1`` for a named source."""
    from rs_transfer.studies.report import weights_label

    label = weights_label(weights)
    if label in given:
        return given[label]
    if weights:
        from rs_transfer.weights.catalog import SOURCES

        spec = SOURCES.get(weights)
        if spec is not None and spec.imagenet_top1 is not None:
            return float(spec.imagenet_top1)
    return None


def feature_env(out: Path) -> dict[str, str]:
    """The study's own feature cache, ``OUT/features``, as the environment every run of the study gets: set around
    the runs here and given to each planned cell (``PlannedCell.env``), so that a SLURM cell job's run extracts
    into, and reuses, the same folder. An environment variable, not a run option: where the features are kept is
    no part of a cell's identity (they are keyed by their content)."""
    from rs_transfer.tasks._frozen import FEATURE_CACHE_ENV

    return {FEATURE_CACHE_ENV: str(out.absolute() / "features")}


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process for the local runs, the previous values back afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _grid(out: Path, sources: list[tuple[str, str | None]], labels: list[str], tasks: list[str],
          ks: list[int | str | None], seeds: int, protocol: str, **common: Any) -> Iterator[tuple[dict, dict | None]]:
    """Every cell in report order: its study.json record and its ``run_experiment`` keyword arguments without
    ``work_dir`` (None, and the record marked n/a, where the task has no such protocol). ``common``: ``preset``,
    ``episodes``, ``cfg_options``, ``model_overrides``."""
    from rs_transfer.studies.report import weights_label
    from rs_transfer.tasks import get_task
    from rs_transfer.tasks._frozen import shots_option

    episodes, cfg_options = common.pop("episodes"), common.pop("cfg_options")
    for (bb, w), label in zip(sources, labels):
        for task in tasks:
            runnable = protocol in get_task(task).protocols
            for k, seed in itertools.product(ks, range(seeds)):
                opts = dict(cfg_options or {})
                if k is not None:
                    opts.update(shots_option([str(k)], episodes))
                tag = f"-k{k}" if k is not None else ""
                wd = out / task / f"{bb}-{weights_label(w)}-{protocol}{tag}-seed{seed}"
                cell = {"source": label, "backbone": bb, "weights": w, "task": task, "shots": k, "seed": seed,
                        "work_dir": str(wd)}
                if not runnable:
                    cell.update(state="n/a", reason=f"{task} has no {protocol} protocol")
                yield cell, (dict(weights=w, protocol=protocol, seed=seed, cfg_options=opts, **common)
                             if runnable else None)


def run_transfer12(*, sources: list[tuple[str, str | None]], protocol: str, out_dir: str | Path,
                   tasks: list[str] | None = None, shots: list[int | str] | None = None, episodes: int | None = None,
                   seeds: int = 1, preset: str = "paper", cfg_options: dict | None = None,
                   model_overrides: dict | None = None, given_top1: dict[str, float] | None = None,
                   executor: str = "local", dry_run: bool = False, slurm_opts: SlurmOptions | None = None,
                   gpu: tuple[str, float] | None = None, log: Any = print) -> dict[str, Any] | None:
    """Run every cell not done yet (the reuse rule), then write the report. Returns the report dict.
    ``dry_run``: write and print the plan (``OUT/plan.json``) only; ``executor="slurm"``: submit the cells not done
    as one job array (``slurm_opts``); both return None until every cell is done (the same call again collects
    the cells' runs and writes the report). ``gpu``: ``(device name, MFU)`` for FLOPs-based estimates."""
    from rs_transfer.atomic import write_json_atomic
    from rs_transfer.results import read_results
    from rs_transfer.runner import run_experiment
    from rs_transfer.studies.plan import expected_hash_or_none
    from rs_transfer.studies.planning import cell_world, measured_throughput, plan_cell, plan_or_submit
    from rs_transfer.studies.reuse import reusable
    from rs_transfer.tasks import TRANSFER12_TASKS, get_task
    from rs_transfer.tasks._frozen import shots_option

    if protocol not in PROTOCOL_CHOICES:
        raise UserError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOL_CHOICES)}")
    out = Path(out_dir)
    tasks = list(tasks or TRANSFER12_TASKS)
    for t in tasks:
        get_task(t)                                   # an unknown name fails now, not after hours
    labels = [source_label(*s) for s in sources]
    if len(set(labels)) != len(labels):
        raise UserError("--weights lists a source twice; name each source once")
    ks: list[int | str | None] = list(shots_option([str(k) for k in shots], None)["probe.shots"]) \
        if protocol == "fewshot" and shots else ([None] if protocol != "fewshot" else
                                                 [1, 2, 5] if preset == "mini" else [1, 2, 5, 10, 25])
    grid = list(_grid(out, sources, labels, tasks, ks, seeds, protocol, preset=preset, episodes=episodes,
                      cfg_options=cfg_options, model_overrides=model_overrides))
    world = cell_world(executor, slurm_opts, "none")   # a SLURM cell's own world size, also when collecting
    env = feature_env(out)
    planned_hash: dict[str, str | None] = {}
    if dry_run or executor == "slurm":
        measured = measured_throughput(out)
        planned = [plan_cell(out, str(Path(c["work_dir"]).relative_to(out)), c["task"], c["backbone"],
                             Path(c["work_dir"]), world, kw, measured, flops=True, gpu=gpu, env=env)
                   for c, kw in grid if kw is not None]
        if not plan_or_submit(out, "transfer12", planned, executor=executor, dry_run=dry_run, slurm_opts=slurm_opts,
                              log=log, protocol=protocol, preset=preset, tasks=tasks, sources=labels):
            return None
        planned_hash = {c.work_dir: c.config_hash for c in planned}
    cells: list[dict[str, Any]] = []
    with _environ(env):
        for cell, kwargs in grid:
            cells.append(cell)
            if kwargs is None:                        # n/a: the task has no such protocol
                continue
            task, bb, wd = cell["task"], cell["backbone"], Path(cell["work_dir"])
            done = read_results(wd)
            expected = planned_hash.get(str(wd.absolute())) or expected_hash_or_none(
                task, bb, work_dir=wd, world_size=world, **kwargs)
            if done is not None and reusable(done, expected, str(wd)):
                cell.update(state="done", value=done["value"], reused=True)
                log(f"[skip] {wd} (same config hash)")
                continue
            tag = f"-k{cell['shots']}" if cell["shots"] is not None else ""
            log(f"[run] {task} {cell['source']} {protocol}{tag} seed {cell['seed']}")
            t0 = time.time()
            try:
                res = run_experiment(task, bb, work_dir=wd, resume=(wd / "last_checkpoint").is_file(), **kwargs)
                cell.update(state="done", value=res["value"], seconds=round(time.time() - t0, 1))
            except UserError as err:     # missing data...: the rest of the grid goes on
                cell.update(state="failed", reason=str(err))
                log(f"[failed] {task} {cell['source']}: {err}")
            write_json_atomic(out / "study.json", {"study": "transfer12", "cells": cells})
    top1 = {label: imagenet_top1(w, given_top1 or {}) for (bb, w), label in zip(sources, labels)}
    report = build_report(cells, tasks, labels, protocol, ks, top1, preset)
    write_json_atomic(out / "study.json", {"study": "transfer12", "protocol": protocol, "preset": preset,
                                           "tasks": tasks, "sources": labels, "cells": cells})
    report["files"] = {k: str(v) for k, v in write(report, out).items()}
    return report


# ---- CLI -----------------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+",
                   help="weight sources (named, files, or BACKBONE@SOURCE); 'none' = random initialisation "
                        "(default with --preset mini: none; required otherwise)")
    p.add_argument("--backbone", default="resnet50", help="backbone of sources given without BACKBONE@ "
                                                         "(default: resnet50)")
    p.add_argument("--protocol", default="linear", choices=PROTOCOL_CHOICES, help="default: linear")
    p.add_argument("--shots", nargs="+", metavar="K",
                   help="fewshot: images per class (default 1 2 5 10 25; mini: 1 2 5), and/or vtab1k")
    p.add_argument("--episodes", type=positive_int, help="fewshot: draws per k (default: the config's, 5)")
    p.add_argument("--tasks", nargs="+", help="default: the eleven suite datasets (with cifar100)")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds 0..N-1 per cell (default 1)")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"],
                   help="paper: the documented protocols; mini: the generated mini datasets (a smoke test)")
    p.add_argument("--out", default=None, help="study folder (default: studies/transfer12[-mini])")
    p.add_argument("--imagenet-top1", nargs="+", metavar="SOURCE=VALUE", default=[],
                   help="ImageNet top-1 of sources the weight catalog does not record (label as in the report)")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", default=[], help="config edits, every run")
    p.add_argument("--backbone-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="extra ResNetRS arguments for every run")
    add_executor_arguments(p)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options

    given = {}
    for item in args.imagenet_top1:
        src, sep, val = item.rpartition("=")
        try:
            given[src] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--imagenet-top1 takes SOURCE=VALUE, got {item!r}")
    if not args.weights and args.preset != "mini":
        raise UserError("study transfer12: name the weight sources to compare with --weights")
    if args.gpu and not 0 < args.assume_mfu <= 1:
        raise UserError(f"--assume-mfu is a fraction in (0, 1], not {args.assume_mfu}")
    out = args.out or f"studies/transfer12{'-mini' if args.preset == 'mini' else ''}"
    rep = run_transfer12(sources=[parse_source(w, args.backbone) for w in args.weights or ["none"]],
                         protocol=args.protocol, out_dir=out, tasks=args.tasks, shots=args.shots,
                         episodes=args.episodes, seeds=args.seeds, preset=args.preset,
                         cfg_options=parse_cfg_options(args.cfg_options),
                         model_overrides=parse_cfg_options(args.backbone_options), given_top1=given,
                         executor=args.executor, dry_run=args.dry_run,
                         gpu=(args.gpu, args.assume_mfu) if args.gpu else None,
                         slurm_opts=slurm_options(args, out) if args.executor == "slurm" else None)
    if rep is None:   # a dry run, or cells still running on the cluster
        return 0
    print(to_markdown(rep))
    print("report: " + ", ".join(rep["files"].values()))
    return 0
