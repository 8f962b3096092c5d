"""Oxford-IIIT Pets (trainval / test); metric mean per-class accuracy. The protocols (linear, fewshot, finetune) are the
suite's, in configs/_transfer_suite.py; tasks/oxford_pets.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "oxford-pets"
model.backbone.num_classes = 37
val_evaluator.mean_per_class = True   # Kornblith et al.'s metric for this dataset
