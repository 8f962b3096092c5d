"""Food-101 (Bossard et al. 2014), read by torchvision's ``Food101``: 101 dishes, 75,750 train / 25,250 test images
(the official meta/{train,test}.json split, as Kornblith et al. 2019); metric top-1."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

MINI_CLASSES, MINI_COUNTS = 3, {"train": 10, "test": 4}


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import Food101

    return [whole(Food101(str(root), split=split, download=False))]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``food-101/images/<class>/<id>.jpg`` and ``food-101/meta/{train,test}.json`` ({class: ["class/id", ...]}),
    plus ``meta/classes.txt``, as the release tarball unpacks."""
    base = root / "food-101"
    classes = [f"dish_{c}" for c in range(MINI_CLASSES)]
    for split, n in MINI_COUNTS.items():
        meta: dict[str, list[str]] = {}
        for c, name in enumerate(classes):
            for i in range(n):
                rel = f"{name}/{split}{i:04d}"
                write_image(base / "images" / f"{rel}.jpg", class_image(rng, c))
                meta.setdefault(name, []).append(rel)
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
    (base / "meta" / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    mark_mini(root, "food101")
    return root


SUITE = Suite(
    name="food101", title="Food-101 top-1", metric="top1", num_classes=101, load=load,
    layout="<root>/food-101/{images/<class>/<id>.jpg, meta/{train,test}.json} (torchvision Food101)",
    source="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/static/food-101.tar.gz (unpack into <root>)",
    sizes={"train": 75750, "test": 25250}, write_mini=write_mini, torchvision_class="Food101",
    split_note="official meta/train.json / meta/test.json split")
TASK = make_task(SUITE, "Food-101: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
