"""The input normalisation goes into every mmengine checkpoint ``rs-transfer run`` writes (``meta.normalization``),
so that ``--weights work_dir/iter_N.pth`` (an interrupted run) reloads as exactly as the final
``weights.safetensors`` export: :func:`rs_transfer.weights.decide_normalization` reads it as checkpoint metadata.

What is recorded is what the run really fed the network: the data preprocessor's mean/std.
"""
from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .normalization import NORMALIZATIONS, Normalization


@HOOKS.register_module()
class NormalizationMetaHook(Hook):
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
