"""Checkpoint containers and wrappers, recognised from the content (never from the file name).

``read_checkpoint`` opens the container and unwraps it to a flat state_dict; the key layout inside it is
:mod:`rs_transfer.weights.layouts`' business. Containers: safetensors, torch.save (zip, or the legacy pickle format
with torch's magic number). Anything else is "not a checkpoint" -- said before any unpickling, so random bytes never
reach a pickle error that would suggest ``--trust``. Wrappers seen in the wild:

- ours ``{'rs_transfer': meta, 'state_dict': ...}``; mmengine ``{'meta', 'state_dict', 'message_hub', ...}``;
- pytorch/examples ``imagenet/main.py`` (and the MoCo / SimSiam forks of it) ``{'epoch', 'arch', 'state_dict',
  'optimizer', ...}``; Lightning ``{'state_dict', 'pytorch-lightning_version', ...}``; a bare ``{'state_dict'}``;
- SimCLRv2 conversions (Separius/SimCLRv2-Pytorch ``convert.py``) ``{'resnet': ..., 'head': ...}``;
- ``{'model' | 'model_state' | 'state_dict_ema': ...}``, and plain state_dicts.

No wrapper implies an input normalisation (issue 9): that is decided in :mod:`rs_transfer.weights.normalization`.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError  # noqa: F401  (re-exported: defined where importing it costs nothing)

SAFETENSORS_MAGIC_MAX = 100_000_000  # a safetensors header length above this is not a safetensors file
# torch.save(..., _use_new_zipfile_serialization=False) starts with pickle protocol 2 + its magic number (a long).
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass
class RawCheckpoint:
    state_dict: dict[str, torch.Tensor]
    container: str            # "safetensors" | "torch"
    wrapper: str              # see the module docstring
    meta: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)   # tensors outside the backbone state_dict (listed, not loaded)
    sha256: str | None = None  # of the bytes that were read (the file is read once: hashed and parsed from memory)


def sniff(path: Path) -> str | None:
    """``safetensors``, ``torch-zip``, ``torch-legacy``, or None (not a checkpoint this project can read)."""
    with open(path, "rb") as f:
        return sniff_bytes(f.read())


def sniff_bytes(data: bytes) -> str | None:
    """:func:`sniff` of a file's content already in memory."""
    head = data[:16]
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < SAFETENSORS_MAGIC_MAX and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                if any(name.endswith("data.pkl") for name in z.namelist()):
                    return "torch-zip"
        except zipfile.BadZipFile:
            return "torch-zip"  # a torch zip cut short: torch_load reports it as damaged
        return None
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    return None


def _not_a_checkpoint(path: Path, head: bytes) -> CheckpointError:
    head = head[:8]
    hint = ""
    if path.suffix in (".index", ".meta") or path.name.startswith("model.ckpt") or ".data-0" in path.name:
        hint = (" It looks like a TensorFlow checkpoint: convert it first (SimCLR: github.com/Separius/"
                "SimCLRv2-Pytorch or github.com/tonylins/simclr-converter; see `rs-transfer list weights`).")
    elif head[:1] == b"\x80":
        hint = " It is a plain pickle, not torch.save output (a JAX/Haiku or dill file?): convert it to PyTorch first."
    return CheckpointError(f"{path}: not a checkpoint (neither safetensors nor a torch.save file; it starts with "
                           f"{head!r}).{hint}")


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
    """``torch.load`` with ``weights_only=True`` plus mmengine's allow-list; full unpickling only if ``trust``.

    The container is checked first, so a file that is no checkpoint at all says so (with or without ``trust``)
    instead of suggesting full unpickling."""
    path = Path(path)
    return _torch_load_bytes(path.read_bytes(), path, trust=trust)


def _torch_load_bytes(data: bytes, path: Path, *, trust: bool = False) -> Any:
    if sniff_bytes(data) not in ("torch-zip", "torch-legacy"):
        raise _not_a_checkpoint(path, data)
    if trust:
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001  (a damaged file: any of pickle's or zip's errors)
            raise CheckpointError(f"{path}: damaged checkpoint ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''})") from err
    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's messages vary across torch versions
        text = str(err)
        if "Unsupported global" not in text and "GLOBAL" not in text:
            first = next((line for line in text.splitlines() if line.strip()), type(err).__name__)
            raise CheckpointError(f"{path}: damaged or unreadable checkpoint ({type(err).__name__}: {first})") from err
        detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), text[:200])
        raise CheckpointError(
            f"{path}: this pickle needs full unpickling, which can run arbitrary code ({detail}). "
            "If you trust the file, pass trust=True (CLI: --trust); better, re-save it as a plain state_dict or "
            "safetensors.") from err


def read_checkpoint(path: str | Path, *, trust: bool = False) -> RawCheckpoint:
    """Read ``path`` ONCE (its bytes are hashed and parsed from memory: the recorded sha256 is of exactly what was
    loaded, and a run opens its checkpoint one time) and unwrap it to a flat state_dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    digest = hashlib.sha256(data).hexdigest()
    if sniff_bytes(data) == "safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            n = int.from_bytes(data[:8], "little")
            meta = dict(json.loads(data[8:8 + n]).get("__metadata__") or {})
            raw = RawCheckpoint(load_safetensors(data), "safetensors", "plain", meta)
        except Exception as err:  # noqa: BLE001  (safetensors raises its own error types)
            raise CheckpointError(f"{path}: damaged safetensors file ({type(err).__name__}: {err})") from err
    else:
        raw = unwrap(_torch_load_bytes(data, path, trust=trust), container="torch", origin=str(path))
    raw.sha256 = digest
    return raw


def _tensors(d: dict[str, Any], prefix: str = "") -> list[str]:
    return [prefix + k for k, v in d.items() if isinstance(v, torch.Tensor)]


def unwrap(obj: Any, *, container: str = "torch", origin: str = "checkpoint") -> RawCheckpoint:
    """Find the backbone state_dict inside the usual wrappers (see the module docstring)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{origin}: not a checkpoint (expected a dict of tensors, found {type(obj).__name__})")
    if "rs_transfer" in obj and "state_dict" in obj:
        return RawCheckpoint(dict(obj["state_dict"]), container, "rs-transfer", dict(obj["rs_transfer"]))
    if "resnet" in obj and isinstance(obj["resnet"], dict):
        head = obj.get("head") if isinstance(obj.get("head"), dict) else {}
        return RawCheckpoint(dict(obj["resnet"]), container, "simclrv2-conversion", {},
                             ignored=_tensors(head, "head."))
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: obj[k] for k in ("epoch", "arch") if isinstance(obj.get(k), (str, int))}
        if "meta" in obj or "message_hub" in obj:
            wrapper, meta = "mmengine", dict(obj.get("meta") or {})
        elif "pytorch-lightning_version" in obj or "global_step" in obj:
            wrapper = "lightning"
        elif "arch" in obj and "epoch" in obj:
            wrapper = "pytorch-examples"  # imagenet/main.py save_checkpoint (MoCo, SimSiam, ... forks write the same)
        else:
            wrapper = "state_dict"
        return RawCheckpoint(dict(obj["state_dict"]), container, wrapper, meta)
    for key in ("model", "model_state", "state_dict_ema"):
        if key in obj and isinstance(obj[key], dict):
            return RawCheckpoint(dict(obj[key]), container, "model")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin}: not a checkpoint (a dict without tensors; top-level keys: "
                              f"{sorted(map(str, obj))[:10]})")
    return RawCheckpoint(tensors, container, "plain")
