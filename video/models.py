"""The 3D model table: one ``register_model`` line per video model, TF Model Garden's layouts as data.

Every registered model is :class:`~rs_transfer.video.resnet3d.ResNet3D` with ``layout="tf"`` (TF Model Garden
``configs/backbones_3d.py`` and the k400 experiment yamls; PROTOCOLS.md, "3D ResNet for Kinetics-400"):

- ``resnet3d50`` = TF ``ResNet3D50`` + ``k400_3d-resnet50_tpu.yaml``: classic (v0) stem [5,7,7] temporal stride 2,
  max-pool [3,3,3] stride [2,2,2] (a 32-frame clip enters stage 1 with 8 frames), strided-conv shortcuts, CVRL
  temporal kernels (3,3,3) (3,1,3,1) (3,1,3,1,3,1) (1,3,1), self-gating in the last block of every stage, no SE.
  33,617,872 parameters at 400 classes (tests/test_video_models.py derives it from TF's layer definitions).
- ``resnetrs3d{50,101,152,200}`` = TF ``ResNet3DRS`` + ``k400_resnet3drs_50_tpu.yaml``: ResNet-D (v1) stem
  (32/32/64, the first conv [5,3,3] temporal stride 2) then max-pool [1,3,3] stride [1,2,2]
  (``stem_pool_temporal_stride: 1``), strided-conv shortcuts, SE 0.25 (the yaml's value; the dataclass default is
  0.2), self-gating, temporal kernels (1,1,3,3) per stage, stochastic depth 0.1, dropout 0.5 before the FC.

Named deviation: ``layout="2d"`` (``--backbone-options layout=2d``) drops self-gating and, for the RS models, swaps
in the 2D ResNet-RS stem conv-pool and average-pool shortcuts, so that timm ``resnetrs*`` (and, for
``resnet3d50``, torchvision ``resnet50``) checkpoints inflate key for key; reports
print the architecture line (:meth:`ResNet3D.describe`) of every run. The registered resolution (224) is the
training crop; the paper evaluates at 256.
"""
from __future__ import annotations

from rs_transfer.backbones.registry import register_model

from .kernels import RS_STAGE_KERNELS, cvrl_kernels, expand_temporal_kernels

# Imported when a model is first built (rs_transfer/backbones/registry.py): listing the table needs no torch.
ResNet3D = "rs_transfer.video.resnet3d:ResNet3D"

# Re-exported for tests and studies: the TF ResNet3D50 per-block kernels at 50 layers.
CVRL_TEMPORAL_KERNELS: tuple[tuple[int, ...], ...] = cvrl_kernels((3, 4, 6, 3))
TEMPORAL_STRIDES: tuple[int, int, int, int] = (1, 1, 1, 1)

# TF ResNet3D50 (k400_3d-resnet50_tpu.yaml). Dropout: the yaml uses 0.5; the Table 5 baseline has none (its
# "+ Dropout on FC" row adds it), so the registered baseline has drop_rate 0.
TF_RESNET3D = dict(layout="tf", stem="classic", stem_temporal_kernel=5, stem_temporal_stride=2,
                   stem_pool_temporal_stride=2, temporal_kernels="cvrl", temporal_strides=TEMPORAL_STRIDES,
                   se_ratio=0.0, drop_rate=0.0, drop_path_rate=0.0, drop_path_schedule="stage")
# TF ResNet3DRS (k400_resnet3drs_50_tpu.yaml).
TF_RESNET3D_RS = dict(layout="tf", stem="deep", stem_temporal_kernel=5, stem_temporal_stride=2,
                      stem_pool_temporal_stride=1, temporal_kernels="rs", temporal_strides=TEMPORAL_STRIDES,
                      se_ratio=0.25, drop_rate=0.5, drop_path_rate=0.1, drop_path_schedule="stage")


def per_block(stage_kernels: tuple[int, ...], layers: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Expand one temporal kernel per stage into one per block."""
    return expand_temporal_kernels(tuple(stage_kernels), layers)


register_model("resnet3d50", ResNet3D, family="resnet3d", resolution=224, depth=50, **TF_RESNET3D,
               description="3D ResNet-50, TF Model Garden ResNet3D50 (CVRL kernels, self-gating; Table 5 baseline)")
for _depth in (50, 101, 152, 200):
    register_model(f"resnetrs3d{_depth}", ResNet3D, family="resnetrs3d", resolution=224, depth=_depth,
                   **TF_RESNET3D_RS,
                   description=f"3D ResNet-RS-{_depth}, TF Model Garden ResNet3DRS (ResNet-D stem, SE 0.25, "
                               f"self-gating, temporal kernels {RS_STAGE_KERNELS} per stage)")
