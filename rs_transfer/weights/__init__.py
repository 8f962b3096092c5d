"""Checkpoint loading with automatic key mapping, named sources and their declared input normalisation.

Names are imported on first use (PEP 562): ``rs-transfer list weights`` reads the named-source table without
importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CheckpointError": "errors", "mmengine_safe_globals": "formats", "read_checkpoint": "formats",
    "LoadReport": "loader", "WeightsMismatchError": "loader", "load_weights": "loader", "read_source": "loader",
    "save_weights": "loader", "IMAGENET": "normalization", "NORMALIZATIONS": "normalization",
    "SWAV": "normalization", "UNIT": "normalization", "Normalization": "normalization",
    "NormalizationDecision": "normalization", "NormalizationWarning": "normalization",
    "decide_normalization": "normalization", "parse_normalization": "normalization", "SOURCES": "sources",
    "WeightSource": "sources", "download": "sources", "resolve": "sources",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .errors import CheckpointError
    from .formats import mmengine_safe_globals, read_checkpoint
    from .loader import LoadReport, WeightsMismatchError, load_weights, read_source, save_weights
    from .normalization import (IMAGENET, NORMALIZATIONS, SWAV, UNIT, Normalization, NormalizationDecision,
                                NormalizationWarning, decide_normalization, parse_normalization)
    from .sources import SOURCES, WeightSource, download, resolve


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
