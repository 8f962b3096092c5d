"""FGVC-Aircraft (variants; trainval / test); metric mean per-class accuracy. The protocols (linear, fewshot, finetune)
are the suite's, in configs/_transfer_suite.py; tasks/fgvc_aircraft.py reads the data through torchvision."""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "fgvc-aircraft"
model.backbone.num_classes = 100
val_evaluator.mean_per_class = True   # Kornblith et al.'s metric for this dataset
probe.holdout = "creators-val"   # Kornblith et al. (SimCLR B.8.1): select on the creators' validation set
