"""``rs-transfer study NAME``: run a grid of experiments (resumable) and write its report. The studies and their
options live in :mod:`rs_transfer.studies` (one module per CLI name, listed in its ``STUDIES`` table)."""
from __future__ import annotations

import argparse
import importlib

from rs_transfer.studies import STUDIES

HELP = ("run a paper study (table4: transfer grid; table5: video ablation; table1: ImageNet recipe ablation; "
        "scaling; sweep) and write its report")
DESCRIPTION = """Run every cell of a study grid on the shared runner, skipping cells whose results.json recorded
the configuration the cell would run now (same config hash, same weights content) and resuming cells that left a
checkpoint (re-run the same command after an interruption), then write the report.

examples:
  rs-transfer study table4 --preset mini --backbone resnetrs50 --weights none --tasks cifar100
  rs-transfer study table4 --backbone resnet152 --weights resnet152.tv_in1k simclrv2-r152-1x-sk0 ./rs152.pth \\
      --seeds 3 --out studies/table4
  rs-transfer study table1 --preset mini          # the 11 additive ImageNet rows (rows reused by config hash)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, study in STUDIES.items():
        sp = sub.add_parser(name, help=study.help, description=study.help)
        module = importlib.import_module(study.module)   # light: a study module imports torch only when it runs
        module.add_arguments(sp)
        sp.set_defaults(_study=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._study(args) or 0)
