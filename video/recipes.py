"""Table 5's training recipe wired into a Kinetics-400 config.

The toggles themselves (what each ingredient changes, on and off, with the paper's values) live in ONE table shared
with the ImageNet recipe: :data:`rs_transfer.recipes.TABLE5` (its docstring has the numbers). The names below are
that table's, kept here so video code and tests import them from one module. ``apply_recipe`` turns the
``recipe`` block of ``configs/kinetics400.py`` into optimizer, schedule, loss, augmentation and EMA settings.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rs_transfer.recipes import TABLE5, Toggle  # noqa: F401  (Toggle re-exported)

TOGGLES: tuple[Toggle, ...] = TABLE5.toggles
BY_NAME = TABLE5.by_name
TABLE5_ORDER: tuple[str, ...] = TABLE5.order   # the paper's additive order
BASELINE_ROW = TABLE5.baseline_row


def recipe_edits(enabled: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cfg_options, model_overrides)`` with every toggle set: on for ``enabled``, off for the rest."""
    return TABLE5.edits(enabled)


def additive_rows(order: Sequence[str] = TABLE5_ORDER) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(row id, row label, enabled toggles)`` for the baseline and each added ingredient."""
    return TABLE5.additive_rows(order)


# ---- recipe -> concrete mmengine settings -------------------------------------------------------------------
MINI_EPOCH_DIVISOR = 20     # mini epochs = paper epochs / 20: 200 -> 10, 350 -> 18 (8 iterations each)
MINI_LR = 0.05              # batch 8, tiny model: 0.05 reached ~90% val in 80 iterations, 0.2 diverged
MINI_EMA_MOMENTUM = 0.1     # a ~10-iteration horizon (0.9999 would keep the initial weights for a 40-iter run)
EMA_REFERENCE_BATCH = 1024  # k400_resnet3drs_50_tpu: average_decay 0.9999 per step at global_batch_size 1024


def _lazy(obj: Any) -> Any:
    """Classes inserted into a new-style config must be LazyObjects like the config's own imports, or mmengine
    cannot print/dump the config."""
    from mmengine.config.lazy import LazyObject

    return LazyObject(obj.__module__, obj.__name__)


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).rsplit(".", 1)[-1]  # a class, LazyObject or string


def apply_recipe(cfg: Any, mini: bool = False) -> None:
    """Write ``cfg.recipe`` into optimizer, schedule, loss, augmentation and the EMA switch (mmengine ``Config``).
    A config's own EMAHook is dropped: the recipe decides."""
    from mmengine.optim import CosineAnnealingLR, LinearLR

    r = cfg.recipe
    epochs = max(1, round(r.epochs / MINI_EPOCH_DIVISOR)) if mini else int(r.epochs)
    warmup = min(max(1, round(r.warmup_epochs / MINI_EPOCH_DIVISOR)) if mini else int(r.warmup_epochs),
                 max(epochs - 1, 0))
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs          # 30-view evaluation only at the end (it costs ~an epoch)
    opt = cfg.optim_wrapper.optimizer
    opt.lr = MINI_LR if mini else r.base_lr
    opt.weight_decay = r.weight_decay
    if mini:
        cfg.auto_scale_lr = dict(base_batch_size=cfg.train_dataloader.batch_size, enable=True)  # LR x 1
    cfg.model.label_smoothing = r.label_smoothing
    cfg.train_dataloader.dataset.scale_jitter = bool(r.scale_jitter)
    # LinearLR then cosine to 0, both by epoch and converted to per-iteration updates.
    sched = []
    if warmup > 0:
        sched.append(dict(type=_lazy(LinearLR), start_factor=0.01, by_epoch=True, begin=0, end=warmup,
                          convert_to_iter_based=True))
    sched.append(dict(type=_lazy(CosineAnnealingLR), T_max=epochs - warmup, eta_min=0.0, by_epoch=True,
                      begin=warmup, end=epochs, convert_to_iter_based=True))
    cfg.param_scheduler = sched
    hooks = [h for h in cfg.get("custom_hooks", []) if _type_name(h.get("type")) != "EMAHook"]
    for key in ("ema", "ema_momentum"):
        cfg.pop(key, None)
    if r.ema:
        # The runner's switch converts the decay to the run's global batch and accumulation and warms it up as
        # TF's (rs_transfer/runner/batch.py, rs_transfer/runner/ema.py); mini: a per-step momentum of its own.
        if mini:
            cfg.ema_momentum = MINI_EMA_MOMENTUM
        else:
            cfg.ema = dict(decay=float(r.ema_decay), reference_batch=int(r.get("ema_reference_batch",
                                                                               EMA_REFERENCE_BATCH)))
    cfg.custom_hooks = hooks
