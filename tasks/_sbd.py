"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) as released, read directly: no conversion step.

Why: VOC2012 "trainaug" (10,582 images) is VOC2012 train plus SBD, and SBD ships as MATLAB files
(``benchmark.tgz`` -> ``benchmark_RELEASE/dataset/{cls/*.mat, img/*.jpg, train.txt, val.txt}``). mmseg's
``tools/dataset_converters/voc_aug.py`` converts them to PNGs and writes the split lists; users who have the release
but not the converted copy can train on it as it is. Everything here follows that converter exactly:

- a mask is ``loadmat(f)['GTcls'][0]['Segmentation'][0].astype(np.uint8)`` (the ``GTcls`` struct's
  ``Segmentation`` field: 0 = background, 1..20 = the VOC classes; its other fields, ``Boundaries`` and
  ``CategoriesPresent``, are not used);
- the SBD-only training images ("aug") are SBD train + SBD val minus VOC2012 train and VOC2012 val
  (``generate_aug_list(full_aug_list, ori_train_list + val_list)``), so VOC2012 train (official masks) + aug is
  trainaug with no VOC2012 val image in it. The converter keeps set order (arbitrary); we sort the ids.

Images come from ``VOC2012/JPEGImages`` (SBD's images are VOC2011 images, all of which VOC2012 holds), as mmseg's
datasets read them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import UNREADABLE

SBD_NAMES = ("benchmark_RELEASE", "VOCaug", "SBD", "sbd", "benchmark")   # folders that hold dataset/cls
MAT_MAGIC = b"MATLAB 5.0 MAT-file"    # the header of the release's .mat files (MATLAB v5)
CONVERTER = "tools/dataset_converters/voc_aug.py"


def find_sbd(root: Path, devkit: Path) -> Path | None:
    """The SBD release folder (the one holding ``dataset/cls``; voc_aug.py's ``aug_path``) next to the VOC data: in
    the data root, in ``VOCdevkit`` (mmseg's docs put it at ``VOCdevkit/VOCaug``) or beside ``VOCdevkit``."""
    for base in dict.fromkeys((Path(root), Path(devkit), Path(devkit).parent)):
        for name in SBD_NAMES:
            if (base / name / "dataset" / "cls").is_dir():
                return base / name
    return None


def converter_command(devkit: Path, sbd: Path) -> str:
    """The exact mmseg command that converts this SBD copy into ``SegmentationClassAug`` + ``aug.txt``."""
    return f"python {CONVERTER} {devkit} {sbd} --nproc 8 (mmsegmentation)"


def _ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def aug_ids(voc: Path, sbd: Path) -> list[str]:
    """voc_aug.py's ``aug.txt``: (SBD train + SBD val) - (VOC2012 train + VOC2012 val), sorted."""
    sets = Path(voc) / "ImageSets" / "Segmentation"
    full = _ids(Path(sbd) / "dataset" / "train.txt") + _ids(Path(sbd) / "dataset" / "val.txt")
    return sorted(set(full) - set(_ids(sets / "train.txt") + _ids(sets / "val.txt")))


def mask_path(sbd: Path, img_id: str) -> Path:
    return Path(sbd) / "dataset" / "cls" / f"{img_id}.mat"


def read_mask(path: str | Path) -> np.ndarray:
    """The class-id mask of one SBD ``cls/*.mat`` file, exactly as voc_aug.py's ``convert_mat`` reads it. Raises
    ``ValueError`` naming the file when it is not a GTcls struct with a 2-D ``Segmentation``."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
        seg = np.asarray(data["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not an SBD GTcls file (GTcls.Segmentation: {type(err).__name__}: {err})") from err
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected a 2-D mask")
    return seg.astype(np.uint8)


def mat_problem(path: str | Path) -> str | None:
    """Why an SBD mask does not decode completely (for the skip rule and ``data check --deep``), or None."""
    try:
        read_mask(path)
    except OSError as err:
        return f"cannot read ({err.strerror or type(err).__name__})"
    except Exception as err:  # noqa: BLE001 - scipy raises several types for damaged files
        lines = str(err).strip().splitlines()
        return f"cannot decode ({type(err).__name__}: {lines[-1] if lines else 'damaged'})"
    return None


def check_mat(path: Path) -> str | None:
    """Header check of one SBD mask (every run does it, so no decoding): missing, or not a MATLAB v5 file."""
    if not path.is_file():
        return f"missing mask {path}"
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAT_MAGIC))
    except OSError as err:
        return f"{path}{UNREADABLE}({err.strerror or type(err).__name__})"
    if head != MAT_MAGIC:
        return f"{path}{UNREADABLE}(not a MATLAB 5.0 MAT-file)"
    return None


def check_release(sbd: Path) -> list[str]:
    """Problems of the release folder itself: the split lists voc_aug.py reads."""
    return [f"SBD release at {sbd} lacks {sbd / 'dataset' / name}" for name in ("train.txt", "val.txt")
            if not (sbd / "dataset" / name).is_file()]
