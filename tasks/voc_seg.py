"""Pascal VOC 2012 semantic segmentation, Table 4 "Pascal seg": mIoU over 21 classes on val (1,449 images).

Training data is VOC2012 train + the SBD augmented set (10,582 images), validation the official palette masks in
``SegmentationClass`` (1,449). Two preparations of the training set are read (``find_preparation``):

- ``mmseg``: what mmseg's ``tools/dataset_converters/voc_aug.py`` writes and its ``pascal_voc12_aug`` config reads:
  ``ImageSets/Segmentation/train.txt`` (1,464) with ``SegmentationClass`` masks + ``aug.txt`` (9,118 SBD-only
  images) with ``SegmentationClassAug`` masks (8-bit grey class ids, 255 = ignore). Used whenever ``aug.txt``
  exists (voc_aug.py converts SBD's masks only, so some train.txt images have no ``SegmentationClassAug`` mask).
- ``deeplab``: the DeepLab ``SegmentationClassAug`` bundle with ``trainaug.txt`` listing all 10,582 images.

Model, schedule and why: ``configs/voc_seg.py``.

``--preset mini`` writes 24 trainaug / 8 val images of 64x80 px (4 of the 20 classes, drawn as coloured shapes by
``tasks/_synthetic.py``) in exactly that layout, so the real mmseg dataset class and metric run on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import _corrupt, _dense, _labels, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (official), SegmentationClassAug/*.png (SBD, "
          "8-bit class ids, 255 ignore), ImageSets/Segmentation/{train,aug,val}.txt (mmseg's voc_aug.py) or "
          "{trainaug,val}.txt (DeepLab bundle)}")
SOURCE = ("VOC2012 trainval tar (host.robots.ox.ac.uk/pascal/VOC/voc2012) + SBD converted by mmseg's "
          "tools/dataset_converters/voc_aug.py (SegmentationClassAug, aug.txt), or the DeepLab SegmentationClassAug "
          "bundle with trainaug.txt")
EXPECTED = {"train": 1464, "aug": 9118, "trainaug": 10582, "val": 1449}
# preparation -> training splits (split file stem -> mask folder); validation is the same for both
PREPARATIONS = {"mmseg": {"train": "SegmentationClass", "aug": "SegmentationClassAug"},
                "deeplab": {"trainaug": "SegmentationClassAug"}}
VAL = {"val": "SegmentationClass"}

MINI_SIZE = (64, 80)       # h, w
MINI_CLASSES = 4           # aeroplane, bicycle, bird, boat
MINI_COUNTS = {"train": 20, "aug": 4, "val": 8}


def make_mini(root: Path) -> Path:
    """Write the mini VOC2012 segmentation set under ``root`` (deterministic: seed 0). Returns the data root."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    palette = np.array(_voc.PALETTE, np.uint8)
    splits: dict[str, list[str]] = {k: [] for k in MINI_COUNTS}
    index = 0
    for split, n in MINI_COUNTS.items():
        for _ in range(n):
            img_id, index = f"2012_{index:06d}", index + 1
            scene = _synthetic.make_scene(rng, *MINI_SIZE, MINI_CLASSES)
            mask = _synthetic.ignore_boundaries(scene.labels)
            _synthetic.write_jpeg(voc / "JPEGImages" / f"{img_id}.jpg", scene.image)
            _synthetic.write_png(voc / "SegmentationClassAug" / f"{img_id}.png", mask)
            if split != "aug":  # SBD-only images have no official mask
                _synthetic.write_png(voc / "SegmentationClass" / f"{img_id}.png", mask, palette=palette)
            splits[split].append(img_id)
    sets = voc / "ImageSets" / "Segmentation"
    _synthetic.write_lines(sets / "train.txt", splits["train"])
    _synthetic.write_lines(sets / "val.txt", splits["val"])
    _synthetic.write_lines(sets / "aug.txt", splits["aug"])
    _synthetic.write_lines(sets / "trainaug.txt", splits["train"] + splits["aug"])
    (Path(root) / _voc.MINI_MARKER).write_text("voc-seg mini set, tasks/voc_seg.py\n")
    return Path(root)


def find_preparation(voc: Path) -> str:
    """``mmseg`` when ``VOC2012/ImageSets/Segmentation/aug.txt`` exists (voc_aug.py's output), else ``deeplab``."""
    return "mmseg" if (Path(voc) / "ImageSets" / "Segmentation" / "aug.txt").is_file() else "deeplab"


def check_data(root: Path) -> DataReport:
    """The preparation found, its split files and counts (standard data only), and every listed image and mask
    (header read)."""
    report = DataReport("voc-seg", Path(root), LAYOUT, SOURCE)
    voc = _voc.devkit(root) / "VOC2012"
    if not voc.is_dir():
        report.problems.append(f"folder {voc} does not exist")
        return report
    full = not _voc.is_mini(root)
    prep = find_preparation(voc)
    report.preparation = ("mmseg voc_aug.py: train.txt (SegmentationClass) + aug.txt (SegmentationClassAug)"
                          if prep == "mmseg" else "DeepLab bundle: trainaug.txt (SegmentationClassAug)")
    for split, mask_dir in {**PREPARATIONS[prep], **VAL}.items():
        ids = _voc.check_split(voc / "ImageSets" / "Segmentation" / f"{split}.txt", report.problems,
                               EXPECTED[split] if full else None, split)
        report.counts[split] = len(ids)
        for img_id in ids:
            for problem in (_voc.check_jpeg(voc / "JPEGImages" / f"{img_id}.jpg"),
                            _voc.check_png(voc / mask_dir / f"{img_id}.png")):
                report.add(problem)
        if split == "val":
            report.add(_labels.sampled_problem(
                [voc / mask_dir / f"{i}.png" for i in ids], lambda a: _labels.mask_problem(a, len(_voc.CLASSES) + 1),
                "val masks"))
    return report


def data_files(root: Path) -> list[Path]:
    """What a run decodes, for ``data check --deep``: the JPEG and mask PNG of every id in the preparation's splits."""
    voc = _voc.devkit(root) / "VOC2012"
    files: list[Path] = []
    for split, mask_dir in {**PREPARATIONS[find_preparation(voc)], **VAL}.items():
        listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        for img_id in _voc.read_split(listing) if listing.is_file() else []:
            files += [voc / "JPEGImages" / f"{img_id}.jpg", voc / mask_dir / f"{img_id}.png"]
    return files


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, training preparation, skip log, head widths for the chosen backbone, and the CPU mini shrink."""
    voc = _voc.devkit(ctx.data_root) / "VOC2012"
    prep = find_preparation(voc)
    ctx.extra["data_preparation"] = prep
    if prep == "deeplab":   # one dataset over trainaug.txt instead of the config's train + aug concatenation
        train = cfg.train_dataloader.dataset
        first = train["datasets"][0] if "datasets" in train else train
        first.update(ann_file="ImageSets/Segmentation/trainaug.txt",
                     data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassAug"))
        cfg.train_dataloader.dataset = first
    _dense.set_data_root(cfg, voc)
    _dense.set_skip_log(cfg, Path(ctx.work_dir) / _corrupt.SKIP_LOG)
    _dense.fit_seg_heads(cfg, ctx.backbone_kwargs)
    if ctx.mini:
        h, w = MINI_SIZE
        _dense.mini_segmentation(cfg, crop=(h, h), scale=(w, h), ratio=(0.75, 1.25), iters=80, batch=4,
                                 channels=32, lr=0.05)


TASK = Task(
    name="voc-seg", title="Pascal seg", metric="mIoU", config="voc_seg.py", data_layout=LAYOUT, data_source=SOURCE,
    make_mini=make_mini, check_data=check_data, configure=configure, data_files=data_files, data_dirname="voc",
    check_values=_labels.mask_file_check(len(_voc.CLASSES) + 1, False, ("SegmentationClass", "SegmentationClassAug")),
    description="Pascal VOC 2012 segmentation: UPerNet, trainaug (10,582) -> val (1,449), mIoU over 21 classes")
