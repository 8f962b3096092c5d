"""nyu-depth end to end through the shared runner (mmseg NYUDataset + DepthEstimator, our FPN depth head and
Eigen-crop metric); the mini model must beat the best constant-depth prediction; and the labeled-.mat converter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from rs_transfer.runner import run_experiment
from rs_transfer.tasks import get_task
from rs_transfer.tasks._depth import EIGEN_CROP


pytestmark = pytest.mark.usefixtures("one_thread")


def _constant_d1(root: Path) -> float:
    """delta<1.25 (%) of predicting the median test depth everywhere (inside the Eigen crop), per-image mean."""
    pngs = [p for p in sorted((root / "annotations" / "test").glob("*.png")) if p.stat().st_size]
    maps = [np.array(Image.open(p)).astype(np.float64) / 1000 for p in pngs]
    crops = []
    for g in maps:
        h, w = g.shape
        t, b, l, r = EIGEN_CROP
        crops.append(g[round(t * h):round(b * h), round(l * w):round(r * w)])
    c = float(np.median(np.concatenate([g.ravel() for g in crops])))
    return 100.0 * float(np.mean([(np.maximum(g / c, c / g) < 1.25).mean() for g in crops]))


def test_mini_run_learns(tmp_path: Path) -> None:
    """Also: one unreadable training frame and one unreadable test frame are skipped and counted (results.json
    ``skipped_files``, ``eval_images``/``eval_skipped``), the run goes on; the placeholder runs through the model."""
    import shutil

    from rs_transfer.tasks.mini import ensure_mini

    data = tmp_path / "nyu"
    shutil.copytree(ensure_mini(get_task("nyu-depth")), data)
    bad_train = sorted((data / "images" / "train").glob("*.jpg"))[3]
    bad_test = sorted((data / "annotations" / "test").glob("*.png"))[-1]
    bad_train.write_bytes(b"\xff\xd8\xff garbage")
    bad_test.write_bytes(b"")
    res = run_experiment("nyu-depth", "resnet50", preset="mini", model_overrides=TINY, work_dir=tmp_path / "run",
                         data_root=data, cfg_options={"val_evaluator.max_skipped_fraction": 0.2})
    m = res["metrics"]
    assert res["metric"] == "d1" and res["higher_is_better"]
    assert {"d1", "d2", "d3", "abs_rel", "rmse", "log10", "silog"} <= set(m)
    assert m["d1"] <= m["d2"] <= m["d3"] <= 100.0
    assert (m["eval_images"], m["eval_skipped"]) == (7, 1)
    assert res["skipped_files"]["train"] == 1 and res["skipped_files"]["eval"] == 1
    assert str(bad_train) in res["skipped_files"]["examples"]
    baseline = _constant_d1(data)
    assert res["value"] > baseline + 10.0, (m, baseline)


def test_labeled_mat_conversion(tmp_path: Path) -> None:
    """The official file layout: HDF5 images N x 3 x W x H, rawDepths/depths N x W x H (metres); splits.mat 1-based.
    The RAW depth is written (0 = not measured stays 0 = invalid), as BTS's extraction script does."""
    h5py = pytest.importorskip("h5py")
    scipy_io = pytest.importorskip("scipy.io")
    from rs_transfer.tasks.nyu_depth import convert_labeled_mat

    rng = np.random.default_rng(0)
    n, H, W = 5, 12, 16
    images = rng.integers(0, 255, size=(n, 3, W, H), dtype=np.uint8)
    raw = rng.uniform(0.5, 9.0, size=(n, W, H)).astype(np.float32)
    raw[:, :3, :2] = 0.0                                                  # holes: no sensor reading
    with h5py.File(tmp_path / "labeled.mat", "w") as f:
        f["images"], f["rawDepths"], f["depths"] = images, raw, np.where(raw > 0, raw, 4.0)   # in-painted
    scipy_io.savemat(tmp_path / "splits.mat",
                     {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    out = tmp_path / "nyu"
    assert convert_labeled_mat(tmp_path / "labeled.mat", tmp_path / "splits.mat", out) == {"train": 3, "test": 2}
    png = out / "annotations" / "test" / "scene_0005.png"
    assert np.array_equal(np.array(Image.open(png)), np.round(raw[4].T * 1000).astype(np.uint16))
    assert (np.array(Image.open(png))[:2, :3] == 0).all()
    assert np.array(Image.open(out / "images" / "test" / "scene_0005.jpg")).shape == (H, W, 3)
    report = get_task("nyu-depth").check(out)
    assert report.counts == {"train": 3, "test": 2}
    assert report.ok and any("Eigen split has 795" in w for w in report.warnings)   # real data: sizes warned
    assert not any("in-painted" in w for w in report.warnings)           # raw depth: holes present
    convert_labeled_mat(tmp_path / "labeled.mat", tmp_path / "splits.mat", tmp_path / "filled", depth="filled")
    assert any("look in-painted" in w for w in get_task("nyu-depth").check(tmp_path / "filled").warnings)
