"""Ground-truth values a task can use: class ids of segmentation masks, measured pixels of depth maps.

Why: masks are 8-bit PNGs, so any value 0..255 decodes. A value outside the class range (a mask converted with the
wrong palette, a relabelled background) made training fail deep inside the loss (``IndexError: Target 30 is out of
bounds``, reported as an unexpected error) and made evaluation drop those pixels silently (mmseg's histograms skip
them), down to an mIoU of 0.0 when no pixel was left. A depth map without a single measured pixel made the per-image
mean, and so every depth metric, NaN.

Used in two places, with the same wording: :class:`CheckLabelRange` (a pipeline step the segmentation datasets put
right after ``LoadAnnotations``: a bad mask stops the run with one line naming the file, the values and the valid
range) and ``rs-transfer data check --deep`` (``Task.check_values``: every mask of the data set, before a run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IGNORE = 255                         # mmseg's ignore_index for VOC and ADE20K
DEPTH_MM = (1, 10000)                # NYU: evaluated depth 0.001 < d < 10 m, stored in millimetres


def valid_range(num_classes: int, ignore_index: int = IGNORE, reduce_zero_label: bool = False) -> str:
    """The values a mask FILE may hold, in words (``reduce_zero_label``: file 0 is ignored, classes are 1..n)."""
    if reduce_zero_label:
        return f"valid: 1..{num_classes}; 0 and {ignore_index} = ignore"
    return f"valid: 0..{num_classes - 1}; {ignore_index} = ignore"


def _values_problem(bad: np.ndarray, num_classes: int, ignore_index: int, reduce_zero_label: bool) -> str | None:
    if bad.size == 0:
        return None
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (f" (and {bad.size - 5} more)" if bad.size > 5 else "")
    noun = "label value" if bad.size == 1 else "label values"
    return (f"{noun} {shown} outside the {num_classes} classes "
            f"({valid_range(num_classes, ignore_index, reduce_zero_label)})")


def mask_problem(values: np.ndarray, num_classes: int, ignore_index: int = IGNORE,
                 reduce_zero_label: bool = False) -> str | None:
    """Why a mask as stored in its file (class ids) is unusable, or None."""
    top = num_classes + 1 if reduce_zero_label else num_classes    # file values 0..n with reduce_zero_label
    values = np.asarray(values)
    bad = np.unique(values[(values >= top) & (values != ignore_index) | (values < 0)])
    return _values_problem(bad, num_classes, ignore_index, reduce_zero_label)


def depth_problem(values: np.ndarray, low: int = DEPTH_MM[0], high: int = DEPTH_MM[1]) -> str | None:
    """Why a depth map in millimetres has nothing to evaluate or train on (no pixel with ``low < d < high``)."""
    values = np.asarray(values)
    if values.size and ((values > low) & (values < high)).any():
        return None
    top = int(values.max()) if values.size else 0
    if top <= 0:
        return "no valid depth: every pixel is 0 (not measured)"
    return (f"no valid depth: no pixel within {low}..{high} mm (the evaluated 0.001-10 m), max {top} mm: "
            "wrong units?")


class CheckLabelRange:
    """Pipeline step after ``LoadAnnotations``: ``gt_seg_map`` (class ids after ``reduce_zero_label``) must hold
    ``0..num_classes-1`` or ``ignore_index``; otherwise ``UserError`` naming the file, its values (as stored) and
    the valid range. Samples without a mask (an unreadable file's placeholder) pass through."""

    def __init__(self, num_classes: int, ignore_index: int, reduce_zero_label: bool, task: str) -> None:
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.reduce_zero_label, self.task = bool(reduce_zero_label), task

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        seg = results.get("gt_seg_map")
        if seg is None:
            return results
        seg = np.asarray(seg)
        out = (seg >= self.num_classes) & (seg != self.ignore_index)
        if out.any():
            from rs_transfer.errors import UserError

            bad = np.unique(seg[out]).astype(np.int64)
            stored = bad + 1 if self.reduce_zero_label else bad   # loading subtracted 1 from every class id
            problem = _values_problem(stored, self.num_classes, self.ignore_index, self.reduce_zero_label)
            path = results.get("seg_map_path", "a mask")
            raise UserError(f"{path}: {problem}; the masks were not prepared for this task. List every such mask "
                            f"with `rs-transfer data check --task {self.task} --deep`")
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"reduce_zero_label={self.reduce_zero_label})")


def add_label_check(dataset: Any, task: str) -> None:
    """Insert :class:`CheckLabelRange` after the ``LoadAnnotations`` step of an mmseg dataset's pipeline."""
    transforms = dataset.pipeline.transforms
    for i, t in enumerate(transforms):
        if type(t).__name__ == "LoadAnnotations":
            check = CheckLabelRange(len(dataset.metainfo["classes"]), dataset.ignore_index,
                                    dataset.reduce_zero_label, task)
            transforms.insert(i + 1, check)
            return


def _pixels(path: Path) -> np.ndarray | None:
    """A mask/depth PNG as stored (palette indices for palette PNGs), or None when it does not decode (unreadable
    files are the skip rule's business, ``tasks/_corrupt.py``)."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img)
    except Exception:  # noqa: BLE001  Pillow raises many types for damaged files
        return None


def sampled_problem(paths: list[Path], judge: Any, what: str, sample: int = 10, every: bool = False) -> str | None:
    """The ordinary ``data check`` reads headers only; it also decodes the first ``sample`` of ``paths`` so that
    masks a run would stop at (or, ``every``: a split in which none of them is usable) are found before training,
    not at the first validation. ``judge(pixels) -> problem``; ``what`` names the split."""
    judged = [(p, judge(a)) for p in paths[:sample] if (a := _pixels(p)) is not None]
    bad = [(p, why) for p, why in judged if why]
    if not bad or (every and len(bad) < len(judged)):
        return None
    p, why = bad[0]
    many = f"all {len(judged)} of the first" if every else f"{len(bad)} of the first {len(judged)}"
    return (f"{p}: {why} ({many} {what} checked; `rs-transfer data check --deep` checks every file)")


def mask_file_check(num_classes: int, reduce_zero_label: bool, mask_dirs: tuple[str, ...]):
    """A ``Task.check_values`` for ``data check --deep``: masks are the PNGs in one of ``mask_dirs``."""

    def check(path: Path, values: np.ndarray) -> str | None:
        if Path(path).suffix.lower() != ".png" or not set(mask_dirs) & set(Path(path).parts):
            return None
        return mask_problem(values, num_classes, IGNORE, reduce_zero_label)

    return check


def depth_file_check(path: Path, values: np.ndarray) -> str | None:
    """``Task.check_values`` of nyu-depth: every PNG is a depth map in millimetres."""
    return depth_problem(values) if Path(path).suffix.lower() == ".png" else None
