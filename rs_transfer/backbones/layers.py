"""Small building blocks shared by the 2D and 3D ResNet families.

Every block takes a ``conv`` factory so that the same code builds 2D convolutions (images) and 3D convolutions
(video): the 3D family passes ``nn.Conv3d`` and per-block temporal kernels, the 2D family ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below it).

    timm rounds the SE reduced width this way; for the standard widths (64..512 bottleneck channels) it is exact,
    so it only matters for fractional width multipliers.
    """
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: global average pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid gate.

    Works for 2D and 3D inputs (the pooling averages every dimension after the channels). The parameter names
    ``fc1``/``fc2`` are timm's, so timm ResNet-RS checkpoints load without renaming.
    """

    def __init__(self, channels: int, reduced: int, conv: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        self.fc1 = conv(channels, reduced, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = conv(reduced, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        scale = x.mean(dims, keepdim=True)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * scale.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate`` while training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def stochastic_depth_rates(rate: float, blocks_per_stage: tuple[int, ...], schedule: str) -> list[list[float]]:
    """Per-block drop rates for the two schedules in use.

    - ``"stage"`` (TF ResNet-RS / Model Garden): constant inside a stage, ``rate * (stage + 2) / 5`` for stages 0..3,
      i.e. 0.4/0.6/0.8/1.0 of ``rate`` (the stem counts as block 1 of 5).
    - ``"linear"`` (timm): grows linearly with the global block index, ``rate * i / (n_blocks - 1)``.
    """
    if schedule == "stage":
        n = len(blocks_per_stage) + 1
        return [[rate * (s + 2) / n] * b for s, b in enumerate(blocks_per_stage)]
    if schedule == "linear":
        total = sum(blocks_per_stage)
        out, i = [], 0
        for b in blocks_per_stage:
            out.append([rate * (i + j) / max(total - 1, 1) for j in range(b)])
            i += b
        return out
    raise ValueError(f"drop_path_schedule must be 'stage' or 'linear', got {schedule!r}")
