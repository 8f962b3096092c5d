"""Downstream tasks, registered by name; each module exposes ``TASK: Task`` (contract: ``tasks/base.py``).

The table below lists every task the suite knows, including ones whose module is not written yet: those are
"not available" (studies show them as missing, ``rs-transfer run`` says so) rather than unknown. Modules are
imported lazily so that ``rs-transfer --help`` stays fast and one broken task cannot break the others.
"""
from __future__ import annotations

import difflib
import importlib

from rs_transfer.errors import UserError

from .base import PRESETS, PROTOCOLS, DataReport, RunContext, Task, home

# CLI name -> module exposing TASK. Order = Table 4 column order (Kinetics-400 is Table 5's).
TASK_MODULES: dict[str, str] = {
    "cifar100": "rs_transfer.tasks.cifar100",
    "voc-det": "rs_transfer.tasks.voc_det",
    "voc-seg": "rs_transfer.tasks.voc_seg",
    "ade20k": "rs_transfer.tasks.ade20k",
    "nyu-depth": "rs_transfer.tasks.nyu_depth",
    "kinetics400": "rs_transfer.video.task",
    "imagenet": "rs_transfer.tasks.imagenet",       # pre-training (Table 1, the recipes; issue 10)
    # Kornblith et al. 2019's classification transfer suite (Birdsnap has no stable release; README), their order.
    "food101": "rs_transfer.tasks.food101",
    "cifar10": "rs_transfer.tasks.cifar10",
    "sun397": "rs_transfer.tasks.sun397",
    "stanford-cars": "rs_transfer.tasks.stanford_cars",
    "fgvc-aircraft": "rs_transfer.tasks.fgvc_aircraft",
    "voc07-cls": "rs_transfer.tasks.voc07_cls",
    "dtd": "rs_transfer.tasks.dtd",
    "oxford-pets": "rs_transfer.tasks.oxford_pets",
    "caltech101": "rs_transfer.tasks.caltech101",
    "flowers102": "rs_transfer.tasks.flowers102",
}
# Report column titles for tasks whose module may not exist yet (a loaded Task's own title wins).
TITLES: dict[str, str] = {
    "cifar100": "CIFAR-100 top-1", "voc-det": "Pascal det", "voc-seg": "Pascal seg", "ade20k": "ADE seg",
    "nyu-depth": "NYU depth", "kinetics400": "Kinetics-400 top-1",
    "imagenet": "ImageNet top-1",
}
TABLE4_TASKS: tuple[str, ...] = ("cifar100", "voc-det", "voc-seg", "ade20k", "nyu-depth")
# The transfer12 study's columns: Kornblith et al.'s 12 datasets minus Birdsnap, with our CIFAR-100 (11).
TRANSFER12_TASKS: tuple[str, ...] = ("food101", "cifar10", "cifar100", "sun397", "stanford-cars", "fgvc-aircraft",
                                     "voc07-cls", "dtd", "oxford-pets", "caltech101", "flowers102")


class TaskNotAvailable(UserError):
    """A known task whose module is not installed/written yet."""


def list_tasks(available_only: bool = False) -> list[str]:
    """All known task names (Table 4 order), or only those whose module imports."""
    return [n for n in TASK_MODULES if not available_only or is_available(n)]


def _check_name(name: str) -> None:
    if name not in TASK_MODULES:
        close = difflib.get_close_matches(name, list(TASK_MODULES), n=3, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UserError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(TASK_MODULES)}.")


def get_task(name: str) -> Task:
    """The registered :class:`Task`; ``UserError`` for unknown names, ``TaskNotAvailable`` for missing modules."""
    _check_name(name)
    module = TASK_MODULES[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.startswith(err.name):
            raise TaskNotAvailable(f"task {name!r} is not available in this install ({module} does not exist "
                                   f"yet). Available: {', '.join(list_tasks(True)) or 'none'}.") from None
        raise
    task = getattr(mod, "TASK", None)
    if not isinstance(task, Task):
        raise TaskNotAvailable(f"task {name!r}: {module} does not define TASK = Task(...)")
    return task


def is_available(name: str) -> bool:
    """Whether the task's module exists (found without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(TASK_MODULES[name]) is not None
    except (ModuleNotFoundError, KeyError):
        return False


def title(name: str) -> str:
    """Report column title; a report must never fail because one task module is broken or absent."""
    try:
        return get_task(name).title
    except Exception:  # noqa: BLE001
        return TITLES.get(name, name)


__all__ = ["PRESETS", "PROTOCOLS", "TABLE4_TASKS", "TRANSFER12_TASKS", "TASK_MODULES", "DataReport", "RunContext",
           "Task", "TaskNotAvailable", "get_task", "home", "is_available", "list_tasks", "title"]
