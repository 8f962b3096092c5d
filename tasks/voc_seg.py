"""Pascal VOC 2012 semantic segmentation, Table 4 "Pascal seg": mIoU over 21 classes on val (1,449 images).

Training data is VOC2012 train + the SBD augmented set (10,582 images), validation the official palette masks in
``SegmentationClass`` (1,449). Three preparations of the training set are read (``find_preparation``, in this
order):

- ``mmseg``: what mmseg's ``tools/dataset_converters/voc_aug.py`` writes and its ``pascal_voc12_aug`` config reads:
  ``ImageSets/Segmentation/train.txt`` (1,464) with ``SegmentationClass`` masks + ``aug.txt`` (9,118 SBD-only
  images) with ``SegmentationClassAug`` masks (8-bit grey class ids, 255 = ignore). Used whenever ``aug.txt``
  exists (voc_aug.py converts SBD's masks only, so some train.txt images have no ``SegmentationClassAug`` mask).
- ``deeplab``: the DeepLab ``SegmentationClassAug`` bundle with ``trainaug.txt`` (mmseg's name) or
  ``train_aug.txt`` (TF DeepLab's split name) listing all 10,582 images.
- ``sbd``: the SBD release as downloaded (``benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}`` in the
  data root, in ``VOCdevkit`` or beside it), read directly with no conversion (``tasks/_sbd.py``): train.txt with
  the official masks + voc_aug.py's aug set with the masks of the ``.mat`` files; the same training data as
  ``mmseg``, image for image and pixel for pixel.

Split sizes other than the standard ones are a warning (``DataReport.compare_sizes``). Model, schedule and why:
``configs/voc_seg.py``.

``--preset mini`` writes 24 trainaug / 8 val images of 64x80 px (4 of the 20 classes, drawn as coloured shapes by
``tasks/_synthetic.py``) in the ``mmseg`` layout, so the real mmseg dataset class and metric run on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _corrupt, _dense, _labels, _sbd, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (official), ImageSets/Segmentation/val.txt} "
          "and the SBD training set as one of: ImageSets/Segmentation/{train,aug}.txt + SegmentationClassAug/*.png "
          "(8-bit class ids, 255 ignore; mmseg's voc_aug.py), ImageSets/Segmentation/trainaug.txt or train_aug.txt + "
          "SegmentationClassAug/*.png (DeepLab bundle; TF DeepLab's split name), or the SBD release itself: "
          "benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt} beside VOCdevkit or inside it (read directly, "
          "no conversion) with ImageSets/Segmentation/train.txt")
SOURCE = ("VOC2012 trainval tar (host.robots.ox.ac.uk/pascal/VOC/voc2012) + SBD's benchmark.tgz "
          "(www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz), as released "
          "or converted by mmseg's tools/dataset_converters/voc_aug.py; or the DeepLab SegmentationClassAug bundle "
          "with trainaug.txt")
EXPECTED = {"train": 1464, "aug": 9118, "trainaug": 10582, "train_aug": 10582, "val": 1449}
DEEPLAB_LISTS = ("trainaug", "train_aug")      # mmseg's name, TF DeepLab's (data_generator.py: 'train_aug': 10582)
VAL = {"val": "SegmentationClass"}


@dataclass(frozen=True)
class Preparation:
    """Which preparation of the training set a VOC2012 folder holds. ``splits``: split-file stem -> mask folder of
    the file-listed training splits; ``sbd``: the SBD release read directly for ``aug`` (``tasks/_sbd.py``)."""

    name: str                     # "mmseg" | "deeplab" | "sbd" | "none"
    description: str
    splits: dict[str, str]
    sbd: Path | None = None

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


def find_preparation(root: Path) -> Preparation:
    """The training preparation found, in this order: mmseg's ``aug.txt`` (voc_aug.py's output), DeepLab's
    ``trainaug.txt``/``train_aug.txt``, the SBD release (read directly), else ``none``."""
    devkit = _voc.devkit(root)
    sets = devkit / "VOC2012" / "ImageSets" / "Segmentation"
    if (sets / "aug.txt").is_file():
        return Preparation("mmseg", "mmseg voc_aug.py: train.txt (SegmentationClass) + aug.txt "
                           "(SegmentationClassAug)", {"train": "SegmentationClass", "aug": "SegmentationClassAug"})
    for stem in DEEPLAB_LISTS:
        if (sets / f"{stem}.txt").is_file():
            return Preparation("deeplab", f"DeepLab bundle: {stem}.txt (SegmentationClassAug)",
                               {stem: "SegmentationClassAug"})
    sbd = _sbd.find_sbd(root, devkit)
    if sbd is not None:
        return Preparation("sbd", f"SBD release read directly: train.txt (SegmentationClass) + SBD-only images "
                           f"from {sbd / 'dataset' / 'cls'} (voc_aug.py's aug rule; converting it is optional: "
                           f"{_sbd.converter_command(devkit, sbd)})", {"train": "SegmentationClass"}, sbd)
    return Preparation("none", "", {})


def check_data(root: Path) -> DataReport:
    """The preparation found, its split files and counts (another size than the standard: a warning saying what
    the run uses), and every listed image and mask (header read)."""
    report = DataReport("voc-seg", Path(root), LAYOUT, SOURCE)
    voc = _voc.devkit(root) / "VOC2012"
    if not voc.is_dir():
        report.problems.append(f"folder {voc} does not exist")
        return report
    prep = find_preparation(root)
    report.preparation = prep.description
    sets = voc / "ImageSets" / "Segmentation"
    if prep.name == "none":
        report.problems.append(f"no SBD training set: none of {sets}/aug.txt (mmseg's voc_aug.py), trainaug.txt or "
                               f"train_aug.txt (DeepLab) there, or an SBD release folder "
                               f"({'/'.join(_sbd.SBD_NAMES)} holding dataset/cls) in {Path(root)}, in {voc.parent} "
                               "or beside it")
    for split, mask_dir in {**prep.splits, **VAL}.items():
        ids = _voc.check_split(sets / f"{split}.txt", report.problems)
        report.counts[split] = len(ids)
        for img_id in ids:
            for problem in (_voc.check_jpeg(voc / "JPEGImages" / f"{img_id}.jpg"),
                            _voc.check_png(voc / mask_dir / f"{img_id}.png")):
                report.add(problem)
        if split == "val":
            report.add(_labels.sampled_problem(
                [voc / mask_dir / f"{i}.png" for i in ids], lambda a: _labels.mask_problem(a, len(_voc.CLASSES) + 1),
                "val masks"))
    if prep.sbd is not None:
        release = _sbd.check_release(prep.sbd)
        if release:
            report.problems += [f"{p} (or convert it: {_sbd.converter_command(voc.parent, prep.sbd)})"
                                for p in release]
        elif (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
            ids = _sbd.aug_ids(voc, prep.sbd)
            report.counts["aug"] = len(ids)
            for img_id in ids:
                for problem in (_voc.check_jpeg(voc / "JPEGImages" / f"{img_id}.jpg"),
                                _sbd.check_mat(_sbd.mask_path(prep.sbd, img_id))):
                    report.add(problem)
    report.compare_sizes(EXPECTED, name="VOC2012 + SBD", evaluated={"val"})
    return report


def data_files(root: Path) -> list[Path]:
    """What a run decodes, for ``data check --deep``: the JPEG and mask (PNG, or SBD .mat) of every training and
    validation image."""
    voc = _voc.devkit(root) / "VOC2012"
    prep = find_preparation(root)
    files: list[Path] = []
    for split, mask_dir in {**prep.splits, **VAL}.items():
        listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        for img_id in _voc.read_split(listing) if listing.is_file() else []:
            files += [voc / "JPEGImages" / f"{img_id}.jpg", voc / mask_dir / f"{img_id}.png"]
    if prep.sbd is not None and not _sbd.check_release(prep.sbd):
        for img_id in _sbd.aug_ids(voc, prep.sbd):
            files += [voc / "JPEGImages" / f"{img_id}.jpg", _sbd.mask_path(prep.sbd, img_id)]
    return files


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, training preparation, skip log, head widths for the chosen backbone, and the CPU mini shrink."""
    voc = _voc.devkit(ctx.data_root) / "VOC2012"
    prep = find_preparation(ctx.data_root)
    ctx.extra["data_preparation"] = prep.name
    train = cfg.train_dataloader.dataset
    first = train["datasets"][0] if "datasets" in train else train
    if prep.name == "deeplab":   # one dataset over the bundle's list instead of the config's train + aug concatenation
        (stem,) = prep.splits
        first.update(ann_file=f"ImageSets/Segmentation/{stem}.txt",
                     data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassAug"))
        cfg.train_dataloader.dataset = first
    elif prep.name == "sbd":     # train.txt (official masks) + the SBD-only images read from the release's .mat files
        from ._datasets import LoadSBDAnnotations, SBDAugDataset

        from mmengine.dataset import ConcatDataset
        from mmseg.datasets.transforms import LoadAnnotations

        pipeline = [dict(step, type=LoadSBDAnnotations) if _dense.is_step(step, LoadAnnotations) else step
                    for step in first["pipeline"]]
        aug = dict(type=SBDAugDataset, data_root=str(voc), sbd_root=str(prep.sbd), pipeline=pipeline)
        cfg.train_dataloader.dataset = dict(type=ConcatDataset, datasets=[first, aug])
        ctx.extra["sbd_root"] = str(prep.sbd)
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
