"""Oxford-IIIT Pets (Parkhi et al. 2012), read by torchvision's ``OxfordIIITPet``: 37 breeds, trainval (3,680) for
training and test (3,669), as Kornblith et al. 2019; metric mean per-class accuracy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

MINI_CLASSES, MINI_COUNTS = 3, {"trainval": 10, "test": 4}


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import OxfordIIITPet

    return [whole(OxfordIIITPet(str(root), split="trainval" if split == "train" else "test",
                                target_types="category", download=False))]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``oxford-iiit-pet/images/<Breed>_<n>.jpg`` and ``oxford-iiit-pet/annotations/{trainval,test}.txt`` ("id
    class(1-based) species breed-id" per line); cats are capitalised in the release, dogs are not."""
    base = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "beagle", "Bengal"]
    n = 1
    for split, count in MINI_COUNTS.items():
        lines = []
        for c, breed in enumerate(breeds[:MINI_CLASSES]):
            for _ in range(count):
                image_id = f"{breed}_{n}"
                write_image(base / "images" / f"{image_id}.jpg", class_image(rng, c))
                lines.append(f"{image_id} {c + 1} {1 if breed[0].isupper() else 2} {c + 1}")
                n += 1
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{x}\n" for x in lines))
    mark_mini(root, "oxford-pets")
    return root


SUITE = Suite(
    name="oxford-pets", title="Pets mean/class", metric="mean_per_class", num_classes=37, load=load,
    layout="<root>/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt} (torchvision OxfordIIITPet)",
    source="https://www.robots.ox.ac.uk/~vgg/data/pets/data/{images,annotations}.tar.gz (unpack both into "
           "<root>/oxford-iiit-pet)",
    sizes={"train": 3680, "test": 3669}, write_mini=write_mini, torchvision_class="OxfordIIITPet",
    split_note="official trainval / test")
TASK = make_task(SUITE, "Oxford-IIIT Pets: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
