"""``--preset mini`` for ImageNet: a tiny ILSVRC2012 folder in the real on-disk format that a model can learn.

Eight real wnids (Imagenette classes), 40 train and 10 val JPEGs each, 40-48 px. Each class has its own colour
and stripe orientation/frequency, plus noise, so colour alone and pattern alone both carry the label (RandAugment
may wash out either). ``val`` is FLAT with the devkit's ground truth (``ILSVRC2012_validation_ground_truth.txt`` +
``meta.mat`` whose ILSVRC2012_IDs deliberately differ from the sorted-wnid label order, and with a non-leaf synset
that must be ignored), the layout that is easiest to get wrong. Deterministic (fixed seed; libjpeg writes the same
bytes for the same pixels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042", "n03425413")
# ILSVRC2012_ID per class (not the sorted order: the mapping through meta.mat must matter).
IDS = (7, 3, 8, 1, 5, 2, 6, 4)
COUNTS = {"train": 40, "val": 10}


def draw(rng: np.random.Generator, c: int, h: int, w: int, colours: np.ndarray) -> np.ndarray:
    """``[3, h, w]`` uint8: class colour + class stripes + noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin((xx if c % 2 else yy) * (0.5 + 0.2 * c) + rng.uniform(0, 2 * np.pi)) * 40.0
    img = colours[c][:, None, None] + stripes[None] + rng.normal(0, 20, size=(3, h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_meta(path: Path) -> None:
    import scipy.io

    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height", "num_train_images")
    syn = np.zeros((len(WNIDS) + 1, 1), dtype=[(f, "O") for f in fields])
    for i, (wnid, sid) in enumerate(zip(WNIDS, IDS)):
        syn[i, 0] = (sid, wnid, f"mini class {i}", "", 0, 0, COUNTS["train"])
    syn[-1, 0] = (len(WNIDS) + 1, "n00001740", "entity", "a non-leaf synset", 3, 19, 0)
    scipy.io.savemat(str(path), {"synsets": syn})


def make_mini(root: Path) -> Path:
    import torch
    from torchvision.io import encode_jpeg

    rng = np.random.default_rng(20210307)
    out = Path(root) / "imagenet"
    colours = rng.integers(40, 216, size=(len(WNIDS), 3))

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(torch.from_numpy(arr), quality=90).numpy().tobytes())

    for c, wnid in enumerate(WNIDS):
        for j in range(COUNTS["train"]):
            h, w = (40, 48) if j % 2 else (48, 40)
            save(out / "train" / wnid / f"{wnid}_{j + 1}.JPEG", draw(rng, c, h, w, colours))
    labels = rng.permutation(np.repeat(np.arange(len(WNIDS)), COUNTS["val"]))
    for k, c in enumerate(labels, 1):
        save(out / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", draw(rng, int(c), 40, 44, colours))
    devkit = out / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{IDS[c]}\n" for c in labels))
    _write_meta(devkit / "meta.mat")
    from .base import MINI_MARKER

    (out / MINI_MARKER).write_text("imagenet mini set, tasks/_imagenet_mini.py\n")
    return out
