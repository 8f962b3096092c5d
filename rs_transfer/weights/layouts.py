"""Key layouts: which training code wrote a state_dict, and how its keys map to ours.

Our names are timm's for ResNet-RS and torchvision's for vanilla ResNet. Each release's layout below was read from
its official code (the ``ignored`` parts are training-only modules; they are listed in the load report, never
silently dropped):

- MoCo v1/v2 (facebookresearch/moco ``moco/builder.py``): ``module.encoder_q.*`` is the network; its ``fc`` is the
  embedding (v1: Linear 2048->128; v2: MLP ``fc.0``/``fc.2``); ``encoder_k.*`` (momentum copy), ``queue``,
  ``queue_ptr`` are ignored. ``main_lincls.py`` keeps exactly ``encoder_q`` minus ``fc``.
- MoCo v3 (facebookresearch/moco-v3 ``moco/builder.py`` ``MoCo_ResNet``): ``module.base_encoder.*`` with the MLP
  projector as ``fc.{0,1,3,4}``; ``momentum_encoder.*`` and ``predictor.*`` ignored.
- SimSiam (facebookresearch/simsiam ``simsiam/builder.py``): ``module.encoder.*`` with the 3-layer projector as
  ``fc.{0,1,3,4,6,7}``; ``predictor.*`` ignored.
- SwAV / DeepCluster-v2 (facebookresearch/swav ``src/resnet50.py``, published file = ``model.state_dict()`` with
  ``module.``): torchvision names plus ``projection_head.*`` and ``prototypes.*`` (ignored). Its zero ``padding``
  layer + ``padding=2`` conv equals torchvision's ``padding=3``.
- DINO, Barlow Twins, VICReg (``hubconf.py`` of each): plain torchvision keys without ``fc``; BYOL's published
  PyTorch conversion (chigur/byol-convert) and SimCLRv1's (tonylins/simclr-converter): torchvision keys with ``fc``.
  These cannot be told from any torchvision checkpoint: their normalisation comes from the named source.
- SimCLRv2 (Separius/SimCLRv2-Pytorch ``resnet.py``): ``net.0`` stem, ``net.{1-4}.blocks.{i}`` bottlenecks; sk1
  adds the ResNet-D stem (``net.0.{0,2,4}`` convs), a pooled projection (``projection.shortcut.2``) and selective
  kernels (``net.2.main_conv`` / ``net.2.mixing_conv``), see :class:`rs_transfer.backbones.layers.SelectiveKernel`.
  We reproduce the conversion's network exactly (the tests compare with it). It differs from TF's
  (google-research/simclr ``tf2/resnet.py``) in two places the converter chose: the stem max-pool pads
  symmetrically (TF: ``SAME``, the extra pixel at the end) and sk1's stride-1 projection pool counts its zero
  padding (TF's ``SAME`` average excludes it); the converter reports 70.97 / 73.79 top-1 for r50 1x sk0 / sk1
  against TF's 71.7 / 74.6.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .formats import CheckpointError
from .normalization import IMAGENET, SWAV, UNIT, Normalization


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    normalization: Normalization | None = None   # what the training code feeds, when the layout identifies it


LAYOUTS = {lay.name: lay for lay in [
    Layout("timm-resnetrs", "timm ResNet-RS"),
    Layout("timm-resnetd", "timm ResNet-D"),
    Layout("torchvision-resnet", "torchvision ResNet"),
    Layout("moco-v1", "MoCo v1 (facebookresearch/moco)", IMAGENET),
    Layout("moco-v2", "MoCo v2 (facebookresearch/moco)", IMAGENET),
    Layout("moco-v3", "MoCo v3 (facebookresearch/moco-v3)", IMAGENET),
    Layout("simsiam", "SimSiam (facebookresearch/simsiam)", IMAGENET),
    Layout("swav", "SwAV / DeepCluster-v2 (facebookresearch/swav)", SWAV),
    Layout("simclrv2", "SimCLRv2 sk0 (Separius/SimCLRv2-Pytorch conversion)", UNIT),
    Layout("simclrv2-sk1", "SimCLRv2 sk1 (Separius/SimCLRv2-Pytorch conversion)", UNIT),
    Layout("unknown", "unknown-layout"),
]}


@dataclass
class Mapped:
    state_dict: dict[str, torch.Tensor]
    layout: Layout
    stripped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)   # original keys of training-only parts, not loaded


# (layout, backbone prefix, prefixes whose presence identifies it, ignored prefixes outside the backbone)
_SSL = [
    ("moco-v3", "base_encoder.", ("momentum_encoder.",), ("momentum_encoder.", "predictor.")),
    ("moco", "encoder_q.", ("encoder_k.",), ("encoder_k.", "queue")),
    ("simsiam", "encoder.", ("predictor.",), ("predictor.",)),
]


def _has(keys: set[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _strip(sd: dict[str, torch.Tensor], prefix: str, stripped: list[str]) -> dict[str, torch.Tensor]:
    if sd and sum(k.startswith(prefix) for k in sd) >= 0.5 * len(sd):
        stripped.append(prefix)
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    return sd


def map_keys(sd: dict[str, torch.Tensor]) -> Mapped:
    """Detect the layout of ``sd`` and rename it to our keys (see the module docstring)."""
    stripped: list[str] = []
    sd = _strip(sd, "module.", stripped)  # DDP / DataParallel
    keys = set(sd)
    for name, prefix, marks, ignore in _SSL:
        if _has(keys, prefix) and all(_has(keys, m) for m in marks):
            if name == "moco":
                name = "moco-v2" if f"{prefix}fc.0.weight" in keys else "moco-v1"
            # the encoder's own ``fc`` is the method's projection (an embedding, not a classifier): ignored
            ignored = sorted(k for k in keys if k.startswith(ignore) or k.startswith(prefix + "fc."))
            backbone = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k not in ignored}
            # anything else this layout should not hold stays under its own name: the strict check reports it
            backbone.update({k: v for k, v in sd.items() if not k.startswith(prefix) and k not in ignored})
            return Mapped(backbone, LAYOUTS[name], stripped + [prefix], ignored)
    if "conv1.weight" in keys and _has(keys, "prototypes."):  # SwAV's prototypes (a projection head alone is generic)
        ignored = sorted(k for k in keys if k.startswith(("prototypes.", "projection_head.")))
        return Mapped({k: v for k, v in sd.items() if k not in ignored}, LAYOUTS["swav"], stripped, ignored)
    for prefix in ("model.", "encoder.", "backbone."):  # Lightning modules, encoder wrappers, mmengine models
        sd = _strip(sd, prefix, stripped)
    layout = detect_layout(sd)
    if layout in ("simclrv2", "simclrv2-sk1"):
        sd = simclrv2_to_model_keys(sd, sk=layout == "simclrv2-sk1")
    return Mapped(sd, LAYOUTS[layout], stripped)


_SIMCLRV2_BLOCK = re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.(.+)$")
# BottleneckBlock.net (Separius resnet.py): sk0 [conv1, BN-ReLU, conv2, BN-ReLU, conv3, BN];
# sk1 [conv1, BN-ReLU, SelectiveKernel, conv3, BN]. BatchNormRelu is Sequential(BN, ReLU) -> ".0".
_NET_SK0 = {"0": "conv1", "1.0": "bn1", "2": "conv2", "3.0": "bn2", "4": "conv3", "5.0": "bn3"}
_NET_SK1 = {"0": "conv1", "1.0": "bn1", "2.main_conv.0": "conv2.conv", "2.main_conv.1.0": "conv2.bn",
            "2.mixing_conv.0": "conv2.fc1", "2.mixing_conv.1.0": "conv2.bn_fc1", "2.mixing_conv.2": "conv2.fc2",
            "3": "conv3", "4.0": "bn3"}
# Stem (Separius Stem): sk0 [conv7x7, BN-ReLU, max-pool]; sk1 [conv, BN-ReLU, conv, BN-ReLU, conv, BN-ReLU, max-pool].
_STEM_SK0 = {"0": "conv1", "1.0": "bn1"}
_STEM_SK1 = {"0": "conv1.0", "1.0": "conv1.1", "2": "conv1.3", "3.0": "conv1.4", "4": "conv1.6", "5.0": "bn1"}
# Projection: sk0 shortcut = 1x1 conv (stride); sk1 shortcut = [ZeroPad2d, AvgPool2d, 1x1 conv]; bn = BN-ReLU(off).
_PROJ_SK0 = {"shortcut": "downsample.0", "bn.0": "downsample.1"}
_PROJ_SK1 = {"shortcut.2": "downsample.1", "bn.0": "downsample.2"}


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    keys = set(sd)
    if any(_SIMCLRV2_BLOCK.match(k) for k in keys) and _has(keys, "net.0."):
        return "simclrv2-sk1" if any(".net.2.main_conv." in k for k in keys) else "simclrv2"
    if "conv1.0.weight" in keys:
        return "timm-resnetrs" if any(".se." in k for k in keys) else "timm-resnetd"
    if "conv1.weight" in keys and sd["conv1.weight"].ndim in (4, 5):
        return "torchvision-resnet"
    return "unknown"


def _rename(rest: str, table: dict[str, str], key: str) -> str:
    module, _, param = rest.rpartition(".")
    if module not in table:
        raise CheckpointError(f"SimCLRv2 key {key!r} is not part of the Separius/SimCLRv2-Pytorch layout")
    return f"{table[module]}.{param}"


def simclrv2_to_model_keys(sd: dict[str, torch.Tensor], *, sk: bool) -> dict[str, torch.Tensor]:
    """SimCLRv2 PyTorch conversion (sk0 or sk1) -> our names (torchvision's where the architectures agree)."""
    stem, net, proj = (_STEM_SK1, _NET_SK1, _PROJ_SK1) if sk else (_STEM_SK0, _NET_SK0, _PROJ_SK0)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("net.0."):
            out[_rename(k[len("net.0."):], stem, k)] = v
        elif m := _SIMCLRV2_BLOCK.match(k):
            stage, block, rest = m.groups()
            base = f"layer{stage}.{block}."
            if rest.startswith("projection."):
                out[base + _rename(rest[len("projection."):], proj, k)] = v
            elif rest.startswith("net."):
                out[base + _rename(rest[len("net."):], net, k)] = v
            else:
                out[k] = v
        else:
            out[k] = v
    return out
