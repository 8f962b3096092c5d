"""Evaluations without a valid target and label values outside the class range: an error (or, for a few images,
skipped and counted), never a number; results.json never holds NaN; ``data check --deep`` names such masks.

Issue 23 sections 1-2. The datasets are the mini sets in their real on-disk formats, with a few files rewritten.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rs_transfer.errors import UserError
from rs_transfer.tasks import _synthetic, get_task
from test_dense_data import _datasets, _mini_copy


# ---- results.json: no NaN / Infinity -------------------------------------------------------------------------------
def test_results_json_refuses_non_finite_numbers_and_names_the_key(tmp_path: Path) -> None:
    from rs_transfer.atomic import write_json_atomic
    from rs_transfer.results import UnreadableResults, load_results

    path = tmp_path / "results.json"
    for bad in (float("nan"), float("inf"), -float("inf"), np.float32("nan")):
        with pytest.raises(ValueError, match=r"metrics\.d1.*not a finite number") as err:
            write_json_atomic(path, {"task": "nyu-depth", "metrics": {"d1": bad, "d2": 1.0}})
        assert "\n" not in str(err.value) and str(path) in str(err.value)
        assert not path.exists() and not list(tmp_path.iterdir())          # nothing written, no temporary left
    with pytest.raises(ValueError, match=r"rows\[1\]\.mean"):
        write_json_atomic(path, {"rows": [{"mean": 1.0}, {"mean": float("nan")}]})
    write_json_atomic(path, {"value": 1.5, "metrics": {"d1": None}})        # finite numbers and null are fine
    assert json.loads(path.read_text()) == {"value": 1.5, "metrics": {"d1": None}}
    # A file written before this rule (Python's json writes NaN) is unusable for a report, with the reason.
    path.write_text('{"task": "nyu-depth", "metric": "d1", "value": NaN, "backbone": "r50", "metrics": {}}')
    with pytest.raises(UnreadableResults, match="value is nan"):
        load_results(path)


# ---- depth: frames without valid depth -----------------------------------------------------------------------------
def _depth_samples(gts: list[np.ndarray]) -> list[dict]:
    return [{"pred_depth_map": {"data": torch.full((1, *g.shape), 2.0)}, "gt_depth_map": {"data": torch.from_numpy(g)[None]},
             "img_path": f"/data/nyu/images/test/kitchen_{i:04d}.jpg",
             "depth_map_path": f"/data/nyu/annotations/test/kitchen_{i:04d}.png"} for i, g in enumerate(gts)]


def _depth_metric(gts: list[np.ndarray], **kwargs) -> dict:
    from rs_transfer.tasks._depth import EigenCropDepthMetric

    metric = EigenCropDepthMetric(crop_type="eigen", min_depth_eval=1e-3, max_depth_eval=10.0, **kwargs)
    metric.process({}, _depth_samples(gts))
    return metric.compute_metrics(metric.results)


def test_depth_without_valid_pixels_is_an_error_not_nan() -> None:
    """All test depth zero (nothing measured): mmseg's per-image mean was nan, and results.json held NaN."""
    zero = [np.zeros((48, 64), np.float32) for _ in range(4)]
    with pytest.raises(UserError) as err:
        _depth_metric(zero)
    msg = str(err.value)
    assert "4 of 4 evaluation images" in msg and "/data/nyu/annotations/test/kitchen_0000.png" in msg
    assert "no valid ground-truth depth" in msg and "\n" not in msg


def test_a_frame_without_valid_depth_is_skipped_and_counted() -> None:
    good = np.full((48, 64), 2.2, np.float32)
    far = np.full((48, 64), 25.0, np.float32)                      # beyond the 10 m cap: nothing evaluable either
    m = _depth_metric([good, good, far, good], max_skipped_fraction=0.3)
    assert all(math.isfinite(v) for v in m.values()), m
    assert (m["eval_images"], m["eval_skipped"]) == (3, 1) and m["d1"] == pytest.approx(100.0)
    with pytest.raises(UserError, match=r"1 of 4 evaluation images.*allowed: 1\.0%"):
        _depth_metric([good, good, far, good])                      # the default allows 1%


# ---- segmentation: no valid label, a class that never occurs ------------------------------------------------------
def _iou(gts: list[np.ndarray], preds: list[np.ndarray], classes: tuple, **kwargs) -> dict:
    from rs_transfer.tasks._datasets import CountedIoUMetric

    metric = CountedIoUMetric(iou_metrics=["mIoU"], **kwargs)
    metric.dataset_meta = {"classes": classes}
    metric.process({}, [{"pred_sem_seg": {"data": torch.from_numpy(p)[None]},
                         "gt_sem_seg": {"data": torch.from_numpy(g)[None]},
                         "img_path": f"/voc/JPEGImages/{i}.jpg", "seg_map_path": f"/voc/SegmentationClass/{i}.png"}
                        for i, (g, p) in enumerate(zip(gts, preds))])
    return metric.compute_metrics(metric.results)


def test_segmentation_without_valid_labels_is_an_error() -> None:
    """Every label ignored or out of range: mmseg's mIoU was 0.0 (IoU 0 for each predicted class), aAcc nan."""
    classes = ("background", "aeroplane", "bicycle")
    gts = [np.full((8, 8), 255, np.int64), np.full((8, 8), 7, np.int64)]
    preds = [np.zeros((8, 8), np.int64)] * 2
    with pytest.raises(UserError, match=r"no valid ground-truth pixel in the 2 evaluation masks.*0\.\.2") as err:
        _iou(gts, preds, classes)
    assert "/voc/SegmentationClass/0.png" in str(err.value)


def test_a_class_absent_from_every_mask_is_warned() -> None:
    """VOC masks whose background was relabelled to 255: aAcc over the objects only (0 for a model that predicts
    background), background's IoU 0 -- a number, so it is said, not refused."""
    classes = ("background", "aeroplane", "bicycle")
    gt = np.full((8, 8), 255, np.int64)
    gt[2:5, 2:5] = 1
    gt[6:, 6:] = 2
    with pytest.warns(UserWarning, match=r"1 of 3 classes never occur in the 2 evaluation masks.*: background;"):
        m = _iou([gt, gt], [np.zeros((8, 8), np.int64)] * 2, classes)
    assert m["aAcc"] == 0.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # the mini sets use 4 of 20 classes on purpose
        _iou([gt, gt], [np.zeros((8, 8), np.int64)] * 2, classes, warn_absent_classes=False)


# ---- masks with label values outside the class range --------------------------------------------------------------
def _rewrite_mask(png: Path, value: int) -> None:
    """Put ``value`` into a 3x3 patch of a mask, keeping its PNG mode (palette stays palette)."""
    with Image.open(png) as img:
        palette = img.getpalette() if img.mode == "P" else None
        arr = np.array(img)
    arr[:3, :3] = value
    _synthetic.write_png(png, arr, palette=np.array(palette, np.uint8).reshape(-1, 3)[:21] if palette else None)


def test_out_of_range_mask_values_are_named(tmp_path: Path) -> None:
    """Training: the loss raised IndexError ('unexpected error'); evaluation: the pixels were silently dropped."""
    root = _mini_copy("voc-seg", tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    train_id = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    val_id = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    _rewrite_mask(voc / "SegmentationClass" / f"{train_id}.png", 30)
    _rewrite_mask(voc / "SegmentationClass" / f"{val_id}.png", 21)
    train, val = _datasets("voc-seg", root, tmp_path / "wd")
    i = next(i for i in range(len(train)) if train.get_data_info(i)["img_path"].endswith(f"{train_id}.jpg"))
    with pytest.raises(UserError) as err:
        train[i]
    msg = str(err.value)
    assert f"{voc}/SegmentationClass/{train_id}.png" in msg and "label value 30" in msg and "0..20" in msg
    assert "255 = ignore" in msg and "data check --task voc-seg --deep" in msg and "\n" not in msg
    with pytest.raises(UserError, match=rf"{val_id}\.png: label value 21 outside"):
        val[0]
    assert val[1]["data_samples"].gt_sem_seg.data.max() <= 255                     # valid masks load as before

    ade = get_task("ade20k").make_mini(tmp_path / "ade")
    png = sorted((ade / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))[0]
    _rewrite_mask(png, 200)
    _, val = _datasets("ade20k", ade, tmp_path / "wd2")
    with pytest.raises(UserError, match=r"label value 200 outside the 150 classes \(valid: 1\.\.150; 0 and 255"):
        val[0]


def test_deep_check_names_out_of_range_masks_and_empty_depth(tmp_path: Path, capsys) -> None:
    from rs_transfer.cli import main
    from rs_transfer.tasks.datacheck import deep_check

    root = _mini_copy("voc-seg", tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    train_id = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[-1]
    bad = voc / "SegmentationClass" / f"{train_id}.png"
    _rewrite_mask(bad, 21)
    task = get_task("voc-seg")
    assert task.check(root).ok                      # training masks: headers only, the ordinary check cannot see it
    _, damaged = deep_check(task, root, progress=False)
    assert damaged == [(bad, "label value 21 outside the 21 classes (valid: 0..20; 255 = ignore)")]
    assert main(["data", "check", "--task", "voc-seg", "--data-root", str(root), "--deep"]) == 1
    assert f"{bad}: label value 21 outside" in capsys.readouterr().out

    ade = get_task("ade20k").make_mini(tmp_path / "ade")
    png = sorted((ade / "ADEChallengeData2016" / "annotations" / "training").glob("*.png"))[2]
    _rewrite_mask(png, 151)
    assert [(p, w.split(" (")[0]) for p, w in deep_check(get_task("ade20k"), ade, progress=False)[1]] == \
        [(png, "label value 151 outside the 150 classes")]

    nyu = _mini_copy("nyu-depth", tmp_path)
    zero, far = sorted((nyu / "annotations" / "test").glob("*.png"))[:2]
    _synthetic.write_png(zero, np.zeros((64, 80), np.uint16))
    _synthetic.write_png(far, np.full((64, 80), 40000, np.uint16))
    found = dict(deep_check(get_task("nyu-depth"), nyu, progress=False)[1])
    assert set(found) == {zero, far}
    assert "no valid depth: every pixel is 0 (not measured)" in found[zero]
    assert "no pixel within 1..10000 mm" in found[far] and "40000" in found[far]


def test_ordinary_check_stops_unusable_evaluation_ground_truth_before_training(tmp_path: Path) -> None:
    """ADE validation labels all out of range and NYU test depth all zero: found by ``data check`` (and so before a
    run trains), from the first 10 files of the evaluation split."""
    ade = get_task("ade20k").make_mini(tmp_path / "ade")
    masks = sorted((ade / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))
    for png in masks:
        _synthetic.write_png(png, np.full((64, 80), 200, np.uint8))
    with pytest.raises(UserError, match=rf"{masks[0]}: label value 200 outside the 150 classes.*8 of the first 8 "
                                        "validation annotations checked"):
        get_task("ade20k").check(ade).raise_if_bad()

    nyu = _mini_copy("nyu-depth", tmp_path)
    maps = sorted((nyu / "annotations" / "test").glob("*.png"))
    _synthetic.write_png(maps[0], np.zeros((64, 80), np.uint16))
    assert get_task("nyu-depth").check(nyu).ok                     # one frame: the evaluation skips and counts it
    for png in maps[1:]:
        _synthetic.write_png(png, np.zeros((64, 80), np.uint16))
    report = get_task("nyu-depth").check(nyu)
    assert any(f"{maps[0]}: no valid depth: every pixel is 0" in p and "all 8 of the first test depth maps" in p
               for p in report.problems), report.problems


# ---- CIFAR: float data, a single class ----------------------------------------------------------------------------
def _cifar_copy(tmp_path: Path) -> Path:
    from rs_transfer.tasks.cifar100 import make_mini

    return make_mini(tmp_path / "c")


def _repickle(path: Path, **changes) -> None:
    import pickle

    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    entry.update({k.encode(): v for k, v in changes.items()})
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def test_cifar_float_data_is_refused(tmp_path: Path) -> None:
    """float data in [0, 1] became all-black uint8 images and data check said OK."""
    from rs_transfer.tasks.cifar100 import Cifar100Dataset, check_data, read_split

    root = _cifar_copy(tmp_path)
    x, _ = read_split(root, "test")
    _repickle(root / "test", data=x.reshape(len(x), -1).astype(np.float32) / 255.0)
    report = check_data(root)
    assert not report.ok and any("test: data is float32" in p and "uint8" in p for p in report.problems), report
    with pytest.raises(UserError, match=r"test: data is float32, expected uint8.*multiply by 255"):
        Cifar100Dataset(str(root), "test")
    _repickle(root / "test", data=x.reshape(len(x), 32, 32, 3))    # HWC images: were silently scrambled
    assert any("N x 3072" in p for p in check_data(root).problems)


def test_a_single_class_is_warned(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import check_data, read_split

    root = _cifar_copy(tmp_path)
    assert not check_data(root).warnings
    _, y = read_split(root, "train")
    _repickle(root / "train", fine_labels=[7] * len(y))
    report = check_data(root)
    assert report.ok and any("train: a single class (7): every image has the same label" in w for w in report.warnings), report.warnings


def test_imagenet_single_class_is_warned(tmp_path: Path) -> None:
    from rs_transfer.tasks._imagenet_mini import make_mini
    from rs_transfer.tasks.imagenet import check_data

    root = make_mini(tmp_path / "in")
    keep = sorted(p for p in (root / "train").iterdir())[0]
    for d in sorted((root / "train").iterdir())[1:]:
        for f in d.iterdir():
            f.unlink()
    report = check_data(root)
    assert any(f"train: a single class ({keep.name})" in w for w in report.warnings), report.warnings


# ---- one-line errors -----------------------------------------------------------------------------------------------
def test_non_utf8_voc_list_names_file_and_line(tmp_path: Path, capsys) -> None:
    from rs_transfer.cli import main

    root = _mini_copy("voc-seg", tmp_path)
    listing = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_bytes(listing.read_bytes().replace(b"\n", b"\n2012_\xff\xfe0001\n", 1))
    assert main(["data", "check", "--task", "voc-seg", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unexpected error" not in err
    assert f"{listing} line 2 is not UTF-8 text" in err


def test_nyu_converter_one_line_errors(tmp_path: Path, capsys) -> None:
    import subprocess
    import sys

    from rs_transfer.tasks.nyu_depth import main

    splits = tmp_path / "splits.mat"
    import scipy.io

    scipy.io.savemat(splits, {"trainNdxs": np.array([[1]]), "testNdxs": np.array([[2]])})
    empty, text = tmp_path / "empty.mat", tmp_path / "notes.mat"
    empty.write_bytes(b"")
    text.write_text("not MATLAB\n")
    out = str(tmp_path / "out")
    cases = {(str(tmp_path / "missing.mat"), str(splits)): "does not exist",
             (str(empty), str(splits)): "is empty",
             (str(text), str(splits)): "not a MATLAB v7.3 (HDF5) file",
             (str(splits), str(splits)): "not a MATLAB v7.3 (HDF5) file",   # a v5 .mat as the labeled file
             }
    for (labeled, spl), expected in cases.items():
        assert main([labeled, spl, out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err and labeled in err, err
        assert "Traceback" not in err
    import h5py

    with h5py.File(tmp_path / "labeled.mat", "w") as f:
        f["images"], f["rawDepths"] = np.zeros((2, 3, 4, 3), np.uint8), np.ones((2, 4, 3), np.float32)
    assert main([str(tmp_path / "labeled.mat"), str(text), out]) == 2
    err = capsys.readouterr().err
    assert "not a MATLAB file" in err and str(text) in err
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.array([[1]])})
    assert main([str(tmp_path / "labeled.mat"), str(tmp_path / "other.mat"), out]) == 2
    assert "has no trainNdxs" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "rs_transfer.tasks.nyu_depth", str(empty), str(splits), out],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is empty" in proc.stderr, proc.stderr


def test_user_error_from_a_loader_worker_is_one_line(capsys) -> None:
    """A UserError raised in a DataLoader worker comes back wrapped with the worker's traceback."""
    from torch.utils.data import DataLoader, Dataset

    from rs_transfer.cli import user_message

    class Bad(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):
            raise UserError("/data/x.png: label value 30 outside the 21 classes")

    with pytest.raises(UserError) as err:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert "\n" in str(err.value)                                     # what torch re-raises
    assert user_message(err.value) == "/data/x.png: label value 30 outside the 21 classes"
    assert user_message(UserError("plain\nsecond")) == "plain\nsecond"


def test_kinetics_single_class_is_warned(tmp_path: Path) -> None:
    from rs_transfer.video.mini import CLASSES, make_mini
    from rs_transfer.video.task import check_data

    root = make_mini(tmp_path / "k", counts={"train": 1, "val": 1}, corrupt=False)
    assert not check_data(root).warnings
    for label in CLASSES[1:]:
        for f in (root / "train" / label).iterdir():
            f.unlink()
    report = check_data(root)
    assert report.ok and any(f"train: a single class ({CLASSES[0]})" in w for w in report.warnings), report.warnings
