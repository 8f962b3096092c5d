"""What a study cell would run, computed without running it: the same :func:`rs_transfer.runner.prepare_run` the
run itself uses, so the identity compared here is the one the run records (:mod:`rs_transfer.studies.reuse`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError


def expected_hash(task: str, backbone: str, *, world_size: int = 1, **kwargs: Any) -> str:
    """The identity (``results.json``'s ``config_hash``) of the run these :func:`run_experiment` arguments would
    make, with ``world_size`` processes. A study reuses a row only when this equals the row's recorded hash."""
    from rs_transfer.runner import prepare_run

    kwargs.pop("launcher", None)    # how processes start is not part of the identity; their number is
    kwargs.pop("tracking", None)    # nor where the logs go (rs_transfer.runner.tracking)
    return prepare_run(task, backbone, world_size=world_size, check_data=False, **kwargs).config_hash


def expected_hash_or_none(task: str, backbone: str, **kwargs: Any) -> str | None:
    """:func:`expected_hash`, or None when the cell cannot be prepared (its weights file is gone...): the run
    itself then says why."""
    try:
        return expected_hash(task, backbone, **kwargs)
    except UserError:
        return None


def run_or_reuse(runner: Callable[..., dict[str, Any]], task: str, backbone: str, work_dir: Path,
                 kwargs: dict[str, Any], *, world: int, launcher: str, finished: dict[str, dict[str, Any]] | None,
                 extra: dict[str, Any] | None = None, log: Callable[[str], Any] | None = None
                 ) -> tuple[dict[str, Any], bool]:
    """One cell of a row study (table1, table5, scaling): ``(results, reused)``. A finished run of exactly this
    configuration (:func:`expected_hash` with the cell's own ``world`` size) is reused by the one rule
    (:func:`rs_transfer.studies.reuse.reusable`): found by identity anywhere in the study folder (``finished``,
    :func:`rs_transfer.studies.reuse.finished_runs`) or, with ``finished=None``, in the cell's own folder only.
    Otherwise ``runner`` runs it (resuming from the folder's checkpoint); ``extra``: runner-only arguments."""
    from rs_transfer.results import read_results
    from rs_transfer.studies.reuse import reusable

    expected = expected_hash(task, backbone, work_dir=work_dir, world_size=world, **kwargs)
    found = finished.get(expected) if finished is not None else read_results(work_dir)
    if reusable(found, expected, str(work_dir)):
        return found, True   # type: ignore[return-value]
    if found is not None and log is not None:
        log(f"[stale] {work_dir}: results.json ran another configuration (config hash differs); running again")
    return runner(task, backbone, work_dir=work_dir, launcher=launcher,
                  resume=(Path(work_dir) / "last_checkpoint").is_file(), **kwargs, **(extra or {})), False
