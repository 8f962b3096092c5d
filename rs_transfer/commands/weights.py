"""``rs-transfer weights {download,convert,where}``: the local weight cache."""
from __future__ import annotations

import argparse

HELP = "download named weights into the local cache, or convert a checkpoint to our format"
DESCRIPTION = """Manage the local weight cache ($RS_TRANSFER_HOME/weights, default ~/.cache/rs-transfer/weights).

  download NAME [--url URL]   fetch a named source (resumable: an interrupted download continues from its .part
                              file; checksummed against the sha256 prefix in the published file name; atomic)
  convert SRC OUT --model M   load any supported checkpoint into model M (automatic key mapping) and save it in
                              rs-transfer's format (.pth, or .safetensors by extension), with its normalisation
  where NAME                  print the cache path a named source is expected at
Nothing is ever downloaded implicitly.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = sub.add_parser("download", help="download a named source into the cache")
    d.add_argument("name")
    d.add_argument("--url", help="mirror URL (same file, same checksum)")
    c = sub.add_parser("convert", help="re-save a checkpoint in rs-transfer's own format")
    c.add_argument("src")
    c.add_argument("out")
    c.add_argument("--model", required=True, help="registered model the checkpoint fits")
    c.add_argument("--trust", action="store_true", help="allow full unpickling (only for files you trust)")
    w = sub.add_parser("where", help="print where a named source is expected")
    w.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from rs_transfer.weights import sources

    if args.action == "download":
        print(sources.download(args.name, url=args.url))
    elif args.action == "where":
        print(sources.weights_home() / sources.get_source(args.name).filename)
    else:
        from rs_transfer.backbones import create_model
        from rs_transfer.weights import load_weights, save_weights

        model = create_model(args.model)
        report = load_weights(model, args.src, trust=args.trust)
        print(report.summary())
        print(save_weights(model, args.out, normalization=report.normalization.name, model=args.model,
                           converted_from=report.source, source_sha256=report.sha256))
    return 0
