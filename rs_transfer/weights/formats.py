"""Checkpoint containers and key layouts, detected from the content (never from the file name).

A checkpoint is read in two steps:
1. ``read_checkpoint``: open the container (safetensors or a torch pickle) and unwrap it to a flat state_dict.
   Wrappers seen in the wild: mmengine ``{'meta', 'state_dict', 'message_hub', ...}``, SimCLRv1 conversions
   ``{'state_dict': ...}``, SimCLRv2 conversions ``{'resnet': ..., 'head': ...}``, our own
   ``{'rs_transfer': meta, 'state_dict': ...}``, DDP ``module.`` and mmengine ``backbone.`` prefixes.
2. ``to_model_keys``: rename the keys of a known layout to this project's names (timm for ResNet-RS, torchvision
   for vanilla ResNet; identical wherever the architectures agree).
"""
from __future__ import annotations

import codecs
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rs_transfer.errors import UserError

SAFETENSORS_MAGIC_MAX = 100_000_000  # a safetensors header length above this is not a safetensors file


class CheckpointError(UserError):
    """A checkpoint that cannot be read or mapped; the message says which file and what to do."""


@dataclass
class RawCheckpoint:
    state_dict: dict[str, torch.Tensor]
    container: str            # "safetensors" | "torch"
    wrapper: str              # "plain" | "mmengine" | "simclrv1" | "simclrv2" | "rs-transfer" | "model"
    meta: dict[str, Any] = field(default_factory=dict)


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < SAFETENSORS_MAGIC_MAX and head[8:9] == b"{"


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``getattr`` while unpickling: mmengine pickles HistoryBuffer's statistics methods as
    ``getattr(HistoryBuffer, 'mean')``. Only those lookups are allowed, so the general builtin is never exposed."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in ("min", "max", "current", "mean", "_statistics_methods"):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"weights-only load refuses getattr({obj!r}, {name!r})")


def mmengine_safe_globals() -> list[Any]:
    """What mmengine 0.10 checkpoints pickle besides tensors (message-hub history, numpy arrays and scalars).

    Allow-listing exactly these keeps ``torch.load(weights_only=True)`` (the default since torch 2.6) working for
    mmengine checkpoints and resume, without a global switch to full unpickling. Use with
    ``torch.serialization.safe_globals(...)`` or ``add_safe_globals(...)``.
    """
    import numpy as np

    allowed: list[Any] = [np.ndarray, np.dtype, set, codecs.encode,
                          (_history_buffer_getattr, "builtins.getattr")]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    allowed += [_reconstruct, scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool", "float16")]
    try:
        from mmengine.config.config import ConfigDict
        from mmengine.logging.history_buffer import HistoryBuffer

        allowed += [HistoryBuffer, ConfigDict]
    except ImportError:
        pass
    return allowed


def torch_load(path: Path, *, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` plus mmengine's allow-list; full unpickling only if ``trust``."""
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's messages vary across torch versions
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
        raise CheckpointError(
            f"{path}: this pickle needs full unpickling, which can run arbitrary code ({str(err).splitlines()[0]}). "
            "If you trust the file, pass trust=True (CLI: --trust); better, re-save it as a plain state_dict or "
            "safetensors.") from err


def read_checkpoint(path: str | Path, *, trust: bool = False) -> RawCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if _is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return RawCheckpoint(load_file(str(path)), "safetensors", "plain", meta)
    obj = torch_load(path, trust=trust)
    return unwrap(obj, container="torch", origin=str(path))


def unwrap(obj: Any, *, container: str = "torch", origin: str = "checkpoint") -> RawCheckpoint:
    """Find the backbone state_dict inside the usual wrappers."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{origin}: expected a dict of tensors, found {type(obj).__name__}")
    if "rs_transfer" in obj and "state_dict" in obj:
        return RawCheckpoint(dict(obj["state_dict"]), container, "rs-transfer", dict(obj["rs_transfer"]))
    if "resnet" in obj and isinstance(obj["resnet"], dict):
        return RawCheckpoint(dict(obj["resnet"]), container, "simclrv2", {"has_head": "head" in obj})
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        wrapper = "mmengine" if ("meta" in obj or "message_hub" in obj) else "simclrv1"
        return RawCheckpoint(dict(obj["state_dict"]), container, wrapper, dict(obj.get("meta") or {}))
    for key in ("model", "model_state", "state_dict_ema"):
        if key in obj and isinstance(obj[key], dict):
            return RawCheckpoint(dict(obj[key]), container, "model")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    return RawCheckpoint(tensors, container, "plain")


# ---- key layouts -------------------------------------------------------------------------------------------
_SIMCLRV2_BLOCK = re.compile(r"^net\.([1-4])\.blocks\.(\d+)\.(.+)$")
# BottleneckBlock.net = [conv1, BN-ReLU, conv2, BN-ReLU, conv3, BN]; BN-ReLU is Sequential(BN, ReLU) -> ".0".
_SIMCLRV2_NET = {"0": "conv1", "1.0": "bn1", "2": "conv2", "3.0": "bn2", "4": "conv3", "5.0": "bn3"}


def strip_prefixes(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove ``module.`` (DDP), ``backbone.`` (mmengine models) and ``encoder.`` prefixes, and drop the
    mmengine classifier/decoder parts that are not backbone weights (kept under their head name)."""
    stripped: list[str] = []
    for prefix in ("module.", "model.", "encoder.", "backbone."):
        if sd and sum(k.startswith(prefix) for k in sd) >= 0.5 * len(sd):
            sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
            stripped.append(prefix)
    return sd, stripped


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    keys = set(sd)
    if any(_SIMCLRV2_BLOCK.match(k) for k in keys) and any(k.startswith("net.0.") for k in keys):
        return "simclrv2"
    if "conv1.0.weight" in keys:
        return "timm-resnetrs" if any(".se." in k for k in keys) else "timm-resnetd"
    if "conv1.weight" in keys and sd["conv1.weight"].ndim in (4, 5):
        return "torchvision-resnet"
    return "unknown"


def simclrv2_to_model_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SimCLRv2 PyTorch conversion (sk0, plain ResNet) -> torchvision names.

    Stem ``net.0`` = [conv 7x7, BN-ReLU, max-pool]; block ``projection`` = {shortcut: 1x1 conv, bn: BN-ReLU(relu off)}.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("net.0.0."):
            out["conv1." + k[len("net.0.0."):]] = v
        elif k.startswith("net.0.1.0."):
            out["bn1." + k[len("net.0.1.0."):]] = v
        elif m := _SIMCLRV2_BLOCK.match(k):
            stage, block, rest = m.groups()
            base = f"layer{stage}.{block}."
            if rest.startswith("projection.shortcut."):
                out[base + "downsample.0." + rest[len("projection.shortcut."):]] = v
            elif rest.startswith("projection.bn.0."):
                out[base + "downsample.1." + rest[len("projection.bn.0."):]] = v
            elif rest.startswith("net."):
                idx, _, param = rest[4:].rpartition(".")
                if idx not in _SIMCLRV2_NET:
                    raise CheckpointError(f"SimCLRv2 key {k!r} is not an sk0 bottleneck; selective-kernel (sk1) "
                                          "checkpoints are not supported: use an sk0 model")
                out[base + _SIMCLRV2_NET[idx] + "." + param] = v
            else:
                out[k] = v
        else:
            out[k] = v
    return out


def to_model_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a known layout to our (timm / torchvision) names; returns the mapped dict and the layout name."""
    layout = detect_layout(sd)
    if layout == "simclrv2":
        return simclrv2_to_model_keys(sd), layout
    return sd, layout
