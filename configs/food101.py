"""Food-101 (official train / test); metric top-1. The protocols (linear, fewshot, finetune) are the suite's, in
configs/_transfer_suite.py; tasks/food101.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "food101"
model.backbone.num_classes = 101
