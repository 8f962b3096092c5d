"""CIFAR-10 (Krizhevsky 2009) in torchvision's ``CIFAR10`` layout: ``cifar-10-batches-py/{data_batch_1..5,
test_batch, batches.meta}``, 50,000 train / 10,000 test; metric top-1.

The one suite dataset NOT read by torchvision's class: ``CIFAR10`` unpickles the batches with the unrestricted
standard unpickler (a crafted file runs code) after an md5 check against the release (which a generated mini copy
cannot pass). :class:`Cifar10Pickles` reads the same files with the project's data-only unpickler (``safe_pickle``, as
CIFAR-100) and serves ``(PIL image, label)`` items as ``CIFAR10`` does; the test checks that torchvision's class
reads the mini copy to the same arrays."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from rs_transfer.tasks.safe_pickle import load_data

from ._tvclass import Source, Suite, class_image, make_task, mark_mini, whole

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
MINI_CLASSES, MINI_COUNTS = 3, {"train": 10, "test": 4}


def _get(d: dict, key: str) -> Any:
    return d[key] if key in d else d[key.encode()]


class Cifar10Pickles:
    """``CIFAR10(root, train)``'s arrays (``data`` N x 32 x 32 x 3 uint8, ``targets``) and items, read safely."""

    def __init__(self, root: str, train: bool) -> None:
        base = Path(root) / FOLDER
        self.root, data, self.targets = root, [], []
        for name in TRAIN_FILES if train else ["test_batch"]:
            entry = load_data(base / name)
            data.append(np.asarray(_get(entry, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
            self.targets.extend(int(v) for v in _get(entry, "labels"))
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)
        self.classes = [c.decode() if isinstance(c, bytes) else c
                        for c in _get(load_data(base / "batches.meta"), "label_names")]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.data[i]), self.targets[i]


def resolve_root(root: Path) -> Path:
    """torchvision's root (the parent of ``cifar-10-batches-py``) or that folder itself."""
    return Path(root).parent if Path(root).name == FOLDER else Path(root)


def load(root: Path, split: str) -> list[Source]:
    return [whole(Cifar10Pickles(str(resolve_root(root)), train=split == "train"))]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """The five training batches (the mini training images spread over them), ``test_batch`` and ``batches.meta``:
    protocol-2 pickles whose keys are ``str`` as the release's Python-2 strings read back with ``encoding="latin1"``
    (torchvision's ``entry["data"]``)."""
    base = root / FOLDER
    base.mkdir(parents=True)
    for split, count in MINI_COUNTS.items():
        labels = [c for c in range(MINI_CLASSES) for _ in range(count)]
        images = [class_image(rng, c, 32).transpose(2, 0, 1).reshape(-1) for c in labels]
        names = TRAIN_FILES if split == "train" else ["test_batch"]
        for j, name in enumerate(names):
            part = list(range(j, len(labels), len(names)))
            entry = {"batch_label": f"mini {name}", "labels": [labels[i] for i in part],
                     "data": np.stack([images[i] for i in part]),
                     "filenames": [f"mini_{name}_{i}.png" for i in part]}
            with open(base / name, "wb") as f:
                pickle.dump(entry, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072}, f, protocol=2)
    mark_mini(root, "cifar10")
    return root


SUITE = Suite(
    name="cifar10", title="CIFAR-10 top-1", metric="top1", num_classes=10, load=load,
    layout=f"<root>/{FOLDER}/{{data_batch_1..5, test_batch, batches.meta}} (torchvision CIFAR10)",
    source="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack into <root>)",
    sizes={"train": 50000, "test": 10000}, write_mini=write_mini, torchvision_class="CIFAR10 (layout)",
    split_note="official data_batch_1..5 / test_batch", data_dirname="cifar-10")
TASK = make_task(SUITE, "CIFAR-10: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
