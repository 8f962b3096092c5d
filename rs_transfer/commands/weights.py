"""``rs-transfer weights {download,convert,where}``: the local weight cache."""
from __future__ import annotations

import argparse
import json

HELP = "download named weights into the local cache, or convert a checkpoint to our format"
DESCRIPTION = """Manage the local weight cache ($RS_TRANSFER_HOME/weights, default ~/.cache/rs-transfer/weights).

  download NAME [--url URL]   fetch a named source (resumable: an interrupted download continues from its .part
                              file; checksummed against the sha256 prefix in the published file name; atomic)
  convert SRC OUT --model M   load any supported checkpoint into model M (automatic key mapping; --width and
                              --backbone-options build variants) and save it in rs-transfer's format (.pth, or
                              .safetensors by extension) with its input normalisation (--normalization overrides)
  where NAME                  print the cache path a named source is expected at
Nothing is ever downloaded implicitly.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = sub.add_parser("download", help="download a named source into the cache")
    d.add_argument("name", help="a named source (`rs-transfer list weights`), e.g. mocov2-r50-800ep")
    d.add_argument("--url", help="mirror URL (same file, same checksum)")
    c = sub.add_parser("convert", help="re-save a checkpoint in rs-transfer's own format")
    c.add_argument("src", help="the checkpoint to convert (a file, a run's work dir, or a named source)")
    c.add_argument("out", help="the file to write (.pth or .safetensors); an existing file or folder is refused")
    c.add_argument("--model", required=True, help="registered model the checkpoint fits")
    c.add_argument("--trust", action="store_true", help="allow full unpickling (only for files you trust)")
    from rs_transfer.commands.inspect import add_model_arguments

    add_model_arguments(c)
    w = sub.add_parser("where", help="print where a named source is expected")
    w.add_argument("name", help="a named source (`rs-transfer list weights`)")


def run(args: argparse.Namespace) -> int:
    from rs_transfer.weights import sources

    if args.action == "download":
        print(sources.download(args.name, url=args.url))
    elif args.action == "where":
        spec = sources.get_source(args.name)
        print(sources.weights_home() / spec.filename)
        print(f"  published by {spec.publisher}: {spec.published}")
        print(f"  checksum: {spec.checksum}; input normalisation: {spec.normalization.name}"
              + (f"; model: {spec.model_hint()}" if spec.model_options else ""))
    else:
        from rs_transfer.backbones import create_model
        from rs_transfer.weights import load_weights, save_weights

        from rs_transfer.commands.inspect import model_options

        from pathlib import Path

        from rs_transfer.errors import UserError

        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"weights convert: {out} is a folder; give the file to write, e.g. {out / 'model.pth'}")
        if out.exists():
            raise UserError(f"weights convert: {out} exists; remove it or choose another name (nothing is "
                            "overwritten)")
        options = model_options(args)
        model = create_model(args.model, **options)
        report = load_weights(model, args.src, trust=args.trust, normalization=args.normalization)
        print(report.summary())
        print(save_weights(model, args.out, normalization=report.normalization, model=args.model,
                           model_options=json.dumps(options), converted_from=report.source,
                           source_sha256=report.sha256, normalization_how=report.normalization_how))
    return 0
