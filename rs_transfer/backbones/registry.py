"""Model registry: a name -> (class, keyword arguments) table, one ``register_model`` line per model.

Names are plain strings here because users type them on the command line; configs use the class itself
(``type=ResNetRS``). Unknown names and unknown overrides fail with the closest valid choices.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from rs_transfer.errors import UserError


class UnknownModelError(UserError, KeyError):
    """A model name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a named model.

    ``resolution`` is the input size the model is published at (official README / Table 2), used by ``inspect``
    for FLOPs; ``kwargs`` are the constructor arguments that define the variant.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    resolution: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, family: str, resolution: int,
                   description: str = "", **kwargs: Any) -> ModelSpec:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _check_overrides(builder, kwargs, name)
    spec = ModelSpec(name, builder, family, resolution, dict(kwargs), description)
    _MODELS[name] = spec
    return spec


def _check_overrides(builder: Callable[..., nn.Module], overrides: dict[str, Any], name: str) -> None:
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


def create_model(name: str, *, num_classes: int = 1000, **overrides: Any) -> nn.Module:
    """An ImageNet-style classifier (or video classifier for 3D names) with the registered architecture."""
    spec = get_spec(name)
    _check_overrides(spec.builder, overrides, name)
    return spec.builder(**{**spec.kwargs, "num_classes": num_classes, **overrides})


def build_backbone(name: str, *, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                   norm_eval: bool = False, **overrides: Any) -> nn.Module:
    """A headless model whose forward returns the stage feature maps in ``out_indices``.

    ``model.feature_info`` gives channels and stride of every stage.
    """
    return create_model(name, num_classes=0, out_indices=tuple(out_indices), frozen_stages=frozen_stages,
                        norm_eval=norm_eval, **overrides)


def _ensure_registered() -> None:
    # The model tables live next to their implementations; importing them registers every model exactly once.
    from . import zoo  # noqa: F401
    from rs_transfer.video import models as _video_models  # noqa: F401
