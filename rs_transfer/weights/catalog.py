"""The table of named weight sources (``rs-transfer list weights``): data only, one entry per published checkpoint.

Every entry was checked against its publisher's README / code (2026-12): URL, file name, the model it fits, the
input normalisation of its training code, and a checksum ONLY where the publisher gives one (torch.hub-style sha256
prefixes in timm/torchvision file names; MoCo's README md5 column). Everything else has no published checksum:
``download`` then verifies the size and says so. Converted checkpoints (SimCLR, BYOL) have no download at all: the
entry says how to convert them and where to put the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .normalization import IMAGENET, SWAV, UNIT, Normalization


@dataclass(frozen=True)
class WeightSource:
    name: str
    arch: str                     # registered model it fits
    filename: str                 # name in the local cache
    published: str                # where a person gets it (URL or instructions)
    url: str | None = None        # direct download, if one exists
    sha256_prefix: str | None = None
    normalization: Normalization = IMAGENET
    imagenet_top1: float | None = None
    recipe: str = ""
    publisher: str = ""
    md5_prefix: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)   # ResNetRS kwargs on top of ``arch``

    @property
    def checksum(self) -> str:
        if self.sha256_prefix:
            return f"sha256:{self.sha256_prefix}"
        if self.md5_prefix:
            return f"md5:{self.md5_prefix}"
        return "unknown (size only)" if self.url else "unknown (local conversion)"

    def model_hint(self) -> str:
        """The command-line words that build the model this source fits."""
        opts = " ".join(f"{k}={v}" for k, v in self.model_options.items())
        return f"--backbone {self.arch}" + (f" --backbone-options {opts}" if opts else "")


_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
_TV = "https://download.pytorch.org/models"
_FB = "https://dl.fbaipublicfiles.com"
_SIMCLR2_HOW = ("TF checkpoint gs://simclr-checkpoints/simclrv2/pretrained/{m} (github.com/google-research/simclr), "
                "converted with github.com/Separius/SimCLRv2-Pytorch (`python download.py {m}; python convert.py "
                "{m}/model.ckpt-250228`), which writes {m}.pth")
_SIMCLR1_HOW = ("TF checkpoint https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_{w}x.zip "
                "(github.com/google-research/simclr), converted with github.com/tonylins/simclr-converter "
                "(`python convert.py ResNet50_{w}x/model.ckpt-225206 resnet50-{w}x.pth`)")
# SimCLRv2 sk1 = ResNet-D-like stem with max-pool, pooled projection shortcuts, selective kernels (ratio 1/16).
SIMCLR_SK1 = dict(stem="deep", stem_pool="max", shortcut="simclr", se_ratio=0.0, sk_ratio=0.0625)
# google-research/simclr README, "Pre-trained models for SimCLRv2": (depth, width, sk) -> linear-eval top-1.
# These 13 are all that was published (no 3x models except r152_3x_sk1).
SIMCLRV2_TOP1 = {(50, 1, 0): 71.7, (50, 1, 1): 74.6, (50, 2, 0): 75.6, (50, 2, 1): 77.7, (101, 1, 0): 73.6,
                 (101, 1, 1): 76.3, (101, 2, 0): 77.0, (101, 2, 1): 79.0, (152, 1, 0): 74.5, (152, 1, 1): 77.2,
                 (152, 2, 0): 77.4, (152, 2, 1): 79.4, (152, 3, 1): 79.8}


def _timm(arch: str, file: str, top1: float) -> WeightSource:
    return WeightSource(f"{arch}.tf_in1k", arch, file.split("/")[1], f"{_TIMM}/{file}", f"{_TIMM}/{file}",
                        file.rsplit("-", 1)[1].split(".")[0], IMAGENET, top1, "RS recipe (official TF ckpt via timm)",
                        "Google (tensorflow/tpu), converted by timm")


def _tv(depth: int, v: int, file: str, top1: float) -> WeightSource:
    return WeightSource(f"resnet{depth}.tv{'' if v == 1 else '2'}_in1k", f"resnet{depth}", file, f"{_TV}/{file}",
                        f"{_TV}/{file}", file.rsplit("-", 1)[1].split(".")[0], IMAGENET, top1,
                        "torchvision IMAGENET1K_V%d (%s)" % (v, "90 epochs, step decay" if v == 1 else "new recipe"),
                        "torchvision")


def _simclrv2(depth: int, width: int, sk: int) -> WeightSource:
    m = f"r{depth}_{width}x_sk{sk}"
    options: dict[str, Any] = {**({"width": width} if width != 1 else {}), **(SIMCLR_SK1 if sk else {})}
    return WeightSource(f"simclrv2-r{depth}-{width}x-sk{sk}", f"resnet{depth}", f"{m}.pth", _SIMCLR2_HOW.format(m=m),
                        normalization=UNIT, imagenet_top1=SIMCLRV2_TOP1[(depth, width, sk)],
                        recipe="SimCLRv2 self-supervised, 800 epochs (linear-eval top-1)",
                        publisher="Google Research (converted locally)", model_options=options)


def _simclrv1(width: int, top1: float) -> WeightSource:
    return WeightSource(f"simclrv1-r50-{width}x", "resnet50", f"resnet50-{width}x.pth", _SIMCLR1_HOW.format(w=width),
                        normalization=UNIT, imagenet_top1=top1, recipe="SimCLR self-supervised, 1000 epochs",
                        publisher="Google Research (converted locally)",
                        model_options={"width": width} if width != 1 else {})


def _fb(name: str, path: str, top1: float, recipe: str, publisher: str, *, file: str | None = None,
        md5: str | None = None, norm: Normalization = IMAGENET) -> WeightSource:
    url = f"{_FB}/{path}"
    return WeightSource(name, "resnet50", file or path.rsplit("/", 1)[1], url, url, None, norm, top1, recipe,
                        publisher, md5)


SOURCES: dict[str, WeightSource] = {s.name: s for s in [
    _timm("resnetrs50", "v0.1-rs-weights/resnetrs50_ema-6b53758b.pth", 78.8),
    _timm("resnetrs101", "v0.1-rs-weights/resnetrs101_i192_ema-1509bbf6.pth", 81.2),
    _timm("resnetrs152", "v0.1-rs-weights/resnetrs152_i256_ema-a9aff7f9.pth", 83.0),
    _timm("resnetrs200", "v0.1-tpu-weights/resnetrs200_c-6b698b88.pth", 83.4),
    _timm("resnetrs270", "v0.1-rs-weights/resnetrs270_ema-b40e674c.pth", 83.8),
    _timm("resnetrs350", "v0.1-rs-weights/resnetrs350_i256_ema-5a1aa8f1.pth", 84.0),
    _timm("resnetrs420", "v0.1-rs-weights/resnetrs420_ema-972dee69.pth", 84.4),
    _tv(50, 1, "resnet50-0676ba61.pth", 76.13), _tv(50, 2, "resnet50-11ad3fa6.pth", 80.86),
    _tv(101, 1, "resnet101-63fe2227.pth", 77.37), _tv(101, 2, "resnet101-cd907fc2.pth", 81.89),
    _tv(152, 1, "resnet152-394f9c45.pth", 78.31), _tv(152, 2, "resnet152-f82ba261.pth", 82.28),
    *[_simclrv2(d, w, sk) for (d, w, sk) in SIMCLRV2_TOP1],
    _simclrv1(1, 69.1), _simclrv1(2, 74.2), _simclrv1(4, 76.6),
    # facebookresearch/moco README "Models" (md5 column = first 8 hex digits of the file's md5)
    _fb("mocov1-r50-200ep", "moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar", 60.6,
        "MoCo v1, 200 epochs (linear-eval top-1)", "Facebook AI Research (facebookresearch/moco)", md5="b251726a"),
    _fb("mocov2-r50-200ep", "moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar", 67.7,
        "MoCo v2, 200 epochs (linear-eval top-1)", "Facebook AI Research (facebookresearch/moco)", md5="59fd9945"),
    _fb("mocov2-r50-800ep", "moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar", 71.1,
        "MoCo v2, 800 epochs (linear-eval top-1)", "Facebook AI Research (facebookresearch/moco)", md5="a04e12f8"),
    # facebookresearch/moco-v3 CONFIG.md
    *[_fb(f"mocov3-r50-{ep}ep", f"moco-v3/r-50-{ep}ep/r-50-{ep}ep.pth.tar", top1,
          f"MoCo v3, {ep} epochs (linear-eval top-1)", "Facebook AI Research (facebookresearch/moco-v3)")
      for ep, top1 in ((100, 68.9), (300, 72.8), (1000, 74.6))],
    # facebookresearch/swav README (normalisation: src/multicropdataset.py, std 0.228 for red)
    _fb("swav-r50-800ep", "deepcluster/swav_800ep_pretrain.pth.tar", 75.3, "SwAV, 800 epochs, 2x224+6x96 "
        "(linear-eval top-1)", "Facebook AI Research (facebookresearch/swav)", norm=SWAV),
    _fb("swav-r50-400ep", "deepcluster/swav_400ep_pretrain.pth.tar", 74.6, "SwAV, 400 epochs, 2x224+6x96 "
        "(linear-eval top-1)", "Facebook AI Research (facebookresearch/swav)", norm=SWAV),
    # facebookresearch/dino README ("backbone only"), barlowtwins README, vicreg README
    _fb("dino-r50", "dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth", 75.3, "DINO, 800 epochs (linear-eval "
        "top-1)", "Facebook AI Research (facebookresearch/dino)"),
    _fb("barlowtwins-r50", "barlowtwins/ljng/resnet50.pth", 73.5, "Barlow Twins, 1000 epochs (linear-eval top-1)",
        "Facebook AI Research (facebookresearch/barlowtwins)", file="barlowtwins_resnet50.pth"),
    _fb("vicreg-r50", "vicreg/resnet50.pth", 73.2, "VICReg, 1000 epochs (linear-eval top-1)",
        "Facebook AI Research (facebookresearch/vicreg)", file="vicreg_resnet50.pth"),
    # facebookresearch/simsiam README (both files are called checkpoint_0099.pth.tar)
    _fb("simsiam-r50-100ep", "simsiam/models/100ep/pretrain/checkpoint_0099.pth.tar", 68.1,
        "SimSiam, 100 epochs, batch 512 (linear-eval top-1)", "Facebook AI Research (facebookresearch/simsiam)",
        file="simsiam_100ep_checkpoint_0099.pth.tar"),
    _fb("simsiam-r50-100ep-bs256", "simsiam/models/100ep-256bs/pretrain/checkpoint_0099.pth.tar", 68.3,
        "SimSiam, 100 epochs, batch 256 (linear-eval top-1)", "Facebook AI Research (facebookresearch/simsiam)",
        file="simsiam_100ep_bs256_checkpoint_0099.pth.tar"),
    # deepmind-research/byol (JAX), converted with chigur/byol-convert (validate.py: ImageNet mean/std)
    WeightSource("byol-r50", "resnet50", "pretrain_res50x1.pth.tar",
                 "JAX checkpoint https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl "
                 "(github.com/deepmind/deepmind-research/tree/master/byol), converted with "
                 "github.com/chigur/byol-convert (`python convert.py pretrain_res50x1.pkl pretrain_res50x1.pth.tar`)",
                 normalization=IMAGENET, imagenet_top1=74.4, recipe="BYOL, 1000 epochs (linear-eval top-1)",
                 publisher="DeepMind (converted locally)",
                 # the conversion's resnet.py pads every conv/max-pool TF-style ("SAME"), as Haiku trained it
                 model_options={"padding": "tf-same"}),
]}
