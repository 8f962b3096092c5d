"""rs-transfer: do these weights transfer better? ResNet-RS transfer and video benchmarks on one runner.

The public names are imported on first use (PEP 562 ``__getattr__``): ``import rs_transfer`` and every
``rs_transfer.<submodule>`` import would otherwise pull in torch (seconds), which commands that do not train
(``rs-transfer --help``, ``list tasks``) must not pay for.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
# public name -> submodule that defines it
_LAZY = {"ResNetRS": "backbones", "build_backbone": "backbones", "create_model": "backbones",
         "list_models": "backbones", "LoadReport": "weights", "load_weights": "weights", "save_weights": "weights"}
__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:
    from .backbones import ResNetRS, build_backbone, create_model, list_models
    from .weights import LoadReport, load_weights, save_weights


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
