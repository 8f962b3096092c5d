"""Caltech-101 (Fei-Fei et al. 2004), read by torchvision's ``Caltech101``: 30 training images per class drawn
with a fixed seed (``SPLIT_SEED``), every other image for testing (Kornblith et al. 2019's protocol); metric mean
per-class accuracy over 102 classes. Kornblith et al. count the ``BACKGROUND_Google`` category as a class: their
dataset table lists Caltech-101 with 102 classes and 3,060 / 6,084 images, 3,060 = 30 x 102 and 3,060 + 6,084 =
9,144, the release's whole image count with the background folder. torchvision drops that folder by name, so
:func:`with_background` puts it back as the last class (label 101; the other 101 labels and their split are what
torchvision's order gives). SimCLR's transfer tables (``results/paper_transfer12.json``) follow their protocol."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._tvclass import Source, Suite, class_image, labels_of, make_task, mark_mini, write_image

TRAIN_PER_CLASS, SPLIT_SEED = 30, 0
BACKGROUND = "BACKGROUND_Google"
MINI_CLASSES, MINI_PER_CLASS = 2, 34     # + the background folder: three classes


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Per class (in class order) a ``default_rng(SPLIT_SEED)`` permutation of its images: the first 30 train, the
    rest test. One generator for all classes, so the split depends only on the per-class counts."""
    rng = np.random.default_rng(SPLIT_SEED)
    out = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out.append(idx[:TRAIN_PER_CLASS] if split == "train" else idx[TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(out))


def with_background(ds: Any) -> Any:
    """``ds`` (torchvision ``Caltech101``, categories only) with ``BACKGROUND_Google`` appended as the last class,
    in the lists its ``__getitem__`` reads (``categories``, ``index``: the 1-based ``image_%04d.jpg`` numbers,
    ``y``), numbered as torchvision numbers every other category (1..n, n = the files in the folder)."""
    folder = Path(ds.root) / "101_ObjectCategories" / BACKGROUND
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (the release has it: Kornblith et al.'s 102nd class)")
    n = len(os.listdir(folder))
    ds.categories.append(BACKGROUND)
    ds.annotation_categories.append(BACKGROUND)
    ds.index.extend(range(1, n + 1))
    ds.y.extend([len(ds.categories) - 1] * n)
    return ds


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import Caltech101

    cats = Path(root) / "caltech101" / "101_ObjectCategories"
    for need in (cats, cats / BACKGROUND):      # torchvision would create folders / fail in list.remove
        if not need.is_dir():
            raise FileNotFoundError(f"{need} does not exist")
    ds = with_background(Caltech101(str(root), target_type="category", download=False))
    labels = np.asarray(labels_of(ds), dtype=np.int64)
    idx = split_indices(labels, split)
    return [Source(ds, idx, labels[idx])]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``caltech101/101_ObjectCategories/<category>/image_%04d.jpg`` (numbered from 1, as torchvision indexes them),
    including the ``BACKGROUND_Google`` folder torchvision removes by name and :func:`with_background` puts back
    (the last class: its images get that label's colour)."""
    cats = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate([*(f"category_{c}" for c in range(MINI_CLASSES)), BACKGROUND]):
        for i in range(1, MINI_PER_CLASS + 1):
            write_image(cats / name / f"image_{i:04d}.jpg", class_image(rng, c, 16))
    mark_mini(root, "caltech101")
    return root


SUITE = Suite(
    name="caltech101", title="Caltech-101 mean/class", metric="mean_per_class", num_classes=102, load=load,
    layout="<root>/caltech101/101_ObjectCategories/<category>/image_0001.jpg... (torchvision Caltech101; "
           "BACKGROUND_Google present: the 102nd class)",
    source="https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip -> 101_ObjectCategories.tar.gz, "
           "unpacked into <root>/caltech101)",
    sizes={"train": 3060, "test": 6084}, write_mini=write_mini, torchvision_class="Caltech101",
    split_note=f"{TRAIN_PER_CLASS} training images per class (seed {SPLIT_SEED}), the rest test; 102 classes "
               "(with BACKGROUND_Google, as Kornblith et al.)")
TASK = make_task(SUITE, "Caltech-101: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
