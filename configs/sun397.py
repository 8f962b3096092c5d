"""SUN397 (official partition 01 (Training_01 / Testing_01)); metric top-1. The protocols (linear, fewshot, finetune)
are the suite's, in configs/_transfer_suite.py; tasks/sun397.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "sun397"
model.backbone.num_classes = 397
