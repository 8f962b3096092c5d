"""SUN397 (Xiao et al. 2010), read by torchvision's ``SUN397``: 397 scene classes; the FIRST of the 10 official
train/test partitions (``Training_01.txt`` / ``Testing_01.txt``, 50 + 50 images per class, 19,850 each), as
Kornblith et al. 2019; metric top-1. torchvision reads every image of the release; the partition files (a separate
download, ``Partitions.zip``) select the items."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tvclass import Source, Suite, class_image, labels_of, make_task, mark_mini, write_image

PARTITION = "01"
MINI_CLASSES, MINI_COUNTS = 3, {"Training": 10, "Testing": 4}
MINI_NAMES = ["/a/abbey", "/b/bedroom", "/a/apartment_building/outdoor"]


def partition_file(root: Path, split: str) -> Path:
    """``<root>/Partitions/<Training|Testing>_01.txt`` (also accepted inside ``SUN397/``)."""
    name = f"{'Training' if split == 'train' else 'Testing'}_{PARTITION}.txt"
    for folder in (Path(root) / "Partitions", Path(root) / "SUN397" / "Partitions"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"partition file {Path(root) / 'Partitions' / name} does not exist")


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import SUN397

    wanted = [line.strip() for line in partition_file(root, split).read_text().splitlines() if line.strip()]
    ds = SUN397(str(root), download=False)
    where = {"/" + p.relative_to(ds._data_dir).as_posix(): i for i, p in enumerate(ds._image_files)}
    missing = [w for w in wanted if w not in where]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of the partition are not under {ds._data_dir}, e.g. "
                                f"{missing[0]}")
    idx = np.array([where[w] for w in wanted], dtype=np.int64)
    return [Source(ds, idx, np.asarray(labels_of(ds), dtype=np.int64)[idx])]


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``SUN397/{ClassName.txt, <letter>/<class>/sun_<id>.jpg}`` and ``Partitions/{Training,Testing}_01.txt``
    (one "/<letter>/<class>/sun_<id>.jpg" per line). One class name has two levels, as several real ones do."""
    data = root / "SUN397"
    data.mkdir(parents=True)
    (data / "ClassName.txt").write_text("".join(f"{n}\n" for n in MINI_NAMES[:MINI_CLASSES]))
    n = 0
    for split, count in MINI_COUNTS.items():
        lines = []
        for c, name in enumerate(MINI_NAMES[:MINI_CLASSES]):
            for _ in range(count):
                rel = f"{name}/sun_mini{n:06d}.jpg"
                write_image(data / rel.lstrip("/"), class_image(rng, c))
                lines.append(rel)
                n += 1
        (root / "Partitions").mkdir(exist_ok=True)
        (root / "Partitions" / f"{split}_{PARTITION}.txt").write_text("".join(f"{x}\n" for x in lines))
    mark_mini(root, "sun397")
    return root


SUITE = Suite(
    name="sun397", title="SUN397 top-1", metric="top1", num_classes=397, load=load,
    layout="<root>/SUN397/{ClassName.txt, <letter>/<class>/sun_*.jpg} (torchvision SUN397) and "
           "<root>/Partitions/{Training,Testing}_01.txt",
    source="https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz unpacked into <root>; Partitions.zip "
           "unpacked into <root>/Partitions)",
    sizes={"train": 19850, "test": 19850}, write_mini=write_mini, torchvision_class="SUN397",
    split_note=f"official partition {PARTITION} (Training_{PARTITION}.txt / Testing_{PARTITION}.txt)")
TASK = make_task(SUITE, "SUN397: linear probe, few-shot and fine-tuning (Kornblith et al. 2019 suite)")
