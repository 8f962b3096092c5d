"""``rs-transfer data {check,mini}``: is a dataset folder usable by a task; create the mini dataset."""
from __future__ import annotations

import argparse
import json

HELP = "check a task's dataset folder, or create its mini dataset"
# Task.data_dirname of each task (tests/test_cli.py keeps this list in step with the tasks).
DEFAULT_FOLDERS = ("cifar-100-python (cifar100), voc (voc-det, voc-seg), ade20k, nyu (nyu-depth), imagenet, "
                   "kinetics400")
DESCRIPTION = f"""Check that a dataset folder has the layout and split sizes a task expects (names exactly what is
missing or malformed, and where to get the data), or write the task's tiny generated dataset.

The ordinary check reads file headers (fast; every run does it). --deep also decodes every image, mask and
annotation completely, in parallel, and names each damaged file (valid header, truncated or corrupt body); runs
skip and count such files, so it exits with 1 (not an error) when there are any.

Default data folder: $RS_TRANSFER_HOME/data/FOLDER ($RS_TRANSFER_HOME defaults to ~/.cache/rs-transfer), FOLDER
being the task's: {DEFAULT_FOLDERS}.

examples:
  rs-transfer data check --task cifar100 --data-root ~/data/cifar-100-python
  rs-transfer data check --task voc-seg --deep     # decode all of ~/.cache/rs-transfer/data/voc
  rs-transfer data mini --task cifar100          # prints the folder it created (once) under $RS_TRANSFER_HOME
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "mini"],
                   help="check: is the dataset where and as expected (see above); mini: write the mini dataset")
    p.add_argument("--task", required=True, help="task name (`rs-transfer list tasks`)")
    p.add_argument("--data-root", help="folder to check (default: $RS_TRANSFER_HOME/data/FOLDER, see above)")
    p.add_argument("--deep", action="store_true",
                   help="check: also decode every file completely and name the damaged ones (slower)")
    p.add_argument("--workers", type=int, metavar="N", help="--deep: decoding threads (default: one per CPU core)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rs_transfer.tasks import get_task

    task = get_task(args.task)
    if args.action == "mini":
        from rs_transfer.tasks.mini import ensure_mini

        print(ensure_mini(task))
        return 0
    root = Path(args.data_root).expanduser() if args.data_root else task.default_data_root()
    report = task.check(root)
    damaged: list = []
    decoded = 0
    if args.deep:
        from rs_transfer.tasks.datacheck import deep_check

        decoded, damaged = deep_check(task, root, workers=args.workers, progress=None if not args.json else False)
    if args.json:
        out = report.to_dict()
        if args.deep:
            out["deep"] = {"decoded": decoded, "damaged": [{"path": str(p), "problem": why} for p, why in damaged]}
        print(json.dumps(out, indent=2))
        return 0 if report.ok and not damaged else 1
    for path, why in damaged:
        print(f"damaged: {path}: {why}")
    if args.deep:
        print(f"{task.name}: decoded {decoded} files, {len(damaged)} damaged"
              + (" (runs skip and count them; replace them to have the whole data set)" if damaged else ""))
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    if report.ok:
        print(f"{task.name}: {root} OK ({counts})")
        details = getattr(report, "details", None)  # e.g. Kinetics: missing/corrupt files, per-class counts
        if callable(details):
            text = details()
            if text:
                print(text)
        return 1 if damaged else 0
    report.raise_if_bad()
    return 1
