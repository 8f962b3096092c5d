"""Reading dataset pickles without ever running code from them.

``pickle.load`` executes whatever callables a file names (``os.system`` included), so a crafted
``cifar-100-python/train`` would run arbitrary code during ``rs-transfer data check``. The datasets this suite reads
as pickles hold plain data only: dicts, lists, tuples, bytes/str, ints/floats and numpy arrays. :func:`load_data`
admits exactly the globals such files reference and refuses everything else with :class:`UnsafePickleError` before
any of it is called.

What a genuine file references (from ``pickletools.dis`` of the CIFAR-100 release, written by Python 2 cPickle with
numpy 1.x, and of copies re-pickled by Python 3 at protocol 2):

- ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``: how numpy arrays pickle themselves;
- ``numpy.core.multiarray.scalar``: numpy scalars (labels re-pickled as ``np.int64``);
- ``_codecs.encode``: how protocol 0-2 pickles written by Python 3 represent ``bytes`` (``b"data"`` keys);
- ``numpy.core.numeric._frombuffer``: how numpy pickles arrays at protocol 5.

``numpy.core`` is ``numpy._core`` since numpy 2; both spellings resolve to the same functions.
"""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from rs_transfer.errors import UserError

# (module, name) pairs a data pickle may reference. Nothing here can execute code: each only rebuilds an array, a
# dtype, a numpy scalar or bytes from the plain values that follow it in the stream.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class UnsafePickleError(pickle.UnpicklingError, UserError):
    """A data pickle references something other than plain data (a callable that could run code). A
    :class:`UserError` too, so the CLI prints it as one line."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"refusing to load {module}.{name}: a data file may hold only dicts, lists, "
                                    "bytes/str, numbers and numpy arrays")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core (the old name warns)
            try:
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), name)
            except ImportError:  # numpy 1.x
                pass
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids: a data file holds no external references")


def load_data(file: str | Path | BinaryIO, *, encoding: str = "bytes") -> Any:
    """Unpickle a data-only pickle (path or binary file object); :class:`UnsafePickleError` for anything else.

    ``encoding="bytes"`` reads Python 2 ``str`` as ``bytes`` (the CIFAR release's keys are ``b"data"``), as
    torchvision's ``CIFAR100`` does with ``encoding="latin1"`` for the values.
    """
    if isinstance(file, (str, Path)):
        with open(file, "rb") as f:
            try:
                return _DataUnpickler(f, encoding=encoding).load()
            except UnsafePickleError as err:
                raise UnsafePickleError(f"{file}: {err}") from None
    return _DataUnpickler(file, encoding=encoding).load()


def loads_data(data: bytes, *, encoding: str = "bytes") -> Any:
    """:func:`load_data` for an in-memory pickle."""
    return _DataUnpickler(io.BytesIO(data), encoding=encoding).load()
