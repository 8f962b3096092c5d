"""ADE20K SceneParsing (Table 4 "ADE seg"): UPerNet on a ResNet/ResNet-RS backbone, 150 classes, single-scale mIoU.

Protocol (PROTOCOLS.md, chosen = mmseg's UPerNet ADE20K reference, R50/R101 160k: 42.05/43.82 mIoU): train on the
20,210 training images, evaluate on the 2,000 validation images; ``reduce_zero_label`` (annotation 0 = "other" is
ignored, 1..150 become classes 0..149); whole-image, single-scale inference at a (2048, 512) base size.

Why UPerNet: the standard ADE20K head for non-dilated (output-stride-32) backbones, which ``ResNetRS`` is; the same
head as configs/voc_seg.py so the two segmentation columns differ only in data and schedule.

Schedule: 512x512 random crops from images rescaled to a (2048, 512) base with ratio 0.5-2.0 (``cat_max_ratio``
0.75), flip, photometric distortion (image only; the geometric steps are mmseg's, which move every map in
``seg_fields``); SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly decay (power 0.9, floor
1e-4), batch 16 (4 GPUs x 4), 160k iterations; auxiliary FCN head on stage 3 (weight 0.4). BatchNorm everywhere,
``sync_bn='torch'`` turns it into SyncBN under DDP. ``Task.configure`` (tasks/ade20k.py) sets the data root and
shrinks this for ``--preset mini``.
"""
from mmcv.transforms import LoadImageFromFile, RandomResize
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.optim import OptimWrapper, PolyLR
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from mmseg.datasets.transforms import (LoadAnnotations, PackSegInputs, PhotoMetricDistortion, RandomCrop, RandomFlip,
                                      Resize)
from mmseg.models import CrossEntropyLoss, EncoderDecoder, FCNHead, SegDataPreProcessor, UPerHead
from torch.nn import BatchNorm2d
from torch.optim import SGD

from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks._datasets import ADE20KSegDataset, CountedIoUMetric

num_classes = 150
crop_size = (512, 512)
scale = (2048, 512)
# Protocol batch and length (rs_transfer/runner/batch.py): mmseg ``upernet_r50_4xb4-160k_ade20k-512x512``, 160,000
# steps at a global batch of 16 (4 GPUs x 4) = 2,560,000 crops = 126.7 epochs of the 20,210 training images.
global_batch_size = 16
max_per_process_batch = 4    # mmseg's 4 crops per GPU; fewer GPUs accumulate gradients
max_iters = 160000           # optimizer steps at global_batch_size
norm_cfg = dict(type=BatchNorm2d, requires_grad=True)
sync_bn = "torch"

model = dict(
    type=EncoderDecoder,
    data_preprocessor=dict(type=SegDataPreProcessor, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    # Task-level keys only; the runner merges the chosen backbone's architecture and weights in.
    backbone=dict(type=ResNetRS, num_classes=0, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False),
    decode_head=dict(
        type=UPerHead, in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
        channels=512, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type=FCNHead, in_channels=1024, in_index=2, channels=256, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

data_root = "data/ADEChallengeData2016"
train_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=LoadAnnotations, reduce_zero_label=True),
    dict(type=RandomResize, scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True, resize_type=Resize),
    dict(type=RandomCrop, crop_size=crop_size, cat_max_ratio=0.75),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PhotoMetricDistortion),
    dict(type=PackSegInputs),
]
test_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=Resize, scale=scale, keep_ratio=True),
    dict(type=LoadAnnotations, reduce_zero_label=True),     # after Resize: masks are scored at their original size
    dict(type=PackSegInputs),
]
train_dataloader = dict(
    batch_size=max_per_process_batch,  # set by the runner: global_batch_size // (processes x accumulation)
    num_workers=4, persistent_workers=True,
    sampler=dict(type=InfiniteSampler, shuffle=True),
    dataset=dict(type=ADE20KSegDataset, data_root=data_root, reduce_zero_label=True,
                 data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(type=ADE20KSegDataset, data_root=data_root, reduce_zero_label=True, test_mode=True,
                 data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type=CountedIoUMetric, iou_metrics=["mIoU"], max_skipped_fraction=0.01)
test_evaluator = val_evaluator

optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=SGD, lr=0.01, momentum=0.9, weight_decay=0.0005),
                     clip_grad=None)
param_scheduler = [dict(type=PolyLR, eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
