"""FGVC-Aircraft 2013b (Maji et al. 2013), read by torchvision's ``FGVCAircraft``: 100 variants, trainval (6,667)
for training and test (3,333), as Kornblith et al. 2019; metric mean per-class accuracy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

MINI_CLASSES, MINI_COUNTS = 3, {"train": 5, "val": 5, "test": 4}


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import FGVCAircraft

    parts = ("train", "val") if split == "train" else ("test",)     # trainval = train + val, the val part marked
    return [whole(FGVCAircraft(str(root), split=s, annotation_level="variant", download=False),
                  part=s if s == "val" else "") for s in parts]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, images_variant_{train,val,trainval,test}.txt}``
    ("id variant name" per line; variant names may contain spaces; trainval = train + val, as released)."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = [f"Jet {c}-00" for c in range(MINI_CLASSES)]
    n = 1000000
    for split, count in MINI_COUNTS.items():
        lines = []
        for c, name in enumerate(variants):
            for _ in range(count):
                write_image(data / "images" / f"{n}.jpg", class_image(rng, c))
                lines.append(f"{n} {name}")
                n += 1
        (data / f"images_variant_{split}.txt").write_text("".join(f"{x}\n" for x in lines))
    trainval = [(data / f"images_variant_{s}.txt").read_text() for s in ("train", "val")]
    (data / "images_variant_trainval.txt").write_text("".join(trainval))
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    mark_mini(root, "fgvc-aircraft")
    return root


SUITE = Suite(
    name="fgvc-aircraft", title="Aircraft mean/class", metric="mean_per_class", num_classes=100, load=load,
    layout="<root>/fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt} "
           "(torchvision FGVCAircraft)",
    source="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz (unpack into "
           "<root>)",
    sizes={"train": 6667, "test": 3333}, write_mini=write_mini, torchvision_class="FGVCAircraft",
    split_note="variant level (100 classes): trainval for training, test for testing")
TASK = make_task(SUITE, "FGVC-Aircraft: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
