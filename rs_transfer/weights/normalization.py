"""Input normalisation of a weight source: declared, never guessed from a wrapper.

A network only computes what it was trained to compute when its inputs are normalised the way they were during
training (SimCLR feeds [0, 1] images without mean/std; torchvision and the Facebook self-supervised releases
subtract the ImageNet mean and divide by its std). A checkpoint's container (``{'state_dict': ...}``, DDP
``module.`` prefixes, Lightning wrappers) says nothing about that, so :func:`decide_normalization` -- the ONE place
that decides, used by the loader and by the runner -- only accepts, in this order:

1. an explicit choice (``--normalization imagenet|unit|MEAN,STD``, ``normalization=`` in the API): the user has the
   last word, with a warning when it contradicts a declaration below;
2. the named source (``rs-transfer list weights``), whose publisher's preprocessing is recorded in the table;
3. the checkpoint's own metadata (this project's format, the export of ``rs-transfer run``, its mmengine
   checkpoints);
4. a detected key layout that identifies the training code (SimCLRv2 conversions, MoCo, SwAV, SimSiam);

and otherwise falls back to ImageNet mean/std with a loud warning. The decision records HOW it was made; the load
report and ``results.json`` show it.

One run decides once: the runner reads the weights before the model exists, and the model's initialiser is handed
that same read (:func:`rs_transfer.weights.loader.reads_once`), so its warning prints once per run; outside a run
(the API, ``rs-transfer weights``) every load decides, and warns, anew.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

from rs_transfer.errors import UserError


class NormalizationWarning(UserWarning):
    """The input normalisation was not declared by anything (a default), or an explicit choice overrides one."""


@dataclass(frozen=True)
class Normalization:
    """Input normalisation in 0-255 pixel units (mmengine data-preprocessor convention)."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def spec(self) -> str:
        """A string :func:`parse_normalization` turns back into this normalisation."""
        if self.name in NORMALIZATIONS and NORMALIZATIONS[self.name].same_as(self):
            return self.name
        return ",".join(f"{v:g}" for v in (*self.mean, *self.std))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}

    def same_as(self, other: "Normalization") -> bool:
        return all(abs(a - b) < 1e-3 for a, b in zip((*self.mean, *self.std), (*other.mean, *other.std)))


def _rgb255(values: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(round(v * 255, 4) for v in values)  # type: ignore[return-value]


# torchvision's transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), in 0-255 units.
IMAGENET = Normalization("imagenet", _rgb255((0.485, 0.456, 0.406)), _rgb255((0.229, 0.224, 0.225)))
# SimCLR v1/v2 (TF) feed images in [0, 1] without mean/std; so do their PyTorch conversions.
UNIT = Normalization("unit-range", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
# SwAV / DeepCluster-v2 (facebookresearch/swav src/multicropdataset.py, eval_linear.py): std 0.228 for red.
SWAV = Normalization("swav", _rgb255((0.485, 0.456, 0.406)), _rgb255((0.228, 0.224, 0.225)))
NORMALIZATIONS = {n.name: n for n in (IMAGENET, UNIT, SWAV)}
_ALIASES = {"unit": UNIT, "unit-range": UNIT, "[0,1]": UNIT, "imagenet": IMAGENET, "swav": SWAV}


def parse_normalization(text: str | Normalization) -> Normalization:
    """``imagenet`` | ``unit`` | ``swav`` | ``MEAN,STD`` | ``M1,M2,M3,S1,S2,S3``.

    Numbers are in 0-255 pixel units, or in [0, 1] units when every value is <= 1 (torchvision's convention: a std of
    at most one grey level would be meaningless in 0-255 units, so the two cannot be confused)."""
    if isinstance(text, Normalization):
        return text
    key = str(text).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        values = [float(v) for v in key.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6) or any(v < 0 for v in values) or any(v == 0 for v in values[len(values) // 2:]):
        raise UserError(f"--normalization {text!r}: use imagenet, unit ([0, 1] inputs, no mean/std), swav, or "
                        "MEAN,STD / M1,M2,M3,S1,S2,S3 (0-255 units, or [0, 1] units when all values are <= 1)")
    if len(values) == 2:
        values = [values[0]] * 3 + [values[1]] * 3
    scale = 255.0 if max(values) <= 1.0 else 1.0
    mean = tuple(round(v * scale, 4) for v in values[:3])
    std = tuple(round(v * scale, 4) for v in values[3:])
    candidate = Normalization("custom", mean, std)  # type: ignore[arg-type]
    return next((known for known in NORMALIZATIONS.values() if known.same_as(candidate)), candidate)


def from_metadata(value: Any) -> Normalization | None:
    """The normalisation a checkpoint's metadata declares: a known name, a ``{name, mean, std}`` dict, or its JSON
    (safetensors metadata are strings). ``None`` when nothing is declared; a declaration that cannot be read is an
    error (ignoring it would silently fall back to a default)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, dict):
        if "mean" in value and "std" in value:
            mean, std = tuple(float(v) for v in value["mean"]), tuple(float(v) for v in value["std"])
            norm = Normalization(str(value.get("name") or "custom"), mean, std)  # type: ignore[arg-type]
            known = NORMALIZATIONS.get(norm.name)
            return known if known is not None and known.same_as(norm) else norm
        value = value.get("name")
    if isinstance(value, str) and value.lower() in _ALIASES:
        return _ALIASES[value.lower()]
    raise UserError(f"the checkpoint's metadata declares an input normalisation this version cannot read "
                    f"({value!r}); pass --normalization imagenet|unit|MEAN,STD")


@dataclass(frozen=True)
class NormalizationDecision:
    """A normalisation and how it was decided: ``explicit``, ``named-source``, ``checkpoint-metadata``, ``layout``,
    ``default`` (nothing declared it: ImageNet assumed) or ``no-weights`` (random initialisation)."""

    normalization: Normalization
    how: str
    detail: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.normalization.to_dict(), "how": self.how, "detail": self.detail, "warning": self.warning}

    def line(self) -> str:
        n = self.normalization
        return (f"input normalisation: {n.name} (mean {list(n.mean)}, std {list(n.std)}), decided by {self.how}: "
                f"{self.detail}")


def decide_normalization(*, source: str | None, explicit: str | Normalization | None = None,
                         named: tuple[str, Normalization] | None = None, metadata: Any = None,
                         layout: tuple[str, Normalization | None] | None = None,
                         warn: bool = True) -> NormalizationDecision:
    """THE decision (see the module docstring). ``named`` = (source name, its normalisation); ``metadata`` = what the
    checkpoint's metadata says under ``normalization``; ``layout`` = (layout name, what it implies or None).
    Issues a :class:`NormalizationWarning` when the result is a default or overrides a declaration; the decision carries the warning either way."""
    declared: tuple[Normalization, str, str] | None = None
    if named is not None:
        declared = (named[1], "named-source", f"named source {named[0]!r} (the publisher's preprocessing)")
    elif (meta_norm := from_metadata(metadata)) is not None:
        declared = (meta_norm, "checkpoint-metadata", "declared in the checkpoint's metadata")
    elif layout is not None and layout[1] is not None:
        declared = (layout[1], "layout", f"detected layout {layout[0]} (its training code's preprocessing)")

    warning = None
    if explicit is not None:
        norm = parse_normalization(explicit)
        decision = NormalizationDecision(norm, "explicit", "--normalization / normalization= given explicitly")
        if declared is not None and not declared[0].same_as(norm):
            warning = (f"--normalization {norm.spec} overrides {declared[0].name}, which the {declared[2]} "
                       f"declares for {source}")
    elif declared is not None:
        decision = NormalizationDecision(*declared)
    elif not source:
        decision = NormalizationDecision(IMAGENET, "no-weights", "random initialisation: ImageNet mean/std by "
                                                                 "convention")
    else:
        what = f"layout {layout[0]}" if layout else "its layout"
        warning = (f"nothing declares the input normalisation of {source} (not a named source, no metadata, "
                   f"{what} does not identify its training code): assuming ImageNet mean/std. If it was trained "
                   "otherwise (SimCLR v1/v2 conversions: [0, 1] inputs), pass --normalization unit or MEAN,STD, or "
                   "use its named source")
        decision = NormalizationDecision(IMAGENET, "default", "nothing declared it; ImageNet mean/std assumed")
    if warning:
        decision = NormalizationDecision(decision.normalization, decision.how, decision.detail, warning)
        if warn:
            warnings.warn(f"WARNING: {warning}", NormalizationWarning, stacklevel=3)
    return decision
