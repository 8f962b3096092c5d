"""FLOPs of a forward pass, counted one way for ``inspect``, the scaling study and study cost estimates.

A multiply-add counts as 2 FLOPs (torch's ``FlopCounterMode``; the paper's Table 2 counts the same way: ResNet-RS-350
at 256 px is 68.75 B here, 69 B there). mmengine's complexity analysis counts a multiply-add as 1: convert with
:data:`MMENGINE_TO_FLOPS` before comparing.
"""
from __future__ import annotations

from typing import Any

MMENGINE_TO_FLOPS = 2   # mmengine/fvcore "flops" are multiply-adds


def count_flops(model: Any, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of ``model`` on zeros of ``shape`` (eval mode, no autograd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape))
    return int(counter.get_total_flops())


def train_flops_per_sample(cfg: Any) -> tuple[int | None, str]:
    """Training FLOPs of one sample of a resolved run config: forward + backward = 3 x forward (backward ~ 2 x
    forward), the forward counted as :func:`count_flops` does (multiply-add = 2), for the WHOLE model a run trains
    at its training input size: a segmentor/depth model (encoder-decoder) at the data preprocessor's crop, a
    classifier (backbone + head) at the dataset's crop. Returns ``(None, why)`` where the input size is not fixed
    (a detector's keep-ratio resize) or the model is not one of those."""
    import warnings

    import torch
    from mmengine.registry import MODELS, DefaultScope
    from torch.utils.flop_counter import FlopCounterMode

    model_cfg = cfg.model
    crop = (model_cfg.get("data_preprocessor") or {}).get("size")
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
        warnings.simplefilter("ignore")   # model-building notices (mmseg loss defaults) are not the plan's business
        if crop and hasattr(model_cfg.get("type"), "encode_decode"):
            model, shape, how = MODELS.build(model_cfg), (1, 3, *crop), f"whole model at {crop[0]}x{crop[1]}"
        elif isinstance(dataset.get("size"), int) and "num_classes" in (model_cfg.get("backbone") or {}):
            size = int(dataset["size"])
            model, shape, how = MODELS.build(model_cfg["backbone"]), (1, 3, size, size), f"classifier at {size} px"
        else:
            return None, "FLOPs not counted for this model (no fixed training input size)"
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if hasattr(model, "encode_decode"):
            model(torch.zeros(shape), mode="tensor")
        else:
            model(torch.zeros(shape))
    return 3 * int(counter.get_total_flops()), how
