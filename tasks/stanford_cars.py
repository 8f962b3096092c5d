"""Stanford Cars (Krause et al. 2013), read by torchvision's ``StanfordCars``: 196 models, 8,144 train / 8,041 test
(the official split, as Kornblith et al. 2019); metric top-1. The original URL is gone: the files come from a
mirror, in the layout below (the test labels are ``cars_test_annos_withlabels.mat``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

MINI_CLASSES, MINI_COUNTS = 3, {"train": 10, "test": 4}


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import StanfordCars

    return [whole(StanfordCars(str(root), split=split, download=False))]


def annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    """The ``annotations`` struct array of the devkit's .mat files: bbox_x1..bbox_y2, class (1-based), fname."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    out = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (fname, cls) in enumerate(rows):
        out[0, i] = (np.uint8(1), np.uint8(1), np.uint8(20), np.uint8(20), np.uint8(cls), fname)
    return out


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``stanford_cars/{devkit/{cars_meta.mat, cars_train_annos.mat}, cars_train/*.jpg, cars_test/*.jpg,
    cars_test_annos_withlabels.mat}``, the .mat files written with scipy.io.savemat as MATLAB structs."""
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    for split, count in MINI_COUNTS.items():
        rows, n = [], 1
        for c in range(MINI_CLASSES):
            for _ in range(count):
                fname = f"{n:05d}.jpg"
                write_image(base / f"cars_{split}" / fname, class_image(rng, c))
                rows.append((fname, c + 1))
                n += 1
        mat = base / ("devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat")
        savemat(str(mat), {"annotations": annotations(rows)})
    names = np.array([f"Make{c} Model {2010 + c}" for c in range(MINI_CLASSES)], dtype=object)
    savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": names.reshape(1, -1)})
    mark_mini(root, "stanford-cars")
    return root


SUITE = Suite(
    name="stanford-cars", title="Cars top-1", metric="top1", num_classes=196, load=load,
    layout="<root>/stanford_cars/{devkit/{cars_meta.mat, cars_train_annos.mat}, cars_train/*.jpg, cars_test/*.jpg, "
           "cars_test_annos_withlabels.mat} (torchvision StanfordCars)",
    source="a mirror of the Stanford Cars release (car_devkit.tgz, cars_train.tgz, cars_test.tgz, "
           "cars_test_annos_withlabels.mat; the original ai.stanford.edu URL is gone), unpacked into "
           "<root>/stanford_cars",
    sizes={"train": 8144, "test": 8041}, write_mini=write_mini, torchvision_class="StanfordCars",
    split_note="official train / test")
TASK = make_task(SUITE, "Stanford Cars: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
