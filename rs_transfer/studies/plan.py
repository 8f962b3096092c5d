"""What a study cell would run, computed without running it: the same :func:`rs_transfer.runner.prepare_run` the
run itself uses, so the identity compared here is the one the run records (:mod:`rs_transfer.studies.reuse`)."""
from __future__ import annotations

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
