"""Describable Textures (Cimpoi et al. 2014), read by torchvision's ``DTD``: 47 textures; partition 1 of the 10
official splits, training on train1 + val1 (3,760 images) and testing on test1 (1,880), as Kornblith et al. 2019;
metric top-1."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

PARTITION = 1
MINI_CLASSES, MINI_COUNTS = 3, {"train": 5, "val": 5, "test": 4}


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import DTD

    parts = ("train", "val") if split == "train" else ("test",)
    return [whole(DTD(str(root), split=s, partition=PARTITION, download=False), part=s if s == "val" else "")
            for s in parts]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``dtd/dtd/images/<class>/<class>_<n>.jpg`` and ``dtd/dtd/labels/{train,val,test}1.txt`` ("class/file" per
    line): torchvision's DTD root is the folder ABOVE the unpacked ``dtd/``."""
    base = root / "dtd" / "dtd"
    n = 0
    for split, count in MINI_COUNTS.items():
        lines = []
        for c in range(MINI_CLASSES):
            for _ in range(count):
                name = f"texture{c}/texture{c}_{n:04d}.jpg"
                write_image(base / "images" / name, class_image(rng, c))
                lines.append(name)
                n += 1
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}{PARTITION}.txt").write_text("".join(f"{x}\n" for x in lines))
    mark_mini(root, "dtd")
    return root


SUITE = Suite(
    name="dtd", title="DTD top-1", metric="top1", num_classes=47, load=load,
    layout="<root>/dtd/dtd/{images/<class>/*.jpg, labels/{train,val,test}1.txt} (torchvision DTD, partition 1)",
    source="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz (unpack into <root>/dtd)",
    sizes={"train": 3760, "test": 1880}, write_mini=write_mini, torchvision_class="DTD",
    split_note="partition 1: train1 + val1 for training, test1 for testing")
TASK = make_task(SUITE, "DTD: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
