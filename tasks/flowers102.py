"""Oxford 102 Flowers (Nilsback & Zisserman 2008), read by torchvision's ``Flowers102``: training on the official
train + val sets (2,040 images), testing on test (6,149), as Kornblith et al. 2019; metric mean per-class accuracy.

torchvision checks the md5 of ``imagelabels.mat`` and ``setid.mat`` against the release; :class:`Flowers102Files`
checks that they exist instead (the generated mini copy has the same layout and fields but other bytes), and the
data check warns when the md5 differs from the release's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets import Flowers102

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole, write_image

MINI_CLASSES, MINI_COUNTS = 3, {"trnid": 5, "valid": 5, "tstid": 4}


class Flowers102Files(Flowers102):
    """torchvision's Flowers102 with the md5 check replaced by an existence check (module docstring). Defined at
    module level so that data-loader workers can unpickle it under any start method."""

    def _check_integrity(self) -> bool:
        return self._images_folder.is_dir() and all(
            (self._base_folder / self._file_dict[k][0]).is_file() for k in ("label", "setid"))


def load(root: Path, split: str) -> list[Source]:
    parts = ("train", "val") if split == "train" else ("test",)
    return [whole(Flowers102Files(str(root), split=s, download=False), part=s if s == "val" else "") for s in parts]


def release_check(root: Path) -> list[str]:
    """Warnings for label / split files whose md5 differs from the release's (torchvision's own checksums)."""
    from torchvision.datasets.utils import check_integrity

    base = Path(root) / "flowers-102"
    return [f"{name} differs from the release (md5 is not {md5}): labels or splits may not be the official ones"
            for key, (name, md5) in Flowers102Files._file_dict.items()
            if key != "image" and not check_integrity(str(base / name), md5)]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``flowers-102/{jpg/image_%05d.jpg, imagelabels.mat (labels, 1-based, 1 x N), setid.mat (trnid, valid,
    tstid: 1-based image ids)}``, the .mat files written with scipy.io.savemat."""
    from scipy.io import savemat

    base = root / "flowers-102"
    labels, sets, n = [], {}, 1
    for key, count in MINI_COUNTS.items():
        ids = []
        for c in range(MINI_CLASSES):
            for _ in range(count):
                write_image(base / "jpg" / f"image_{n:05d}.jpg", class_image(rng, c))
                labels.append(c + 1)
                ids.append(n)
                n += 1
        sets[key] = np.array(ids, dtype=np.uint16).reshape(1, -1)
    savemat(str(base / "imagelabels.mat"), {"labels": np.array(labels, dtype=np.uint8).reshape(1, -1)})
    savemat(str(base / "setid.mat"), sets)
    mark_mini(root, "flowers102")
    return root


SUITE = Suite(
    name="flowers102", title="Flowers mean/class", metric="mean_per_class", num_classes=102, load=load,
    layout="<root>/flowers-102/{jpg/image_00001.jpg..., imagelabels.mat, setid.mat} (torchvision Flowers102)",
    source="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz unpacked into <root>/flowers-102, "
           "imagelabels.mat and setid.mat beside jpg/)",
    sizes={"train": 2040, "test": 6149}, write_mini=write_mini, torchvision_class="Flowers102",
    split_note="official trnid + valid for training, tstid for testing", release_check=release_check)
TASK = make_task(SUITE, "Oxford 102 Flowers: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
