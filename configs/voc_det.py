"""Pascal VOC detection (Table 4 "Pascal det"): Faster R-CNN + FPN on a ResNet/ResNet-RS backbone.

Protocol (PROTOCOLS.md, chosen = mmdet's ``faster-rcnn_r50_fpn_1x_voc0712``, R50: 79.5 AP50): train on VOC2007
trainval + VOC2012 trainval (16,551 images), test on VOC2007 test (4,952); metric AP at IoU 0.5 by mmdet's VOC
evaluation ("difficult" objects ignored), reported as ``AP50`` (11-point interpolation, the VOC2007 devkit; the
headline) and ``AP50_area`` (area under the interpolated curve, VOC2010+), both in percent.

Model: mmdet's standard Faster R-CNN R50-FPN settings (FPN 256 channels, 5 levels; anchors scale 8, ratios 0.5/1/2,
strides 4..64; RoIAlign 7x7; two shared 1024-d FC layers; 20 classes). Backbone as in mmdet's ResNet detectors: stem +
stage 1 frozen (``frozen_stages=1``) and BatchNorm statistics frozen (``norm_eval=True``: 2 images per GPU are too
few for batch statistics), so SyncBN is not needed here.

Schedule: images resized to fit 1000x600 (aspect kept), horizontal flip (mmdet's ``Resize``/``RandomFlip``: image
and boxes, clipped to the image); SGD lr 0.01 at a global batch of 16 (mmdet: 8 GPUs x 2), momentum 0.9, weight
decay 1e-4. Length: mmdet trains ``max_epochs = 4`` over ``RepeatDataset(times=3)`` = 12 epochs of the 16,551 images
with a x0.1 step (``milestones=[3]``) after 9; here the same in optimizer steps at the global batch 16 (see the
numbers below), on any number of GPUs (rs_transfer/runner/batch.py). Deviation: mmdet's VOC config has no warm-up (its
``param_scheduler`` is the MultiStepLR alone); we keep mmdet's COCO-schedule 500-step linear warm-up (start factor
0.001, 4% of the steps) as a safety margin for backbones and weights other than torchvision's R50. ``Task.configure``
(tasks/voc_det.py) sets the data root and shrinks this for ``--preset mini``.
"""
from mmcv.ops import RoIAlign
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import AspectRatioBatchSampler
from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs, RandomFlip, Resize
from mmdet.models import (FPN, CrossEntropyLoss, DetDataPreprocessor, FasterRCNN, L1Loss, RPNHead,
                          Shared2FCBBoxHead, SingleRoIExtractor, StandardRoIHead)
from mmdet.models.task_modules import AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner, RandomSampler
from mmengine.dataset import ConcatDataset, DefaultSampler, InfiniteSampler
from mmengine.optim import LinearLR, MultiStepLR, OptimWrapper
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from torch.optim import SGD

from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks._datasets import VOCDetDataset
from rs_transfer.tasks._det_metric import VOCAP50Metric

num_classes = 20
scale = (1000, 600)
# Protocol batch and length (rs_transfer/runner/batch.py). 12 epochs x 16,551 images (VOC07 trainval 5,011 + VOC12
# trainval 11,540) = 198,612 samples / 16 = 12,413.25 -> 12,414 steps; the step after 9 epochs: 9 x 16,551 / 16 =
# 9,309.9 -> 9,310. (mmdet itself runs 4 x ceil(ceil(3 x 16,551 / 8 GPUs) / 2) = 4 x 3,104 = 12,416 iterations, the
# extra 2 being its sampler's padding.)
global_batch_size = 16
max_per_process_batch = 2    # mmdet's 2 images per GPU; fewer GPUs accumulate gradients
max_iters = 12414            # optimizer steps at global_batch_size
step_iter = 9310
sync_bn = "torch"
default_scope = "mmdet"      # mmdet's internals build some defaults by name (e.g. MaxIoUAssigner's BboxOverlaps2D)

model = dict(
    type=FasterRCNN,
    data_preprocessor=dict(type=DetDataPreprocessor, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    # Task-level keys only; the runner merges the chosen backbone's architecture and weights in.
    backbone=dict(type=ResNetRS, num_classes=0, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True),
    neck=dict(type=FPN, in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    rpn_head=dict(
        type=RPNHead, in_channels=256, feat_channels=256,
        anchor_generator=dict(type=AnchorGenerator, scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type=DeltaXYWHBBoxCoder, target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type=CrossEntropyLoss, use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type=L1Loss, loss_weight=1.0)),
    roi_head=dict(
        type=StandardRoIHead,
        bbox_roi_extractor=dict(type=SingleRoIExtractor, roi_layer=dict(type=RoIAlign, output_size=7, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type=Shared2FCBBoxHead, in_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=num_classes,
            bbox_coder=dict(type=DeltaXYWHBBoxCoder, target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type=L1Loss, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type=MaxIoUAssigner, pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type=RandomSampler, num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type=MaxIoUAssigner, pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                          match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type=RandomSampler, num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
            pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)),
)

data_root = "data/VOCdevkit"
train_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=LoadAnnotations, with_bbox=True),
    dict(type=Resize, scale=scale, keep_ratio=True),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PackDetInputs),
]
test_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=Resize, scale=scale, keep_ratio=True),
    dict(type=LoadAnnotations, with_bbox=True),        # after Resize: boxes are scored in original pixels
    dict(type=PackDetInputs, meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
_voc_trainval = [
    dict(type=VOCDetDataset, data_root=data_root, ann_file=f"{year}/ImageSets/Main/trainval.txt",
         data_prefix=dict(sub_data_root=f"{year}/"), pipeline=train_pipeline,
         filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=32))
    for year in ("VOC2007", "VOC2012")
]
train_dataloader = dict(
    batch_size=max_per_process_batch,  # set by the runner: global_batch_size // (processes x accumulation)
    num_workers=2, persistent_workers=True,
    sampler=dict(type=InfiniteSampler, shuffle=True),
    batch_sampler=dict(type=AspectRatioBatchSampler),
    # VOCDataset records its year in metainfo['dataset_type']; Concat would reject the mismatch.
    dataset=dict(type=ConcatDataset, ignore_keys=["dataset_type"], datasets=_voc_trainval))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(type=VOCDetDataset, data_root=data_root, ann_file="VOC2007/ImageSets/Main/test.txt",
                 data_prefix=dict(sub_data_root="VOC2007/"), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [dict(type=VOCAP50Metric, eval_mode="11points", max_skipped_fraction=0.01),
                 dict(type=VOCAP50Metric, eval_mode="area", report_counts=False)]
test_evaluator = val_evaluator

optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=SGD, lr=0.01, momentum=0.9, weight_decay=0.0001))
param_scheduler = [
    dict(type=LinearLR, start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type=MultiStepLR, by_epoch=False, begin=0, end=max_iters, milestones=[step_iter], gamma=0.1),
]
train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
