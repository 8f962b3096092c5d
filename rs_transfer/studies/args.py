"""Command-line options shared by the row-by-row studies (``rs-transfer study table1``, ``table5``, ``scaling``).

Each of those studies runs its rows (or grid cells) one by one through the runner in ``WORK_DIR/<row>`` and writes
a report to ``OUT.md`` / ``.csv`` / ``.json``; the options that say where (preset, data, folders), how (seed,
config edits, launcher) and, for the additive studies, which rows and backbone edits, are defined once here, with
the study's own words (dataset, what ``--preset mini`` means, what a run is called) filled into the help. Each study
then adds only its own options. ``study table4`` (a grid in one study folder, ``--seeds N``) has its own options
in :mod:`rs_transfer.commands.study`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rs_transfer.runner.distributed import LAUNCHERS   # light: no torch for --help
from rs_transfer.runner.tracking import add_argument as add_tracking


@dataclass(frozen=True)
class StudyArgs:
    """The words a study's help needs.

    ``name``: the default folders are ``work_dirs/NAME`` and ``results/NAME`` (``-mini`` appended for the mini
    preset); ``unit``: what one run is called ("row", "cell"); ``mini``: what ``--preset mini`` runs; ``dataset``:
    the folder ``--data-root`` expects; ``cfg_options``: when the ``--cfg-options`` edits apply (and an example);
    ``outputs``: the report files.
    """

    name: str
    unit: str
    mini: str
    dataset: str
    cfg_options: str
    outputs: str = "OUT.md, OUT.csv, OUT.json, OUT.html"


def _suffix(preset: str) -> str:
    return "" if preset == "paper" else f"-{preset}"


def default_work_dir(name: str, preset: str) -> Path:
    """Where a study's runs go unless ``--work-dir`` says otherwise: ``work_dirs/NAME[-PRESET]``."""
    return Path(f"work_dirs/{name}{_suffix(preset)}")


def default_out(name: str, preset: str) -> Path:
    """A study's report path without suffix unless ``--out`` says otherwise: ``results/NAME[-PRESET]``."""
    return Path(f"results/{name}{_suffix(preset)}")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--rows 0`` would write an empty table, ``--seeds 0`` no run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value}): nothing would run")
    return value


def add_study_arguments(parser: argparse.ArgumentParser, study: StudyArgs) -> None:
    """``--preset --data-root --work-dir --out --seed --seeds --cfg-options --launcher --tracking``."""
    parser.add_argument("--preset", choices=("paper", "mini"), default="paper",
                        help=f"paper: the paper's protocol; mini: {study.mini} (default: paper)")
    parser.add_argument("--data-root", default=None, help=f"{study.dataset} folder (default: the task's data folder)")
    parser.add_argument("--work-dir", default=None,
                        help=f"runs go to WORK_DIR/<{study.unit}> (default work_dirs/{study.name}[-mini]); a finished "
                             f"{study.unit} with the same config hash is reused, an interrupted one resumes")
    parser.add_argument("--out", default=None,
                        help=f"report path without suffix: {study.outputs} (default "
                             f"results/{study.name}[-mini])")
    parser.add_argument("--seed", type=int, default=0, help=f"random seed of every {study.unit} (default 0)")
    parser.add_argument("--seeds", type=positive_int, default=1,
                        help=f"runs per {study.unit}: seeds SEED, SEED+1, ... each in its own folder "
                             f"(WORK_DIR/<{study.unit}>, then <{study.unit}>-seed<s>); the report gives their mean "
                             "and 95 %% interval (default 1)")
    parser.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help=f"config edits for every {study.unit}, {study.cfg_options}")
    parser.add_argument("--launcher", default="none", choices=LAUNCHERS,
                        help="how the processes were started: none (one process), pytorch (torchrun), slurm (srun) "
                             "(default: none)")
    add_tracking(parser)


def add_additive_arguments(parser: argparse.ArgumentParser, study: StudyArgs, *, config: str,
                           backbone_example: str = "") -> None:
    """The additive studies' (Tables 1 and 5) ``--config --rows --backbone-options``; ``config`` names the default
    config file, ``backbone_example`` adds examples to ``--backbone-options``."""
    parser.add_argument("--config", default=None, help=f"config file (default configs/{config})")
    parser.add_argument("--rows", type=positive_int, default=None,
                        help="run only the first N rows, N >= 1 (baseline = row 1)")
    parser.add_argument("--backbone-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help=f"backbone arguments for every {study.unit}, after the {study.unit}'s own toggles"
                             + (f", e.g. {backbone_example}" if backbone_example else ""))
