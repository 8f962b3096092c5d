"""``rs-transfer study scaling``: the paper's section 6 grid (depth x width x resolution x epochs) on ImageNet.

Every cell is a ResNet-RS (SE, ResNet-D) trained with the RS recipe (:data:`rs_transfer.recipes.TABLE1` recipe
``rs``, its size-dependent values computed for the cell's depth and resolution: stochastic depth from depth 200,
RandAugment 15 above depth 50, dropout 0.4 at 320 px and above) at the cell's resolution and length, in
``WORK_DIR/<cell>``; finished cells are reused by config hash, interrupted ones resume. The paper tunes the
regularisation per model (its Appendix F, not available to us); these are the released configs' values.

The report gives per cell top-1 (val; minival too when ``recipe.minival=True``, the paper's Figures 2-4 use
minival), FLOPs (one 1000-class forward at the cell's resolution, multiply-add = 2, Table 2's convention),
training time and inference time (ms per image of a forward pass at batch ``--latency-batch``, median of 5, on
this machine), and plots top-1 against FLOPs, training time and inference time (``OUT.png``), one line per
(epochs, width) through the depths, as the paper's Figures 2-4 do.

Training time is results.json's ``train_time_s`` (:class:`rs_transfer.runner.hooks.TrainTimeHook`): the train loop's
iterations and data-loading waits, without start-up, validation and checkpoint writes, summed over every segment
of a resumed cell; training images/s is ``train_images_per_s`` (all processes). ``wall_time_s`` is never used: it
includes start-up and validation and covers only the last segment of a resumed run. A reused results.json written
before training time was measured (or resumed from a checkpoint of that time) has no ``train_time_s``: its cell
is marked (``train_time_missing``, "n/a" and a
footnote in the table, no point in the training-time plot) until it runs again.

``--preset mini``: the generated ImageNet-format set, one block per stage (two for the deepest stage of depths
above 100, so depth still changes the model), widths x 0.25, resolution = paper resolution / 5.
"""
from __future__ import annotations

import argparse
import io
import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rs_transfer.recipes import TABLE1, Arch
from rs_transfer.runner.tracking import Tracking, for_study, log_report
from rs_transfer.studies.args import StudyArgs, add_study_arguments, default_out, default_work_dir
from rs_transfer.studies.seeded import seeds_line, value_text

BACKBONE = "resnetrs50"   # the RS architecture; depth and width are overridden per cell
STUDY_ARGS = StudyArgs(name="scaling", unit="cell", dataset="ILSVRC2012",
                       mini="generated ImageNet-format set, stand-in models (one block per stage, widths x 0.25) at "
                            "resolution / 5",
                       cfg_options="after the cell's recipe (e.g. recipe.minival=True, as the paper's figures)",
                       outputs="OUT.md, OUT.csv, OUT.json, OUT.png, OUT.html")


def cell_id(depth: int, width: float, resolution: int, epochs: int) -> str:
    return f"d{depth}-w{width:g}-r{resolution}-e{epochs}"


def cell_model(depth: int, width: float, preset: str) -> dict[str, Any]:
    """Backbone overrides of one cell (mini: a tiny stand-in whose size still grows with depth)."""
    if preset != "mini":
        return dict(depth=depth, width=width)
    layers = (1, 1, 2 if depth > 100 else 1, 1)
    return dict(depth=depth, layers=layers, width=width * 0.25)


def cell_edits(depth: int, width: float, resolution: int, epochs: int,
               preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cfg_options, model_overrides)``: the ``rs`` recipe for this size, at this resolution and length."""
    opts, model = TABLE1.recipe_edits("rs", Arch(depth=depth, resolution=resolution))
    opts.update({"recipe.resolution": resolution, "recipe.epochs": epochs, "recipe.name": "rs"})
    if preset == "mini":
        opts["recipe.mini_resolution"] = max(16, resolution // 5)
    return opts, {**model, **cell_model(depth, width, preset)}


def training_time(res: dict[str, Any]) -> dict[str, Any]:
    """A cell's training-time columns from its results.json (see the module docstring): train-only time, images/s
    and validation time; ``train_time_missing`` when the results predate the measurement (never wall time)."""
    t = res.get("train_time_s")
    if t is None:
        return dict(train_time_s=None, train_images_per_s=None, eval_time_s=None, train_time_missing=True)
    return dict(train_time_s=float(t), train_images_per_s=res.get("train_images_per_s"),
                eval_time_s=res.get("eval_time_s"), train_time_missing=False)


def flops(model_kwargs: dict[str, Any], resolution: int) -> int:
    from rs_transfer.backbones import create_model
    from rs_transfer.bench.flops import count_flops

    kw = {k: v for k, v in model_kwargs.items() if k not in ("weights", "num_classes")}
    return count_flops(create_model(BACKBONE, num_classes=1000, **kw), (1, 3, resolution, resolution))


def inference_ms(model_kwargs: dict[str, Any], resolution: int, batch: int, rounds: int = 5) -> float:
    """Median ms per image of an eval-mode forward pass (random weights: speed does not depend on them)."""
    import torch

    from rs_transfer.backbones import create_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kw = {k: v for k, v in model_kwargs.items() if k not in ("weights", "num_classes")}
    model = create_model(BACKBONE, num_classes=1000, **kw).eval().to(device)
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    times = []
    with torch.no_grad():
        model(x)   # warm-up
        for _ in range(rounds):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000.0 / batch)
    return float(statistics.median(times))


def _cells(work_dir: Path, grid: list[tuple[int, float, int, int]], preset: str, seeds: list[int],
           cfg_options: dict[str, Any] | None, data_root: str | None
           ) -> Iterator[tuple[tuple[int, float, int, int], Path, dict[str, Any]]]:
    """``(grid point, run folder, run_experiment kwargs without work_dir)`` of every run: one list for the plan and
    the loop, so that what is planned (and submitted) is exactly what the loop then reuses."""
    from rs_transfer.studies.seeded import seed_dir

    for d, w, r, e in grid:
        opts, model = cell_edits(d, w, r, e, preset)
        for s in seeds:   # each seed its own run folder, reused by its own config hash
            yield (d, w, r, e), seed_dir(work_dir / cell_id(d, w, r, e), s, seeds[0]), dict(
                preset=preset, seed=s, cfg_options={**opts, **(cfg_options or {})}, model_overrides=model,
                data_root=data_root)


def run_study(*, depths: Sequence[int], widths: Sequence[float], resolutions: Sequence[int],
              epochs: Sequence[int], preset: str = "paper", work_dir: str | Path | None = None,
              out: str | Path | None = None, data_root: str | None = None, seed: int = 0,
              cfg_options: dict[str, Any] | None = None, launcher: str = "none", latency_batch: int = 8,
              runner: Callable[..., dict] | None = None, seeds: int = 1, executor: str = "local",
              dry_run: bool = False, slurm_opts: Any = None, gpu: tuple[str, float] | None = None,
              log: Callable[[str], Any] = print, tracking: Tracking | None = None) -> dict[str, Any] | None:
    """Run (or reuse) every grid cell, ``seeds`` runs each (rs_transfer/studies/seeded.py), and write the report.
    ``dry_run``: write and print the plan (``WORK_DIR/plan.json``, one cell per grid cell and seed) only;
    ``executor="slurm"``: submit the runs still to do as one job array (``slurm_opts``); both return None until
    every run is done (the same call again reports)."""
    from rs_transfer.studies.planning import cell_world, plan_study
    from rs_transfer.studies.seeded import combine, seeds_of
    from rs_transfer.studies.plan import run_or_reuse
    from rs_transfer.studies.reuse import finished_runs

    if runner is None:
        from rs_transfer.runner import run_experiment as runner
    work_dir = Path(work_dir or default_work_dir(STUDY_ARGS.name, preset))
    out = Path(out or default_out(STUDY_ARGS.name, preset))
    track = {"tracking": tracking} if tracking is not None else {}   # a test's stand-in runner takes none
    finished = finished_runs(work_dir)
    world = cell_world(executor, slurm_opts, launcher)   # a SLURM cell's own world size, also when collecting
    grid = list(itertools.product(depths, widths, resolutions, epochs))
    cells = list(_cells(work_dir, grid, preset, seeds_of(seed, seeds), cfg_options, data_root))
    if (dry_run or executor == "slurm") and not plan_study(
            work_dir, "scaling", "imagenet", BACKBONE, ((c[1], c[2]) for c in cells), finished=finished,
            launcher=launcher, executor=executor, dry_run=dry_run, slurm_opts=slurm_opts, gpu=gpu, log=log,
            unit="cell", preset=preset):
        return None
    rows = []
    for d, w, r, e in grid:
        runs, all_reused = [], True
        for sdir, kw in ((c[1], c[2]) for c in cells if c[0] == (d, w, r, e)):
            res, reused = run_or_reuse(runner, "imagenet", BACKBONE, sdir, kw, world=world, launcher=launcher,
                                       finished=finished, extra=track)
            runs.append(res)
            all_reused = all_reused and reused
        res = runs[0]     # timing: the first seed's run (the same network and schedule for every seed)
        model = cell_edits(d, w, r, e, preset)[1]
        measured_res = int(res.get("extra", {}).get("resolution") or r)
        rows.append(dict(id=cell_id(d, w, r, e), depth=d, width=w, resolution=r, epochs=e,
                         **combine(runs, ("top1", "top5", "minival_top1")),
                         gflops=flops(model, measured_res) / 1e9, **training_time(res),
                         infer_ms_per_image=inference_ms(model, measured_res, latency_batch),
                         work_dir=str(work_dir / cell_id(d, w, r, e)), reused=all_reused))
    report = dict(study="scaling", preset=preset, backbone=BACKBONE, seed=seed, seeds=seeds, rows=rows,
                  note=("MINI preset: tiny generated data and stand-in models; checks the machinery, not the "
                        "paper's curves; intervals from a mini set mean nothing" if preset == "mini" else ""))
    log_report(tracking, write_report(report, out))
    return report


COLS = ["id", "depth", "width", "resolution", "epochs", "top1", "top1_low", "top1_high", "seeds", "interval_note",
        "top5", "minival_top1", "gflops", "train_time_s",
        "train_images_per_s", "eval_time_s", "train_time_missing", "infer_ms_per_image"]
MISSING = "n/a†"   # a cell whose results.json has no train_time_s (see the table's footnote)


def to_markdown(report: dict[str, Any]) -> str:
    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [f"# Scaling study: ResNet-RS on ImageNet (preset {report['preset']})", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    lines += ["| depth | width | resolution | epochs | top-1 | minival top-1 | GFLOPs | train time (s) | "
              "train img/s | infer ms/img |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        unmeasured = r.get("train_time_missing", r.get("train_time_s") is None)
        t, ips = (MISSING, MISSING) if unmeasured else (f(r["train_time_s"]), f(r["train_images_per_s"]))
        lines.append(f"| {r['depth']} | {r['width']:g} | {r['resolution']} | {r['epochs']} | {value_text(r)} | "
                     f"{f(r['minival_top1'])} | {f(r['gflops'], 3)} | {t} | {ips} | "
                     f"{f(r['infer_ms_per_image'], 2)} |")
    lines += ["", "FLOPs: one 1000-class forward at the cell's resolution (multiply-add = 2). Times: this machine. "
                  "Train time: the train loop's iterations and data loading (no start-up, validation or checkpoint "
                  "writes), summed over the segments of a resumed run; train img/s over all processes. "
                  + seeds_line(report["rows"], deltas=False)]
    missing = [r["id"] for r in report["rows"] if r.get("train_time_missing", r.get("train_time_s") is None)]
    if missing:
        lines += ["", f"† {', '.join(missing)}: no train_time_s in results.json (written before training time "
                      "was measured, or resumed from a checkpoint of that time; wall time is not training time). "
                      "Delete the cell's results.json and run the study again to measure it."]
    return "\n".join(lines) + "\n"


def to_png(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_spec = [("gflops", "GFLOPs"), ("train_time_s", "training time (s, train loop, summed over resumes)"),
                 ("infer_ms_per_image", "inference time (ms / image)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    series: dict[tuple[int, float, int], list[dict]] = {}
    for r in report["rows"]:
        series.setdefault((r["epochs"], r["width"], r["resolution"]), []).append(r)
    for (e, w, res), rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["depth"])
        for ax, (key, _) in zip(axes, axes_spec):
            pts = [(r[key], r["top1"]) for r in rows if r[key] is not None]
            if pts:
                line, = ax.plot(*zip(*pts), marker="o", label=f"{e} ep, w{w:g}, {res}px")
                bars = [r for r in rows if r[key] is not None and r.get("top1_low") is not None]
                if bars:     # the 95 % interval of each cell's top-1 (rs_transfer/studies/seeded.py)
                    ax.errorbar([r[key] for r in bars], [r["top1"] for r in bars], fmt="none",
                                yerr=[[r["top1"] - r["top1_low"] for r in bars],
                                      [r["top1_high"] - r["top1"] for r in bars]],
                                ecolor=line.get_color(), elinewidth=0.8, capsize=2)
    for ax, (_, label) in zip(axes, axes_spec):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    missing = [r["id"] for r in report["rows"] if r.get("train_time_s") is None]
    if missing:   # left out of the training-time plot, said on it
        axes[1].set_title(f"not measured (left out): {', '.join(missing)}", fontsize=7)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """``OUT.md``, ``OUT.csv``, ``OUT.json``, ``OUT.png``, ``OUT.html``, each replaced atomically."""
    from rs_transfer.studies.tables import write_files

    from rs_transfer.studies.htmlpage import write_rows_html

    return (write_files(out, report, markdown=to_markdown(report), columns=COLS, png=to_png(report))
            + [write_rows_html(report, COLS, out)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depths", nargs="+", type=int, default=[101, 200], help="e.g. 26 50 101 200 300 350 400")
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0], help="e.g. 0.25 0.5 1.0 1.5 2.0")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[160], help="e.g. 128 160 224 320 448")
    parser.add_argument("--epochs", nargs="+", type=int, default=[350], help="e.g. 10 100 350")
    add_study_arguments(parser, STUDY_ARGS)
    parser.add_argument("--latency-batch", type=int, default=8, help="batch of the inference-time measurement")
    from rs_transfer.studies.executor import add_executor_arguments

    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.studies.executor import slurm_options

    work_dir = args.work_dir or default_work_dir(STUDY_ARGS.name, args.preset)
    report = run_study(depths=args.depths, widths=args.widths, resolutions=args.resolutions, epochs=args.epochs,
                       preset=args.preset, work_dir=args.work_dir, out=args.out, data_root=args.data_root,
                       seed=args.seed, cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                       latency_batch=args.latency_batch, seeds=args.seeds, executor=args.executor,
                       dry_run=args.dry_run, gpu=(args.gpu, args.assume_mfu) if args.gpu else None,
                       slurm_opts=slurm_options(args, work_dir) if args.executor == "slurm" else None,
                       tracking=for_study(args.tracking, STUDY_ARGS.name, work_dir))
    if report is None:   # a dry run, or cells still running on the cluster
        return 0
    print(to_markdown(report))
    out = Path(args.out or default_out(STUDY_ARGS.name, args.preset))
    print(f"wrote {out.with_suffix('.md')}, .csv, .json, .png, .html")
    return 0
