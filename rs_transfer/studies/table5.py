"""``rs-transfer study table5``: the paper's additive Kinetics-400 study, row by row through ``run_experiment``.

Row k turns on the first k ingredients of :data:`rs_transfer.video.recipes.TABLE5_ORDER` (every toggle is written
explicitly on or off, see rs_transfer/recipes.py) on the 3D ResNet-50 baseline; the last toggle (ResNet-D) ends
on the registered ``resnetrs3d50``, TF's 3D ResNet-RS-50. Each row runs in ``WORK_DIR/<row id>``; a row whose
``results.json`` recorded the configuration the row would run now (same config hash) is not run again, and a row
with a checkpoint resumes from it, so an interrupted study continues where it stopped. The report (Markdown, CSV,
JSON; each written atomically) puts the paper's top-1 and deltas beside ours (the paper gives no top-5), with the
denominators (eval videos, missing, corrupt) and the network each row ran.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rs_transfer.runner.tracking import Tracking, for_study, log_report
from rs_transfer.studies.args import (StudyArgs, add_additive_arguments, add_study_arguments, default_out,
                                      default_work_dir)
from rs_transfer.studies.seeded import delta_text, seeds_line, value_text
from rs_transfer.studies.tables import add_deltas, count, fmt, write_files

from rs_transfer.video.recipes import additive_rows, recipe_edits

# Paper Table 5 top-1 (%), additive, in TABLE5_ORDER (PROTOCOLS.md; also results/paper_table5.json).
PAPER_TOP1: dict[str, float] = {
    "00_baseline": 73.4, "01_dropout": 74.4, "02_label_smoothing": 74.9, "03_stochastic_depth": 76.1,
    "04_ema": 76.1, "05_weight_decay": 76.3, "06_epochs": 76.4, "07_scale_jitter": 77.4, "08_se": 77.9,
    "09_resnet_d": 78.2,
}
DEFAULT_BACKBONE = "resnet3d50"
STUDY_ARGS = StudyArgs(name="table5", unit="row", dataset="Kinetics-400",
                       mini="generated mp4 set, tiny model, minutes on a CPU",
                       cfg_options="after the row's own toggles")


def mini_model_overrides(backbone: str) -> dict[str, Any]:
    """The mini preset's tiny backbone: one block per stage at width 0.25, keeping each stage's first temporal
    kernel from the registered layout (CVRL for ``resnet3d50``: 3, 3, 3, 1)."""
    from rs_transfer.backbones import get_spec

    kernels = get_spec(backbone).kwargs.get("temporal_kernels", "cvrl")
    if isinstance(kernels, str):     # a named layout expands to any block count (video/resnet3d.py)
        return dict(layers=(1, 1, 1, 1), width=0.25)
    return dict(layers=(1, 1, 1, 1), width=0.25,
                temporal_kernels=tuple(k if isinstance(k, int) else tuple(k)[0] for k in kernels))


def _row_record(row_id: str, label: str, enabled: tuple[str, ...], runs: list[dict[str, Any]],
                reused: bool) -> dict[str, Any]:
    """A row over its seeds' runs: top-1/top-5 means with the interval (rs_transfer/studies/seeded.py); the counts
    and the network are the first seed's (the same data and model for every seed)."""
    from rs_transfer.studies.seeded import combine

    results = runs[0]
    m = results["metrics"]
    extra = results.get("extra") or {}
    return dict(id=row_id, label=label, toggles=list(enabled), **combine(runs, ("top1", "top5")),
                paper_top1=PAPER_TOP1.get(row_id),
                eval_videos=m.get("eval_videos"), missing=m.get("eval_missing"), corrupt=m.get("eval_corrupt"),
                skipped_videos=m.get("skipped_videos"), architecture=extra.get("architecture"),
                work_dir=results.get("work_dir"), reused=reused)


def _cells(work_dir: Path, backbone: str, preset: str, seeds: list[int], max_rows: int | None,
           cfg_options: dict[str, Any] | None, model_overrides: dict[str, Any] | None,
           common: dict[str, Any]) -> Iterator[tuple[str, int, Path, dict[str, Any]]]:
    """``(row id, seed, run folder, run_experiment kwargs without work_dir)`` of every run: one list for the plan
    and the loop, so that what is planned (and submitted) is exactly what the loop then reuses."""
    from rs_transfer.studies.seeded import seed_dir

    base_model = mini_model_overrides(backbone) if preset == "mini" else {}
    for row_id, _, enabled in additive_rows()[:max_rows]:
        opts, model = recipe_edits(enabled)
        for s in seeds:
            yield row_id, s, seed_dir(work_dir / row_id, s, seeds[0]), {
                **common, "seed": s, "cfg_options": {**opts, **(cfg_options or {})},
                "model_overrides": {**base_model, **model, **(model_overrides or {})}}


def run_study(*, preset: str = "paper", backbone: str = DEFAULT_BACKBONE, weights: str | None = None,
              work_dir: str | Path | None = None, out: str | Path | None = None, data_root: str | None = None,
              seed: int = 0, config: str | None = None, cfg_options: dict[str, Any] | None = None,
              model_overrides: dict[str, Any] | None = None, max_rows: int | None = None,
              launcher: str = "none", runner: Callable[..., dict] | None = None,
              log: Callable[[str], Any] = print, seeds: int = 1, executor: str = "local", dry_run: bool = False,
              slurm_opts: Any = None, gpu: tuple[str, float] | None = None,
              tracking: Tracking | None = None) -> dict[str, Any] | None:
    """Run (or resume) every row and write the report; returns the report dict. ``dry_run``: write and print the
    plan (``WORK_DIR/plan.json``, one cell per row and seed) only; ``executor="slurm"``: submit the runs still to do
    as one job array (``slurm_opts``); both return None until every run is done (the same call again reports).

    A row's existing results.json is reused only when its recorded config hash equals the hash of the config the
    row would run now (``rs_transfer.studies.plan.expected_hash``): another ``--cfg-options``, seed, backbone or code
    default runs the row again. ``seeds``: runs per row (seed, seed + 1, ...), each in its own folder and reused by
    its own hash (rs_transfer/studies/seeded.py)."""
    from rs_transfer.studies.planning import cell_world, plan_study
    from rs_transfer.studies.seeded import paired_step, seeds_of
    from rs_transfer.studies.plan import run_or_reuse

    if runner is None:
        from rs_transfer.runner import run_experiment as runner
    work_dir = Path(work_dir or default_work_dir(STUDY_ARGS.name, preset))
    out = Path(out or default_out(STUDY_ARGS.name, preset))
    track = {"tracking": tracking} if tracking is not None else {}   # a test's stand-in runner takes none
    world = cell_world(executor, slurm_opts, launcher)   # a SLURM cell's own world size, also when collecting
    cells = list(_cells(work_dir, backbone, preset, seeds_of(seed, seeds), max_rows, cfg_options, model_overrides,
                        dict(weights=weights, preset=preset, config=config, data_root=data_root)))
    if (dry_run or executor == "slurm") and not plan_study(
            work_dir, "table5", "kinetics400", backbone, ((c[2], c[3]) for c in cells), finished=None,
            launcher=launcher, executor=executor, dry_run=dry_run, slurm_opts=slurm_opts, gpu=gpu, log=log,
            preset=preset):
        return None
    rows: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] = []
    for row_id, label, enabled in additive_rows()[:max_rows]:
        runs, all_reused = [], True
        for row_dir, kw in ((c[2], c[3]) for c in cells if c[0] == row_id):   # each seed its own folder and hash
            results, reused = run_or_reuse(runner, "kinetics400", backbone, row_dir, kw, world=world,
                                           launcher=launcher, finished=None, extra=track, log=log)
            runs.append(results)
            all_reused = all_reused and reused
        rows.append(_row_record(row_id, label, enabled, runs, all_reused))
        if previous:
            rows[-1].update(paired_step(previous, runs))
        previous = runs
    add_deltas(rows)
    report = dict(study="table5", preset=preset, backbone=backbone, weights=weights, seed=seed, seeds=seeds,
                  rows=rows,
                  note=("MINI preset: tiny generated data and model; checks the machinery, not the paper's numbers; "
                        "intervals from a mini set mean nothing" if preset == "mini" else ""))
    log_report(tracking, write_report(report, out))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Table 5: additive study, Kinetics-400 ({report['backbone']}, preset {report['preset']})", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    lines += ["| Improvements | Top-1 (paper) | Δ (paper) | Top-1 (ours) | Δ (ours) | Top-5 (ours) | eval videos "
              "| missing | corrupt |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {fmt(r['paper_top1'])} | {fmt(r['paper_delta'], True)} | "
                     f"{value_text(r)} | {delta_text(r)} | {fmt(r['top5'])} | "
                     f"{count(r.get('eval_videos'))} | {count(r.get('missing'))} | {count(r.get('corrupt'))} |")
    lines += ["", "Evaluation: multi-view (clips x crops) softmax average over the readable val videos; missing = "
                  "csv rows without a file, corrupt = files no decoder reads (both left out and counted).",
              seeds_line(report["rows"]), "",
              "Network of each row (the last one is TF Model Garden's 3D ResNet-RS-50, the paper's 78.2):", ""]
    lines += [f"- {r['id']}: {r.get('architecture') or 'not recorded'}" for r in report["rows"]]
    return "\n".join(lines) + "\n"


COLUMNS = ("id", "label", "paper_top1", "paper_delta", "top1", "top1_low", "top1_high", "seeds", "delta",
           "delta_low", "delta_high", "delta_p", "top5", "eval_videos", "missing", "corrupt", "skipped_videos",
           "architecture", "interval_note")


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """``OUT.md``, ``OUT.csv``, ``OUT.json``, ``OUT.html``, each replaced atomically (never half-written)."""
    from rs_transfer.studies.htmlpage import write_rows_html

    return (write_files(out, report, markdown=to_markdown(report), columns=COLUMNS)
            + [write_rows_html(report, COLUMNS, out)])


# ---- CLI (dispatched from `rs-transfer study table5`) ---------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, STUDY_ARGS)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="3D model name (default: resnet3d50)")
    parser.add_argument("--weights", default=None, help="2D or 3D checkpoint; 2D kernels are inflated")
    add_additive_arguments(parser, STUDY_ARGS, config="kinetics400.py",
                           backbone_example="layout=2d (inflate 2D checkpoints key for key) or inflate=mean")
    from rs_transfer.studies.executor import add_executor_arguments

    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.studies.executor import slurm_options

    work_dir = args.work_dir or default_work_dir(STUDY_ARGS.name, args.preset)
    report = run_study(preset=args.preset, backbone=args.backbone, weights=args.weights, work_dir=args.work_dir,
                       out=args.out, data_root=args.data_root, seed=args.seed, config=args.config,
                       cfg_options=parse_cfg_options(args.cfg_options),
                       model_overrides=parse_cfg_options(args.backbone_options), max_rows=args.rows,
                       launcher=args.launcher, seeds=args.seeds, executor=args.executor, dry_run=args.dry_run,
                       gpu=(args.gpu, args.assume_mfu) if args.gpu else None,
                       slurm_opts=slurm_options(args, work_dir) if args.executor == "slurm" else None,
                       tracking=for_study(args.tracking, STUDY_ARGS.name, work_dir))
    if report is None:   # a dry run, or rows still running on the cluster
        return 0
    print(to_markdown(report))
    out = Path(args.out or default_out(STUDY_ARGS.name, args.preset))
    print(f"wrote {out.with_suffix('.md')}, .csv, .json, .html")
    return 0


def paper_table() -> list[dict[str, Any]]:
    """The paper's rows as written to results/paper_table5.json."""
    prev, out = None, []
    for row_id, label, enabled in additive_rows():
        top1 = PAPER_TOP1[row_id]
        out.append(dict(id=row_id, label=label, toggles=list(enabled), top1=top1,
                        delta=None if prev is None else round(top1 - prev, 2)))
        prev = top1
    return out


if __name__ == "__main__":  # regenerate results/paper_table5.json
    print(json.dumps({"source": "Bello et al. 2021, Table 5 (Kinetics-400 top-1, 3D ResNet-50, additive)",
                      "rows": paper_table()}, indent=2))
