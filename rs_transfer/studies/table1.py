"""``rs-transfer study table1``: the paper's additive ImageNet study (Table 1, left), row by row through the runner.

Row k turns on the first k ingredients of :data:`rs_transfer.recipes.TABLE1` (every toggle written explicitly, on
or off) on a vanilla ResNet-200 at 256 px trained for the standard 90 epochs with step decay; the last two rows add
SE and ResNet-D, ending on ResNet-RS-200 with the full RS recipe. Each row runs in ``WORK_DIR/<row id>``. A row is
reused when a finished run in the study recorded exactly the configuration the row would run now (config hash,
:func:`rs_transfer.studies.plan.expected_hash`, the one reuse rule of :mod:`rs_transfer.studies.reuse`: another ``--cfg-options`` or code default runs it again); a row with a
checkpoint resumes from it. The report (Markdown, CSV, JSON, each written atomically) puts the paper's top-1 and
deltas beside ours, with top-5 and, when ``recipe.minival=True``, minival top-1.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rs_transfer.recipes import TABLE1, arch_of
from rs_transfer.runner.tracking import Tracking, for_study, log_report
from rs_transfer.studies.args import (StudyArgs, add_additive_arguments, add_study_arguments, default_out,
                                      default_work_dir)
from rs_transfer.studies.seeded import delta_text, seeds_line, value_text
from rs_transfer.studies.tables import add_deltas, fmt, write_files

# Paper Table 1 (left), ImageNet validation top-1 (%), averaged over 2 runs, in TABLE1.order.
PAPER_TOP1: dict[str, float] = {
    "00_baseline": 79.0, "01_cosine": 79.3, "02_epochs": 78.8, "03_ema": 79.1, "04_label_smoothing": 80.4,
    "05_stochastic_depth": 80.6, "06_randaugment": 81.0, "07_dropout": 80.7, "08_weight_decay": 82.2,
    "09_se": 82.9, "10_resnet_d": 83.4,
}
DEFAULT_BACKBONE = "resnet200"
RESOLUTION = 256          # "The baseline ResNet-200 is trained at resolution 256 x 256"
MINI_MODEL = dict(layers=(1, 1, 1, 1), width=0.25)   # depth stays 200: the size-dependent values are RS-200's
STUDY_ARGS = StudyArgs(name="table1", unit="row", dataset="ILSVRC2012",
                       mini="generated ImageNet-format set, tiny ResNet-200, minutes on a CPU",
                       cfg_options="after the row's toggles (e.g. recipe.minival=True)")


def row_edits(enabled: tuple[str, ...], backbone: str, preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cfg_options, model_overrides)`` of one row (before the user's own options)."""
    base = dict(MINI_MODEL) if preset == "mini" else {}
    opts, model = TABLE1.edits(enabled, arch_of(backbone, base))
    return {**opts, "recipe.resolution": RESOLUTION}, {**base, **model}


def run_study(*, preset: str = "paper", backbone: str = DEFAULT_BACKBONE, weights: str | None = None,
              work_dir: str | Path | None = None, out: str | Path | None = None, data_root: str | None = None,
              seed: int = 0, config: str | None = None, cfg_options: dict[str, Any] | None = None,
              model_overrides: dict[str, Any] | None = None, max_rows: int | None = None,
              launcher: str = "none", runner: Callable[..., dict] | None = None, seeds: int = 1,
              executor: str = "local", dry_run: bool = False, slurm_opts: Any = None,
              gpu: tuple[str, float] | None = None, log: Callable[[str], Any] = print,
              tracking: Tracking | None = None) -> dict[str, Any] | None:
    """Run (or reuse, or resume) every row, ``seeds`` runs each (seed, seed + 1, ...: rs_transfer/studies/seeded.py),
    and write the report; returns the report dict. ``dry_run``: write and print the plan (``WORK_DIR/plan.json``)
    only; ``executor="slurm"``: submit the runs still to do as one job array (``slurm_opts``); both return None until
    every run is done (the same call again writes the report)."""
    from rs_transfer.studies.planning import cell_world
    from rs_transfer.studies.seeded import combine, paired_step, seed_dir, seeds_of
    from rs_transfer.studies.plan import run_or_reuse
    from rs_transfer.studies.reuse import finished_runs

    if runner is None:
        from rs_transfer.runner import run_experiment as runner
    work_dir = Path(work_dir or default_work_dir(STUDY_ARGS.name, preset))
    out = Path(out or default_out(STUDY_ARGS.name, preset))
    track = {"tracking": tracking} if tracking is not None else {}   # a test's stand-in runner takes none
    finished = finished_runs(work_dir)
    world = cell_world(executor, slurm_opts, launcher)   # a SLURM cell's own world size, also when collecting
    if dry_run or executor == "slurm":
        if not _plan(work_dir, backbone, preset, finished, dict(weights=weights, preset=preset, config=config,
                     data_root=data_root), seeds_of(seed, seeds), cfg_options, model_overrides, max_rows, launcher,
                     executor=executor, dry_run=dry_run, slurm_opts=slurm_opts, gpu=gpu, log=log):
            return None
    rows: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] = []
    for row_id, label, enabled in TABLE1.additive_rows()[:max_rows]:
        opts, model = row_edits(enabled, backbone, preset)
        # recipe.name: the row travels with the run's results and exported weights ("table1:03_ema").
        opts = {**opts, "recipe.name": f"table1:{row_id}", **(cfg_options or {})}
        model = {**model, **(model_overrides or {})}
        row_dir = work_dir / row_id
        runs, all_reused = [], True
        for s in seeds_of(seed, seeds):    # each seed its own run folder, reused by its own config hash
            sdir = seed_dir(row_dir, s, seed)
            kw = dict(weights=weights, preset=preset, seed=s, config=config, cfg_options=opts,
                      model_overrides=model, data_root=data_root)
            results, reused = run_or_reuse(runner, "imagenet", backbone, sdir, kw, world=world, launcher=launcher,
                                           finished=finished, extra=track)
            runs.append(results)
            all_reused = all_reused and reused
        m = runs[0]["metrics"]
        rows.append(dict(id=row_id, label=label, toggles=list(enabled),
                         **combine(runs, ("top1", "top5", "minival_top1")),
                         paper_top1=PAPER_TOP1.get(row_id), eval_skipped=m.get("eval_skipped"),
                         work_dir=str(runs[0].get("work_dir", row_dir)), reused=all_reused))
        if previous:
            rows[-1].update(paired_step(previous, runs))
        previous = runs
    add_deltas(rows)
    report = dict(study="table1", preset=preset, backbone=backbone, weights=weights, seed=seed, seeds=seeds,
                  rows=rows,
                  note=("MINI preset: tiny generated data and model; checks the machinery, not the paper's numbers; "
                        "intervals from a mini set mean nothing" if preset == "mini" else ""))
    log_report(tracking, write_report(report, out))
    return report


def _plan(work_dir: Path, backbone: str, preset: str, finished: dict[str, Any], common: dict[str, Any],
          seeds: list[int], cfg_options: dict[str, Any] | None, model_overrides: dict[str, Any] | None,
          max_rows: int | None, launcher: str, **how: Any) -> bool:
    """The rows as a plan (:func:`rs_transfer.studies.planning.plan_study`), one cell per row and seed (the
    folders of ``seed_dir``): printed (``dry_run``) or submitted to SLURM. True when every cell is done (the caller
    then reports). ``how``: ``executor``, ``dry_run``, ``slurm_opts``, ``gpu``, ``log``."""
    from rs_transfer.studies.planning import plan_study
    from rs_transfer.studies.seeded import seed_dir

    def cells() -> Iterator[tuple[Path, dict[str, Any]]]:
        for row_id, _, enabled in TABLE1.additive_rows()[:max_rows]:
            opts, model = row_edits(enabled, backbone, preset)
            kw = {**common, "cfg_options": {**opts, "recipe.name": f"table1:{row_id}", **(cfg_options or {})},
                  "model_overrides": {**model, **(model_overrides or {})}}
            for s in seeds:
                yield seed_dir(work_dir / row_id, s, seeds[0]), {**kw, "seed": s}

    return plan_study(work_dir, "table1", "imagenet", backbone, cells(), finished=finished, launcher=launcher,
                      preset=preset, **how)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Table 1: additive study, ImageNet ({report['backbone']} at {RESOLUTION} px, preset "
             f"{report['preset']})", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    lines += ["| Improvements | Top-1 (paper) | Δ (paper) | Top-1 (ours) | Δ (ours) | Top-5 (ours) | minival top-1 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {fmt(r['paper_top1'])} | {fmt(r['paper_delta'], True)} | "
                     f"{value_text(r)} | {delta_text(r)} | {fmt(r['top5'])} | "
                     f"{fmt(r['minival_top1'])} |")
    lines += ["", "Paper: ImageNet validation top-1, mean of 2 runs (Bello et al. 2021, Table 1 left). "
              + seeds_line(report["rows"]) + " Unreadable evaluation images are left out and counted "
              "(eval_skipped)."]
    return "\n".join(lines) + "\n"


COLUMNS = ("id", "label", "paper_top1", "paper_delta", "top1", "top1_low", "top1_high", "seeds", "delta", "delta_low",
           "delta_high", "delta_p", "top5", "minival_top1", "eval_skipped", "interval_note")


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """``OUT.md``, ``OUT.csv``, ``OUT.json``, ``OUT.html``, each replaced atomically (never half-written)."""
    from rs_transfer.studies.htmlpage import write_rows_html

    return (write_files(out, report, markdown=to_markdown(report), columns=COLUMNS)
            + [write_rows_html(report, COLUMNS, out)])


# ---- CLI (dispatched from `rs-transfer study table1`) ---------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, STUDY_ARGS)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="vanilla model to start from (default "
                                                                     "resnet200, as the paper)")
    parser.add_argument("--weights", default=None, help="initial weights (default: random, as the paper)")
    add_additive_arguments(parser, STUDY_ARGS, config="imagenet.py")
    from rs_transfer.studies.executor import add_executor_arguments

    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.studies.executor import slurm_options

    report = run_study(preset=args.preset, backbone=args.backbone, weights=args.weights, work_dir=args.work_dir,
                       out=args.out, data_root=args.data_root, seed=args.seed, config=args.config,
                       cfg_options=parse_cfg_options(args.cfg_options),
                       model_overrides=parse_cfg_options(args.backbone_options), max_rows=args.rows,
                       launcher=args.launcher, seeds=args.seeds, executor=args.executor, dry_run=args.dry_run,
                       tracking=for_study(args.tracking, STUDY_ARGS.name,
                                          args.work_dir or default_work_dir(STUDY_ARGS.name, args.preset)),
                       gpu=(args.gpu, args.assume_mfu) if args.gpu else None,
                       slurm_opts=slurm_options(args, args.work_dir or default_work_dir(STUDY_ARGS.name, args.preset))
                       if args.executor == "slurm" else None)
    if report is None:   # a dry run, or rows still running on the cluster
        return 0
    print(to_markdown(report))
    out = Path(args.out or default_out(STUDY_ARGS.name, args.preset))
    print(f"wrote {out.with_suffix('.md')}, .csv, .json, .html")
    return 0
