"""The input-normalisation check (issue 8 §4): the data preprocessor's mean AND std must equal the normalisation
the loaded weights declare, checked right after the weights load and before the first training step.

Why twice-decided: the data preprocessor's mean/std are chosen before the model exists (``runner.weights_info``),
while :func:`rs_transfer.load_weights` sets the authoritative ``input_normalization`` on the backbone when
``ResNetRS.init_weights`` loads the file. If they disagree (a ``--cfg-options model.data_preprocessor.std=...``, a
checkpoint whose metadata says otherwise), every number of the run would be computed on inputs the network was not
trained on, so the run stops with a one-line error naming both sides.

When: mmengine 0.10.7 ``Runner.train()`` builds the loops and optimizer, calls ``_init_model_weights()`` (our
``init_weights`` loads the weights), then ``load_or_resume()``, then ``train_loop.run()``, whose first action is
the ``before_train`` hook call: :class:`NormalizationCheckHook` runs there, before any iteration.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmengine.hooks import Hook

from rs_transfer.errors import UserError
from rs_transfer.registry import HOOKS
from rs_transfer.weights.normalization import NORMALIZATIONS, Normalization

TOLERANCE = 1e-3   # 0-255 units; printed values are rounded to 4 digits, so exact equality is not the test


def _floats(values: Any) -> list[float]:
    import torch

    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.detach().flatten().cpu()]
    return [float(v) for v in values]


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= TOLERANCE * max(1.0, abs(y)) for x, y in zip(a, b))


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def check_normalization(model: Any, expected: dict[str, Any]) -> None:
    """Raise :class:`UserError` when a module of ``model`` declares an ``input_normalization`` (set when weights
    load) whose mean or std differs from ``expected`` (``{"name", "mean", "std"}``, 0-255 units: what the data
    preprocessor or feature extractor feeds the network)."""
    mean, std = _floats(expected["mean"]), _floats(expected["std"])
    for name, module in model.named_modules():
        norm = getattr(module, "input_normalization", None)
        if norm is None:
            continue
        if not (_close(_floats(norm.mean), mean) and _close(_floats(norm.std), std)):
            where = name or type(module).__name__
            raise UserError(
                f"input normalisation mismatch: the data preprocessor uses {expected.get('name', 'custom')} mean "
                f"{_fmt(mean)} std {_fmt(std)}, but the weights loaded into {where} declare {norm.name} mean "
                f"{_fmt(_floats(norm.mean))} std {_fmt(_floats(norm.std))}; drop the --cfg-options that change "
                f"model.data_preprocessor mean/std, or fix the checkpoint's recorded normalisation")


def preprocessor_normalization(model: Any) -> dict[str, Any] | None:
    """The mean/std the model's data preprocessor actually applies (mmengine ``ImgDataPreprocessor`` and its
    mmdet/mmseg subclasses, our ``VideoDataPreprocessor``); mean 0 / std 1 when it does not normalise; ``None``
    when the model has no data preprocessor."""
    dp = getattr(model, "data_preprocessor", None)
    if dp is None:
        return None
    mean, std = getattr(dp, "mean", None), getattr(dp, "std", None)
    if mean is None or std is None or getattr(dp, "_enable_normalize", True) is False:
        return {"name": "none (raw 0-255 pixels)", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    return {"name": "data_preprocessor", "mean": _floats(mean), "std": _floats(std)}


@HOOKS.register_module()
class NormalizationCheckHook(Hook):
    """Runs :func:`check_normalization` on the training model in ``before_train`` (weights loaded, no step yet)."""

    priority = "VERY_HIGH"

    def before_train(self, runner: Any) -> None:
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        expected = preprocessor_normalization(model)
        if expected is not None:
            check_normalization(model, expected)


@HOOKS.register_module()
class NormalizationMetaHook(Hook):
    """The input normalisation goes into every mmengine checkpoint ``rs-transfer run`` writes
    (``meta.normalization``), so that ``--weights work_dir/iter_N.pth`` (an interrupted run) reloads as exactly as
    the final ``weights.safetensors`` export: :func:`rs_transfer.weights.decide_normalization` reads it as
    checkpoint metadata. What is recorded is what the run really fed the network: the data preprocessor's
    mean/std."""

    priority = "LOW"

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        model = getattr(runner.model, "module", runner.model)  # DDP wraps the model
        pre = getattr(model, "data_preprocessor", None)
        mean, std = getattr(pre, "mean", None), getattr(pre, "std", None)
        if mean is None or std is None:  # a preprocessor without normalisation: nothing to declare
            return
        norm = Normalization("custom", tuple(float(v) for v in mean.flatten()),  # type: ignore[arg-type]
                             tuple(float(v) for v in std.flatten()))
        norm = next((n for n in NORMALIZATIONS.values() if n.same_as(norm)), norm)
        checkpoint.setdefault("meta", {})["normalization"] = norm.to_dict()
