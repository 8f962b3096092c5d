"""Where rs-transfer keeps things on a machine, and the names of the files a run leaves: defined once.

``$RS_TRANSFER_HOME`` (default ``~/.cache/rs-transfer``, ``~`` expanded) holds named weights (``weights/``),
datasets (``data/<folder>``), generated mini datasets (``data/mini/<task>``) and caches (``cache/``).
"""
from __future__ import annotations

import os
from pathlib import Path

RESULTS_NAME = "results.json"          # one per finished run: what reports and studies read
EXPORT_NAME = "weights.safetensors"    # a finished training run's evaluated weights (``--weights WORK_DIR``)


def rs_home() -> Path:
    """``$RS_TRANSFER_HOME`` (default ``~/.cache/rs-transfer``)."""
    return Path(os.environ.get("RS_TRANSFER_HOME") or Path.home() / ".cache" / "rs-transfer").expanduser()


def weights_dir() -> Path:
    """Named weight sources: ``$RS_TRANSFER_HOME/weights``."""
    return rs_home() / "weights"
