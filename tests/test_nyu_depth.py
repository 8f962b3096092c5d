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
    pngs = sorted((root / "annotations" / "test").glob("*.png"))
    maps = [np.array(Image.open(p)).astype(np.float64) / 1000 for p in pngs]
    crops = []
    for g in maps:
        h, w = g.shape
        t, b, l, r = EIGEN_CROP
        crops.append(g[round(t * h):round(b * h), round(l * w):round(r * w)])
    c = float(np.median(np.concatenate([g.ravel() for g in crops])))
    return 100.0 * float(np.mean([(np.maximum(g / c, c / g) < 1.25).mean() for g in crops]))


def test_mini_run_learns(tmp_path: Path) -> None:
    res = run_experiment("nyu-depth", "resnet50", preset="mini", model_overrides=TINY, work_dir=tmp_path / "run")
    m = res["metrics"]
    assert res["metric"] == "d1" and res["higher_is_better"]
    assert {"d1", "d2", "d3", "abs_rel", "rmse", "log10"} <= set(m)
    assert m["d1"] <= m["d2"] <= m["d3"] <= 100.0
    baseline = _constant_d1(get_task("nyu-depth").mini_root())
    assert res["value"] > baseline + 10.0, (m, baseline)


def test_labeled_mat_conversion(tmp_path: Path) -> None:
    """The official file layout: HDF5 images N x 3 x W x H, depths N x W x H (metres); splits.mat 1-based."""
    h5py = pytest.importorskip("h5py")
    scipy_io = pytest.importorskip("scipy.io")
    from rs_transfer.tasks.nyu_depth import convert_labeled_mat

    rng = np.random.default_rng(0)
    n, H, W = 5, 12, 16
    images = rng.integers(0, 255, size=(n, 3, W, H), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, size=(n, W, H)).astype(np.float32)
    with h5py.File(tmp_path / "labeled.mat", "w") as f:
        f["images"], f["depths"] = images, depths
    scipy_io.savemat(tmp_path / "splits.mat",
                     {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    out = tmp_path / "nyu"
    assert convert_labeled_mat(tmp_path / "labeled.mat", tmp_path / "splits.mat", out) == {"train": 3, "test": 2}
    png = out / "annotations" / "test" / "scene_0005.png"
    assert np.array_equal(np.array(Image.open(png)), np.round(depths[4].T * 1000).astype(np.uint16))
    assert np.array(Image.open(out / "images" / "test" / "scene_0005.jpg")).shape == (H, W, 3)
    report = get_task("nyu-depth").check(out)
    assert report.counts == {"train": 3, "test": 2}
    assert any("Eigen split has 795" in p for p in report.problems)     # real data: standard counts enforced
