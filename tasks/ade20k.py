"""ADE20K SceneParsing, Table 4 "ADE seg": single-scale mIoU over 150 classes on the 2,000 validation images.

On disk (the official ``ADEChallengeData2016.zip``, unpacked)::

    ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_%08d.png   (8-bit, 0 = other, 1..150)

``--data-root`` may point at ``ADEChallengeData2016`` or its parent. Label 0 is ignored (``reduce_zero_label``).
Model, schedule and why: ``configs/ade20k.py``.

``--preset mini`` writes 24 training / 8 validation images of 64x80 px in that layout: the scene background is
class 1 ("wall"), objects are classes 2..5, and a 1-pixel outline is 0 ("other", ignored), so the real
``ADE20KDataset`` with ``reduce_zero_label`` and mmseg's IoU metric run unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import _corrupt, _dense, _labels, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = ("ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png} (annotations: 8-bit, "
          "0 = other, 1..150)")
SOURCE = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (MIT SceneParsing benchmark)"
EXPECTED = {"training": 20210, "validation": 2000}

MINI_SIZE = (64, 80)       # h, w
MINI_OBJECT_CLASSES = 4
MINI_COUNTS = {"training": 24, "validation": 8}


def dataset_dir(root: Path) -> Path:
    """``ADEChallengeData2016`` for a data root that is the folder itself or its parent."""
    root = Path(root)
    return root if (root / "images").is_dir() or root.name == "ADEChallengeData2016" else root / "ADEChallengeData2016"


def make_mini(root: Path) -> Path:
    """Write the mini ADE20K set under ``root`` (deterministic: seed 0). Returns the data root."""
    ade = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(1)
    for split, n in MINI_COUNTS.items():
        tag = "train" if split == "training" else "val"
        for i in range(n):
            scene = _synthetic.make_scene(rng, *MINI_SIZE, MINI_OBJECT_CLASSES)
            # background -> 1 ("wall"), objects -> 2..6, outlines -> 0 ("other", ignored via reduce_zero_label)
            ann = _synthetic.ignore_boundaries(scene.labels + 1, ignore_index=0)
            name = f"ADE_{tag}_{i + 1:08d}"
            _synthetic.write_jpeg(ade / "images" / split / f"{name}.jpg", scene.image)
            _synthetic.write_png(ade / "annotations" / split / f"{name}.png", ann)
    (Path(root) / _voc.MINI_MARKER).write_text("ade20k mini set, tasks/ade20k.py\n")
    return Path(root)


def check_data(root: Path) -> DataReport:
    """Both splits: image/annotation pairing, counts (another size than the standard: a warning saying what the
    run uses), readable single-channel masks."""
    report = DataReport("ade20k", Path(root), LAYOUT, SOURCE)
    ade = dataset_dir(root)
    if not ade.is_dir():
        report.problems.append(f"folder {ade} does not exist")
        return report
    for split in EXPECTED:
        _dense.check_split_pairs(report, split, ade / "images" / split, ade / "annotations" / split,
                                 check_pair=_check_pair)
    report.add(_labels.sampled_problem(sorted((ade / "annotations" / "validation").glob("*.png")),
                                       lambda a: _labels.mask_problem(a, 150, reduce_zero_label=True),
                                       "validation annotations"))
    report.compare_sizes(EXPECTED, name="ADE20K SceneParsing", evaluated={"validation"})
    return report


def _check_pair(img: Path, png: Path) -> list[str]:
    problem = _voc.check_png(png) or _voc.check_jpeg(img)
    return [problem] if problem else []


def data_files(root: Path) -> list[Path]:
    """What a run decodes, for ``data check --deep``: every image and annotation PNG of both splits."""
    ade = dataset_dir(root)
    return [p for sub in ("images", "annotations") for split in EXPECTED
            for p in sorted((ade / sub / split).glob("*")) if p.suffix in (".jpg", ".png")]


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, head widths for the chosen backbone, and the CPU mini shrink."""
    _dense.set_data_root(cfg, dataset_dir(ctx.data_root))
    _dense.set_skip_log(cfg, Path(ctx.work_dir) / _corrupt.SKIP_LOG)
    _dense.fit_seg_heads(cfg, ctx.backbone_kwargs)
    if ctx.mini:
        h, w = MINI_SIZE
        _dense.mini_segmentation(cfg, crop=(h, h), scale=(w, h), ratio=(0.75, 1.25), iters=80, batch=4,
                                 channels=32, lr=0.05)


TASK = Task(
    name="ade20k", title="ADE seg", metric="mIoU", config="ade20k.py", data_layout=LAYOUT, data_source=SOURCE,
    make_mini=make_mini, check_data=check_data, configure=configure, data_files=data_files, data_dirname="ade20k",
    check_values=_labels.mask_file_check(150, True, ("annotations",)),
    description="ADE20K SceneParsing: UPerNet, 20,210 train -> 2,000 val, single-scale mIoU over 150 classes")
