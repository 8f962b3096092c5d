"""ImageNet ``configure``: data wiring, the ``recipe`` block -> optimizer / schedule / loss / augmentation / EMA,
and the mini preset. Toggle values come from :mod:`rs_transfer.recipes` (the one table); this module only turns
the resolved ``cfg.recipe`` values into mmengine settings.

Schedules (TF ``resnet_main.py`` / ``resnet_rs``): a linear warm-up over ``warmup_epochs`` (5), then either cosine
decay to 0 (``cosine=True``) or TF's step decay, x0.1 at 30/90, 60/90 and 80/90 of training (30, 60, 80 of 90
epochs; proportional for other lengths). Batch, LR and EMA follow the runner's global-batch rules
(rs_transfer/runner/batch.py): the config's LR is for its ``global_batch_size``, and ``recipe.ema`` becomes the
runner switch ``ema = dict(decay=0.9999, reference_batch=4096)`` (decay per step at 4096, converted there for the
run's global batch and accumulation), so the result does not depend on the number of GPUs.
"""
from __future__ import annotations

from typing import Any

from rs_transfer.tasks.base import RunContext

# --preset mini: 32 px crops of the 40-48 px mini images (crop padding 8: 32/(32+8) of the short side = all of a
# 40 px side), global batch 16, paper epochs / MINI_EPOCH_DIVISOR (vanilla 90 -> 3, rs 350 -> 12, rs-transfer
# 400 -> 13, 20 iterations each) and an EMA horizon of ~10 iterations (0.9999 would keep the initial weights for a
# few hundred iterations). LR 0.025 at batch 16, measured through the CLI (seeds 0-2, full-width resnetrs50): val
# top-1 vanilla 100/100/100, rs 84/96/89, rs-transfer 98/86/94; at 0.1 the RandAugment recipes diverged early
# (loss up to 17 for 8 classes) and ended at 38-75 (rs) and 74-88 (rs-transfer); the tests' tiny net: 100/100/99.
MINI = dict(resolution=32, crop_padding=8, batch_size=16, val_batch_size=40, minival_fraction=0.1)
MINI_EPOCH_DIVISOR = 30
MINI_LR = 0.025
MINI_EMA_MOMENTUM = 0.1


def _lazy(obj: Any) -> Any:
    from rs_transfer.runner.config import lazy

    return lazy(obj)


def _loaders(cfg: Any) -> list[Any]:
    return [cfg[k] for k in ("train_dataloader", "val_dataloader", "test_dataloader") if cfg.get(k)]


def schedule(epochs: int, warmup: int, cosine: bool) -> list[dict[str, Any]]:
    """Epoch-based param schedulers (converted to per-iteration updates)."""
    from mmengine.optim import CosineAnnealingLR, LinearLR, MultiStepLR

    warmup = min(warmup, max(epochs - 1, 0))
    sched: list[dict[str, Any]] = []
    if warmup > 0:
        sched.append(dict(type=_lazy(LinearLR), start_factor=0.01, by_epoch=True, begin=0, end=warmup,
                          convert_to_iter_based=True))
    if cosine:
        sched.append(dict(type=_lazy(CosineAnnealingLR), T_max=epochs - warmup, eta_min=0.0, by_epoch=True,
                          begin=warmup, end=epochs, convert_to_iter_based=True))
    else:
        # TF: np.floor(30/90 * epochs) etc.; mini lengths may repeat a milestone (MultiStepLR then applies both).
        milestones = [max(1, int(f * epochs)) for f in (30 / 90, 60 / 90, 80 / 90)]
        sched.append(dict(type=_lazy(MultiStepLR), milestones=milestones, gamma=0.1, by_epoch=True, begin=0,
                          end=epochs, convert_to_iter_based=True))
    return sched


def apply_recipe(cfg: Any, ctx: RunContext) -> None:
    """Write ``cfg.recipe`` into the config (mmengine ``Config``); records what it chose in ``ctx.extra``."""
    from rs_transfer.recipes import arch_of, randaugment_magnitude

    r = cfg.recipe
    arch = arch_of(ctx.backbone, ctx.backbone_kwargs)
    resolution = (int(r.get("mini_resolution") or MINI["resolution"]) if ctx.mini
                  else int(r.get("resolution") or arch.resolution))
    magnitude = float(r.get("randaugment_magnitude")   # TF scale, level / 10; by size and training resolution
                      or randaugment_magnitude(arch.depth, int(r.get("resolution") or arch.resolution)))
    # TF's pixel constants were set for ~224 px crops. Mini crops are 32 px: there a 100 px translation or an 80 px
    # cutout leaves a grey image (a third of the samples with 2 layers), so mini scales them by resolution / 224
    # (32 px: 14.3 px and 5.7 px at level 10), the same relative strength. Paper runs use TF's values as given.
    px = resolution / 224 if ctx.mini else 1.0
    ra = dict(num_ops=int(r.get("randaugment_layers", 2)), magnitude=magnitude,
              translate_const=round(float(r.get("randaugment_translate_const", 100)) * px, 3),
              cutout_const=round(float(r.get("randaugment_cutout_const", 40)) * px, 3)) if r.randaugment else None
    epochs = max(1, round(r.epochs / MINI_EPOCH_DIVISOR)) if ctx.mini else int(r.epochs)
    warmup = max(1, round(r.warmup_epochs / MINI_EPOCH_DIVISOR)) if ctx.mini else int(r.warmup_epochs)
    minival = bool(r.get("minival", False))
    fraction = MINI["minival_fraction"] if ctx.mini else float(r.get("minival_fraction", 0.02))
    crop_padding = MINI["crop_padding"] if ctx.mini else int(r.get("crop_padding", 32))

    tr = cfg.train_dataloader.dataset
    tr.update(resolution=resolution, crop_padding=crop_padding, randaugment=ra, exclude_minival=minival,
              minival_fraction=fraction)
    splits = ["val", "minival"] if minival else ["val"]
    for loader in _loaders(cfg)[1:]:
        loader.dataset.update(resolution=resolution, crop_padding=crop_padding, splits=splits,
                              minival_fraction=fraction)
    for key in ("val_evaluator", "test_evaluator"):
        if cfg.get(key):
            cfg[key].split_names = splits
    cfg.model.label_smoothing = float(r.label_smoothing)
    cfg.model.resolution = None                 # the datasets crop at the training resolution already
    opt = cfg.optim_wrapper.optimizer
    opt.weight_decay = float(r.weight_decay)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs          # evaluate at the end (50,000 images cost minutes)
    cfg.param_scheduler = schedule(epochs, warmup, bool(r.cosine))
    # Runner switches: ema (decay per step at a reference batch) or, for mini, ema_momentum per step directly.
    cfg.ema = (dict(decay=float(r.ema_decay), reference_batch=int(r.ema_reference_batch))
               if r.ema and not ctx.mini else None)
    cfg.ema_momentum = MINI_EMA_MOMENTUM if r.ema and ctx.mini else None
    ctx.extra.update(recipe=str(r.get("name", "config")), resolution=resolution, epochs=epochs,
                     randaugment=ra, minival=minival, decode=str(cfg.get("decode", "worker")))
    if cfg.get("decode", "worker") == "device":
        wire_device_decode(cfg, resolution, crop_padding, ra)


def wire_device_decode(cfg: Any, resolution: int, crop_padding: int, randaugment: dict | None) -> None:
    """``decode = "device"``: workers ship file bytes, the preprocessor decodes and crops on the model's device."""
    from ._imagenet_device import collate

    for loader in _loaders(cfg):
        loader.dataset.decode = "device"
        loader.collate_fn = dict(type=_lazy(collate))
    cfg.model.data_preprocessor.device_transform = dict(
        resolution=resolution, crop_padding=crop_padding, randaugment=randaugment,
        skip_log=cfg.train_dataloader.dataset.get("skip_log"))


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, skip log and class count; mini shrinking; then the recipe."""
    from pathlib import Path

    from ._corrupt import SKIP_LOG

    classes = sorted(p.name for p in (Path(ctx.data_root) / "train").iterdir() if p.is_dir())
    cfg.model.backbone.num_classes = ctx.backbone_kwargs["num_classes"] = len(classes)   # results.json: the real head
    for loader in _loaders(cfg):
        loader.dataset.data_root = str(ctx.data_root)
        loader.dataset.skip_log = str(ctx.work_dir / SKIP_LOG)
    if ctx.mini:
        for loader in _loaders(cfg):
            loader.update(num_workers=0, persistent_workers=False, pin_memory=False)
            train = loader is cfg.train_dataloader
            loader.batch_size = MINI["batch_size"] if train else MINI["val_batch_size"]
        cfg.global_batch_size = MINI["batch_size"]   # the mini batch and its own LR (no scaling from 4096)
        cfg.max_per_process_batch = None
        cfg.optim_wrapper.optimizer.lr = MINI_LR
        cfg.log_interval = 20
    apply_recipe(cfg, ctx)
    if ctx.mini:
        cfg.checkpoint_interval = 10 ** 6       # last checkpoint only (saving is slow on CPU)
