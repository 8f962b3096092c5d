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
