"""Pascal VOC detection, Table 4 "Pascal det": AP50 (%) on VOC2007 test after training on VOC07+12 trainval.

Layout: the official VOC2007 and VOC2012 tarballs unpacked side by side (``tasks/_voc.py`` docstring);
``--data-root`` points at the folder holding ``VOCdevkit`` (or at ``VOCdevkit``). Annotations are the devkit's XML
(1-based pixel boxes, ``difficult`` flags). Model, schedule and why: ``configs/voc_det.py``; metric:
``tasks/_det_metric.py`` (``AP50`` = 11-point VOC07, ``AP50_area`` = area version).

``--preset mini`` writes VOC2007 trainval 16 / test 8 and VOC2012 trainval 16 images of 96x128 px with 1-3 large
objects of 4 classes each (``tasks/_synthetic.py``), as real JPEGs, XMLs and ImageSets files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import _corrupt, _dense, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = ("VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt} and "
          "VOCdevkit/VOC2012/{Annotations, JPEGImages, ImageSets/Main/trainval.txt}")
SOURCE = ("host.robots.ox.ac.uk/pascal/VOC: VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, "
          "VOCtrainval_11-May-2012.tar")
SPLITS = {"VOC2007/trainval": 5011, "VOC2007/test": 4952, "VOC2012/trainval": 11540}

MINI_SIZE = (96, 128)      # h, w
MINI_CLASSES = 4           # aeroplane, bicycle, bird, boat
MINI_COUNTS = {"VOC2007/trainval": 16, "VOC2007/test": 8, "VOC2012/trainval": 16}


def make_mini(root: Path) -> Path:
    """Write the mini VOC07+12 detection set under ``root`` (deterministic: seed 3). Returns the data root."""
    dk = Path(root) / "VOCdevkit"
    rng = np.random.default_rng(3)
    h, w = MINI_SIZE
    for key, n in MINI_COUNTS.items():
        year, split = key.split("/")
        ids = []
        for i in range(n):
            img_id = f"{year[3:]}{split[:2]}{i:04d}"
            scene = _synthetic.make_scene(rng, h, w, MINI_CLASSES, min_frac=0.3, max_frac=0.6)
            # VOC XML boxes are 1-based inclusive pixel coordinates
            objects = [(_voc.CLASSES[c - 1], x1 + 1, y1 + 1, x2 + 1, y2 + 1, False)
                       for c, x1, y1, x2, y2 in scene.boxes]
            _synthetic.write_jpeg(dk / year / "JPEGImages" / f"{img_id}.jpg", scene.image)
            _voc.write_annotation(dk / year / "Annotations" / f"{img_id}.xml", f"{img_id}.jpg", w, h, objects, year)
            ids.append(img_id)
        _synthetic.write_lines(dk / year / "ImageSets" / "Main" / f"{split}.txt", ids)
    (Path(root) / _voc.MINI_MARKER).write_text("voc-det mini set, tasks/voc_det.py\n")
    return Path(root)


def check_data(root: Path) -> DataReport:
    """Split files and counts (standard data only), every listed image and every annotation XML parsed."""
    report = DataReport("voc-det", Path(root), LAYOUT, SOURCE)
    dk = _voc.devkit(root)
    full = not _voc.is_mini(root)
    for key, expected in SPLITS.items():
        year, split = key.split("/")
        if not (dk / year).is_dir():
            problem = f"folder {dk / year} does not exist"
            if problem not in report.problems:
                report.problems.append(problem)
            continue
        ids = _voc.check_split(dk / year / "ImageSets" / "Main" / f"{split}.txt", report.problems,
                               expected if full else None, key)
        report.counts[key] = len(ids)
        for img_id in ids:
            problem = (_voc.check_jpeg(dk / year / "JPEGImages" / f"{img_id}.jpg")
                       or _voc.check_annotation(dk / year / "Annotations" / f"{img_id}.xml"))
            report.add(problem)
    return report


def data_files(root: Path) -> list[Path]:
    """What a run decodes, for ``data check --deep``: the JPEG and annotation XML of every id in the splits."""
    dk = _voc.devkit(root)
    files: list[Path] = []
    for key in SPLITS:
        year, split = key.split("/")
        listing = dk / year / "ImageSets" / "Main" / f"{split}.txt"
        for img_id in _voc.read_split(listing) if listing.is_file() else []:
            files += [dk / year / "JPEGImages" / f"{img_id}.jpg", dk / year / "Annotations" / f"{img_id}.xml"]
    return files


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, FPN input widths for the chosen backbone, and the CPU mini shrink."""
    from mmdet.datasets.transforms import Resize

    from rs_transfer.runner.schedule import set_iterations

    _dense.set_data_root(cfg, _voc.devkit(ctx.data_root))
    _dense.set_skip_log(cfg, Path(ctx.work_dir) / _corrupt.SKIP_LOG)
    cfg.model.neck["in_channels"] = _dense.stage_channels(ctx.backbone_kwargs)
    if ctx.mini:
        h, w = MINI_SIZE
        _dense.replace_in_pipelines(cfg, Resize, scale=(w, h))
        for ds in _dense.iter_datasets(cfg.train_dataloader):
            ds["filter_cfg"] = dict(filter_empty_gt=True, min_size=8, bbox_min_size=8)
        # Narrower FPN/RoI head (same design) so a CPU run takes seconds.
        cfg.model.neck["out_channels"] = 64
        cfg.model.rpn_head.update(in_channels=64, feat_channels=64)
        cfg.model.roi_head.bbox_roi_extractor["out_channels"] = 64
        cfg.model.roi_head.bbox_head.update(in_channels=64, fc_out_channels=128)
        # Fewer proposals/RoIs per image: mini images hold 1-3 objects.
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=600, max_per_img=300)
        cfg.model.train_cfg.rcnn.sampler["num"] = 128
        cfg.model.test_cfg.rpn.update(nms_pre=300, max_per_img=100)
        iters = 80
        set_iterations(cfg, iters)   # rescales warm-up/step boundaries; the step milestone is ours
        for sched in cfg.param_scheduler:
            if "milestones" in sched:
                sched["milestones"] = [int(iters * 0.75)]
        _dense.small_loaders(cfg, 4)
        cfg.optim_wrapper.optimizer["lr"] = 0.02
        _dense.quiet_logs(cfg, 20)


TASK = Task(
    name="voc-det", title="Pascal det", metric="AP50", config="voc_det.py", data_layout=LAYOUT, data_source=SOURCE,
    make_mini=make_mini, check_data=check_data, configure=configure, data_files=data_files, data_dirname="voc",
    description="Pascal VOC detection: Faster R-CNN + FPN, VOC07+12 trainval -> VOC07 test, AP50 (11-point, %)")
