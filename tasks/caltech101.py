"""Caltech-101 (Fei-Fei et al. 2004), read by torchvision's ``Caltech101``: 30 training images per class drawn
with a fixed seed (``SPLIT_SEED``), every other image for testing (Kornblith et al. 2019's protocol); metric mean
per-class accuracy. torchvision drops the ``BACKGROUND_Google`` folder, so there are 101 classes (3,030 training
images). Kornblith et al. may count the background category as a class as well (to our memory their dataset table
lists 102 classes; not checked against the paper here): if so, their numbers are over one more class."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, labels_of, make_task, mark_mini, write_image

TRAIN_PER_CLASS, SPLIT_SEED = 30, 0
MINI_CLASSES, MINI_PER_CLASS = 3, 34


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Per class (in class order) a ``default_rng(SPLIT_SEED)`` permutation of its images: the first 30 train, the
    rest test. One generator for all classes, so the split depends only on the per-class counts."""
    rng = np.random.default_rng(SPLIT_SEED)
    out = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out.append(idx[:TRAIN_PER_CLASS] if split == "train" else idx[TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(out))


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import Caltech101

    if not (Path(root) / "caltech101" / "101_ObjectCategories").is_dir():   # torchvision would create folders
        raise FileNotFoundError(f"{Path(root) / 'caltech101' / '101_ObjectCategories'} does not exist")
    ds = Caltech101(str(root), target_type="category", download=False)
    labels = np.asarray(labels_of(ds), dtype=np.int64)
    idx = split_indices(labels, split)
    return [Source(ds, idx, labels[idx])]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``caltech101/101_ObjectCategories/<category>/image_%04d.jpg`` (numbered from 1, as torchvision indexes them),
    including the ``BACKGROUND_Google`` folder torchvision removes by name."""
    cats = root / "caltech101" / "101_ObjectCategories"
    for c in range(MINI_CLASSES):
        for i in range(1, MINI_PER_CLASS + 1):
            write_image(cats / f"category_{c}" / f"image_{i:04d}.jpg", class_image(rng, c, 16))
    for i in range(1, 3):
        write_image(cats / "BACKGROUND_Google" / f"image_{i:04d}.jpg", class_image(rng, 9, 16))
    mark_mini(root, "caltech101")
    return root


SUITE = Suite(
    name="caltech101", title="Caltech-101 mean/class", metric="mean_per_class", num_classes=101, load=load,
    layout="<root>/caltech101/101_ObjectCategories/<category>/image_0001.jpg... (torchvision Caltech101; "
           "BACKGROUND_Google present and ignored)",
    source="https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip -> 101_ObjectCategories.tar.gz, "
           "unpacked into <root>/caltech101)",
    sizes={"train": 3030}, write_mini=write_mini, torchvision_class="Caltech101",
    split_note=f"{TRAIN_PER_CLASS} training images per class (seed {SPLIT_SEED}), the rest test; 101 classes")
TASK = make_task(SUITE, "Caltech-101: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
