"""DTD (partition 1: train1 + val1 / test1); metric top-1. The protocols (linear, fewshot, finetune) are the suite's, in
configs/_transfer_suite.py; tasks/dtd.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "dtd"
model.backbone.num_classes = 47
probe.holdout = "creators-val"   # Kornblith et al. (SimCLR B.8.1): select on the creators' validation set
