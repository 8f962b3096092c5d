"""Caltech-101 (102 classes with BACKGROUND_Google; 30 per class (seed 0) / the rest); metric mean per-class
accuracy. The protocols (linear, fewshot, finetune) are the suite's, in configs/_transfer_suite.py;
tasks/caltech101.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "caltech101"
model.backbone.num_classes = 102   # with BACKGROUND_Google, as Kornblith et al.
val_evaluator.mean_per_class = True   # Kornblith et al.'s metric for this dataset
