"""NYU Depth v2, Table 4 "NYU depth": delta<1.25 accuracy (%) on the Eigen test split (654 frames), 795 for training.

Evaluation is on the RAW depth (``rawDepths`` of the labeled .mat, 0 = not measured, masked), as BTS, AdaBins and
mmseg's prepared data do. Three preparations of the data are read (``find_preparation``; ``data check`` names the
one it found and its counts):

1. ``mmseg``: mmseg's layout, what its ``NYUDataset`` reads::

       <root>/images/{train,test}/<scene>_<number>.jpg          RGB, 480x640
       <root>/annotations/{train,test}/<scene>_<number>.png     16-bit depth in millimetres (0 = invalid)

   written either by :func:`convert_labeled_mat` from the official ``nyu_depth_v2_labeled.mat`` (HDF5) + the Eigen
   ``splits.mat`` (``python -m rs_transfer.tasks.nyu_depth LABELED.mat SPLITS.mat OUT``: 795 / 654 frames) or by
   mmseg's ``tools/dataset_converters/nyu.py`` from BTS's file lists (``bathroom/rgb_00045.jpg`` ->
   ``bathroom_00045.jpg``; its training split holds BTS's ~24k frames of the raw videos, not the 795).
2. ``bts``: BTS's folders (``cleinc/bts``: ``utils/extract_official_train_test_set_from_mat.py``, ``sync.zip``)::

       <root>/sync/<scene>_<id>/rgb_<n>.jpg + sync_depth_<n>.png              training (~24k frames)
       <root>/official_splits/{train,test}/<scene>/rgb_<n>.jpg + sync_depth_<n>.png    795 / 654 (rawDepths x 1000)

   ``sync/`` is used for training when present, else ``official_splits/train``; BTS's file lists
   (``nyudepthv2_{train,test}_files_with_gt.txt``) are used when they lie in ``<root>``.

The file stem must contain a digit (mmseg derives a scene category from the text before the first digit). A split
size other than the Eigen 795/654 is a warning that says what the run uses, not an error. Model, schedule, metrics
and why: ``configs/nyu_depth.py``.

``--preset mini`` writes 24 train / 8 test frames of 64x80 px (a receding floor with objects at class-specific
depths, ``tasks/_synthetic.py``) in the mmseg layout.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _corrupt, _dense, _synthetic, _voc
from .base import DataReport, RunContext, Task

LAYOUT = ("{images,annotations}/{train,test}/<scene>_<n>.{jpg,png} (annotations: 16-bit PNG, depth in mm), or BTS's "
          "sync/ + official_splits/test/<scene>/{rgb,sync_depth}_<n>.{jpg,png}")
SOURCE = ("http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat + the Eigen splits.mat, "
          "converted with `python -m rs_transfer.tasks.nyu_depth LABELED.mat SPLITS.mat OUT`; or BTS's / mmseg's "
          "prepared NYU folders")
EXPECTED = {"train": 795, "test": 654}
BTS_LISTS = {"train": "nyudepthv2_train_files_with_gt.txt", "test": "nyudepthv2_test_files_with_gt.txt"}
BTS_IMAGE = re.compile(r"^rgb_(\d+)\.jpg$")


@dataclass(frozen=True)
class Split:
    """Where one split lives: ``img``/``ann`` folders relative to the data root, the dataset ``layout`` and an
    optional BTS file list (relative to the data root)."""

    img: str
    ann: str
    layout: str
    file_list: str | None = None


@dataclass(frozen=True)
class Preparation:
    name: str                 # "mmseg" | "bts"
    description: str
    splits: dict[str, Split]


def find_preparation(root: Path) -> Preparation | None:
    """Which of the accepted preparations ``root`` holds (mmseg folders first), or None."""
    root = Path(root)
    if (root / "images" / "train").is_dir() or (root / "annotations" / "train").is_dir():
        return Preparation("mmseg", "images|annotations/{train,test} folders (our converter's or mmseg's layout)",
                           {s: Split(f"images/{s}", f"annotations/{s}", "mmseg") for s in ("train", "test")})
    if (root / "official_splits" / "test").is_dir():
        train = "sync" if (root / "sync").is_dir() else "official_splits/train"
        lists = {s: name if (root / name).is_file() else None for s, name in BTS_LISTS.items()}
        return Preparation("bts", f"BTS folders ({train}/ for training, official_splits/test/ for testing"
                           + (", with BTS's file lists" if any(lists.values()) else "") + ")",
                           {"train": Split(train, train, "bts", lists["train"]),
                            "test": Split("official_splits/test", "official_splits/test", "bts", lists["test"])})
    return None


def scene_type(folder: str) -> str:
    """NYU scene type from a raw-sequence folder name: ``living_room_0019`` -> ``living_room``,
    ``kitchen_0028b`` -> ``kitchen``, ``bathroom`` -> ``bathroom``."""
    return re.sub(r"_\d+[a-z]?$", "", folder)


def bts_pairs(folder: Path, file_list: Path | None = None) -> list[tuple[Path, Path]]:
    """(rgb, depth) paths of a BTS folder: from ``file_list`` when given (BTS's ``*_files_with_gt.txt``: leading
    ``/`` allowed, third column the focal length), else every ``rgb_<n>.jpg`` under ``folder`` whose folder holds
    ``sync_depth_<n>.png``; sorted, so that every rank and worker sees the same order."""
    if file_list is not None:
        rows = [ln.split() for ln in Path(file_list).read_text().splitlines() if ln.strip()]
        return [(folder / r[0].lstrip("/"), folder / r[1].lstrip("/")) for r in rows if len(r) >= 2]
    pairs = []
    for img in sorted(Path(folder).rglob("rgb_*.jpg")):
        m = BTS_IMAGE.match(img.name)
        if m:
            pairs.append((img, img.with_name(f"sync_depth_{m.group(1)}.png")))
    return pairs


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


def convert_labeled_mat(labeled: Path, splits: Path, out: Path, depth: str = "raw") -> dict[str, int]:
    """Official ``nyu_depth_v2_labeled.mat`` + Eigen ``splits.mat`` -> mmseg's NYU layout under ``out``.

    The labeled file is MATLAB v7.3 (HDF5): h5py sees ``images`` as N x 3 x W x H and ``rawDepths``/``depths`` as
    N x W x H (metres), i.e. transposed. ``splits.mat`` (MATLAB v5) holds 1-based ``trainNdxs`` (795) and
    ``testNdxs`` (654). ``depth="raw"`` (default) writes ``rawDepths`` (0 where the sensor measured nothing), what
    BTS's ``extract_official_train_test_set_from_mat.py`` writes and every published NYU number is evaluated on;
    ``"filled"`` writes the in-painted ``depths`` (filled holes would then count as ground truth).
    """
    import h5py
    from scipy.io import loadmat

    if depth not in ("raw", "filled"):
        raise ValueError(f"depth must be 'raw' or 'filled', got {depth!r}")
    key_depth = "rawDepths" if depth == "raw" else "depths"
    idx = loadmat(str(splits))
    counts = {}
    with h5py.File(labeled, "r") as f:
        if key_depth not in f:
            from rs_transfer.errors import UserError

            raise UserError(f"{labeled} has no {key_depth!r} (keys: {', '.join(f.keys())}); it is not the official "
                            "nyu_depth_v2_labeled.mat")
        images, depths = f["images"], f[key_depth]
        scenes = [("".join(chr(c) for c in f[ref][()].ravel()) if f[ref].dtype != object else "scene")
                  for ref in f["sceneTypes"][0]] if "sceneTypes" in f else None
        for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
            ids = [int(i) - 1 for i in np.asarray(idx[key]).ravel()]
            for i in ids:
                image = np.ascontiguousarray(np.transpose(images[i], (2, 1, 0)))
                depth_m = np.transpose(depths[i], (1, 0)).astype(np.float32)
                scene = (scenes[i] if scenes else "scene").replace(" ", "_") or "scene"
                _write_frame(Path(out), split, f"{scene}_{i + 1:04d}", image, depth_m)
            counts[split] = len(ids)
    return counts


def check_data(root: Path) -> DataReport:
    """The preparation found, both splits' pairing and counts, 16-bit depth PNGs, a digit in every mmseg name; a
    split size other than Eigen's is a warning (real data only), saying what the run uses."""
    report = DataReport("nyu-depth", Path(root), LAYOUT, SOURCE)
    root = Path(root)
    prep = find_preparation(root)
    if prep is None:
        mats = sorted(p.name for p in root.glob("*.mat")) if root.is_dir() else []
        hint = (f"found {', '.join(mats)}: convert it first with `python -m rs_transfer.tasks.nyu_depth "
                f"{root}/nyu_depth_v2_labeled.mat {root}/splits.mat OUT` and use OUT as --data-root" if mats else
                f"no images/train + annotations/train (mmseg layout) or official_splits/test (BTS) in {root}")
        report.problems.append(hint)
        return report
    report.preparation = prep.description
    for split, where in prep.splits.items():
        if where.layout == "mmseg":
            _dense.check_split_pairs(report, split, root / where.img, root / where.ann, expected=None,
                                     check_pair=_check_pair, ann_noun="depth map")
        else:
            _check_bts_split(report, split, root / where.img, root / where.file_list if where.file_list else None)
    if not _voc.is_mini(root):
        _warn_if_filled(report, root, prep.splits["test"])
        for split, n in EXPECTED.items():
            got = report.counts.get(split)
            if got and got != n:
                use = ("trains on all of them (BTS/mmseg-style training on the raw-video frames)" if split == "train"
                       else "reports metrics over these frames: NOT comparable with published Eigen-split numbers")
                report.warnings.append(f"{split}: {got} frames, the Eigen split has {n}; the run {use}")
    return report


def _count(root: Path, where: Split) -> int:
    """Frames of one split (file names only: results.json says whether a run saw 795 or ~24k training frames)."""
    if where.layout == "mmseg":
        return sum(1 for _ in (root / where.img).glob("*.jpg"))
    return len(bts_pairs(root / where.img, root / where.file_list if where.file_list else None))


def _warn_if_filled(report: DataReport, root: Path, where: Split, sample: int = 10) -> None:
    """Raw Kinect depth has holes (0 = not measured) in practically every frame; test maps without a single 0 look
    like the in-painted ``depths`` of the labeled .mat, which published numbers do not use."""
    import cv2

    if where.layout == "mmseg":
        pngs = sorted((root / where.ann).glob("*.png"))[:sample]
    else:
        pngs = [d for _, d in bts_pairs(root / where.img, root / where.file_list if where.file_list else None)][:sample]
    maps = [m for m in (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs if p.is_file()) if m is not None]
    if maps and all((m > 0).all() for m in maps):
        report.warnings.append(
            f"the first {len(maps)} test depth maps have no invalid (0) pixel: they look in-painted (the labeled "
            ".mat's `depths`), but published NYU numbers are on the raw depth (`rawDepths`); re-convert with `python "
            "-m rs_transfer.tasks.nyu_depth LABELED.mat SPLITS.mat OUT` (raw by default)")


def _check_bts_split(report: DataReport, split: str, folder: Path, file_list: Path | None) -> None:
    if not folder.is_dir():
        report.problems.append(f"missing folder {folder}")
        return
    pairs = bts_pairs(folder, file_list)
    report.counts[split] = len(pairs)
    if not pairs:
        report.problems.append(f"no rgb_<n>.jpg with sync_depth_<n>.png under {folder}")
    for img, png in pairs:
        report.add(_depth_png(png) or _voc.check_jpeg(img))


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
    """What a run decodes, for ``data check --deep``: every RGB image and depth PNG of the preparation's splits."""
    root = Path(root)
    prep = find_preparation(root)
    files: list[Path] = []
    for where in (prep.splits.values() if prep else []):
        if where.layout == "mmseg":
            files += [p for d in (where.img, where.ann) for p in sorted((root / d).glob("*"))
                      if p.suffix in (".jpg", ".png")]
        else:
            pairs = bts_pairs(root / where.img, root / where.file_list if where.file_list else None)
            files += [p for pair in pairs for p in pair]
    return files


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root and preparation (folders, layout), skip log, head widths for the chosen backbone, the mini shrink."""
    from mmseg.datasets.transforms import PhotoMetricDistortion, RandomCrop

    from rs_transfer.runner.schedule import set_iterations

    _dense.set_data_root(cfg, ctx.data_root)
    prep = find_preparation(ctx.data_root)
    if prep is not None:
        ctx.extra["data_preparation"] = prep.name
        ctx.extra["data_frames"] = {split: _count(Path(ctx.data_root), where) for split, where in prep.splits.items()}
        for key, split in (("train_dataloader", "train"), ("val_dataloader", "test"), ("test_dataloader", "test")):
            if cfg.get(key) is None:
                continue
            where = prep.splits[split]
            for ds in _dense.iter_datasets(cfg[key]):
                ds.update(layout=where.layout, data_prefix=dict(img_path=where.img, depth_map_path=where.ann),
                          file_list=str(Path(ctx.data_root) / where.file_list) if where.file_list else None)
    _dense.set_skip_log(cfg, Path(ctx.work_dir) / _corrupt.SKIP_LOG)
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
    if len(sys.argv) not in (4, 5) or (len(sys.argv) == 5 and sys.argv[4] not in ("--filled-depth",)):
        sys.exit("usage: python -m rs_transfer.tasks.nyu_depth nyu_depth_v2_labeled.mat splits.mat OUT_DIR "
                 "[--filled-depth]   (default: the raw depth, as BTS/AdaBins/mmseg evaluate)")
    print(convert_labeled_mat(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                              depth="filled" if len(sys.argv) == 5 else "raw"))
