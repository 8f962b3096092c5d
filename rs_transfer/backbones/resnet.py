"""ONE ResNet implementation: ResNet-RS, vanilla ResNet (ResNet-RS with its switches off) and their 3D variants.

Architecture (PROTOCOLS.md, tensorflow/tpu ``resnet_model.py``, timm ``resnetrs*``):

- stem ``"deep"`` (ResNet-D): 3x3/2 conv 32 -> BN-ReLU -> 3x3 conv 32 -> BN-ReLU -> 3x3 conv 64 -> BN-ReLU; stem
  ``"classic"``: one 7x7/2 conv 64 -> BN-ReLU. ``stem_pool="conv"`` replaces the 3x3/2 max-pool by a 3x3/2 conv+BN-ReLU.
- bottleneck with the stride on the 3x3 conv; ``shortcut="avg"`` (ResNet-D) downsamples with a 2x2 average pool before
  the 1x1 projection, ``shortcut="conv"`` uses a strided 1x1 projection, ``shortcut="simclr"`` is SimCLRv2 sk1's
  (zero-pad + 2x2 average pool in every projection, also at stride 1); SE after the last BN; the last BN's gamma
  starts at zero.
- ``sk_ratio > 0``: SimCLRv2's selective-kernel 3x3 conv (:class:`~.layers.SelectiveKernel`); the SimCLRv2 sk1
  models are ``stem="deep", stem_pool="max", shortcut="simclr", se_ratio=0, sk_ratio=0.0625`` at width 1-3.
- ``padding="tf-same"``: TF/JAX ``SAME`` padding in every conv and max-pool (asymmetric where strided), as the
  networks of JAX/TF releases computed (BYOL); ``"torch"`` (default): PyTorch's symmetric ``k // 2``.
- parameter and buffer names are timm's for ResNet-RS and torchvision's for vanilla ResNet (they agree wherever the
  architectures agree), so both load without renaming.

``dims=3`` builds the video variants with the same blocks: the temporal kernel sits on the first 1x1 conv of each
bottleneck (``[k_t, 1, 1]``, CVRL / TF Model Garden ``resnet_3d.py``), given per block as data.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .blocks import BLOCKS_PER_DEPTH
from .layers import (DropPath, FrozenStagesMixin, SelectiveKernel, SimCLRProjectionPool, SqueezeExcite, make_divisible,
                     pretrained_init_cfg, stochastic_depth_rates, use_tf_same_padding)

def _nd(dims: int, t: int, s: int) -> int | tuple[int, int, int]:
    """A kernel/stride for ``dims`` dimensions: ``s`` in 2D, ``(t, s, s)`` in 3D."""
    return s if dims == 2 else (t, s, s)


def _pad(k: int | tuple[int, ...]) -> int | tuple[int, ...]:
    return k // 2 if isinstance(k, int) else tuple(v // 2 for v in k)


class Bottleneck(nn.Module):
    """1x1 (temporal k_t) -> 3x3 (stride) -> 1x1 x4, with optional SE and stochastic depth."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, *, stride: int = 1, temporal_kernel: int = 1,
                 temporal_stride: int = 1, shortcut: str = "avg", se_ratio: float = 0.0, drop_path: float = 0.0,
                 dims: int = 2, sk_ratio: float = 0.0, sk_min_dim: int = 32) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        out_chs = planes * self.expansion
        k1 = _nd(dims, temporal_kernel, 1)
        self.conv1 = conv(in_chs, planes, k1, padding=_pad(k1), bias=False)
        self.bn1 = norm(planes)
        k2 = _nd(dims, 1, 3)
        if sk_ratio > 0:
            if dims != 2:
                raise ValueError("selective kernels (sk_ratio > 0) are 2D only")
            self.conv2: nn.Module = SelectiveKernel(planes, planes, stride=stride, sk_ratio=sk_ratio,
                                                    min_dim=sk_min_dim)
            self.bn2: nn.Module = nn.Identity()  # the SK conv ends in its own BN-ReLU
        else:
            self.conv2 = conv(planes, planes, k2, stride=_nd(dims, temporal_stride, stride), padding=_pad(k2),
                              bias=False)
            self.bn2 = norm(planes)
        self.conv3 = conv(planes, out_chs, 1, bias=False)
        self.bn3 = norm(out_chs)
        # timm: SE reduced width = make_divisible(out_chs * ratio); 0.25 of out_chs equals the bottleneck width.
        self.se = SqueezeExcite(out_chs, make_divisible(out_chs * se_ratio), conv) if se_ratio > 0 else None
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path)
        self.downsample = self._shortcut(in_chs, out_chs, stride, temporal_stride, shortcut, dims)

    @staticmethod
    def _shortcut(in_chs: int, out_chs: int, stride: int, t_stride: int, kind: str, dims: int) -> nn.Module | None:
        if stride == 1 and t_stride == 1 and in_chs == out_chs:
            return None
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        if kind == "conv":  # torchvision names: downsample.0 (conv), downsample.1 (bn)
            return nn.Sequential(conv(in_chs, out_chs, 1, stride=_nd(dims, t_stride, stride), bias=False),
                                 norm(out_chs))
        if kind not in ("avg", "simclr"):
            raise ValueError(f"shortcut must be 'avg', 'conv' or 'simclr', got {kind!r}")
        # timm names: downsample.0 (pool or identity), downsample.1 (conv), downsample.2 (bn)
        if kind == "simclr":
            if dims != 2:
                raise ValueError("shortcut='simclr' is 2D only")
            pool: nn.Module = SimCLRProjectionPool(stride)
        elif stride == 1 and t_stride == 1:
            pool = nn.Identity()
        elif dims == 2:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        else:
            pool = nn.AvgPool3d((t_stride, 2, 2), (t_stride, stride, stride), ceil_mode=True,
                                count_include_pad=False)
        return nn.Sequential(pool, conv(in_chs, out_chs, 1, bias=False), norm(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        return self.act(self.drop_path(x) + shortcut)


class ResNetRS(FrozenStagesMixin, BaseModule):
    """ResNet / ResNet-RS classifier or backbone, 2D or 3D, with every paper switch as an argument.

    As a classifier (``out_indices=None``) ``forward`` returns logits (or pooled features when ``num_classes=0``).
    As a backbone (``out_indices`` given) it returns a tuple of stage feature maps, mmdet/mmseg style; then
    ``frozen_stages`` (-1: none, 0: stem, k: stem + stages 1..k) and ``norm_eval`` (BN statistics frozen) apply
    (:class:`~.layers.FrozenStagesMixin`, shared with the 3D ResNet).
    ``weights`` (a path or named source) is loaded by mmengine's ``init_weights`` through the ``init_cfg``
    ``rs_transfer.Pretrained`` (:func:`rs_transfer.load_weights`; the model does not import the loader), so
    detector/segmentor configs get the same automatic key mapping as everything else; ``weights_strict`` and
    ``weights_trust`` are its ``strict`` / ``trust`` (``rs-transfer run --no-strict / --trust``), and
    ``weights_normalization`` its explicit ``normalization`` (``--normalization``).
    """

    def __init__(self, depth: int | None = 50, *, layers: Sequence[int] | None = None, num_classes: int = 1000,
                 width: float = 1.0, stem: str = "deep", stem_width: int = 32, stem_pool: str = "conv",
                 shortcut: str = "avg", se_ratio: float = 0.25, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, drop_path_schedule: str = "stage", in_chans: int = 3,
                 out_indices: Sequence[int] | None = None, frozen_stages: int = -1, norm_eval: bool = False,
                 dims: int = 2, temporal_kernels: Sequence[Sequence[int]] | None = None,
                 temporal_strides: Sequence[int] = (1, 1, 1, 1), stem_temporal_kernel: int = 5,
                 stem_temporal_stride: int = 2, sk_ratio: float = 0.0, sk_min_dim: int = 32, padding: str = "torch",
                 weights: str | None = None, weights_strict: bool = True, weights_trust: bool = False,
                 weights_normalization: str | None = None,
                 init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if layers is None:
            if depth not in BLOCKS_PER_DEPTH:
                raise ValueError(f"depth {depth} has no block table; pass layers=(a, b, c, d) or one of "
                                 f"{sorted(BLOCKS_PER_DEPTH)}")
            layers = BLOCKS_PER_DEPTH[depth]
        layers = tuple(int(b) for b in layers)
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if temporal_kernels is None:
            temporal_kernels = tuple((1,) * b for b in layers)
        if [len(t) for t in temporal_kernels] != list(layers):
            raise ValueError(f"temporal_kernels must give one kernel per block {layers}, got {temporal_kernels}")
        self.layers, self.dims, self.weights = layers, dims, weights
        self.weights_strict, self.weights_trust = weights_strict, weights_trust  # load_weights' strict / trust
        self.weights_normalization = weights_normalization  # --normalization: load_weights' explicit choice
        self.out_indices = tuple(out_indices) if out_indices is not None else None
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)

        # Stem. Width scales every channel count (TF Model Garden depth_multiplier semantics).
        inplanes = int(64 * width)
        t_k, t_s = stem_temporal_kernel, stem_temporal_stride
        if stem == "deep":
            sw = int(stem_width * width)
            k0 = _nd(dims, t_k, 3)
            self.conv1: nn.Module = nn.Sequential(
                conv(in_chans, sw, k0, stride=_nd(dims, t_s, 2), padding=_pad(k0), bias=False), norm(sw),
                nn.ReLU(inplace=True),
                conv(sw, sw, _nd(dims, 1, 3), padding=_pad(_nd(dims, 1, 3)), bias=False), norm(sw),
                nn.ReLU(inplace=True),
                conv(sw, inplanes, _nd(dims, 1, 3), padding=_pad(_nd(dims, 1, 3)), bias=False))
        elif stem == "classic":
            k0 = _nd(dims, t_k, 7)
            self.conv1 = conv(in_chans, inplanes, k0, stride=_nd(dims, t_s, 2), padding=_pad(k0), bias=False)
        else:
            raise ValueError(f"stem must be 'deep' or 'classic', got {stem!r}")
        self.bn1 = norm(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        kp = _nd(dims, 1, 3)
        if stem_pool == "conv":
            self.maxpool: nn.Module = nn.Sequential(
                conv(inplanes, inplanes, kp, stride=_nd(dims, 1, 2), padding=_pad(kp), bias=False),
                norm(inplanes), nn.ReLU(inplace=True))
        elif stem_pool == "max":
            self.maxpool = (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(kp, stride=_nd(dims, 1, 2), padding=_pad(kp))
        else:
            raise ValueError(f"stem_pool must be 'conv' or 'max', got {stem_pool!r}")

        # Stages.
        dpr = stochastic_depth_rates(drop_path_rate, layers, drop_path_schedule)
        in_chs, reduction, self.feature_info = inplanes, 4, []
        for i, blocks in enumerate(layers):
            planes, stride = int(64 * width * 2 ** i), 1 if i == 0 else 2
            reduction *= stride
            stage = []
            for j in range(blocks):
                first = j == 0
                stage.append(Bottleneck(
                    in_chs, planes, stride=stride if first else 1, temporal_kernel=temporal_kernels[i][j],
                    temporal_stride=temporal_strides[i] if first else 1, shortcut=shortcut, se_ratio=se_ratio,
                    drop_path=dpr[i][j], dims=dims, sk_ratio=sk_ratio, sk_min_dim=sk_min_dim))
                in_chs = planes * Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = in_chs

        # Head (classifier mode only).
        self.drop_rate = drop_rate
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_parameters()
        if padding == "tf-same":  # JAX/TF releases (BYOL): asymmetric SAME padding in the strided layers
            if dims != 2:
                raise ValueError("padding='tf-same' is 2D only")
            use_tf_same_padding(self)
        elif padding != "torch":
            raise ValueError(f"padding must be 'torch' or 'tf-same', got {padding!r}")
        self._freeze_stages()
        if weights:   # loaded by BaseModule.init_weights through rs_transfer.Pretrained (rs_transfer/registry.py)
            self.init_cfg = pretrained_init_cfg(weights, weights_strict, weights_trust, weights_normalization)

    def _init_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)) and not isinstance(getattr(m, "bias", None), torch.Tensor):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # zero-init last BN gamma: each block starts as identity
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    # ---- forward -------------------------------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All four stage outputs (strides 4, 8, 16, 32 in 2D)."""
        x = self.forward_stem(x)
        feats = []
        for i in range(len(self.layers)):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(tuple(range(2, x.ndim)))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.out_indices is not None:
            feats = self.forward_stages(x)
            return tuple(feats[i] for i in self.out_indices)
        return self.forward_head(self.forward_features(x))


# Visible to string-typed mmdet/mmseg configs (``type="ResNetRS"``) too, once the class is imported.
MODELS.register_module(module=ResNetRS, force=True)
