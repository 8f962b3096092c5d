"""The 2D model table: one line per model.

Vanilla ResNet is ResNet-RS with its switches off (classic 7x7 stem, max-pool, strided 1x1 shortcut, no SE);
state_dict keys then equal torchvision's ``resnet*``.
ResNet-RS defaults are the paper's recipe values that live in the architecture: dropout before the classifier 0.25
(0.4 for the 320px releases) and stochastic depth 0.1 from RS-200 up (PROTOCOLS.md, "Training recipes").
Resolutions are those of the released checkpoints (official README).
"""
from __future__ import annotations

from .registry import register_model

# Imported when a model is first built (registry.py): listing the table needs no torch.
ResNetRS = "rs_transfer.backbones.resnet:ResNetRS"
VANILLA = dict(stem="classic", stem_pool="max", shortcut="conv", se_ratio=0.0)

for depth in (50, 101, 152, 200):
    register_model(f"resnet{depth}", ResNetRS, family="resnet", resolution=224, depth=depth, **VANILLA,
                   description=f"vanilla ResNet-{depth} (torchvision layout)")

register_model("resnetrs50", ResNetRS, family="resnetrs", resolution=160, depth=50, drop_rate=0.25)
register_model("resnetrs101", ResNetRS, family="resnetrs", resolution=192, depth=101, drop_rate=0.25)
register_model("resnetrs152", ResNetRS, family="resnetrs", resolution=256, depth=152, drop_rate=0.25)
register_model("resnetrs200", ResNetRS, family="resnetrs", resolution=256, depth=200, drop_rate=0.25,
               drop_path_rate=0.1)
register_model("resnetrs270", ResNetRS, family="resnetrs", resolution=256, depth=270, drop_rate=0.25,
               drop_path_rate=0.1)
# RS-350 was released at two resolutions (official README): i256 (TF config resnetrs350_i256.yaml: dropout 0.25; the
# checkpoint timm converted, named source resnetrs350.tf_in1k) and i320 (resnetrs350_i320.yaml: dropout 0.4; TF only).
register_model("resnetrs350", ResNetRS, family="resnetrs", resolution=256, depth=350, drop_rate=0.25,
               drop_path_rate=0.1, description="the i256 release (named source resnetrs350.tf_in1k)")
register_model("resnetrs350_i320", ResNetRS, family="resnetrs", resolution=320, depth=350, drop_rate=0.4,
               drop_path_rate=0.1, description="the i320 release (TF checkpoint resnet-rs-350-i320 only)")
register_model("resnetrs420", ResNetRS, family="resnetrs", resolution=320, depth=420, drop_rate=0.4,
               drop_path_rate=0.1)
