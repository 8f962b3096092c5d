"""Grids of runs and their reports (ARCHITECTURE.md). ``STUDIES`` maps each ``rs-transfer study NAME`` to its module
(file name = CLI name), which defines ``add_arguments(parser)`` and ``run(args)``.

Shared by all of them: :mod:`.reuse` (THE identity of a run and THE reuse rule; results.json records the same
hash), :mod:`.plan` (what a cell would run, through the runner's ``prepare_run``), :mod:`.args` (common options),
:mod:`.report` / :mod:`.tables` (report files, written atomically).
"""
from __future__ import annotations

from typing import NamedTuple


class Study(NamedTuple):
    module: str
    help: str


STUDIES: dict[str, Study] = {
    "table4": Study("rs_transfer.studies.table4", "Table 4: backbone x weights x transfer tasks"),
    "table5": Study("rs_transfer.studies.table5", "Table 5: the additive Kinetics-400 video ablation"),
    "table1": Study("rs_transfer.studies.table1",
                    "Table 1: the additive ImageNet training-recipe study (pre-training)"),
    "scaling": Study("rs_transfer.studies.scaling", "section 6: depth x width x resolution x epochs on ImageNet, "
                                                    "plotted against FLOPs and training/inference time"),
    "transfer12": Study("rs_transfer.studies.transfer12",
                        "Kornblith et al.'s classification transfer suite: datasets x weight sources, linear / "
                        "finetune / fewshot, with mean log-odds and the rank correlation with ImageNet top-1"),
    "sweep": Study("rs_transfer.studies.sweep", "Kornblith et al.'s fine-tuning LR x weight-decay grid on a held-out "
                                                "split, then the best point on the test set (also `run --sweep`)"),
}
