"""Checkpoint loading with automatic key mapping, named sources and their declared input normalisation."""
from .formats import CheckpointError, mmengine_safe_globals, read_checkpoint
from .loader import LoadReport, WeightsMismatchError, load_weights, read_source, save_weights
from .normalization import (IMAGENET, NORMALIZATIONS, SWAV, UNIT, Normalization, NormalizationDecision,
                            NormalizationWarning, decide_normalization, parse_normalization)
from .sources import SOURCES, WeightSource, download, resolve

__all__ = ["CheckpointError", "IMAGENET", "LoadReport", "NORMALIZATIONS", "Normalization", "NormalizationDecision",
           "NormalizationWarning", "SOURCES", "SWAV", "UNIT", "WeightSource", "WeightsMismatchError",
           "decide_normalization", "download", "load_weights", "mmengine_safe_globals", "parse_normalization",
           "read_checkpoint", "read_source", "resolve", "save_weights"]
