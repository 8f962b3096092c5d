"""The ONE table of training-recipe toggles: paper Table 1 (ImageNet, 2D) and Table 5 (Kinetics-400, 3D).

A recipe is a set of independent, named toggles, so an additive study is a list of toggle sets and a named recipe
(``--recipe rs``) is one of them. A toggle has an "off" and an "on" edit, each split into config edits (``recipe.*``
keys of the task's config, passed as ``cfg_options``) and backbone edits (``model_overrides``). Every toggle of
a table is written explicitly, on or off, so a row means the same thing whatever the config's defaults are; the
user's own ``--cfg-options`` / ``--backbone-options`` are applied after the recipe and win.

An ingredient that is the same in both tables is ONE :class:`Toggle` object used by both (label smoothing, EMA,
decreased weight decay, SE, ResNet-D). Where the paper uses another value per domain (dropout 0.25 on images and
0.5 on video; 90 -> 350 vs 200 -> 350 epochs; stochastic depth by depth on images, 0.1 on video) the toggle is
built by one function with the value as argument. Image values that depend on the model size are functions of
:class:`Arch` (depth, training resolution), computed here and nowhere else.

Numbers (PROTOCOLS.md "Training recipes"; TF ``resnet_rs/configs/resnetrs*.yaml``): label smoothing 0.1; EMA decay
0.9999 (per step at batch 4096 for images, 1024 for video); weight decay 1e-4 -> 4e-5 (never on BN); dropout
before the FC 0.25 (0.4 for the 320 px models; video 0.5); stochastic depth 0.1 from depth 200 up, none below
(``drop_connect_rate`` null in resnetrs50/101/152, 0.1 in 200..420; video 0.1); RandAugment 2 layers, magnitude
10 for RS-50 and RS-101 at 160 px, 15 otherwise (RS-101 at 192, RS-152 and up); SE ratio 0.25; ResNet-D = 3-conv
stem, stride-2 conv instead of the max-pool, average-pool shortcuts. Video (PROTOCOLS.md, 3D section): epochs 200 -> 350 (chosen: the paper gives no baseline
epoch count; 350 is the RS config's); scale jittering = random-resized crop area 0.08-1, aspect 0.5-2 instead of a
random 224 crop of the 256 short side; ResNet-D = TF's 3D ResNet-RS stem and temporal layout (``RESNET_D_3D``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from rs_transfer.errors import UserError


@dataclass(frozen=True)
class Arch:
    """What a size-dependent toggle value depends on: the backbone's depth and its training resolution."""

    depth: int = 50
    resolution: int = 224


Edit = Union[dict[str, Any], Callable[[Arch], dict[str, Any]]]


@dataclass(frozen=True)
class Toggle:
    name: str                    # CLI / file name
    row: str                     # the paper's row label
    config_off: Edit = field(default_factory=dict)
    config_on: Edit = field(default_factory=dict)
    model_off: Edit = field(default_factory=dict)
    model_on: Edit = field(default_factory=dict)

    def edits(self, on: bool, arch: Arch | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(cfg_options, model_overrides)`` of this toggle, on or off, for ``arch``."""
        def resolve(edit: Edit) -> dict[str, Any]:
            return dict(edit(arch or Arch())) if callable(edit) else dict(edit)

        return (resolve(self.config_on if on else self.config_off),
                resolve(self.model_on if on else self.model_off))


# ---- size-dependent image values (paper sec. 4, TF resnet_rs configs) ------------------------------------------
def stochastic_depth_rate(depth: int) -> float:
    """0.1 from ResNet(-RS)-200 up, 0 below (resnetrs50/101/152: ``drop_connect_rate: null``)."""
    return 0.1 if depth >= 200 else 0.0


def dropout_rate(resolution: int) -> float:
    """0.25 before the FC; 0.4 for the 320 px models (resnetrs350_i320, resnetrs420_i320)."""
    return 0.4 if resolution >= 320 else 0.25


def randaugment_magnitude(depth: int, resolution: int = 224) -> int:
    """``randaug_magnitude`` of the released TF configs (tensorflow/tpu ``resnet_rs/configs``): 10 for
    resnetrs50_i160 and resnetrs101_i160, 15 for resnetrs101_i192 and every model from RS-152 up. Sizes without a
    release follow the paper's "more regularization with model size": RS-50 keeps 10 at any resolution, RS-101
    takes 10 up to 160 px, deeper models 15 (the scaling grid's 128/160 px cells too)."""
    return 10 if depth <= 50 or (depth <= 101 and resolution <= 160) else 15


# ---- the toggles -------------------------------------------------------------------------------------------------
def _dropout(rate: float | Callable[[Arch], float]) -> Toggle:
    on = (lambda a: dict(drop_rate=rate(a))) if callable(rate) else dict(drop_rate=rate)
    return Toggle("dropout", "+ Dropout on FC", model_off=dict(drop_rate=0.0), model_on=on)


def _stochastic_depth(rate: float | Callable[[Arch], float]) -> Toggle:
    on: Edit = ((lambda a: dict(drop_path_rate=rate(a), drop_path_schedule="stage")) if callable(rate)
                else dict(drop_path_rate=rate, drop_path_schedule="stage"))
    return Toggle("stochastic_depth", "+ Stochastic depth",
                  model_off=dict(drop_path_rate=0.0, drop_path_schedule="stage"), model_on=on)


def _epochs(off: int, on: int) -> Toggle:
    return Toggle("epochs", "+ Increase training epochs", {"recipe.epochs": off}, {"recipe.epochs": on})


LABEL_SMOOTHING = Toggle("label_smoothing", "+ Label smoothing", {"recipe.label_smoothing": 0.0},
                         {"recipe.label_smoothing": 0.1})
EMA = Toggle("ema", "+ EMA of weights", {"recipe.ema": False}, {"recipe.ema": True})
WEIGHT_DECAY = Toggle("weight_decay", "+ Decrease weight decay", {"recipe.weight_decay": 1e-4},
                      {"recipe.weight_decay": 4e-5})
SE = Toggle("se", "+ Squeeze-and-Excitation", model_off=dict(se_ratio=0.0), model_on=dict(se_ratio=0.25))
RESNET_D = Toggle("resnet_d", "+ ResNet-D", model_off=dict(stem="classic", stem_pool="max", shortcut="conv"),
                  model_on=dict(stem="deep", stem_pool="conv", shortcut="avg"))
# Video's ResNet-D (TF Model Garden 3D): the RS stem comes with the 3D ResNet-RS temporal layout, so Table 5 ends
# on TF's 3D ResNet-RS-50 (k400_resnet3drs_50_tpu, the 78.2 network): stem pool temporal stride 1, temporal
# kernels (1,1,3,3) per stage. TF's 3D ResNet-RS keeps the max-pool and strided-conv shortcuts (the model's
# ``layout`` decides those), so they are not part of this toggle (video/resnet3d.py).
RESNET_D_3D = Toggle("resnet_d", "+ ResNet-D",
                     model_off=dict(stem="classic", stem_pool_temporal_stride=2, temporal_kernels="cvrl"),
                     model_on=dict(stem="deep", stem_pool_temporal_stride=1, temporal_kernels="rs"))
# Image-only ingredients.
COSINE = Toggle("cosine", "+ Cosine LR decay", {"recipe.cosine": False}, {"recipe.cosine": True})
RANDAUGMENT = Toggle("randaugment", "+ RandAugment", {"recipe.randaugment": False},
                     lambda a: {"recipe.randaugment": True, "recipe.randaugment_layers": 2,
                                "recipe.randaugment_magnitude": randaugment_magnitude(a.depth, a.resolution)})
# Video-only ingredient: random-resized crop (area 0.08-1, aspect 0.5-2) instead of a 224 crop of the 256 side.
SCALE_JITTER = Toggle("scale_jitter", "+ Scale jittering", {"recipe.scale_jitter": False},
                      {"recipe.scale_jitter": True})


@dataclass(frozen=True)
class Recipe:
    """A named toggle set plus config values outside the toggles (``rs-transfer``'s 400 epochs)."""

    name: str
    toggles: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ToggleTable:
    """One paper table: its toggles in the paper's additive order, its baseline row, its named recipes."""

    name: str
    baseline_row: str
    toggles: tuple[Toggle, ...]
    recipes: Mapping[str, Recipe] = field(default_factory=dict)

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.toggles)

    @property
    def by_name(self) -> dict[str, Toggle]:
        return {t.name: t for t in self.toggles}

    def edits(self, enabled: Iterable[str], arch: Arch | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(cfg_options, model_overrides)`` with every toggle set: on for ``enabled``, off for the rest."""
        enabled = set(enabled)
        unknown = enabled - set(self.order)
        if unknown:
            raise UserError(f"unknown recipe toggle(s) {sorted(unknown)} for {self.name}; known: "
                            f"{', '.join(self.order)}")
        cfg: dict[str, Any] = {}
        model: dict[str, Any] = {}
        for t in self.toggles:
            c, m = t.edits(t.name in enabled, arch)
            cfg.update(c)
            model.update(m)
        return cfg, model

    def additive_rows(self, order: Sequence[str] | None = None) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(row id, row label, enabled toggles)`` for the baseline and each added ingredient."""
        order = tuple(order or self.order)
        rows = [("00_baseline", self.baseline_row, ())]
        for i, name in enumerate(order, 1):
            rows.append((f"{i:02d}_{name}", self.by_name[name].row, order[:i]))
        return rows

    def recipe(self, name: str) -> Recipe:
        if name not in self.recipes:
            raise UserError(f"unknown recipe {name!r} for {self.name}; choose one of {', '.join(self.recipes)}")
        return self.recipes[name]

    def recipe_edits(self, name: str, arch: Arch | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Edits of a named recipe; ``recipe.name`` records which one in the resolved config."""
        r = self.recipe(name)
        cfg, model = self.edits(r.toggles, arch)
        return {**cfg, **dict(r.config), "recipe.name": name}, model


# Paper Table 1 (ImageNet, ResNet-200 at 256 px): the additive order of its rows.
_TABLE1_TOGGLES = (COSINE, _epochs(90, 350), EMA, LABEL_SMOOTHING, _stochastic_depth(
    lambda a: stochastic_depth_rate(a.depth)), RANDAUGMENT, _dropout(lambda a: dropout_rate(a.resolution)),
    WEIGHT_DECAY, SE, RESNET_D)
_TABLE1_ALL = tuple(t.name for t in _TABLE1_TOGGLES)
TABLE1 = ToggleTable("Table 1 (ImageNet)", "ResNet-200", _TABLE1_TOGGLES, {
    "vanilla": Recipe("vanilla", (), description="90 epochs, step decay, weight decay 1e-4 (Table 4 'Supervised')"),
    "rs": Recipe("rs", _TABLE1_ALL, description="the full RS recipe and architecture, 350 epochs"),
    # Table 4 "RS" row (paper sec. 7.3): SimCLR's setup; vanilla architecture, no stochastic depth, no EMA.
    "rs-transfer": Recipe("rs-transfer", ("cosine", "epochs", "label_smoothing", "randaugment", "dropout",
                                          "weight_decay"), {"recipe.epochs": 400},
                          description="Table 4's RS row: 400 epochs, cosine, RandAugment, label smoothing, "
                                      "dropout, decreased weight decay; no stochastic depth, no EMA"),
})
# Paper Table 5 (Kinetics-400, 3D ResNet-50): its own additive order.
_TABLE5_TOGGLES = (_dropout(0.5), LABEL_SMOOTHING, _stochastic_depth(0.1), EMA, WEIGHT_DECAY, _epochs(200, 350),
                   SCALE_JITTER, SE, RESNET_D_3D)
TABLE5 = ToggleTable("Table 5 (Kinetics-400)", "3D ResNet-50", _TABLE5_TOGGLES, {
    "vanilla": Recipe("vanilla", (), description="the Table 5 baseline: 200 epochs, weight decay 1e-4"),
    "rs": Recipe("rs", tuple(t.name for t in _TABLE5_TOGGLES), description="every Table 5 ingredient"),
})
TABLES: dict[str, ToggleTable] = {"imagenet": TABLE1, "kinetics400": TABLE5}   # task name -> its table


def arch_of(backbone: str, model_overrides: Mapping[str, Any] | None = None) -> Arch:
    """Depth and training resolution of a registered backbone (the registry's published resolution)."""
    from rs_transfer.backbones import get_spec

    spec = get_spec(backbone)
    depth = (model_overrides or {}).get("depth", spec.kwargs.get("depth", 50))
    return Arch(depth=int(depth or 50), resolution=int(spec.resolution))


def recipe_for_task(task: str, name: str, backbone: str,
                    model_overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--recipe NAME`` of ``rs-transfer run``: the task's table's named recipe, for this backbone."""
    if task not in TABLES:
        raise UserError(f"--recipe applies to the pre-training tasks ({', '.join(TABLES)}), not {task!r}; "
                        "transfer tasks have one documented protocol each (see their config docstring)")
    return TABLES[task].recipe_edits(name, arch_of(backbone, model_overrides))


def recipe_names() -> list[str]:
    return sorted({n for t in TABLES.values() for n in t.recipes})
