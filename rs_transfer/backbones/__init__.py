"""The backbone family: one ResNet implementation, a registry of named variants.

The registry and the block table import without torch (``rs-transfer list models`` stays instant); the model
classes are imported on first use.
"""
from typing import Any

from .blocks import BLOCKS_PER_DEPTH
from .registry import ModelSpec, UnknownModelError, build_backbone, create_model, get_spec, list_models, register_model

__all__ = ["BLOCKS_PER_DEPTH", "Bottleneck", "ModelSpec", "ResNetRS", "UnknownModelError", "build_backbone",
           "create_model", "get_spec", "list_models", "register_model"]


def __getattr__(name: str) -> Any:
    if name in ("Bottleneck", "ResNetRS"):
        from . import resnet

        return getattr(resnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
