"""Model registry: a name -> (class, keyword arguments) table, one ``register_model`` line per model.

Names are plain strings here because users type them on the command line; configs use the class itself
(``type=ResNetRS``). Unknown names and unknown overrides fail with the closest valid choices.

A table registers its class as ``"module:Class"``: the class (and torch) is imported the first time a model is
built, so that listing the models, ``--help`` and argument errors stay instant.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rs_transfer.errors import UserError

if TYPE_CHECKING:
    from torch import nn


class UnknownModelError(UserError, KeyError):
    """A model name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a named model.

    ``resolution`` is the input size the model is published at (official README / Table 2), used by ``inspect``
    for FLOPs; ``kwargs`` are the constructor arguments that define the variant. ``target`` is the class, or
    ``"module:Class"`` until :attr:`builder` first imports it.
    """

    name: str
    target: Callable[..., "nn.Module"] | str
    family: str
    resolution: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def builder(self) -> Callable[..., "nn.Module"]:
        if not isinstance(self.target, str):
            return self.target
        return _resolve(self.target, self.name, tuple(self.kwargs))


@lru_cache(maxsize=None)
def _resolve(target: str, name: str, keys: tuple[str, ...]) -> Callable[..., "nn.Module"]:
    """Import ``"module:Class"`` once; the registered kwargs are checked then (as registration checks a class)."""
    module, _, attr = target.partition(":")
    builder = getattr(importlib.import_module(module), attr)
    _check_overrides(builder, dict.fromkeys(keys), name)
    return builder


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., "nn.Module"] | str, *, family: str, resolution: int,
                   description: str = "", **kwargs: Any) -> ModelSpec:
    """Register ``name``; ``builder`` is a class, or ``"module:Class"`` to import it only when a model is built."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if not isinstance(builder, str):
        _check_overrides(builder, kwargs, name)
    spec = ModelSpec(name, builder, family, resolution, dict(kwargs), description)
    _MODELS[name] = spec
    return spec


def _check_overrides(builder: Callable[..., "nn.Module"], overrides: dict[str, Any], name: str) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in overrides:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"{name}: unknown option {key!r}.{hint} Valid options: {', '.join(sorted(params))}")


def get_spec(name: str) -> ModelSpec:
    _ensure_registered()
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=4, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} `rs-transfer list models` shows all "
                                f"{len(_MODELS)}.") from None


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family (``resnet``, ``resnetrs``, ``resnet3d``, ``resnetrs3d``)."""
    _ensure_registered()
    return sorted((n for n, s in _MODELS.items() if family is None or s.family == family),
                  key=lambda n: (_MODELS[n].family, len(n), n))


def create_model(name: str, *, num_classes: int = 1000, **overrides: Any) -> "nn.Module":
    """An ImageNet-style classifier (or video classifier for 3D names) with the registered architecture."""
    spec = get_spec(name)
    _check_overrides(spec.builder, overrides, name)
    return spec.builder(**{**spec.kwargs, "num_classes": num_classes, **overrides})


def build_backbone(name: str, *, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                   norm_eval: bool = False, **overrides: Any) -> "nn.Module":
    """A headless model whose forward returns the stage feature maps in ``out_indices``.

    ``model.feature_info`` gives channels and stride of every stage.
    """
    return create_model(name, num_classes=0, out_indices=tuple(out_indices), frozen_stages=frozen_stages,
                        norm_eval=norm_eval, **overrides)


def _ensure_registered() -> None:
    # The model tables live next to their implementations; importing them registers every model exactly once.
    from . import zoo  # noqa: F401
    from rs_transfer.video import models as _video_models  # noqa: F401
