"""``rs-transfer study scaling``: the paper's section 6 grid (depth x width x resolution x epochs) on ImageNet.

Every cell is a ResNet-RS (SE, ResNet-D) trained with the RS recipe (:data:`rs_transfer.recipes.TABLE1` recipe
``rs``, its size-dependent values computed for the cell's depth and resolution: stochastic depth from depth 200,
RandAugment 15 above depth 50, dropout 0.4 at 320 px and above) at the cell's resolution and length, in
``WORK_DIR/<cell>``; finished cells are reused by config hash, interrupted ones resume. The paper tunes the
regularisation per model (its Appendix F, not available to us); these are the released configs' values.

The report gives per cell top-1 (val; minival too when ``recipe.minival=True``, the paper's Figures 2-4 use
minival), FLOPs (one 1000-class forward at the cell's resolution, multiply-add = 2, Table 2's convention),
training time (wall time of the run and training images/s) and inference time (ms per image of a forward pass at
batch ``--latency-batch``, median of 5, on this machine), and plots top-1 against FLOPs, training time and
inference time (``OUT.png``), one line per (epochs, width) through the depths, as the paper's Figures 2-4 do.

``--preset mini``: the generated ImageNet-format set, one block per stage (two for the deepest stage of depths
above 100, so depth still changes the model), widths x 0.25, resolution = paper resolution / 5.
"""
from __future__ import annotations

import argparse
import io
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rs_transfer.recipes import TABLE1, Arch

BACKBONE = "resnetrs50"   # the RS architecture; depth and width are overridden per cell


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


def flops(model_kwargs: dict[str, Any], resolution: int) -> int:
    from rs_transfer.backbones import create_model
    from rs_transfer.commands.inspect import count_flops

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


def run_study(*, depths: Sequence[int], widths: Sequence[float], resolutions: Sequence[int],
              epochs: Sequence[int], preset: str = "paper", work_dir: str | Path | None = None,
              out: str | Path | None = None, data_root: str | None = None, seed: int = 0,
              cfg_options: dict[str, Any] | None = None, launcher: str = "none", latency_batch: int = 8,
              runner: Callable[..., dict] | None = None) -> dict[str, Any]:
    from rs_transfer.pretrain_study import _finished
    from rs_transfer.study import expected_hash, launched_world_size

    if runner is None:
        from rs_transfer.runner import run_experiment as runner
    suffix = "" if preset == "paper" else f"-{preset}"
    work_dir = Path(work_dir or f"work_dirs/scaling{suffix}")
    out = Path(out or f"results/scaling{suffix}")
    finished = _finished(work_dir)
    rows = []
    for d, w, r, e in itertools.product(depths, widths, resolutions, epochs):
        opts, model = cell_edits(d, w, r, e, preset)
        opts = {**opts, **(cfg_options or {})}
        row_dir = work_dir / cell_id(d, w, r, e)
        kw = dict(preset=preset, seed=seed, cfg_options=opts, model_overrides=model, data_root=data_root)
        expected = expected_hash("imagenet", BACKBONE, work_dir=row_dir, world_size=launched_world_size(launcher),
                                 **kw)
        res = finished.get(expected)
        reused = res is not None
        if res is None:
            res = runner("imagenet", BACKBONE, work_dir=row_dir, launcher=launcher,
                         resume=(row_dir / "last_checkpoint").is_file(), **kw)
        m = res["metrics"]
        measured_res = int(res.get("extra", {}).get("resolution") or r)
        rows.append(dict(id=cell_id(d, w, r, e), depth=d, width=w, resolution=r, epochs=e,
                         top1=float(m["top1"]), top5=m.get("top5"), minival_top1=m.get("minival_top1"),
                         gflops=flops(model, measured_res) / 1e9, train_time_s=res.get("wall_time_s"),
                         train_images_per_s=res.get("throughput_samples_per_s"),
                         infer_ms_per_image=inference_ms(model, measured_res, latency_batch),
                         work_dir=str(row_dir), reused=reused))
    report = dict(study="scaling", preset=preset, backbone=BACKBONE, seed=seed, rows=rows,
                  note=("MINI preset: tiny generated data and stand-in models; checks the machinery, not the "
                        "paper's curves" if preset == "mini" else ""))
    write_report(report, out)
    return report


COLS = ["id", "depth", "width", "resolution", "epochs", "top1", "top5", "minival_top1", "gflops", "train_time_s",
        "train_images_per_s", "infer_ms_per_image"]


def to_markdown(report: dict[str, Any]) -> str:
    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [f"# Scaling study: ResNet-RS on ImageNet (preset {report['preset']})", ""]
    if report.get("note"):
        lines += [f"> {report['note']}", ""]
    lines += ["| depth | width | resolution | epochs | top-1 | minival top-1 | GFLOPs | train time (s) | "
              "train img/s | infer ms/img |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['depth']} | {r['width']:g} | {r['resolution']} | {r['epochs']} | {f(r['top1'])} | "
                     f"{f(r['minival_top1'])} | {f(r['gflops'], 3)} | {f(r['train_time_s'])} | "
                     f"{f(r['train_images_per_s'])} | {f(r['infer_ms_per_image'], 2)} |")
    return "\n".join(lines + ["", "FLOPs: one 1000-class forward at the cell's resolution (multiply-add = 2). "
                                  "Times: this machine."]) + "\n"


def to_png(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_spec = [("gflops", "GFLOPs"), ("train_time_s", "training time (s)"),
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
                ax.plot(*zip(*pts), marker="o", label=f"{e} ep, w{w:g}, {res}px")
    for ax, (_, label) in zip(axes, axes_spec):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """``OUT.md``, ``OUT.csv``, ``OUT.json``, ``OUT.png``, each replaced atomically."""
    from rs_transfer.tables import write_files

    return write_files(out, report, markdown=to_markdown(report), columns=COLS, png=to_png(report))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depths", nargs="+", type=int, default=[101, 200], help="e.g. 26 50 101 200 300 350 400")
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0], help="e.g. 0.25 0.5 1.0 1.5 2.0")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[160], help="e.g. 128 160 224 320 448")
    parser.add_argument("--epochs", nargs="+", type=int, default=[350], help="e.g. 10 100 350")
    parser.add_argument("--preset", choices=("paper", "mini"), default="paper")
    parser.add_argument("--data-root", default=None, help="ILSVRC2012 folder (default: the task's data folder)")
    parser.add_argument("--work-dir", default=None,
                        help="runs go to WORK_DIR/<cell> (default work_dirs/scaling[-mini])")
    parser.add_argument("--out", default=None, help="report path without suffix (default results/scaling[-mini])")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-batch", type=int, default=8, help="batch of the inference-time measurement")
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config edits for every cell (e.g. recipe.minival=True, as the paper's figures)")
    parser.add_argument("--launcher", default="none", choices=("none", "pytorch", "slurm"))


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options

    report = run_study(depths=args.depths, widths=args.widths, resolutions=args.resolutions, epochs=args.epochs,
                       preset=args.preset, work_dir=args.work_dir, out=args.out, data_root=args.data_root,
                       seed=args.seed, cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                       latency_batch=args.latency_batch)
    print(to_markdown(report))
    out = Path(args.out or f"results/scaling{'' if args.preset == 'paper' else '-' + args.preset}")
    print(f"wrote {out.with_suffix('.md')}, .csv, .json, .png")
    return 0
