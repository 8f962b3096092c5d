"""Checkpoint loading with automatic key mapping, named sources and their input normalisation."""
from .formats import CheckpointError, mmengine_safe_globals, read_checkpoint
from .loader import LoadReport, WeightsMismatchError, load_weights, save_weights
from .sources import IMAGENET, NORMALIZATIONS, SOURCES, UNIT, Normalization, WeightSource, download, resolve

__all__ = ["CheckpointError", "IMAGENET", "LoadReport", "NORMALIZATIONS", "Normalization", "SOURCES", "UNIT",
           "WeightSource", "WeightsMismatchError", "download", "load_weights", "mmengine_safe_globals",
           "read_checkpoint", "resolve", "save_weights"]
