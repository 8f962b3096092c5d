"""PASCAL VOC 2007 classification (trainval / test, multi-label); metric 11-point mAP (VOC2007). The suite's
protocols (configs/_transfer_suite.py; tasks/voc07_cls.py reads the data through torchvision), multi-label:

- ``linear``: one binary logistic regression per class (difficult-only images left out of that class), one penalty
  for all classes chosen on the held-out part by 11-point mAP;
- ``fewshot``: ``probe.shots`` images positive for each class;
- ``finetune``: binary cross-entropy per class (difficult-only entries ignored), 11-point mAP on test; `run --sweep`
  is not wired for this multi-label task.
"""
from mmengine.config import read_base

with read_base():
    from ._transfer_suite import *  # noqa: F401,F403

from rs_transfer.tasks.classification import MultiLabelMAP

feature_loader.dataset.task = train_dataloader.dataset.task = val_dataloader.dataset.task = "voc07-cls"
model.backbone.num_classes = 20
model.multilabel = True          # binary cross-entropy per class, difficult-only entries ignored
val_evaluator = dict(type=MultiLabelMAP)
probe.holdout = "creators-val"   # Kornblith et al. (SimCLR B.8.1): select on the creators' validation set
