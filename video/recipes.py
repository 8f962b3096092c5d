"""Training recipes as sets of independent, named toggles (paper Table 5), and their wiring into a config.

A toggle has an "off" and an "on" edit, each split into config edits (``recipe.*`` keys of
``configs/kinetics400.py``, passed as ``cfg_options``) and backbone edits (``model_overrides``). A row of an
additive study is the set of toggles that are on; every toggle is written explicitly, on or off, so a row means
the same thing whatever the config's defaults are.

Numbers (PROTOCOLS.md, 3D section; chosen values marked): dropout 0.5 before the FC (k400_resnet3drs config);
label smoothing 0.1; stochastic depth 0.1 (RS config, "stage" schedule); EMA decay 0.9999 of weights and BN
statistics; weight decay 1e-4 (vanilla) -> 4e-5 (RS); epochs 200 -> 350 (chosen: the paper gives no baseline
epoch count; 350 is the RS config's); scale jittering = random-resized crop area 0.08-1, aspect 0.5-2 instead of
a random 224 crop of the 256 short side; SE ratio 0.25; ResNet-D = 3-conv stem (stride-2 conv instead of max-pool)
and average-pool shortcuts.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Toggle:
    name: str                    # CLI / file name
    row: str                     # the paper's Table 5 row label
    config_off: dict[str, Any] = field(default_factory=dict)
    config_on: dict[str, Any] = field(default_factory=dict)
    model_off: dict[str, Any] = field(default_factory=dict)
    model_on: dict[str, Any] = field(default_factory=dict)


TOGGLES: tuple[Toggle, ...] = (
    Toggle("dropout", "+ Dropout on FC", model_off=dict(drop_rate=0.0), model_on=dict(drop_rate=0.5)),
    Toggle("label_smoothing", "+ Label smoothing", {"recipe.label_smoothing": 0.0}, {"recipe.label_smoothing": 0.1}),
    Toggle("stochastic_depth", "+ Stochastic depth",
           model_off=dict(drop_path_rate=0.0, drop_path_schedule="stage"),
           model_on=dict(drop_path_rate=0.1, drop_path_schedule="stage")),
    Toggle("ema", "+ EMA of weights", {"recipe.ema": False}, {"recipe.ema": True}),
    Toggle("weight_decay", "+ Decrease weight decay", {"recipe.weight_decay": 1e-4}, {"recipe.weight_decay": 4e-5}),
    Toggle("epochs", "+ Increase training epochs", {"recipe.epochs": 200}, {"recipe.epochs": 350}),
    Toggle("scale_jitter", "+ Scale jittering", {"recipe.scale_jitter": False}, {"recipe.scale_jitter": True}),
    Toggle("se", "+ Squeeze-and-Excitation", model_off=dict(se_ratio=0.0), model_on=dict(se_ratio=0.25)),
    Toggle("resnet_d", "+ ResNet-D", model_off=dict(stem="classic", stem_pool="max", shortcut="conv"),
           model_on=dict(stem="deep", stem_pool="conv", shortcut="avg")),
)
BY_NAME = {t.name: t for t in TOGGLES}
TABLE5_ORDER: tuple[str, ...] = tuple(t.name for t in TOGGLES)   # the paper's additive order
BASELINE_ROW = "3D ResNet-50"


def recipe_edits(enabled: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cfg_options, model_overrides)`` with every toggle set: on for ``enabled``, off for the rest."""
    enabled = set(enabled)
    unknown = enabled - set(BY_NAME)
    if unknown:
        from rs_transfer.errors import UserError

        raise UserError(f"unknown recipe toggle(s) {sorted(unknown)}; known: {', '.join(TABLE5_ORDER)}")
    cfg: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for t in TOGGLES:
        on = t.name in enabled
        cfg.update(t.config_on if on else t.config_off)
        model.update(t.model_on if on else t.model_off)
    return cfg, model


def additive_rows(order: Sequence[str] = TABLE5_ORDER) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(row id, row label, enabled toggles)`` for the baseline and each added ingredient."""
    rows = [("00_baseline", BASELINE_ROW, ())]
    for i, name in enumerate(order, 1):
        rows.append((f"{i:02d}_{name}", BY_NAME[name].row, tuple(order[:i])))
    return rows


# ---- recipe -> concrete mmengine settings -------------------------------------------------------------------
MINI_EPOCH_DIVISOR = 20     # mini epochs = paper epochs / 20: 200 -> 10, 350 -> 18 (8 iterations each)
MINI_LR = 0.05              # batch 8, tiny model: 0.05 reached ~90% val in 80 iterations, 0.2 diverged
MINI_EMA_MOMENTUM = 0.1     # a ~10-iteration horizon (0.9999 would keep the initial weights for a 40-iter run)


def _lazy(obj: Any) -> Any:
    """Classes inserted into a new-style config must be LazyObjects like the config's own imports, or mmengine
    cannot print/dump the config."""
    from mmengine.config.lazy import LazyObject

    return LazyObject(obj.__module__, obj.__name__)


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).rsplit(".", 1)[-1]  # a class, LazyObject or string


def apply_recipe(cfg: Any, mini: bool = False) -> None:
    """Write ``cfg.recipe`` into optimizer, schedule, loss, augmentation and hooks (mmengine ``Config``)."""
    from mmengine.hooks import EMAHook
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
    if r.ema:
        # mmengine: ema = (1 - momentum) * ema + momentum * weights, so momentum = 1 - decay.
        momentum = MINI_EMA_MOMENTUM if mini else 1.0 - r.ema_decay
        hooks.append(dict(type=_lazy(EMAHook), ema_type="ExponentialMovingAverage", momentum=momentum,
                          update_buffers=True))
    cfg.custom_hooks = hooks
