"""``rs-transfer study {table4,table5,table1}``: run a grid of experiments (resumable) and write its report."""
from __future__ import annotations

import argparse
import importlib
import importlib.util

HELP = ("run a paper study (table4: transfer grid; table5: video ablation; table1: ImageNet recipe ablation) "
        "and write its report")
DESCRIPTION = """Run every cell of a study grid on the shared runner, skipping cells whose results.json exists and
resuming cells that left a checkpoint (re-run the same command after an interruption), then write the report.

examples:
  rs-transfer study table4 --preset mini --backbone resnetrs50 --weights none --tasks cifar100
  rs-transfer study table4 --backbone resnet152 --weights resnet152.tv_in1k simclrv2-r152-1x-sk0 ./rs152.pth \\
      --seeds 3 --out studies/table4
  rs-transfer study table1 --preset mini          # the 11 additive ImageNet rows (rows reused by config hash)
"""


def _table4_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", required=True, help="registered model, e.g. resnet152")
    p.add_argument("--weights", nargs="+", required=True,
                   help="weight sources (named or files); 'none' = random initialisation. The first is the baseline")
    p.add_argument("--normalization", nargs="+", metavar="NORM",
                   help="input normalisation: one value for every --weights (imagenet, unit, swav, MEAN,STD), or "
                        "SRC=NORM pairs (default: what each source declares; else ImageNet, with a warning)")
    p.add_argument("--tasks", nargs="+", help="default: the five Table 4 tasks")
    p.add_argument("--protocols", nargs="+", default=["finetune"], help="e.g. finetune linear knn")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per cell (mean and 95 %% interval over seeds, "
                                                        "then test samples, in the report)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level for the paired differences to the baseline, after the "
                        "Benjamini-Hochberg correction (default 0.05)")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"])
    p.add_argument("--out", default="studies/table4", help="study folder (default: studies/table4)")
    p.add_argument("--baseline", help="row for differences (default: the first --weights)")
    p.add_argument("--paper", dest="paper", action="store_true", default=None,
                   help="add the paper's Table 4 rows to the report (default: only for --preset paper)")
    p.add_argument("--no-paper", dest="paper", action="store_false", help="leave the paper's rows out")
    p.add_argument("--backbone-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="extra ResNetRS arguments for every run")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", default=[], help="config overrides, every run")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"])
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load --weights even if backbone keys differ (as `run --no-strict`)")
    p.add_argument("--trust", action="store_true",
                   help="allow full unpickling of --weights files (only for files you trust)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    t4 = sub.add_parser("table4", help="Table 4: backbone x weights x transfer tasks")
    _table4_arguments(t4)
    t4.set_defaults(_study=_run_table4)
    t5 = sub.add_parser("table5", help="Table 5: the additive Kinetics-400 video ablation")
    if importlib.util.find_spec("rs_transfer.video") and importlib.util.find_spec("rs_transfer.video.table5"):
        mod = importlib.import_module("rs_transfer.video.table5")
        mod.add_arguments(t5)
        t5.set_defaults(_study=mod.run)
    else:
        t5.add_argument("rest", nargs=argparse.REMAINDER)
        t5.set_defaults(_study=_no_table5)
    t1 = sub.add_parser("table1", help="Table 1: the additive ImageNet training-recipe study (pre-training)")
    from rs_transfer import pretrain_study

    pretrain_study.add_arguments(t1)
    t1.set_defaults(_study=pretrain_study.run)
    ts = sub.add_parser("scaling", help="section 6: depth x width x resolution x epochs on ImageNet, plotted "
                                        "against FLOPs and training/inference time")
    from rs_transfer import scaling_study

    scaling_study.add_arguments(ts)
    ts.set_defaults(_study=scaling_study.run)


def _no_table5(args: argparse.Namespace) -> int:
    from rs_transfer.errors import UserError

    raise UserError("study table5 needs the video study module rs_transfer.video.table5, which is not in this "
                    "install yet")


def _run_table4(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.study import run_table4

    weights = [None if w.lower() in ("none", "scratch") else w for w in args.weights]
    norm = _normalization_arg(args.normalization)
    paper = args.paper if args.paper is not None else args.preset == "paper"
    study = run_table4(backbone=args.backbone, weights=weights, out_dir=args.out, tasks=args.tasks,
                       protocols=args.protocols, seeds=args.seeds, preset=args.preset, baseline=args.baseline,
                       paper=paper, model_overrides=parse_cfg_options(args.backbone_options),
                       cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                       normalization=norm, trust=args.trust, strict=args.strict, alpha=args.alpha)
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


def run(args: argparse.Namespace) -> int:
    return int(args._study(args) or 0)
