"""ImageNet (ILSVRC2012) pre-training: the data layouts, ``data check``, the mini set, and the recipe wiring.

Layouts accepted (``--data-root`` = the folder that holds ``train/`` and ``val/``):

- ``train/<wnid>/*.JPEG`` (1,281,167 images, 1,000 classes). Class index = position of the wnid in the sorted
  list of train folders (torchvision ``ImageFolder`` / Caffe order: what torchvision and timm checkpoints use).
- ``val/<wnid>/*.JPEG`` (class folders, e.g. after the usual ``valprep.sh``), or ``val/ILSVRC2012_val_*.JPEG`` flat
  with one of the ground-truth files:
  - Kaggle's ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the string starts with the image's wnid,
    followed by boxes), in the data root or up to 3 folders above it (Kaggle: ``ILSVRC/Data/CLS-LOC`` is the root,
    the CSV sits at the top);
  - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line k = ILSVRC2012_ID of ``ILSVRC2012_val_<k>``,
    1-based) with ``meta.mat`` (``synsets`` struct array: ``ILSVRC2012_ID``, ``WNID``, ..., ``num_children``; the
    1,000 classes are the leaves, ``num_children == 0``), both in ``ILSVRC2012_devkit_t12/data/`` or the root.
    These IDs are NOT the sorted-wnid indices, so they are always mapped through ``meta.mat`` (torchvision's
    ``parse_devkit_archive`` does the same); Kaggle's ``LOC_synset_mapping.txt`` is in sorted-wnid order and cannot
    map them.

Unreadable files (empty, or not a JPEG/PNG header) are listed by ``data check`` as warnings, never fatal: runs
skip and count them (tasks/_corrupt.py rules); ``data check --deep`` decodes every file (``data_files``). A val
class missing from train is fatal (its label does not exist); classes without val images are a warning.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._imagenet_mini import make_mini
from ._imagenet_recipe import configure
from .base import UNREADABLE, DataReport, Task

LAYOUT = ("ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG, or a flat ROOT/val/ILSVRC2012_val_*.JPEG with "
          "LOC_val_solution.csv (Kaggle) or ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt,"
          "meta.mat}")
SOURCE = ("https://image-net.org/download-images (ILSVRC2012 train/val archives and the devkit t12), or Kaggle's "
          "imagenet-object-localization-challenge")
EXTS = (".jpeg", ".jpg", ".png")
FULL = {"classes": 1000, "train": 1281167, "val": 50000}
GT_TXT, META_MAT, KAGGLE_CSV = "ILSVRC2012_validation_ground_truth.txt", "meta.mat", "LOC_val_solution.csv"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d+)$")


@dataclass
class Listing:
    """Everything the data folder says: classes (label order), (path, label) pairs, and what is wrong."""

    root: Path
    classes: list[str] = field(default_factory=list)
    train: list[tuple[str, int]] = field(default_factory=list)
    val: list[tuple[str, int]] = field(default_factory=list)
    val_source: str = ""
    problems: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)       # train folders without images
    no_val_classes: list[str] = field(default_factory=list)      # classes without val images

    def raise_if_bad(self) -> None:
        report = DataReport("imagenet", self.root, LAYOUT, SOURCE, problems=list(self.problems))
        report.raise_if_bad()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS and p.is_file())


def _find(root: Path, names: list[str], parents: int = 0) -> Path | None:
    for base in [root, *list(root.parents)[:parents]]:
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def read_meta_mat(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the 1,000 leaf synsets of the devkit's ``meta.mat``."""
    import scipy.io

    syn = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
    ids, wnids, kids = np.atleast_1d(syn["ILSVRC2012_ID"]), np.atleast_1d(syn["WNID"]), np.atleast_1d(
        syn["num_children"])
    return {int(i): str(w) for i, w, k in zip(ids, wnids, kids) if int(k) == 0}


def _flat_val_labels(root: Path, files: list[Path], listing: Listing) -> dict[str, str]:
    """image stem -> wnid for a flat val folder, from the Kaggle CSV or the devkit files."""
    kaggle = _find(root, [KAGGLE_CSV], parents=3)
    if kaggle is not None:
        listing.val_source = str(kaggle)
        with open(kaggle, newline="") as f:
            rows = csv.DictReader(f)
            if not rows.fieldnames or not {"ImageId", "PredictionString"} <= set(rows.fieldnames):
                listing.problems.append(f"{kaggle}: expected the columns ImageId,PredictionString")
                return {}
            return {r["ImageId"]: (r["PredictionString"] or "").split(" ")[0] for r in rows}
    devkit = [str(Path("ILSVRC2012_devkit_t12") / "data" / GT_TXT), GT_TXT]
    gt = _find(root, devkit)
    if gt is None:
        listing.problems.append(f"{root / 'val'} holds images without class folders, and no ground truth was found "
                                f"({KAGGLE_CSV}, or ILSVRC2012_devkit_t12/data/{GT_TXT} with {META_MAT})")
        return {}
    meta = _find(root, [str(Path("ILSVRC2012_devkit_t12") / "data" / META_MAT), META_MAT])
    if meta is None:
        listing.problems.append(f"{gt} needs the devkit's {META_MAT} next to it to map ILSVRC2012_IDs to wnids")
        return {}
    listing.val_source = f"{gt} + {meta}"
    id_to_wnid = read_meta_mat(meta)
    ids = [int(line) for line in gt.read_text().split()]
    out = {}
    for f in files:
        m = _VAL_NAME.match(f.stem)
        if m and 1 <= int(m.group(1)) <= len(ids) and ids[int(m.group(1)) - 1] in id_to_wnid:
            out[f.stem] = id_to_wnid[ids[int(m.group(1)) - 1]]
    return out


def scan(root: Path) -> Listing:
    """List train and val with labels (no decoding). Problems are what makes the data unusable."""
    root = Path(root)
    listing = Listing(root)
    train_dir, val_dir = root / "train", root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            listing.problems.append(f"missing folder {d}")
    if listing.problems:
        return listing
    listing.classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not listing.classes:
        listing.problems.append(f"{train_dir} has no class folders (train/<wnid>/*.JPEG)")
        return listing
    index = {w: i for i, w in enumerate(listing.classes)}
    for wnid in listing.classes:
        files = _images(train_dir / wnid)
        if not files:
            listing.empty_classes.append(wnid)
        listing.train += [(str(p), index[wnid]) for p in files]
    val_folders = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    pairs: list[tuple[Path, str]] = []
    if val_folders:
        listing.val_source = "class folders"
        pairs = [(p, w) for w in val_folders for p in _images(val_dir / w)]
    else:
        files = _images(val_dir)
        labels = _flat_val_labels(root, files, listing)
        unlabelled = [f.name for f in files if f.stem not in labels]
        if labels and unlabelled:
            listing.problems.append(f"{len(unlabelled)} val images have no ground-truth entry in "
                                    f"{listing.val_source}, e.g. {unlabelled[0]}")
        pairs = [(f, labels[f.stem]) for f in files if f.stem in labels]
    unknown = sorted({w for _, w in pairs if w not in index})
    if unknown:
        listing.problems.append(f"{len(unknown)} val classes have no train folder (their label does not exist), "
                                f"e.g. {unknown[0]}")
    listing.val = [(str(p), index[w]) for p, w in pairs if w in index]
    if not listing.val and not listing.problems:
        listing.problems.append(f"{val_dir} has no images")
    seen = {y for _, y in listing.val}
    listing.no_val_classes = [w for w, i in index.items() if i not in seen]
    return listing


def header_problem(path: str) -> str | None:
    """Why a file is not a usable image: unreadable, empty, or not a JPEG/PNG header."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        return f"cannot read ({err.strerror or type(err).__name__})"
    if not head:
        return "empty file"
    if not (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n")):
        return "not a JPEG or PNG file"
    return None


def check_data(root: Path) -> DataReport:
    """Layout, labels, counts, and every file's header (a full decode is ``data check --deep``; headers of files
    unchanged since the last check come from its cache). Unreadable files and a set that differs from ILSVRC2012
    are warnings: runs use what is there and say so."""
    listing = scan(Path(root))
    report = DataReport("imagenet", Path(root), LAYOUT, SOURCE, problems=list(listing.problems),
                        preparation=f"val labels from {listing.val_source}" if listing.val_source else "")
    report.counts = {"classes": len(listing.classes), "train": len(listing.train), "val": len(listing.val)}
    import os

    from ._header_cache import cached_problems

    # Under torchrun every process checks the data before training: one per machine (local rank 0) reads the 1.33M
    # headers and warns; the others only verify the layout (runs skip unreadable files whoever found them).
    paths = [p for p, _ in listing.train + listing.val] if int(os.environ.get("LOCAL_RANK", "0")) == 0 else []
    # 1.33M small reads in threads; results cached by (path, size, mtime) so an unchanged dataset is not read again
    # at the next run (tasks/_header_cache.py).
    problems = cached_problems(Path(root), paths, header_problem) if paths else []
    bad = [(p, why) for p, why in zip(paths, problems) if why]
    for p, why in bad:
        report.add(f"{p}{UNREADABLE}({why})")
    if listing.train and sum(p.startswith(str(Path(root) / "train")) for p, _ in bad) == len(listing.train):
        report.problems.append("no train image has a JPEG/PNG header")
    differs = [f"{k} {report.counts[k]:,} (ILSVRC2012: {v:,})" for k, v in FULL.items() if report.counts[k] != v]
    if differs and not report.problems:
        report.warnings.append(f"not the full ILSVRC2012 set: {', '.join(differs)}; runs train and evaluate on "
                               "what is there")
    for name, classes in (("train classes without images", listing.empty_classes),
                          ("classes without val images", listing.no_val_classes)):
        if classes:
            report.warnings.append(f"{name} ({len(classes)}): {', '.join(classes[:10])}"
                                   + (" ..." if len(classes) > 10 else ""))
    return report


def data_files(root: Path) -> list[Path]:
    """Every image a run decodes (train and val), for ``data check --deep``."""
    listing = scan(Path(root))
    return [Path(p) for p, _ in listing.train + listing.val]



TASK = Task(
    name="imagenet", title="ImageNet top-1", metric="top1", higher_is_better=True, config="imagenet.py",
    data_layout=LAYOUT, data_source=SOURCE, data_dirname="imagenet", make_mini=make_mini, check_data=check_data,
    configure=configure, data_files=data_files,
    description="ImageNet (ILSVRC2012) pre-training with the paper's recipes as toggles (--recipe); top-1/top-5",
)
__all__ = ["TASK", "Listing", "check_data", "read_meta_mat", "scan"]
