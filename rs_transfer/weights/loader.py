"""``load_weights``: any supported checkpoint into any registered model, with a report of what happened."""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .formats import CheckpointError, read_checkpoint, strip_prefixes, to_model_keys
from .sources import IMAGENET, NORMALIZATIONS, UNIT, Normalization, resolve, sha256

# Keys that belong to a classifier or task head rather than the backbone: differences here never block a load.
HEAD_PREFIXES = ("fc.", "head.", "neck.", "decode_head.", "auxiliary_head.", "rpn_head.", "roi_head.",
                 "cls_head.", "data_preprocessor.")


class WeightsMismatchError(CheckpointError):
    """Backbone keys differ between checkpoint and model; ``report`` holds the details."""

    def __init__(self, message: str, report: "LoadReport") -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    source: str
    path: str
    sha256: str
    container: str
    wrapper: str
    layout: str
    normalization: Normalization
    loaded: int = 0
    inflated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)   # "key: checkpoint shape -> model shape"
    head_skipped: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["normalization"] = asdict(self.normalization)
        return d

    def summary(self, limit: int = 12) -> str:
        lines = [f"weights {self.source} [{self.container}/{self.wrapper}, layout {self.layout}"
                 + (f", stripped {' '.join(self.stripped_prefixes)}" if self.stripped_prefixes else "") + "]",
                 f"  sha256 {self.sha256[:16]}  input normalisation: {self.normalization.name}",
                 f"  loaded {self.loaded} tensors" + (f", {len(self.inflated)} inflated 2D->3D" if self.inflated
                                                      else "")
                 + (f"; head not loaded ({len(self.head_skipped)}): {', '.join(self.head_skipped[:4])}"
                    if self.head_skipped else "")]
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
                lines.append(f"  {name} ({len(keys)}): " + ", ".join(keys[:limit]) + more)
        return "\n".join(lines)


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def _inflate(src: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """2D conv kernel [O, I, kh, kw] -> 3D [O, I, kt, kh, kw].

    ``center`` puts the 2D kernel in the middle time slice (zeros elsewhere): on a clip of identical frames every
    frame then sees exactly the 2D filter, whatever the temporal padding, so the 3D model reproduces the 2D logits.
    ``uniform`` (I3D) repeats it over time divided by kt.
    """
    kt = target.shape[2]
    if mode == "uniform":
        return src.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    out = torch.zeros_like(target)
    out[:, :, kt // 2] = src
    return out


def load_weights(model: nn.Module, source: str | os.PathLike, *, strict: bool = True, trust: bool = False,
                 inflate: str = "center") -> LoadReport:
    """Load ``source`` (a path or a named source) into ``model``, mapping keys automatically.

    Fails with :class:`WeightsMismatchError` listing the keys when backbone keys are missing, unexpected or of
    another shape, unless ``strict=False``; classifier/task-head differences are always allowed (transfer learning
    replaces the head). 2D kernels are inflated when the model is 3D.
    """
    path, spec = resolve(source)
    raw = read_checkpoint(path, trust=trust)
    sd, stripped = strip_prefixes(raw.state_dict)
    sd, layout = to_model_keys(sd)
    if spec is not None:
        norm = spec.normalization
    elif "normalization" in raw.meta and raw.meta["normalization"] in NORMALIZATIONS:
        norm = NORMALIZATIONS[raw.meta["normalization"]]
    elif raw.wrapper in ("simclrv1", "simclrv2"):
        norm = UNIT
    else:
        norm = IMAGENET
    report = LoadReport(str(source), str(path), sha256(path), raw.container, raw.wrapper, layout, norm,
                        stripped_prefixes=stripped)

    own = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key not in own:
            (report.head_skipped if _is_head(key) else report.unexpected).append(key)
            continue
        target = own[key]
        if value.shape != target.shape:
            if value.ndim + 1 == target.ndim == 5 and value.shape == target.shape[:2] + target.shape[3:]:
                value = _inflate(value, target, inflate)
                report.inflated.append(key)
            elif _is_head(key):
                report.head_skipped.append(f"{key}: {tuple(value.shape)} -> {tuple(target.shape)}")
                continue
            else:
                report.mismatched.append(f"{key}: {tuple(value.shape)} -> {tuple(target.shape)}")
                continue
        to_load[key] = value.to(dtype=target.dtype) if target.is_floating_point() else value
    for key in own:
        if key not in sd and not _is_head(key) and not key.endswith("num_batches_tracked"):
            report.missing.append(key)
    report.loaded = len(to_load)
    if strict and not report.ok:
        raise WeightsMismatchError(
            f"{path} does not fit {type(model).__name__} (layout {layout}); only classifier-head differences "
            f"are allowed unless strict=False (CLI: --no-strict).\n{report.summary()}", report)
    model.load_state_dict(to_load, strict=False)
    model.input_normalization = norm  # tasks read this to build their data preprocessor
    return report


def save_weights(model: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, *,
                 normalization: str = "imagenet", **meta: Any) -> Path:
    """Save in our own format (``{'rs_transfer': meta, 'state_dict': ...}``), atomically.

    ``.safetensors`` paths are written as safetensors with the metadata as strings.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    meta = {"normalization": normalization, **meta}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, tmp, metadata={k: str(v) for k, v in meta.items()})
        else:
            torch.save({"rs_transfer": meta, "state_dict": sd}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
