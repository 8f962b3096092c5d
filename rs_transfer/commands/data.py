"""``rs-transfer data {check,mini}``: is a dataset folder usable by a task; create the mini dataset."""
from __future__ import annotations

import argparse
import json

HELP = "check a task's dataset folder, or create its mini dataset"
DESCRIPTION = """Check that a dataset folder has the layout and split sizes a task expects (names exactly what is
missing or malformed, and where to get the data), or write the task's tiny generated dataset.

examples:
  rs-transfer data check --task cifar100 --data-root ~/data/cifar-100-python
  rs-transfer data mini --task cifar100          # prints the folder it created (once) under $RS_TRANSFER_HOME
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "mini"])
    p.add_argument("--task", required=True, help="task name (`rs-transfer list tasks`)")
    p.add_argument("--data-root", help="folder to check (default: $RS_TRANSFER_HOME/data/<task>)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rs_transfer.tasks import get_task

    task = get_task(args.task)
    if args.action == "mini":
        from rs_transfer.runner import ensure_mini

        print(ensure_mini(task))
        return 0
    root = Path(args.data_root).expanduser() if args.data_root else task.default_data_root()
    report = task.check(root)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    if report.ok:
        print(f"{task.name}: {root} OK ({counts})")
        details = getattr(report, "details", None)  # e.g. Kinetics: missing/corrupt files, per-class counts
        if callable(details):
            print(details())
        return 0
    report.raise_if_bad()
    return 1
