"""Per-sample evaluation outputs: ``WORK_DIR/eval_outputs.npz``, what a confidence interval is computed from.

Why: results.json keeps only the dataset-level metric, from which no interval can be computed afterwards. Every
task's metric therefore also writes, at the end of each evaluation (the last one wins, i.e. the one results.json
reports), what the metric needs per test sample. :mod:`rs_transfer.intervals` recomputes the metric from this file
exactly and bootstraps it.

Generic mechanism (the runner knows no task): the runner wraps the run in :func:`collect_to` (``WORK_DIR``); a
metric calls :func:`save` with its kind and arrays. Outside a run (a metric used on its own) ``save`` writes
nothing and returns None. Only the process that computes metrics writes (mmengine: rank 0). Written atomically
(temporary file + rename) with ``numpy.savez_compressed``; read with :func:`load` (``allow_pickle=False``).

Format (every array's first axis is the sample axis unless said otherwise; ``ids`` are stable sample ids: the
image/video file stem for file-based sets, the position in the evaluation set's fixed order otherwise):

- ``meta``: 0-d string, JSON ``{"format": 1, "kind": ..., "metric": headline key, ...kind parameters}``;
- ``ids``: (n,) str.
- kind ``classification`` (cifar100, imagenet, kinetics400 after the multi-view average, the linear/kNN probes):
  ``top5`` (n, k<=5) int16/int32 predicted classes, best first; ``label`` (n,) int; optional ``split`` (n,) int8
  (ImageNet val / minival). ImageNet val: 50,000 x 6 int16 = 0.6 MB raw, 0.39 MB as written (measured).
- kind ``segmentation`` (voc-seg, ade20k): ``intersect``, ``union`` (n, C) int64 pixel counts per image and class
  (mIoU = sum I / sum U per class, mean over classes with a union). ADE20K val: 2,000 x 150 x 2 x 8 B = 4.8 MB raw,
  mostly zeros: 0.23 MB as written (measured with ~12 classes per image).
- kind ``depth`` (nyu-depth): ``valid`` (n,) pixels evaluated, ``below`` (n, 3) pixels with delta below 1.25,
  1.25^2, 1.25^3, and ``per_image`` (n, M) float64 the per-image metrics named by ``meta["per_image_keys"]`` (the
  task averages per-image values, as mmseg/BTS do). NYU test: 654 x ~14 numbers, a few kB.
- kind ``detection`` (voc-det): detections flattened over images: ``det_image`` (index into ids), ``det_box``
  (m, 4) float32, ``det_score``, ``det_label``; ground truth likewise: ``gt_image``, ``gt_box``, ``gt_label``,
  ``gt_difficult`` (bool; VOC "difficult" objects are ignored by AP). ``meta["num_classes"]``,
  ``meta["eval_mode"]``. VOC07 test (4,952 images, <= 100 detections each): <= 495k x 26 B = 13 MB raw, at most
  9.4 MB as written (measured with 100 random-valued detections per image, the worst case).
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FILENAME = "eval_outputs.npz"
FORMAT = 1
KINDS: dict[str, tuple[str, ...]] = {            # required arrays per kind (besides ids)
    "classification": ("top5", "label"),
    "segmentation": ("intersect", "union"),
    "depth": ("valid", "below", "per_image"),
    "detection": ("det_image", "det_box", "det_score", "det_label", "gt_image", "gt_box", "gt_label",
                  "gt_difficult"),
}
_destination: list[Path] = []     # a stack: the innermost collect_to wins


@contextmanager
def collect_to(work_dir: str | os.PathLike) -> Iterator[Path]:
    """Within this block, :func:`save` writes ``work_dir/eval_outputs.npz``. A stale file from an earlier run in
    the same folder is removed first, so the file always belongs to the results.json written beside it."""
    path = Path(work_dir) / FILENAME
    path.unlink(missing_ok=True)
    _destination.append(path)
    try:
        yield path
    finally:
        _destination.pop()


def destination() -> Path | None:
    """Where :func:`save` writes now (None outside :func:`collect_to`)."""
    return _destination[-1] if _destination else None


def save(kind: str, ids: Sequence[Any], meta: Mapping[str, Any] | None = None, **arrays: Any) -> Path | None:
    """Write one evaluation's per-sample outputs (see the module docstring for ``kind`` and its arrays); None when
    no run collects them."""
    path = destination()
    if path is None:
        return None
    data = pack(kind, ids, meta, **arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    from rs_transfer.atomic import write_bytes_atomic

    return write_bytes_atomic(path, buf.getvalue())


def pack(kind: str, ids: Sequence[Any], meta: Mapping[str, Any] | None = None, **arrays: Any) -> dict[str, Any]:
    """The arrays as saved (validated): ``meta`` as a JSON string, ``ids`` as strings."""
    if kind not in KINDS:
        raise ValueError(f"unknown eval-outputs kind {kind!r}; known: {', '.join(KINDS)}")
    missing = [k for k in KINDS[kind] if k not in arrays]
    if missing:
        raise ValueError(f"eval outputs of kind {kind!r} need arrays {', '.join(missing)}")
    ids_arr = np.asarray([str(i) for i in ids], dtype=str)
    if len(set(ids_arr.tolist())) != len(ids_arr):
        raise ValueError("eval-output sample ids must be unique")
    out = {k: np.asarray(v) for k, v in arrays.items()}
    per_sample = [k for k in out if not k.startswith(("det_", "gt_"))]
    bad = [k for k in per_sample if out[k].shape[:1] != (len(ids_arr),)]
    if bad:
        raise ValueError(f"eval-output arrays {bad} do not have one row per sample id ({len(ids_arr)})")
    head = {"format": FORMAT, "kind": kind, **dict(meta or {})}
    return {"meta": np.asarray(json.dumps(head)), "ids": ids_arr, **out}


@dataclass
class EvalOutputs:
    """A loaded eval_outputs.npz: ``kind``, ``meta`` (dict), ``ids``, the other ``arrays``."""

    kind: str
    meta: dict[str, Any]
    ids: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


def load(path: str | os.PathLike) -> EvalOutputs:
    """Read a work dir's (or a file's) eval outputs; ``FileNotFoundError`` when the run kept none."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k not in ("meta", "ids")}
        ids = z["ids"]
    if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise ValueError(f"{path}: not an eval-outputs file of format {FORMAT} (meta {meta})")
    return EvalOutputs(meta.pop("kind"), meta, ids, arrays)


def find(work_dir: str | os.PathLike) -> Path | None:
    """The run's eval outputs file, or None for a run made before outputs were kept."""
    path = Path(work_dir) / FILENAME
    return path if path.is_file() else None
