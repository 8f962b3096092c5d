"""Small building blocks shared by the 2D and 3D ResNet families.

Every block takes a ``conv`` factory so that the same code builds 2D convolutions (images) and 3D convolutions
(video): the 3D family passes ``nn.Conv3d`` and per-block temporal kernels, the 2D family ``nn.Conv2d``.
"""
from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


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


_Frozen = TypeVar("_Frozen", bound="FrozenStagesMixin")


class FrozenStagesMixin:
    """mmdet/mmseg backbone training behaviour, shared by the 2D (:class:`~.resnet.ResNetRS`) and 3D
    (``video.resnet3d.ResNet3D``) ResNets so that "frozen" means the same thing in both.

    ``frozen_stages`` -1: nothing frozen, 0: the stem (``conv1``, ``bn1``, ``maxpool``), k: the stem and
    ``layer1``..``layerk``. Frozen modules get ``requires_grad=False`` and stay in eval mode through every
    ``train()`` (so their BN running statistics never move); ``norm_eval`` puts every BN in eval mode while
    training (the statistics stay frozen, the affine parameters still learn unless frozen too).

    The host must be an ``nn.Module`` with the attributes named above, set before :meth:`_freeze_stages` first
    runs (at the end of its ``__init__``). List the mixin before ``nn.Module``/``BaseModule`` in the bases so its
    :meth:`train` wraps the module's.
    """

    frozen_stages: int
    norm_eval: bool

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        host: nn.Module = self  # type: ignore[assignment]  (the mixin is only used on nn.Module subclasses)
        modules: list[nn.Module] = [host.conv1, host.bn1, host.maxpool]  # type: ignore[list-item]
        modules += [getattr(host, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return modules

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self: _Frozen, mode: bool = True) -> _Frozen:
        super().train(mode)  # type: ignore[misc]  (nn.Module.train, next in the host's MRO)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():  # type: ignore[attr-defined]
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


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


class SelectiveKernel(nn.Module):
    """SimCLRv2's selective-kernel 3x3 convolution (google-research/simclr ``tf2/resnet.py`` ``SK_Conv2D``; the
    PyTorch conversion Separius/SimCLRv2-Pytorch ``SelectiveKernel`` computes the same).

    One 3x3 conv with ``2 * out`` channels + BN-ReLU makes two streams (split in halves, both 3x3); their sum is
    global-average-pooled and mixed by 1x1 conv (``mid = max(int(out * sk_ratio), min_dim)``) -> BN-ReLU -> 1x1 conv
    (``2 * out``); a softmax over the two streams weights them, and the weighted sum is the output. All convs are
    bias-free. The output is a convex combination of ReLU outputs, so it is non-negative (a ReLU after it is a
    no-op, which lets :class:`~rs_transfer.backbones.resnet.Bottleneck` keep its ``conv2 -> bn2 -> act`` order).
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1, sk_ratio: float = 0.0625,
                 min_dim: int = 32) -> None:
        super().__init__()
        mid = max(int(out_chs * sk_ratio), min_dim)
        self.conv = nn.Conv2d(in_chs, 2 * out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_chs)
        self.act = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_chs, mid, 1, bias=False)
        self.bn_fc1 = nn.BatchNorm2d(mid)
        self.fc2 = nn.Conv2d(mid, 2 * out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = torch.stack(self.act(self.bn(self.conv(x))).chunk(2, dim=1))        # 2, B, C, H, W
        g = streams.sum(0).mean((2, 3), keepdim=True)                                 # B, C, 1, 1
        mix = torch.stack(self.fc2(self.act(self.bn_fc1(self.fc1(g)))).chunk(2, dim=1)).softmax(0)
        return (streams * mix).sum(0)


class SimCLRProjectionPool(nn.Module):
    """The pooling in front of SimCLRv2 sk1's projection shortcut (ResNet-D style), as the PyTorch conversion
    computes it: zero-pad one row/column at the bottom/right, then a 2x2 average pool with the block's stride (also
    at stride 1). On even sizes at stride 2 this equals TF's ``FixedPadding(2)`` + VALID pool; at stride 1 TF's
    ``SAME`` pool averages only the valid pixels of the last row/column, the conversion counts the zero padding
    (kept here: parity with the checkpoints people load)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(nn.functional.pad(x, (0, 1, 0, 1)), 2, self.stride)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def _same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TF ``SAME`` padding of one dimension: total ``max((ceil(n/s) - 1) * s + (k - 1) * d + 1 - n, 0)``, the
    smaller half before (TF puts the extra pixel at the end; PyTorch's ``padding=k//2`` is symmetric)."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TF ``SAME`` padding computed from the input size (the same parameters and names as Conv2d).
    JAX/Haiku and TF-Slim ResNets (BYOL's release) pad strided convolutions asymmetrically."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = _same_pad(x.shape[-2], kh, sh, dh)
        left, right = _same_pad(x.shape[-1], kw, sw, dw)
        x = nn.functional.pad(x, (left, right, top, bottom))
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    """Max-pool with TF ``SAME`` padding (padding never wins the max, as in TF)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        k, s = (k if isinstance(k, int) else k[0]), (s if isinstance(s, int) else s[0])
        top, bottom = _same_pad(x.shape[-2], k, s)
        left, right = _same_pad(x.shape[-1], k, s)
        x = nn.functional.pad(x, (left, right, top, bottom), value=float("-inf"))
        return nn.functional.max_pool2d(x, k, s, 0, 1, self.ceil_mode)


def use_tf_same_padding(model: nn.Module) -> None:
    """Switch every 2D conv and max-pool of ``model`` to TF ``SAME`` padding in place (names and parameters kept).
    Only strided layers change results: at stride 1 SAME equals PyTorch's symmetric ``k // 2`` for odd kernels."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Conv2d:
                child.__class__ = Conv2dSame
            elif type(child) is nn.MaxPool2d:
                setattr(parent, name, MaxPool2dSame(child.kernel_size, child.stride, 0, ceil_mode=child.ceil_mode))


def pretrained_init_cfg(weights: str, strict: bool = True, trust: bool = False, normalization: str | None = None,
                        inflate: str | None = None) -> dict[str, Any]:
    """The ``init_cfg`` that loads ``weights`` when mmengine initialises the model: the registry name
    ``rs_transfer.Pretrained`` (rs_transfer/registry.py -> rs_transfer/weights/initializer.py), so the backbone
    never imports the loader (which imports the backbones to suggest a fitting model)."""
    cfg: dict[str, Any] = dict(type="rs_transfer.Pretrained", source=str(weights), strict=bool(strict),
                               trust=bool(trust), normalization=normalization)
    if inflate is not None:
        cfg["inflate"] = inflate
    return cfg
