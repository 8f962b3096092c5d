"""NYU Depth v2, Table 4 "NYU depth": delta<1.25 accuracy (%) on the Eigen test split (654 frames), 795 for training.

On disk (mmseg's NYU layout, what its ``NYUDataset`` reads)::

    <root>/images/{train,test}/<scene>_<number>.jpg          RGB, 480x640
    <root>/annotations/{train,test}/<scene>_<number>.png     16-bit depth in millimetres (0 = invalid)

The file stem must contain a digit (mmseg derives a scene category from the text before the first digit).
The official labeled file ``nyu_depth_v2_labeled.mat`` (HDF5, read with h5py) plus the Eigen ``splits.mat`` convert
into this layout with :func:`convert_labeled_mat` (``python -m rs_transfer.tasks.nyu_depth LABELED.mat SPLITS.mat
OUT``). Model, schedule, metrics and why: ``configs/nyu_depth.py``.

``--preset mini`` writes 24 train / 8 test frames of 64x80 px (a receding floor with objects at class-specific
depths, ``tasks/_synthetic.py``) in this layout.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import _dense, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = "{images,annotations}/{train,test}/<scene>_<n>.{jpg,png} (annotations: 16-bit PNG, depth in mm)"
SOURCE = ("http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat + the Eigen splits.mat, "
          "converted with `python -m rs_transfer.tasks.nyu_depth LABELED.mat SPLITS.mat OUT`")
EXPECTED = {"train": 795, "test": 654}

MINI_SIZE = (64, 80)       # h, w
MINI_CLASSES = 4
MINI_COUNTS = {"train": 24, "test": 8}
SCENES = ("bedroom", "kitchen", "office", "bathroom")


def _write_frame(root: Path, split: str, name: str, image: np.ndarray, depth_m: np.ndarray) -> None:
    _synthetic.write_jpeg(root / "images" / split / f"{name}.jpg", image)
    mm = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
    _synthetic.write_png(root / "annotations" / split / f"{name}.png", mm)


def make_mini(root: Path) -> Path:
    """Write the mini NYU set under ``root`` (deterministic: seed 2). Returns the data root."""
    rng = np.random.default_rng(2)
    for split, n in MINI_COUNTS.items():
        for i in range(n):
            scene = _synthetic.make_scene(rng, *MINI_SIZE, MINI_CLASSES)
            _write_frame(Path(root), split, f"{SCENES[i % len(SCENES)]}_{i + 1:04d}", scene.image, scene.depth)
    (Path(root) / _voc.MINI_MARKER).write_text("nyu-depth mini set, tasks/nyu_depth.py\n")
    return Path(root)


def convert_labeled_mat(labeled: Path, splits: Path, out: Path) -> dict[str, int]:
    """Official ``nyu_depth_v2_labeled.mat`` + Eigen ``splits.mat`` -> mmseg's NYU layout under ``out``.

    The labeled file is MATLAB v7.3 (HDF5): h5py sees ``images`` as N x 3 x W x H and ``depths`` as N x W x H
    (metres), i.e. transposed. ``splits.mat`` (MATLAB v5) holds 1-based ``trainNdxs`` (795) and ``testNdxs`` (654).
    """
    import h5py
    from scipy.io import loadmat

    idx = loadmat(str(splits))
    counts = {}
    with h5py.File(labeled, "r") as f:
        images, depths = f["images"], f["depths"]
        scenes = [("".join(chr(c) for c in f[ref][()].ravel()) if f[ref].dtype != object else "scene")
                  for ref in f["sceneTypes"][0]] if "sceneTypes" in f else None
        for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
            ids = [int(i) - 1 for i in np.asarray(idx[key]).ravel()]
            for i in ids:
                image = np.ascontiguousarray(np.transpose(images[i], (2, 1, 0)))
                depth = np.transpose(depths[i], (1, 0)).astype(np.float32)
                scene = (scenes[i] if scenes else "scene").replace(" ", "_") or "scene"
                _write_frame(Path(out), split, f"{scene}_{i + 1:04d}", image, depth)
            counts[split] = len(ids)
    return counts


def check_data(root: Path) -> DataReport:
    """Both splits: image/depth pairing, counts (standard data only), 16-bit depth PNGs, digit in every name."""
    report = DataReport("nyu-depth", Path(root), LAYOUT, SOURCE)
    root = Path(root)
    full = not _voc.is_mini(root)
    for split, expected in EXPECTED.items():
        _dense.check_split_pairs(report, split, root / "images" / split, root / "annotations" / split,
                                 expected=expected if full else None, check_pair=_check_pair,
                                 split_name="the Eigen split", ann_noun="depth map")
    return report


def _check_pair(img: Path, png: Path) -> list[str]:
    problems = []
    if not any(c.isdigit() for c in img.stem):
        problems.append(f"{img}: file name needs a number (<scene>_<n>.jpg, mmseg's NYU naming)")
    problem = _depth_png(png) or _voc.check_jpeg(img)
    return problems + ([problem] if problem else [])


def _depth_png(path: Path) -> str | None:
    problem = _voc.check_png(path)
    if problem:
        return problem.replace("missing mask", "missing depth map")
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("I;16", "I"):
            return f"{path}: depth must be a 16-bit PNG in millimetres, got mode {img.mode}"
    return None


def data_files(root: Path) -> list[Path]:
    """What a run decodes, for ``data check --deep``: every RGB image and depth PNG of both splits."""
    return [p for sub in ("images", "annotations") for split in EXPECTED
            for p in sorted((Path(root) / sub / split).glob("*")) if p.suffix in (".jpg", ".png")]


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, head widths for the chosen backbone, and the CPU mini shrink."""
    from mmseg.datasets.transforms import PhotoMetricDistortion, RandomCrop

    from rs_transfer.runner import set_iterations

    _dense.set_data_root(cfg, ctx.data_root)
    cfg.model.decode_head["in_channels"] = _dense.stage_channels(ctx.backbone_kwargs)
    if ctx.mini:
        h, _ = MINI_SIZE
        cfg.model.data_preprocessor["size"] = (h, h)
        _dense.replace_in_pipelines(cfg, RandomCrop, crop_size=(h, h))
        _dense.drop_from_pipelines(cfg, PhotoMetricDistortion)
        cfg.model.decode_head["channels"] = 32
        set_iterations(cfg, 50)
        _dense.small_loaders(cfg, 4)
        cfg.optim_wrapper.optimizer["lr"] = 1e-3
        _dense.quiet_logs(cfg, 10)


TASK = Task(
    name="nyu-depth", title="NYU depth", metric="d1", config="nyu_depth.py", data_layout=LAYOUT, data_source=SOURCE,
    make_mini=make_mini, check_data=check_data, configure=configure, data_files=data_files, data_dirname="nyu",
    description="NYU Depth v2 (Eigen split 795/654): FPN depth head, delta<1.25 (%) in the Eigen crop, cap 10 m")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m rs_transfer.tasks.nyu_depth nyu_depth_v2_labeled.mat splits.mat OUT_DIR")
    print(convert_labeled_mat(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
