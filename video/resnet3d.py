"""The 3D ResNet of TF Model Garden (``official/vision/modeling/backbones/resnet_3d.py`` and
``modeling/layers/nn_blocks_3d.py``), and one named deviation that inflates 2D ResNet-RS checkpoints key for key.

``layout="tf"`` (the default of every registered 3D model) follows TF:

- stem ``classic`` (TF ``v0``): one [k_t, 7, 7] conv, stride [s_t, 2, 2], 64 channels; stem ``deep`` (TF ``v1``,
  ResNet-D): [k_t, 3, 3] 32 (stride [s_t, 2, 2]) -> [1, 3, 3] 32 -> [1, 3, 3] 64, each conv + BN + ReLU. Both are
  followed by a max-pool [1 if p_t == 1 else 3, 3, 3] with stride [p_t, 2, 2] (``stem_pool_temporal_stride`` p_t).
- bottleneck: temporal conv [k_t, 1, 1] carrying the temporal stride, spatial conv [1, 3, 3] carrying the spatial
  stride, expansion [1, 1, 1] x4; BN after each; projection shortcut = strided 1x1x1 conv + BN whenever the
  channel count changes. After the last BN: self-gating, then SE, then stochastic depth, then the residual add.
- self-gating (S3D-G, ``SelfGating``): global average pool -> 1x1x1 conv with bias -> sigmoid -> multiply, in the
  LAST block of each stage that has it on (TF ``use_self_gating`` per block group).
- SE: reduced width ``int(4 * filters * se_ratio)`` (TF ``SqueezeExcitation``, divisor 1), convs with bias.
- stochastic depth: ``rate * (stage + 2) / 5``, constant per stage (TF ``get_stochastic_depth_rate``).

``layout="2d"`` keeps everything above except what stops the model's 2D counterpart from inflating key for key:
no self-gating (it has no 2D counterpart), last-BN gamma zero-initialised, and with the ``deep`` stem the 2D
ResNet-RS stem pool (stride-2 conv + BN-ReLU, timm ``maxpool.0/1``) and average-pool shortcuts
(``downsample.1/2``), so timm ``resnetrs*`` checkpoints load; with the ``classic`` stem torchvision ``resnet*``
checkpoints load. Explicit ``stem_pool``, ``shortcut``, ``self_gating`` arguments override the layout's.

Parameter names are timm's / torchvision's wherever the structures agree (``conv1``, ``bn1``, ``layerX.Y.conv1``,
``se.fc1``, ``downsample.0``, ``fc``); self-gating adds ``layerX.Y.gate.fc``. Padding is symmetric (PyTorch);
TF's ``same`` padding gives the same shapes. BatchNorm epsilon 1e-5 (the RS yaml's ``norm_epsilon``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rs_transfer.backbones.layers import (DropPath, FrozenStagesMixin, SqueezeExcite, pretrained_init_cfg,
                                          stochastic_depth_rates)
from rs_transfer.backbones.resnet import BLOCKS_PER_DEPTH

from .kernels import RS_STAGE_KERNELS, cvrl_kernels, expand_temporal_kernels  # noqa: F401  (re-exported)

# What each layout sets when the argument is left at None; for "2d" the stem decides (classic: torchvision ResNet,
# max-pool + conv shortcuts; deep: timm ResNet-RS, conv stem-pool + average-pool shortcuts).
LAYOUTS: dict[str, dict[str, Any]] = {
    "tf": dict(stem_pool={"classic": "max", "deep": "max"}, shortcut={"classic": "conv", "deep": "conv"},
               self_gating=True, zero_init_last_bn=False),
    "2d": dict(stem_pool={"classic": "max", "deep": "conv"}, shortcut={"classic": "conv", "deep": "avg"},
               self_gating=False, zero_init_last_bn=True),
}
INFLATE_MODES = ("center", "mean")


def resolve_arch(*, depth: int | None = 50, layers: Sequence[int] | None = None, layout: str = "tf",
                 stem: str = "classic", stem_pool: str | None = None, shortcut: str | None = None,
                 self_gating: bool | Sequence[bool] | None = None, stem_pool_temporal_stride: int = 2,
                 se_ratio: float = 0.0, temporal_kernels: str | Sequence[Any] = "cvrl",
                 temporal_strides: Sequence[int] = (1, 1, 1, 1), **_: Any) -> dict[str, Any]:
    """The architecture a set of :class:`ResNet3D` arguments builds (layout defaults filled in, kernels per block),
    without building it: reports and studies describe runs from their recorded arguments."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    d = LAYOUTS[layout]
    layers = tuple(int(b) for b in (layers if layers is not None else BLOCKS_PER_DEPTH[depth]))
    gating = d["self_gating"] if self_gating is None else self_gating
    gates = [bool(gating)] * len(layers) if isinstance(gating, (bool, int)) else [bool(g) for g in gating]
    if stem not in ("classic", "deep"):
        raise ValueError(f"stem must be 'classic' (TF v0) or 'deep' (TF v1), got {stem!r}")
    return dict(layout=layout, stem=stem, stem_pool=d["stem_pool"][stem] if stem_pool is None else stem_pool,
                stem_pool_temporal_stride=int(stem_pool_temporal_stride),
                shortcut=d["shortcut"][stem] if shortcut is None else shortcut, self_gating=gates,
                se_ratio=float(se_ratio), temporal_kernels=expand_temporal_kernels(temporal_kernels, layers),
                temporal_strides=tuple(int(t) for t in temporal_strides))


def describe(arch: dict[str, Any]) -> str:
    """One line for a :func:`resolve_arch` dict, e.g. ``layout tf: stem deep + max pool (temporal stride 1), conv
    shortcuts, self-gating, SE 0.25, temporal kernels 111/1111/333333/333``."""
    g = arch["self_gating"]
    gates = "self-gating" if all(g) else ("no self-gating" if not any(g) else f"self-gating per stage {g}")
    kernels = "/".join("".join(map(str, k)) for k in arch["temporal_kernels"])
    return (f"layout {arch['layout']}: stem {arch['stem']} + {arch['stem_pool']} pool (temporal stride "
            f"{arch['stem_pool_temporal_stride']}), {arch['shortcut']} shortcuts, {gates}, SE {arch['se_ratio']:g}, "
            f"temporal kernels {kernels}")


class SelfGating(nn.Module):
    """S3D-G feature gating (TF ``nn_blocks_3d.SelfGating``): x * sigmoid(W mean(x) + b), W a 1x1x1 conv with bias,
    initialised N(0, 0.01) truncated, bias 0 (no BN, no activation before the sigmoid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv3d(channels, channels, 1, bias=True)
        nn.init.trunc_normal_(self.fc.weight, std=0.01, a=-0.02, b=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3, 4), keepdim=True)).sigmoid()


class Bottleneck3D(nn.Module):
    """TF ``BottleneckBlock3D``: [k_t,1,1] (temporal stride) -> [1,3,3] (spatial stride) -> [1,1,1] x4."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, *, stride: int = 1, temporal_kernel: int = 1,
                 temporal_stride: int = 1, shortcut: str = "conv", se_ratio: float = 0.0, self_gating: bool = False,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv3d(in_chs, planes, (temporal_kernel, 1, 1), stride=(temporal_stride, 1, 1),
                               padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_chs)
        self.gate = SelfGating(out_chs) if self_gating else None
        self.se = SqueezeExcite(out_chs, max(1, int(out_chs * se_ratio)), nn.Conv3d) if se_ratio > 0 else None
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path)
        self.downsample = self._shortcut(in_chs, out_chs, stride, temporal_stride, shortcut)

    @staticmethod
    def _shortcut(in_chs: int, out_chs: int, stride: int, t_stride: int, kind: str) -> nn.Module | None:
        if in_chs == out_chs and stride == 1 and t_stride == 1:
            return None
        if kind == "conv":  # TF _shortcut_conv + norm0; torchvision names downsample.0 / .1
            return nn.Sequential(nn.Conv3d(in_chs, out_chs, 1, stride=(t_stride, stride, stride), bias=False),
                                 nn.BatchNorm3d(out_chs))
        if kind != "avg":
            raise ValueError(f"shortcut must be 'conv' or 'avg', got {kind!r}")
        pool: nn.Module = (nn.Identity() if stride == 1 and t_stride == 1 else
                           nn.AvgPool3d((t_stride, stride, stride), (t_stride, stride, stride), ceil_mode=True,
                                        count_include_pad=False))
        return nn.Sequential(pool, nn.Conv3d(in_chs, out_chs, 1, bias=False), nn.BatchNorm3d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.gate is not None:
            x = self.gate(x)
        if self.se is not None:
            x = self.se(x)
        return self.act(self.drop_path(x) + shortcut)


class ResNet3D(FrozenStagesMixin, BaseModule):
    """3D ResNet / ResNet-RS video classifier or backbone (TF Model Garden layout by default, see module doc).

    ``temporal_kernels``: ``"cvrl"`` (TF ResNet3D50), ``"rs"`` ((1,1,3,3) per stage, TF ResNet3DRS), one int per
    stage or one tuple per block. ``temporal_strides``: per stage, on the first block's temporal conv.
    ``inflate``: how a 2D checkpoint in ``weights`` becomes 3D (``center``: the 2D kernel in the middle time slice,
    so a still clip gives the 2D logits; ``mean``: repeated over time / k_t, I3D); config key
    ``model.backbone.inflate``, CLI ``--backbone-options inflate=mean``. ``frozen_stages`` / ``norm_eval`` as in
    the 2D ResNet-RS (:class:`~rs_transfer.backbones.layers.FrozenStagesMixin`).
    """

    dims = 3

    def __init__(self, depth: int | None = 50, *, layers: Sequence[int] | None = None, num_classes: int = 400,
                 layout: str = "tf", width: float = 1.0, stem: str = "classic", stem_width: int = 32,
                 stem_temporal_kernel: int = 5, stem_temporal_stride: int = 2, stem_pool_temporal_stride: int = 2,
                 stem_pool: str | None = None, shortcut: str | None = None,
                 self_gating: bool | Sequence[bool] | None = None,
                 zero_init_last_bn: bool | None = None, temporal_kernels: str | Sequence[Any] = "cvrl",
                 temporal_strides: Sequence[int] = (1, 1, 1, 1), se_ratio: float = 0.0, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, drop_path_schedule: str = "stage", in_chans: int = 3,
                 out_indices: Sequence[int] | None = None, frozen_stages: int = -1, norm_eval: bool = False,
                 weights: str | None = None, inflate: str = "center", weights_strict: bool = True,
                 weights_trust: bool = False, weights_normalization: str | None = None,
                 init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        if inflate not in INFLATE_MODES:
            raise ValueError(f"inflate must be one of {INFLATE_MODES}, got {inflate!r}")
        if layers is None:
            if depth not in BLOCKS_PER_DEPTH:
                raise ValueError(f"depth {depth} has no block table; pass layers=(a, b, c, d) or one of "
                                 f"{sorted(BLOCKS_PER_DEPTH)}")
            layers = BLOCKS_PER_DEPTH[depth]
        self.layers = tuple(int(b) for b in layers)
        self.arch = resolve_arch(layers=self.layers, layout=layout, stem=stem, stem_pool=stem_pool,
                                 shortcut=shortcut, self_gating=self_gating,
                                 stem_pool_temporal_stride=stem_pool_temporal_stride, se_ratio=se_ratio,
                                 temporal_kernels=temporal_kernels, temporal_strides=temporal_strides)
        stem_pool, shortcut, gates = self.arch["stem_pool"], self.arch["shortcut"], self.arch["self_gating"]
        kernels = self.arch["temporal_kernels"]
        zero_init_last_bn = LAYOUTS[layout]["zero_init_last_bn"] if zero_init_last_bn is None else zero_init_last_bn
        self.layout, self.weights, self.inflate = layout, weights, inflate
        # load_weights' strict / trust / normalization (``rs-transfer run --no-strict / --trust / --normalization``)
        self.weights_strict, self.weights_trust, self.weights_normalization = (weights_strict, weights_trust,
                                                                               weights_normalization)
        self.out_indices = tuple(out_indices) if out_indices is not None else None
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval

        inplanes = int(64 * width)
        t_k, t_s = stem_temporal_kernel, stem_temporal_stride
        if stem == "deep":
            sw = int(stem_width * width)
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv3d(in_chans, sw, (t_k, 3, 3), stride=(t_s, 2, 2), padding=(t_k // 2, 1, 1), bias=False),
                nn.BatchNorm3d(sw), nn.ReLU(inplace=True),
                nn.Conv3d(sw, sw, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(sw), nn.ReLU(inplace=True),
                nn.Conv3d(sw, inplanes, (1, 3, 3), padding=(0, 1, 1), bias=False))
        elif stem == "classic":
            self.conv1 = nn.Conv3d(in_chans, inplanes, (t_k, 7, 7), stride=(t_s, 2, 2), padding=(t_k // 2, 3, 3),
                                   bias=False)
        else:
            raise ValueError(f"stem must be 'classic' (TF v0) or 'deep' (TF v1), got {stem!r}")
        self.bn1 = nn.BatchNorm3d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        p_t = int(stem_pool_temporal_stride)
        pk = (1 if p_t == 1 else 3, 3, 3)   # TF: temporal pool kernel 1 when the temporal stride is 1, else 3
        pad = (pk[0] // 2, 1, 1)
        if stem_pool == "max":
            self.maxpool: nn.Module = nn.MaxPool3d(pk, stride=(p_t, 2, 2), padding=pad)
        elif stem_pool == "conv":  # 2D ResNet-RS: the stem max-pool replaced by a stride-2 conv (timm maxpool.0/1)
            self.maxpool = nn.Sequential(nn.Conv3d(inplanes, inplanes, pk, stride=(p_t, 2, 2), padding=pad,
                                                   bias=False), nn.BatchNorm3d(inplanes), nn.ReLU(inplace=True))
        else:
            raise ValueError(f"stem_pool must be 'max' or 'conv', got {stem_pool!r}")

        dpr = stochastic_depth_rates(drop_path_rate, self.layers, drop_path_schedule)
        in_chs, reduction, self.feature_info = inplanes, 4, []
        for i, blocks in enumerate(self.layers):
            planes, stride = int(64 * width * 2 ** i), 1 if i == 0 else 2
            reduction *= stride
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck3D(
                    in_chs, planes, stride=stride if j == 0 else 1, temporal_kernel=kernels[i][j],
                    temporal_stride=int(temporal_strides[i]) if j == 0 else 1, shortcut=shortcut, se_ratio=se_ratio,
                    self_gating=gates[i] and j == blocks - 1, drop_path=dpr[i][j]))
                in_chs = planes * Bottleneck3D.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = in_chs
        self.drop_rate, self.num_classes = drop_rate, num_classes
        self.fc: nn.Module = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_parameters(zero_init_last_bn)
        self._freeze_stages()
        if weights:   # loaded by BaseModule.init_weights through rs_transfer.Pretrained (rs_transfer/registry.py)
            self.init_cfg = pretrained_init_cfg(weights, weights_strict, weights_trust, weights_normalization,
                                                inflate=inflate)

    def _init_parameters(self, zero_init_last_bn: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last_bn:
            for m in self.modules():
                if isinstance(m, Bottleneck3D):
                    nn.init.zeros_(m.bn3.weight)
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def describe(self) -> str:
        """One line naming the architecture that runs (reports print it)."""
        return describe(self.arch)

    # ---- forward -------------------------------------------------------------------------------------------
    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        feats = []
        for i in range(len(self.layers)):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return feats

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3, 4))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feats = self.forward_stages(x)
        if self.out_indices is not None:
            return tuple(feats[i] for i in self.out_indices)
        return self.forward_head(feats[-1])
