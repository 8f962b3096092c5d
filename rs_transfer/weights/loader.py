"""``load_weights``: any supported checkpoint into any registered model, with a report of what happened."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .formats import CheckpointError, RawCheckpoint, read_checkpoint
from .layouts import Mapped, map_keys
from .normalization import Normalization, NormalizationDecision, decide_normalization, parse_normalization
from .sources import WeightSource, resolve, sha256

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
    normalization_how: str = ""
    normalization_detail: str = ""
    normalization_warning: str | None = None
    loaded: int = 0
    inflated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)   # "key: checkpoint shape -> model shape"
    wrong_dtype: list[str] = field(default_factory=list)  # "key: int8" where the model holds floats (refused)
    head_skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)      # training-only parts of the release (projection heads...)
    stripped_prefixes: list[str] = field(default_factory=list)
    hint: str | None = None                               # which registered model the checkpoint fits, if not this

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return d

    def summary(self, limit: int = 12, *, warnings: bool = True) -> str:
        n = self.normalization
        lines = [f"weights {self.source} [{self.container}/{self.wrapper}, layout {self.layout}"
                 + (f", stripped {' '.join(self.stripped_prefixes)}" if self.stripped_prefixes else "") + "]",
                 f"  sha256 {self.sha256[:16]}  input normalisation: {n.name} (mean {list(n.mean)}, std "
                 f"{list(n.std)}; {self.normalization_how}: {self.normalization_detail})",
                 f"  loaded {self.loaded} tensors" + (f", {len(self.inflated)} inflated 2D->3D" if self.inflated
                                                      else "")
                 + (f"; head not loaded ({len(self.head_skipped)}): {', '.join(self.head_skipped[:4])}"
                    if self.head_skipped else "")]
        if self.ignored:
            lines.append(f"  ignored, training-only parts of the release ({len(self.ignored)}): "
                         + ", ".join(self.ignored[:limit]) + (" ..." if len(self.ignored) > limit else ""))
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
                lines.append(f"  {name} ({len(keys)}): " + ", ".join(keys[:limit]) + more)
        if self.normalization_warning and warnings:
            lines.append(f"  WARNING: {self.normalization_warning}")
        return "\n".join(lines)


@dataclass
class SourceInfo:
    """A weight source read and mapped, with its normalisation decided: what both the runner (before the model
    exists) and :func:`load_weights` need."""

    path: Path
    spec: WeightSource | None
    raw: RawCheckpoint
    mapped: Mapped
    decision: NormalizationDecision


def _metadata_normalization(meta: dict[str, Any]) -> Any:
    """What the metadata declares: ours / the run export write ``normalization`` (+ ``normalization_mean`` / ``_std``
    as JSON strings in safetensors); mmengine checkpoints of ``rs-transfer run`` a ``{name, mean, std}`` dict."""
    value = meta.get("normalization")
    if isinstance(value, str) and "normalization_mean" in meta and "normalization_std" in meta:
        def floats(v: Any) -> list[float]:
            return [float(x) for x in (json.loads(v) if isinstance(v, str) else v)]

        return {"name": value, "mean": floats(meta["normalization_mean"]), "std": floats(meta["normalization_std"])}
    return value


# Inside :func:`reads_once` (one run), the last source read, by what identifies the file's content and how it was
# read: the runner reads a run's weights before the model exists (it needs their normalisation), and the model's
# initialiser (:mod:`rs_transfer.weights.initializer`) then finds them here instead of opening the file again. One
# entry; None outside a run, where every call reads (and decides, and warns) anew.
_LAST_READ: dict[tuple[Any, ...], SourceInfo] | None = None


@contextmanager
def reads_once() -> Iterator[None]:
    """Within this block (one run) a source read twice with the same options from an unchanged file is read once;
    the remembered state dict is dropped when the block ends."""
    global _LAST_READ
    outer = _LAST_READ
    _LAST_READ = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _LAST_READ = None


def _identity(path: Path) -> tuple[Any, ...]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def read_source(source: str | os.PathLike, *, normalization: str | Normalization | None = None,
                trust: bool = False, warn: bool = True) -> SourceInfo:
    """Resolve, read and map ``source`` and decide its input normalisation (the one decision function). A source
    read just before with the same options and an unchanged file (size, mtime, inode) is not read again."""
    path, spec = resolve(source)
    key = (*_identity(path), str(normalization), bool(trust)) if _LAST_READ is not None and path.is_file() else None
    if key is not None and key in _LAST_READ:  # type: ignore[operator]
        return _LAST_READ[key]  # type: ignore[index]
    raw = read_checkpoint(path, trust=trust)
    mapped = map_keys(raw.state_dict)
    mapped.ignored = raw.ignored + mapped.ignored
    decision = decide_normalization(
        source=str(source), explicit=normalization,
        named=(spec.name, spec.normalization) if spec is not None else None,
        metadata=_metadata_normalization(raw.meta),
        layout=(mapped.layout.name, mapped.layout.normalization), warn=warn)
    info = SourceInfo(path, spec, raw, mapped, decision)
    if key is not None and _LAST_READ is not None:
        _LAST_READ.clear()
        _LAST_READ[key] = info
    return info


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


def _refuse_untrustworthy(path: Path, wrong_dtype: list[str], tensors: dict[str, torch.Tensor]) -> None:
    """Weights that cannot give an honest number are an error, never a silent cast: integer/bool tensors where the
    model has floats (a quantised or damaged file), and NaN/Inf values (a diverged run's checkpoint)."""
    if wrong_dtype:
        raise CheckpointError(f"{path}: {len(wrong_dtype)} tensor(s) are not floating point where the model's are "
                              f"({', '.join(wrong_dtype[:4])}{' ...' if len(wrong_dtype) > 4 else ''}): a quantised "
                              "or damaged checkpoint; refused rather than cast to float")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf ({', '.join(bad[:4])}"
                              f"{' ...' if len(bad) > 4 else ''}): the weights of a diverged run give no honest "
                              "number; refused")


def load_weights(model: nn.Module, source: str | os.PathLike, *, strict: bool = True, trust: bool = False,
                 inflate: str = "center", normalization: str | Normalization | None = None) -> LoadReport:
    """Load ``source`` (a path, a run's work dir, or a named source) into ``model``, mapping keys automatically.

    Fails with :class:`WeightsMismatchError` listing the keys when backbone keys are missing, unexpected or of
    another shape, unless ``strict=False``; classifier/task-head differences are always allowed (transfer learning
    replaces the head), and the training-only parts of self-supervised releases are listed as ``ignored``. 2D
    kernels are inflated when the model is 3D. ``normalization`` is an explicit choice (``--normalization``); the
    decision and how it was made are in the report and on ``model.input_normalization``.
    """
    info = read_source(source, normalization=normalization, trust=trust)
    raw, mapped, norm = info.raw, info.mapped, info.decision
    report = LoadReport(str(source), str(info.path), raw.sha256 or sha256(info.path), raw.container, raw.wrapper,
                        mapped.layout.name, norm.normalization, norm.how, norm.detail, norm.warning,
                        ignored=list(mapped.ignored), stripped_prefixes=mapped.stripped)
    sd = mapped.state_dict
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
        if target.is_floating_point() and not value.is_floating_point():
            report.wrong_dtype.append(f"{key}: {str(value.dtype).replace('torch.', '')}")
            continue
        to_load[key] = value.to(dtype=target.dtype) if target.is_floating_point() else value
    _refuse_untrustworthy(info.path, report.wrong_dtype, to_load)
    for key in own:
        if key not in sd and not _is_head(key) and not key.endswith("num_batches_tracked"):
            report.missing.append(key)
    report.loaded = len(to_load)
    if strict and not report.ok:
        from .fit import fitting_models

        report.hint = fitting_models(sd, mapped.layout.description, video=getattr(model, "dims", 2) == 3)
        last = report.hint or ("no registered model fits these keys either; pass strict=False (CLI: --no-strict) "
                               "to load what matches")
        raise WeightsMismatchError(
            f"{info.path} does not fit {type(model).__name__} (layout {mapped.layout.name}); only classifier-head "
            f"differences are allowed unless strict=False (CLI: --no-strict).\n"
            f"{report.summary(limit=6, warnings=False)}\n{last}",
            report)
    model.load_state_dict(to_load, strict=False)
    model.input_normalization = norm.normalization  # tasks read this to build their data preprocessor
    model.input_normalization_decision = norm
    return report


def save_weights(model: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, /, *,
                 normalization: str | Normalization | dict[str, Any] = "imagenet", **meta: Any) -> Path:
    """Save in our own format (``{'rs_transfer': meta, 'state_dict': ...}``), atomically, with the input
    normalisation (name, mean and std) in the metadata so that reloading is exact.

    ``.safetensors`` paths are written as safetensors with the metadata as strings. ``model`` and ``path`` are
    positional-only, so ``model=<name>`` can be metadata (``weights convert`` records the model it built).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    if isinstance(normalization, str) and "normalization_mean" in meta and "normalization_std" in meta:
        normalization = {"name": normalization, "mean": json.loads(str(meta.pop("normalization_mean"))),
                         "std": json.loads(str(meta.pop("normalization_std")))}
    if isinstance(normalization, dict):
        norm = Normalization(str(normalization["name"]), tuple(normalization["mean"]), tuple(normalization["std"]))
    else:
        norm = parse_normalization(normalization)
    meta = {"normalization": norm.name, "normalization_mean": json.dumps(list(norm.mean)),
            "normalization_std": json.dumps(list(norm.std)), **meta}
    from rs_transfer.atomic import atomic_path

    with atomic_path(path) as tmp:   # normal file mode; nothing left behind when the write fails
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={k: str(v) for k, v in meta.items()})
        else:
            torch.save({"rs_transfer": meta, "state_dict": sd}, tmp)
    return path
