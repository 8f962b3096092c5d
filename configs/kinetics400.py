"""Kinetics-400 fine-tuning/training of a 3D ResNet(-RS): the paper's RS video recipe (PROTOCOLS.md, 3D section).

Flat, new-style mmengine config. ``recipe`` holds the Table 5 training ingredients as plain values;
``rs_transfer.video.task.configure`` turns them into optimizer, schedule, EMA hook, loss and augmentation
settings (so a Table 5 toggle is a one-key edit: ``recipe.ema=True``). Architecture ingredients (dropout, stochastic
depth, SE, ResNet-D) belong to the backbone and are set through the registry / ``model_overrides``.
The defaults below are the full RS recipe; ``rs-transfer study table5`` turns ingredients off and on explicitly.
"""
from mmengine.dataset import DefaultSampler, default_collate
from mmengine.optim import OptimWrapper
from torch.optim import SGD

from rs_transfer.video.kinetics import KineticsDataset
from rs_transfer.video.metrics import VideoAccuracy
from rs_transfer.video.recognizer import VideoDataPreprocessor, VideoRecognizer
from rs_transfer.video.resnet3d import ResNet3D
from rs_transfer.video.sampler import ResumableSampler

data_root = "data/kinetics400"   # replaced by the task with --data-root / the default data folder

recipe = dict(
    epochs=350,            # RS config ~350 epochs; the Table 5 baseline uses 200 (video/recipes.py)
    warmup_epochs=5,
    base_lr=0.8,           # cosine from 0.8 at the global batch 1024 (k400_resnet3drs_50_tpu)
    weight_decay=4e-5,     # RS; vanilla 1e-4. Never on BN/bias (paramwise_cfg below)
    label_smoothing=0.1,
    ema=True,              # EMA of weights and BN statistics, decay 0.9999 per step at global batch 1024:
    ema_decay=0.9999,      # a run at global batch B uses 0.9999 ** (B / 1024), warmed up (rs_transfer/runner/ema.py)
    ema_reference_batch=1024,
    scale_jitter=True,     # random-resized crop area 0.08-1, aspect 0.5-2; off = random 224 crop of short side 256
)

model = dict(
    type=VideoRecognizer,
    # The registered 3D model decides the architecture (TF layout; --backbone-options layout=2d to inflate 2D
    # checkpoints key for key). inflate: how 2D weights become 3D, "center" or "mean" (--backbone-options inflate=).
    backbone=dict(type=ResNet3D, num_classes=400, inflate="center"),
    label_smoothing=0.1,
    view_average="prob",
    view_batch=6,
    data_preprocessor=dict(type=VideoDataPreprocessor, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
)

# 32 frames at temporal stride 2, 224 crops for training; 10 clips x 3 crops of 32x256x256 for evaluation.
train_dataloader = dict(
    batch_size=8,  # set by the runner: global_batch_size // (processes x accumulation)
    num_workers=8, persistent_workers=True, pin_memory=True,
    # ResumableSampler: DefaultSampler's order plus a seed per sample, so a resumed run is exact (video/sampler.py)
    sampler=dict(type=ResumableSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=KineticsDataset, data_root=data_root, split="train", mode="train", num_frames=32,
                 frame_stride=2, crop_size=224, train_short_side=256, scale_jitter=True,
                 area_range=(0.08, 1.0), aspect_range=(0.5, 2.0), flip=True, backend="auto", skip_log=None))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=KineticsDataset, data_root=data_root, split="val", mode="test", num_frames=32,
                 frame_stride=2, test_size=256, num_clips=10, num_crops=3, backend="auto", skip_log=None))
test_dataloader = val_dataloader
# max_unreadable: more than this fraction of val unreadable stops the run (no top-1 is written); video/metrics.py
val_evaluator = dict(type=VideoAccuracy, topk=(1, 5), skip_log=None, max_unreadable=0.05)
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=350, val_interval=350)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=SGD, lr=0.8, momentum=0.9, nesterov=True, weight_decay=4e-5),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = []      # linear warm-up + cosine, written from ``recipe`` by the task
# Protocol batch and length (rs_transfer/runner/batch.py): the RS video config's global batch of 1024 clips per step,
# for ``recipe.epochs`` epochs of the training videos, on any number of GPUs; a device holds 8 clips of 32x224x224,
# so 8 GPUs accumulate 16 micro-batches per step and 128 GPUs none (1024 = 128 x 8).
global_batch_size = 1024
max_per_process_batch = 8
custom_hooks = []

# Runner switches (rs_transfer/runner/experiment.py): bf16 on GPUs (the paper trained in bfloat16 on TPUs; CPU runs stay fp32);
# a checkpoint every 2000 iterations (~half an epoch at 8 GPUs x 8 clips: 240k videos / 64 = 3750 iterations).
amp = "bf16"
checkpoint_interval = 2000
