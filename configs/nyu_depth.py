"""NYU Depth v2 monocular depth (Table 4 "NYU depth"): FPN depth head on a ResNet/ResNet-RS backbone.

Protocol (PROTOCOLS.md, chosen): the Eigen split of the 1,449 labeled frames, 795 train / 654 test; metric delta<1.25
accuracy in percent (the Table 4 figure), also delta<1.25^2, delta<1.25^3, AbsRel, SqRel, RMSE, RMSE-log, log10 and
SILog (BTS/AdaBins definition, 100 x sqrt(E[d^2] - E[d]^2)); evaluated on the RAW depth (``rawDepths`` of the
labeled .mat, 0 = not measured, masked), as BTS, AdaBins and mmseg's prepared data do (the in-painted ``depths``
would score filled holes as ground truth), inside the Eigen crop (rows 45..471, cols 41..601 of 480x640), valid
depths 1e-3..10 m (the usual cap), predictions clipped to that range, averaged per image (BTS/AdaBins convention).
Depth PNGs are 16-bit millimetres. Three preparations are read (tasks/nyu_depth.py): our converter's or mmseg's
``images|annotations/{train,test}`` folders (mmseg's holds BTS's ~24k raw training frames instead of 795; ``data
check`` says so and the run trains on what is there), and BTS's ``sync/`` + ``official_splits/test/``.

Model: mmseg ``DepthEstimator`` with ``FPNDepthHead`` (tasks/_depth.py: FPN fusion of strides 4..32, sigmoid x 10 m
output, scale-invariant log loss, as BTS/AdaBins/VPD). Training (chosen, BTS-style): random 416x544 crops of the
480x640 frames, horizontal flip (mmseg's ``RandomFlip``: image AND depth map; mmcv's flips ``gt_seg_map`` only),
photometric distortion (image only; deviation: BTS also rotates by up to 2.5 degrees and first cuts the frame to its
427x565 centre, rows 45..472 x cols 43..608, to drop the registration border); AdamW lr 1e-4, weight decay 1e-2,
poly decay (power 0.9),
batch 16 (4 GPUs x 4), 4,000 iterations (~80 epochs of 795 images). Test: the full 480x640 frame, no resizing.
BatchNorm everywhere, ``sync_bn='torch'`` turns it into SyncBN under DDP. ``Task.configure`` (tasks/nyu_depth.py)
sets the data root and shrinks this for ``--preset mini``.
"""
from mmcv.transforms import LoadImageFromFile
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.optim import OptimWrapper, PolyLR
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from mmseg.datasets.transforms import (LoadDepthAnnotation, PackSegInputs, PhotoMetricDistortion, RandomCrop,
                                      RandomFlip)
from mmseg.models import DepthEstimator, SegDataPreProcessor, SiLogLoss
from torch.nn import BatchNorm2d
from torch.optim import AdamW

from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks._datasets import NYUDepthDataset
from rs_transfer.tasks._depth import EigenCropDepthMetric, FPNDepthHead

crop_size = (416, 544)
max_depth = 10.0
# Protocol batch and length (rs_transfer/runner/batch.py), chosen: a global batch of 16 (the 4 GPUs x 4 layout of the
# other dense columns, mmseg's 4xb4; BTS trains at batch 4 for 50 epochs of its ~24k-frame list, mmseg's VPD NYU
# config at 4 x 8 = 32 for 25k steps) for 4,000 steps = 64,000 crops = 80.5 epochs of the 795 Eigen training frames.
global_batch_size = 16
max_per_process_batch = 4    # 4 crops per GPU; fewer GPUs accumulate gradients
max_iters = 4000             # optimizer steps at global_batch_size
norm_cfg = dict(type=BatchNorm2d, requires_grad=True)
sync_bn = "torch"
meta_keys = ("img_path", "depth_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
             "flip_direction", "category_id")

model = dict(
    type=DepthEstimator,
    data_preprocessor=dict(type=SegDataPreProcessor, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=0, size=crop_size),
    # Task-level keys only; the runner merges the chosen backbone's architecture and weights in.
    backbone=dict(type=ResNetRS, num_classes=0, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False),
    decode_head=dict(
        type=FPNDepthHead, in_channels=[256, 512, 1024, 2048], channels=128, max_depth=max_depth,
        dropout_ratio=0.0, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type=SiLogLoss, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

data_root = "data/nyu"
train_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=LoadDepthAnnotation, depth_rescale_factor=1e-3),   # 16-bit millimetres -> metres
    dict(type=RandomCrop, crop_size=crop_size),     # mmseg's: crops every key in seg_fields (gt_depth_map)
    dict(type=RandomFlip, prob=0.5),                # mmseg's: flips every key in seg_fields
    dict(type=PhotoMetricDistortion),
    dict(type=PackSegInputs, meta_keys=meta_keys),
]
test_pipeline = [
    dict(type=LoadImageFromFile),
    dict(type=LoadDepthAnnotation, depth_rescale_factor=1e-3),
    dict(type=PackSegInputs, meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=max_per_process_batch,  # set by the runner: global_batch_size // (processes x accumulation)
    num_workers=4, persistent_workers=True,
    sampler=dict(type=InfiniteSampler, shuffle=True),
    dataset=dict(type=NYUDepthDataset, data_root=data_root, layout="mmseg",
                 data_prefix=dict(img_path="images/train", depth_map_path="annotations/train"),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(type=NYUDepthDataset, data_root=data_root, layout="mmseg", test_mode=True,
                 data_prefix=dict(img_path="images/test", depth_map_path="annotations/test"),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type=EigenCropDepthMetric, crop_type="eigen", min_depth_eval=1e-3, max_depth_eval=max_depth,
                     max_skipped_fraction=0.01)
test_evaluator = val_evaluator

optim_wrapper = dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=1e-4, weight_decay=0.01), clip_grad=None)
param_scheduler = [dict(type=PolyLR, eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)
