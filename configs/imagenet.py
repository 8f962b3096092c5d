"""ImageNet (ILSVRC2012) pre-training with the ResNet-RS recipe as independent toggles (paper Table 1, sec. 4).

``recipe`` holds every training ingredient as a plain value; ``tasks/_imagenet_recipe.py`` turns it into optimizer,
schedule, loss, augmentation and EMA settings, so a Table 1 row is a set of one-key edits. ``--recipe NAME``
(``vanilla``, ``rs``, ``rs-transfer``; rs_transfer/recipes.py TABLE1) writes every toggle explicitly, including the
architecture ones (dropout, stochastic depth, SE, ResNet-D), which go to the backbone. Without ``--recipe`` the
values below apply (the full RS training recipe) to the backbone exactly as registered.

Values (TF ``resnet_rs/configs/resnetrs*.yaml``, PROTOCOLS.md "Training recipes"):
- Global batch 4096 (``train_batch_size``), SGD momentum 0.9 with Nesterov, LR 1.6 (TF: base 0.1 per 256 images
  x 4096 / 256), 5 warm-up epochs, 350 epochs (TF: 109,475 steps x 4096 / 1,281,167 images = 350.0), cosine
  decay to 0. The global batch is fixed whatever the number of GPUs (rs_transfer/runner/batch.py: per-process batch
  and gradient accumulation are derived; at most 64 images per GPU, chosen: fits ResNet-200 at 256 px in bf16 on
  an 80 GB GPU); ``--cfg-options global_batch_size=1024`` rescales the LR linearly and keeps the epochs.
- Weight decay 4e-5 (vanilla 1e-4), never on BN (TF adds L2 to every variable except batch norm's: biases keep it).
- Label smoothing 0.1; EMA of weights and BN statistics, decay 0.9999 per step at batch 4096 (the runner's ``ema``
  switch converts it for the global batch and the accumulation, and warms it up as TF's ``num_updates`` does:
  rs_transfer/runner/ema.py); RandAugment 2 layers, magnitude 10 (RS-50; RS-101 at <= 160 px) or 15
  (rs_transfer/recipes.py: the released configs), on TF's scale (level / 10; tasks/_randaugment.py follows TF
  Model Garden's ops).
- Resolution: the backbone's published one (registry: RS-50 160, RS-101 192, RS-152/200/270/350 256,
  RS-350_i320/420 320, vanilla ResNet 224; Table 1 uses ResNet-200 at 256). Table 8 (per-model hyper-parameters) is not available to
  us; the released configs agree with these.
- Evaluation: ``val`` (50,000 images, centre crop res/(res+32)) at the end; ``recipe.minival=True`` also holds out
  2% of train (deterministic, tasks/_imagenet_data.py ``in_minival``) and reports ``minival_top1``/``minival_top5``.
- Input: persistent, pinned-memory workers; batches reach the model channels_last on CUDA (the data preprocessor's
  ``channels_last``); bf16 autocast on CUDA; ``compile = True`` (the runner's switch) compiles the backbone.

``--preset mini`` (tasks/_imagenet_recipe.py): 32 px, batch 16, epochs / 30, no workers.
"""
from mmengine.dataset import DefaultSampler, default_collate
from mmengine.optim import OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, ValLoop
from torch.optim import SGD

from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks.classification import ImageClassifier
from rs_transfer.tasks._imagenet_data import ImageNetAccuracy, ImageNetDataPreprocessor, ImageNetDataset

recipe = dict(
    name="config",          # --recipe writes the recipe's name here (results.json records it)
    epochs=350,
    warmup_epochs=5,
    cosine=True,            # False: TF step decay x0.1 at 30/90, 60/90, 80/90 of training
    ema=True,
    ema_decay=0.9999,
    ema_reference_batch=4096,
    label_smoothing=0.1,
    randaugment=True,
    randaugment_layers=2,
    randaugment_magnitude=None,   # None: by size (rs_transfer/recipes.py: 10 or 15); TF scale, level / 10
    # px at level 10: TF RandAugment's defaults (its class, tensorflow/tpu's hparams); Model Garden's experiment
    # config defaults translate_const to 10, so "RandAugment 15" there shifts by 15 px where ours shifts by 150
    randaugment_translate_const=100,
    randaugment_cutout_const=40,
    weight_decay=4e-5,
    resolution=None,        # None: the backbone's published resolution
    crop_padding=32,        # eval centre crop = res / (res + 32) of the short side (TF)
    minival=False,
    minival_fraction=0.02,
    mini_resolution=None,   # --preset mini only: None = 32 px (the scaling study varies it)
)

model = dict(
    type=ImageClassifier,
    backbone=dict(type=ResNetRS, num_classes=1000),   # num_classes: from the data (train folders)
    label_smoothing=0.1,
    resolution=None,
    # mean/std are replaced by the weight source's normalisation (0-255 units); decoded images are RGB.
    data_preprocessor=dict(type=ImageNetDataPreprocessor, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375]),
)

train_dataloader = dict(
    batch_size=64, num_workers=8, persistent_workers=True, pin_memory=True,   # batch: from global_batch_size
    sampler=dict(type=DefaultSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=ImageNetDataset, data_root="", splits="train", augment=True, resolution=224))
val_dataloader = dict(
    batch_size=100, num_workers=8, persistent_workers=True, pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=ImageNetDataset, data_root="", splits=["val"], augment=False, resolution=224))
val_evaluator = dict(type=ImageNetAccuracy, topk=(1, 5), split_names=["val"])

train_cfg = dict(type=EpochBasedTrainLoop, max_epochs=350, val_interval=350)
val_cfg = dict(type=ValLoop)

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=SGD, lr=1.6, momentum=0.9, nesterov=True, weight_decay=4e-5),   # 0.1 x 4096 / 256
    paramwise_cfg=dict(norm_decay_mult=0.0),
)
global_batch_size = 4096
max_per_process_batch = 64
param_scheduler = []        # linear warm-up + cosine or step decay, written from ``recipe`` by the task

# Runner switches (rs_transfer/runner/experiment.py): bf16 on CUDA (the paper trained in bfloat16 on TPUs), EMA written from
# the recipe by the task (ema = dict(decay=0.9999, reference_batch=4096) or None), a checkpoint every 2,000 iterations.
amp = "bf16"
# "worker": data-loader workers decode (libjpeg-turbo) and crop on the CPU; "device": they read bytes only and the
# data preprocessor decodes the batch with decode_jpeg(list, device="cuda") (nvJPEG) and crops on the GPU
# (tasks/_imagenet_device.py). Opt-in until measured on a GPU: `--cfg-options decode=device`.
decode = "worker"
ema = None
checkpoint_interval = 2000
log_interval = 100
