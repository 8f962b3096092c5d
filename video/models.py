"""The 3D model table: one ``register_model`` line per video model, per-stage temporal layouts as data.

Layouts (PROTOCOLS.md, "3D ResNet for Kinetics-400"; TF Model Garden ``resnet_3d.py`` and the k400 configs):

- ``resnet3d50``: the Table 5 baseline, CVRL layout. Classic 7x7 stem with a temporal kernel of 5 and temporal
  stride 2, then a [1,3,3]/[1,2,2] max-pool; strided 1x1 projection shortcuts; no SE; temporal kernels per block
  (on the first 1x1 conv of the bottleneck) given by :data:`CVRL_TEMPORAL_KERNELS`.
- ``resnetrs3d{50,101,152,200}``: ResNet-D stem (3x3 convs 32/32/64, the first with temporal kernel 5 / stride 2;
  the stem max-pool replaced by a stride-2 conv exactly as in 2D ResNet-RS, so 2D ResNet-RS checkpoints inflate
  key for key), average-pool shortcuts, SE 0.25, stochastic depth 0.1 ("stage" schedule, TF), dropout 0.5 before
  the classifier (k400_resnet3drs_50 config), temporal kernel 3 in every block of stages 3-4 and 1 in stages 1-2
  (the RS config's per-stage (1, 1, 3, 3)).

Temporal strides are per stage and all 1 in both configs (the stem's temporal stride 2 is the only temporal
downsampling: 32 input frames -> 16 feature frames). The registered resolution (224) is the training crop; the
paper evaluates at 256.
"""
from __future__ import annotations

from rs_transfer.backbones.registry import register_model
from rs_transfer.backbones.resnet import BLOCKS_PER_DEPTH, ResNetRS

# CVRL / Model Garden "3d-resnet50" baseline: one temporal kernel per block, stages 1..4 = 3, 4, 6, 3 blocks.
CVRL_TEMPORAL_KERNELS: tuple[tuple[int, ...], ...] = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))
# k400_resnet3drs_*: one temporal kernel per stage, repeated over that stage's blocks.
RS_STAGE_TEMPORAL_KERNELS: tuple[int, int, int, int] = (1, 1, 3, 3)
TEMPORAL_STRIDES: tuple[int, int, int, int] = (1, 1, 1, 1)


def per_block(stage_kernels: tuple[int, ...], layers: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Expand one temporal kernel per stage into one per block (the form ``ResNetRS`` takes)."""
    return tuple((k,) * n for k, n in zip(stage_kernels, layers))


# The 3D ResNet-50 of Table 5: vanilla architecture, only the temporal dimension added.
VANILLA_3D = dict(dims=3, stem="classic", stem_pool="max", shortcut="conv", se_ratio=0.0,
                  stem_temporal_kernel=5, stem_temporal_stride=2, temporal_strides=TEMPORAL_STRIDES)
RS_3D = dict(dims=3, stem="deep", stem_pool="conv", shortcut="avg", se_ratio=0.25, stem_temporal_kernel=5,
             stem_temporal_stride=2, temporal_strides=TEMPORAL_STRIDES, drop_rate=0.5, drop_path_rate=0.1,
             drop_path_schedule="stage")

register_model("resnet3d50", ResNetRS, family="resnet3d", resolution=224, depth=50,
               temporal_kernels=CVRL_TEMPORAL_KERNELS, **VANILLA_3D,
               description="3D ResNet-50, CVRL temporal layout (Table 5 baseline)")
for _depth in (50, 101, 152, 200):
    register_model(f"resnetrs3d{_depth}", ResNetRS, family="resnetrs3d", resolution=224, depth=_depth,
                   temporal_kernels=per_block(RS_STAGE_TEMPORAL_KERNELS, BLOCKS_PER_DEPTH[_depth]), **RS_3D,
                   description=f"3D ResNet-RS-{_depth} (ResNet-D stem, SE, temporal kernels (1,1,3,3) per stage)")
