"""``rs-transfer inspect MODEL``: parameters, FLOPs, feature_info and (optionally) a weight load report."""
from __future__ import annotations

import argparse
import json

HELP = "show a model's parameters, FLOPs, stage features and a weight load report"
DESCRIPTION = """Build MODEL (see `rs-transfer list models`) and print:

  - parameters (with a 1000-class head) and FLOPs at --resolution (default: the model's published resolution).
    FLOPs count a multiply-add as 2, the convention of the paper's Table 2 (RS-50 @160: 4.6B).
  - feature_info: channels and stride of every stage, as used by detection/segmentation heads.
  - with --weights: what was loaded, which keys were missing/unexpected/ignored, the input normalisation and how
    it was decided.

Model options (--width, --backbone-options) build the variant a checkpoint needs, e.g. SimCLRv2 r50 2x sk1:
  rs-transfer inspect resnet50 --width 2 --backbone-options stem=deep stem_pool=max shortcut=simclr se_ratio=0 \
      sk_ratio=0.0625 --weights simclrv2-r50-2x-sk1
(`rs-transfer list weights` prints the options of every named source.)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name, e.g. resnetrs50")
    p.add_argument("--weights", metavar="SRC", help="checkpoint path or named source to load and report on")
    p.add_argument("--resolution", type=int, metavar="R", help="input size for FLOPs (default: the model's own)")
    p.add_argument("--frames", type=int, default=16, metavar="T", help="clip length for 3D models (default 16)")
    add_model_arguments(p)
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load even if backbone keys differ (the report still lists them)")
    p.add_argument("--trust", action="store_true",
                   help="allow full unpickling of the checkpoint (only for files you trust)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model options and the weights' normalisation, shared with ``weights convert``."""
    p.add_argument("--width", type=float, metavar="W", help="width multiplier (SimCLR 2x/3x/4x: 2, 3, 4)")
    p.add_argument("--backbone-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="any other model option, e.g. sk_ratio=0.0625 stem=deep layers=[1,1,1,1]")
    p.add_argument("--normalization", metavar="NORM",
                   help="input normalisation of --weights: imagenet, unit, swav or MEAN,STD (default: what the "
                        "named source, the metadata or the layout declares; else ImageNet, with a warning)")


def model_options(args: argparse.Namespace) -> dict:
    from rs_transfer.runner.config import parse_cfg_options

    opts = parse_cfg_options(args.backbone_options)
    if args.width is not None:
        opts["width"] = args.width
    return opts


def run(args: argparse.Namespace) -> int:
    from rs_transfer.backbones import create_model, get_spec
    from rs_transfer.bench.flops import count_flops
    from rs_transfer.weights import load_weights

    spec = get_spec(args.model)
    model = create_model(args.model, **model_options(args))
    res = args.resolution or spec.resolution
    dims = getattr(model, "dims", 2)
    shape = (1, 3, res, res) if dims == 2 else (1, 3, args.frames, res, res)
    info = {
        "model": args.model, "family": spec.family, "params": sum(p.numel() for p in model.parameters()),
        "input": list(shape[1:]), "flops": count_flops(model, shape),
        "feature_info": model.feature_info,
    }
    if args.weights:
        info["weights"] = load_weights(model, args.weights, strict=args.strict, trust=args.trust,
                                       normalization=args.normalization).to_dict()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model} ({spec.family}) {spec.description}".rstrip())
    print(f"  parameters: {info['params'] / 1e6:.2f}M (1000-class head)")
    print(f"  FLOPs @ {'x'.join(map(str, shape[1:]))}: {info['flops'] / 1e9:.2f}B")
    print("  stages: " + ", ".join(f"{f['module']} {f['num_chs']}ch /{f['reduction']}" for f in model.feature_info))
    if args.weights:
        w = info["weights"]
        print(f"  weights: {w['source']} -> {w['path']}")
        print(f"    format {w['container']}/{w['wrapper']}, layout {w['layout']}, sha256 {w['sha256'][:16]}")
        print(f"    loaded {w['loaded']}, missing {len(w['missing'])}, unexpected {len(w['unexpected'])}, "
              f"mismatched {len(w['mismatched'])}, head skipped {len(w['head_skipped'])}, ignored "
              f"{len(w['ignored'])}")
        for name in ("missing", "unexpected", "mismatched", "ignored"):
            if w[name]:
                print(f"    {name}: {', '.join(w[name][:10])}{' ...' if len(w[name]) > 10 else ''}")
        print(f"    input normalisation: {w['normalization']['name']} mean={w['normalization']['mean']} "
              f"std={w['normalization']['std']} ({w['normalization_how']}: {w['normalization_detail']})")
        if w["normalization_warning"]:
            print(f"    WARNING: {w['normalization_warning']}")
    return 0
