"""The PAPER CIFAR-100 fine-tuning pipeline (issue 8 §5, §6, §3): configs/cifar100_finetune.py's train and test
transforms at 224 px on a few images in the real pickle format (under torchvision's root, the parent of
``cifar-100-python``), one training step and one evaluation batch through the real model, with invariants: shapes
and dtype, label range, orientation kept through crop + resize, flips mirror left-right only, the test crop is the
central 87.5%."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from conftest import TINY

SEEN: dict[str, list[Any]] = {"train": [], "val": []}


@HOOKS.register_module(force=True)
class RecordBatches(Hook):
    """Keeps what the model was fed (inputs after collation, labels) for the assertions below."""

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        SEEN["train"].append((data_batch["inputs"].clone(), data_batch["data_samples"].clone()))

    def before_val_iter(self, runner, batch_idx, data_batch=None) -> None:
        SEEN["val"].append((data_batch["inputs"].clone(), data_batch["data_samples"].clone()))


def _ramp(n: int) -> np.ndarray:
    """n images whose brightness rises left to right (constant down each column), 3 x 32 x 32 uint8."""
    row = np.linspace(20, 235, 32)
    return np.broadcast_to(row[None, None, :], (n, 3, 32, 32)).astype(np.uint8).copy()


def _write_cifar(parent: Path, train: np.ndarray, test: np.ndarray, labels: tuple[list[int], list[int]]) -> Path:
    """A ``cifar-100-python`` folder in the original format (bytes keys, protocol 2) under ``parent``."""
    root = parent / "cifar-100-python"
    root.mkdir(parents=True)
    for name, x, y in (("train", train, labels[0]), ("test", test, labels[1])):
        entry = {b"batch_label": name.encode(), b"fine_labels": list(y), b"coarse_labels": [v // 5 for v in y],
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(y))], b"data": x.reshape(len(y), -1)}
        with open(root / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f, protocol=2)
    return root


def test_paper_train_transform_keeps_orientation_and_flips_left_right(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import Cifar100Dataset

    from rs_transfer.tasks.cifar100 import check_data

    root = _write_cifar(tmp_path, _ramp(2), _ramp(2), ([3, 99], [0, 57]))
    report = check_data(tmp_path)                        # torchvision's root: the parent of cifar-100-python
    assert report.ok and report.root == root and report.counts == {"train": 2, "test": 2}
    ds = Cifar100Dataset(str(tmp_path), "train", augment=True, size=224)
    np.random.seed(0)
    directions = set()
    for _ in range(12):
        item = ds[0]
        x = item["inputs"]
        assert x.shape == (3, 224, 224) and str(x.dtype) == "torch.uint8" and item["data_samples"] == 3
        x = x[0].float()
        # Rows vary, columns do not: the ramp stayed horizontal (no transposition, no vertical flip).
        assert float((x - x.mean(0, keepdim=True)).abs().max()) <= 1.0
        step = float(x[:, -1].mean() - x[:, 0].mean())
        assert abs(step) > 5, "a crop of a ramp must still rise or fall"
        directions.add(step > 0)
    assert directions == {True, False}, "12 draws at p = 0.5 should flip some and not others"


def test_paper_test_transform_is_the_central_crop(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import Cifar100Dataset

    img = np.full((1, 3, 32, 32), 100, np.uint8)
    img[:, :, :2, :] = img[:, :, -2:, :] = img[:, :, :, :2] = img[:, :, :, -2:] = 250   # a 2 px frame
    img[:, :, 2:16, 2:30] = 60                                                               # top half darker
    _write_cifar(tmp_path, img, img, ([1], [1]))
    x = Cifar100Dataset(str(tmp_path), "test", augment=False, size=224, eval_crop=0.875)[0]["inputs"].float()
    # 0.875 x 32 = 28: the 2 px frame is outside the crop and never reaches the output (bicubic overshoot aside).
    assert x.shape == (3, 224, 224) and float(x.max()) < 110
    assert float(x[:, :100].mean()) < 65 and float(x[:, 124:].mean()) > 95   # top stays top


@pytest.mark.usefixtures("one_thread")
def test_paper_config_trains_one_step_and_evaluates_at_224(tmp_path: Path) -> None:
    """configs/cifar100_finetune.py as the runner resolves it for ``--preset paper`` (only the batch, length and
    loader workers shrunk; transforms, resolution, optimizer, BN momentum untouched), through ImageClassifier."""
    from rs_transfer.runner import run_experiment

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    _write_cifar(tmp_path / "data", train, test, ([0, 99, 5, 17, 42, 99, 0, 63], [7, 99, 0, 31]))
    SEEN["train"].clear(), SEEN["val"].clear()
    loaders = {f"{k}.{o}": v for k in ("train_dataloader", "val_dataloader")
               for o, v in (("num_workers", 0), ("persistent_workers", False))}
    res = run_experiment("cifar100", "resnetrs50", preset="paper", data_root=tmp_path / "data", model_overrides=TINY,
                         work_dir=tmp_path / "wd", cfg_options={
                             "global_batch_size": 4, "train_cfg.max_iters": 1, "custom_hooks": [
                                 dict(type="RecordBatches")], **loaders})
    (x, y), = SEEN["train"]
    assert tuple(x.shape) == (4, 3, 224, 224) and str(x.dtype) == "torch.uint8"
    assert set(y.tolist()) <= {0, 99, 5, 17, 42, 63}                   # labels as stored, 0..99
    (xv, yv), = SEEN["val"]                                              # the 4 test images: one batch
    assert tuple(xv.shape) == (4, 3, 224, 224) and yv.tolist() == [7, 99, 0, 31]
    assert res["global_batch_size"] == 4 and res["train_samples"] == 4 and res["optimizer_steps"] == 1
    assert res["lr"] == pytest.approx(0.05 * 4 / 256)                   # linear rule from the reference 256
    assert res["config"]["model"]["bn_momentum"] == pytest.approx(10 * 4 / 50000)
    assert 0.0 <= res["metrics"]["top1"] <= 100.0 and res["metrics"]["top5"] >= res["metrics"]["top1"]


def test_holdout_subsets_partition_the_training_set(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import Cifar100Dataset

    x = np.arange(10 * 3072, dtype=np.int64).reshape(10, 3, 32, 32) % 251
    _write_cifar(tmp_path, x.astype(np.uint8), x[:2].astype(np.uint8), (list(range(10)), [0, 1]))
    fit, held = (Cifar100Dataset(str(tmp_path), "train", subset=s, holdout=0.2, holdout_seed=3)
                 for s in ("fit", "holdout"))
    assert (len(fit), len(held)) == (8, 2)
    assert sorted(fit.labels.tolist() + held.labels.tolist()) == list(range(10))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_mini_sweep_selects_on_the_holdout_and_refits(tmp_path: Path) -> None:
    """``run --sweep``: every grid point is scored on the held-out 20 % of the training set, the best one is
    refit on all of it and scored on the test set (mini: a 2 x 2 grid)."""
    import json

    from rs_transfer.cli import main

    wd = tmp_path / "sweep"
    assert main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--sweep",
                 "--backbone-options", "layers=[1,1,1,1]", "width=0.25", "--work-dir", str(wd)]) == 0
    res = json.loads((wd / "results.json").read_text())
    grid = res["sweep"]["grid"]
    assert len(grid) == 4 and {(c["lr"], c["weight_decay"]) for c in grid} == {
        (1e-3, 1e-6), (1e-3, 1e-4), (1e-2, 1e-6), (1e-2, 1e-4)}
    best = max(grid, key=lambda c: c["holdout_top1"])
    assert res["sweep"]["best"] == best
    opt = res["config"]["optim_wrapper"]["optimizer"]
    # Kornblith et al. divide the weight decay by the learning rate: the optimizer gets value / lr
    assert (opt["lr"], opt["weight_decay"]) == (best["lr"], best["weight_decay"] / best["lr"])
    assert all(c["optimizer_weight_decay"] == pytest.approx(c["weight_decay"] / c["lr"]) for c in grid)
    assert res["config"]["val_dataloader"]["dataset"]["split"] == "test"            # the final run: test set
    cell = json.loads((Path(grid[0]["work_dir"]) / "results.json").read_text())
    assert cell["config"]["val_dataloader"]["dataset"]["subset"] == "holdout"       # the grid: held-out train
    assert cell["config"]["train_dataloader"]["dataset"]["subset"] == "fit"
    hits = cell["value"] * 64 / 100                                                 # 64 of the 320 images
    assert hits == pytest.approx(round(hits))
