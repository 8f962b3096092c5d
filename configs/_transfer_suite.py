"""The transfer suite's shared protocol (Kornblith, Shlens & Le 2019), read by each single-label dataset config
(``configs/food101.py`` ...), which names its task and class count (and, for the fine-grained sets, the mean
per-class metric). The data is read through torchvision (tasks/_tvclass.py); the frozen-feature protocols live in
tasks/_frozen.py.

- ``linear``: pooled penultimate features of the eval crop: shorter side to ``resolution / 0.875``, the centre
  ``resolution`` x ``resolution`` (``resolution = None``: the backbone's published resolution, from the model
  registry), the weight source's normalisation, no augmentation. Logistic regression with L-BFGS (scikit-learn), L2
  penalty chosen on a held-out 20 % of the training set (``probe.holdout``; ``"creators-val"``: the dataset
  creators' validation images, as Kornblith et al. for Aircraft, VOC2007, DTD and Flowers, set in their configs) from
  45 log-spaced values 1e5 ... 1e-6 (strongest first; ties go to the stronger), then refit on all training images (the CIFAR-100 probe's code, tasks/classification.py
  ``linear_probe``). Features are cached (tasks/_frozen.py).
- ``fewshot``: ``probe.shots`` class-balanced seeded draws, ``probe.episodes`` draws, mean and 95 % t-interval; the
  penalty is chosen on max(1, round(0.2 k)) held-out images per class of the draw and refit on all k; k = 1 uses
  ``probe.one_shot_l2``. ``"vtab1k"``: 1000 random training images, 800 fit / 200 select, refit on all 1000.
- ``finetune``: SGD with Nesterov momentum 0.9, global batch 256, 20,000 steps, cosine decay to 0 after a 500-step
  linear warm-up (as the CIFAR-100 fine-tune), LR 0.05 and weight decay 1e-4 (one point, CIFAR-100's default;
  Kornblith et al. select both per dataset on a validation split: `run --sweep` runs their 7 x 8 grid on a held-out
  20 %), 224 px inception crops (area 8-100 %, aspect 3/4-4/3) with horizontal flips for training, the 224 centre of
  a 256 resize for testing; plain cross-entropy; BN statistics momentum max(1 - 10/s, 0.9) in TF terms, s = steps per
  epoch (SimCLR B.8.1): PyTorch momentum min(10 x 256 / n_train, 0.1), set per dataset by tasks/_tvclass.py.

``--preset mini``: 16 px, 4 penalties, 300 L-BFGS iterations, a 30-step fine-tune at batch 16, no workers.
"""
from mmengine.dataset import DefaultSampler, InfiniteSampler, default_collate
from mmengine.model import ImgDataPreprocessor
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from mmengine.runner import IterBasedTrainLoop, ValLoop
from torch.optim import SGD

from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks.classification import Accuracy, ImageClassifier
from rs_transfer.tasks._tvclass import TvClassDataset

resolution = None            # frozen features: None = the backbone's published resolution (model registry)

feature_loader = dict(batch_size=256, num_workers=4,
                      dataset=dict(type=TvClassDataset, task="", data_root="", crop_fraction=0.875))

probe = dict(
    holdout=0.2,
    l2_grid=[10 ** (5 - 11 * i / 44) for i in range(45)],   # numpy.logspace(5, -6, 45)
    max_iter=1000,
    draw="class-balanced-v1",
    shots=[1, 2, 5, 10, 25],
    episodes=5,
    one_shot_l2=1e-2,
    vtab_train=800,
    vtab_val=200,
)

global_batch_size = 256
max_per_process_batch = 32
max_iters = 20000
warmup_iters = 500

model = dict(
    type=ImageClassifier,
    backbone=dict(type=ResNetRS, num_classes=None),
    label_smoothing=0.0,
    resolution=None,
    bn_momentum=0.1,          # finetune: replaced per dataset (docstring); 0.1 = PyTorch's default
    data_preprocessor=dict(type=ImgDataPreprocessor, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
)

train_dataloader = dict(
    batch_size=max_per_process_batch, num_workers=4, persistent_workers=True,
    sampler=dict(type=InfiniteSampler, shuffle=True), collate_fn=dict(type=default_collate),
    dataset=dict(type=TvClassDataset, task="", data_root="", split="train", augment=True, size=224),
)
val_dataloader = dict(
    batch_size=100, num_workers=4, persistent_workers=True,
    sampler=dict(type=DefaultSampler, shuffle=False), collate_fn=dict(type=default_collate),
    dataset=dict(type=TvClassDataset, task="", data_root="", split="test", augment=False, size=224,
                 crop_fraction=0.875),
)
val_evaluator = dict(type=Accuracy, topk=(1, 5), mean_per_class=False)

train_cfg = dict(type=IterBasedTrainLoop, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type=ValLoop)
optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type=LinearLR, start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type=CosineAnnealingLR, T_max=max_iters - warmup_iters, eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
amp = "bf16"
checkpoint_interval = 2000
log_interval = 50
