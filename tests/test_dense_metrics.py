"""The dense tasks' metrics against independent computations on fixed predictions.

- mIoU (mmseg's IoUMetric, as configured for voc-seg/ade20k) vs a confusion matrix built with numpy.
- AP50 (tasks/_det_metric.py over mmdet's eval_map) vs the Pascal VOC devkit algorithm written out here (greedy
  matching by score, "difficult" ground truth neither TP nor FP, +1-pixel box areas, 11-point and area AP).
- Depth (tasks/_depth.py over mmseg's DepthMetric) vs the formulas by hand in numpy, with the Eigen crop and cap.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric

from rs_transfer.errors import UserError

from rs_transfer.tasks import _voc
from rs_transfer.tasks._corrupt import META_KEY
from rs_transfer.tasks._datasets import CountedIoUMetric
from rs_transfer.tasks._depth import EIGEN_CROP, EigenCropDepthMetric, silog
from rs_transfer.tasks._det_metric import VOCAP50Metric


# ---- mIoU ------------------------------------------------------------------------------------------------------
def _miou_by_confusion(preds: list[np.ndarray], gts: list[np.ndarray], n: int, ignore: int = 255) -> float:
    conf = np.zeros((n, n), np.int64)
    for p, g in zip(preds, gts):
        keep = g != ignore
        np.add.at(conf, (g[keep].astype(int), p[keep].astype(int)), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return float(np.nanmean(iou) * 100)


def test_miou_matches_confusion_matrix() -> None:
    rng = np.random.default_rng(0)
    n = 21
    preds, gts, samples = [], [], []
    for _ in range(3):
        g = rng.integers(0, 6, size=(20, 24)).astype(np.uint8)
        g[rng.random(g.shape) < 0.1] = 255                   # VOC ignore pixels
        p = np.where(rng.random(g.shape) < 0.7, g, rng.integers(0, 8, size=g.shape)).astype(np.uint8)
        p[p == 255] = 0
        preds.append(p), gts.append(g)
        samples.append({"pred_sem_seg": {"data": torch.from_numpy(p.astype(np.int64))[None]},
                        "gt_sem_seg": {"data": torch.from_numpy(g.astype(np.int64))[None]}})
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ("background",) + _voc.CLASSES}
    metric.process({}, samples)
    got = metric.evaluate(len(samples))["mIoU"]
    assert got == pytest.approx(_miou_by_confusion(preds, gts, n), abs=0.006)   # mmseg rounds to 0.01


# ---- AP50 ------------------------------------------------------------------------------------------------------
def _iou_voc(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU with the devkit's inclusive pixel convention (+1 on widths and heights)."""
    ix1, iy1 = np.maximum(boxes[:, 0], box[0]), np.maximum(boxes[:, 1], box[1])
    ix2, iy2 = np.minimum(boxes[:, 2], box[2]), np.minimum(boxes[:, 3], box[3])
    iw, ih = np.maximum(ix2 - ix1 + 1, 0), np.maximum(iy2 - iy1 + 1, 0)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _devkit_ap50(images: list[dict], num_classes: int, use_07: bool) -> float:
    """VOCdevkit VOCevaldet / py-faster-rcnn voc_eval, per class, mean over classes with ground truth."""
    aps = []
    for c in range(num_classes):
        gts = {i: (im["gt"][im["gt_labels"] == c], im["difficult"][im["gt_labels"] == c]) for i, im in
               enumerate(images)}
        npos = sum(int((~d).sum()) for _, d in gts.values())
        if npos == 0:
            continue
        dets = [(s, i, b) for i, im in enumerate(images)
                for b, s, lab in zip(im["boxes"], im["scores"], im["labels"]) if lab == c]
        dets.sort(key=lambda t: -t[0])
        used = {i: np.zeros(len(g), bool) for i, (g, _) in gts.items()}
        tp, fp = [], []
        for _, i, b in dets:
            g, diff = gts[i]
            if len(g):
                ov = _iou_voc(b, g)
                j = int(np.argmax(ov))
                if ov[j] >= 0.5:
                    if diff[j]:
                        continue                                  # difficult: neither TP nor FP
                    if not used[i][j]:
                        used[i][j] = True
                        tp.append(1), fp.append(0)
                        continue
            tp.append(0), fp.append(1)
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        rec = tp_c / npos
        prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(float).eps)
        if use_07:
            ap = np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(0, 1.1, 0.1)])
        else:
            mrec, mpre = np.r_[0.0, rec, 1.0], np.r_[0.0, prec, 0.0]
            for k in range(len(mpre) - 2, -1, -1):
                mpre[k] = max(mpre[k], mpre[k + 1])
            idx = np.where(mrec[1:] != mrec[:-1])[0]
            ap = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
        aps.append(ap)
    return float(np.mean(aps) * 100)


def _hand_made_images() -> list[dict]:
    f = lambda *rows: np.array(rows, np.float32).reshape(-1, 4)  # noqa: E731
    return [
        dict(gt=f([10, 10, 50, 60], [70, 20, 110, 90]), gt_labels=np.array([0, 1]), difficult=np.array([False, False]),
             boxes=f([12, 11, 49, 62], [71, 25, 108, 88], [10, 10, 50, 60], [0, 0, 20, 20]),
             scores=np.array([0.9, 0.8, 0.6, 0.7]), labels=np.array([0, 1, 0, 0])),         # a duplicate, a miss
        dict(gt=f([5, 5, 40, 40], [50, 50, 90, 95], [60, 5, 95, 30]), gt_labels=np.array([0, 0, 2]),
             difficult=np.array([False, True, False]),
             boxes=f([6, 4, 41, 42], [52, 49, 91, 93], [20, 60, 40, 90], [61, 6, 80, 28]),
             scores=np.array([0.95, 0.85, 0.3, 0.5]), labels=np.array([0, 0, 1, 2])),        # hit on difficult
        dict(gt=f([30, 30, 80, 80]), gt_labels=np.array([1]), difficult=np.array([False]),
             boxes=f([60, 60, 100, 100], [31, 28, 79, 82]), scores=np.array([0.75, 0.4]), labels=np.array([1, 1])),
    ]


@pytest.mark.parametrize("eval_mode,key,use_07", [("11points", "AP50", True), ("area", "AP50_area", False)])
def test_ap50_matches_voc_devkit(eval_mode: str, key: str, use_07: bool) -> None:
    images = _hand_made_images()
    metric = VOCAP50Metric(eval_mode=eval_mode)
    metric.dataset_meta = {"classes": _voc.CLASSES, "dataset_type": "VOC2007"}
    samples = []
    for im in images:
        keep = ~im["difficult"]
        t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
        samples.append({
            "gt_instances": {"bboxes": t(im["gt"][keep]), "labels": t(im["gt_labels"][keep], torch.long)},
            "ignored_instances": {"bboxes": t(im["gt"][~keep]).reshape(-1, 4),
                                  "labels": t(im["gt_labels"][~keep], torch.long)},
            "pred_instances": {"bboxes": t(im["boxes"]), "scores": t(im["scores"]),
                               "labels": t(im["labels"], torch.long)},
        })
    metric.process({}, samples)
    got = metric.evaluate(len(samples))
    expected = _devkit_ap50(images, len(_voc.CLASSES), use_07)
    assert set(got) == {key, "eval_images", "eval_skipped"} and (got["eval_images"], got["eval_skipped"]) == (3, 0)
    assert got[key] == pytest.approx(expected, abs=1e-4)
    assert 0 < expected < 100      # the hand-made case has both misses and false positives


# ---- depth -----------------------------------------------------------------------------------------------------
def _depth_by_hand(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for g, p in zip(gts, preds):
        h, w = g.shape
        t, b, l, r = EIGEN_CROP
        crop = np.zeros_like(g, bool)
        crop[round(t * h):round(b * h), round(l * w):round(r * w)] = True
        m = crop & (g > 1e-3) & (g < 10.0)
        g, p = g[m].astype(np.float64), np.clip(p[m].astype(np.float64), 1e-3, 10.0)   # BTS clips predictions
        ratio = np.maximum(g / p, p / g)
        d = np.log(p) - np.log(g)
        vals = {"d1": (ratio < 1.25).mean() * 100, "d2": (ratio < 1.25 ** 2).mean() * 100,
                "d3": (ratio < 1.25 ** 3).mean() * 100, "abs_rel": np.mean(np.abs(p - g) / g),
                "sq_rel": np.mean((p - g) ** 2 / g), "rmse": np.sqrt(np.mean((p - g) ** 2)),
                "rmse_log": np.sqrt(np.mean(d ** 2)), "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
                "silog": 100.0 * np.sqrt(np.mean(d ** 2) - np.mean(d) ** 2)}          # BTS/AdaBins
        for k, v in vals.items():
            per.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in per.items()}


def test_depth_metrics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    gts, preds, samples = [], [], []
    for _ in range(3):
        g = rng.uniform(0.5, 12.0, size=(48, 64)).astype(np.float32)   # some beyond the 10 m cap
        g[rng.random(g.shape) < 0.1] = 0.0                              # invalid pixels
        p = (g * rng.uniform(0.7, 1.4, size=g.shape) + 0.05).astype(np.float32)
        gts.append(g), preds.append(p)
        samples.append({"pred_depth_map": {"data": torch.from_numpy(p)[None]},
                        "gt_depth_map": {"data": torch.from_numpy(g)[None]}})
    metric = EigenCropDepthMetric(crop_type="eigen", min_depth_eval=1e-3, max_depth_eval=10.0)
    metric.process({}, samples)
    got = metric.evaluate(len(samples))
    expected = _depth_by_hand(gts, preds)
    assert set(got) == set(expected) | {"eval_images", "eval_skipped"} and got["eval_images"] == 3
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    assert 0 < got["d1"] < 100


def test_eigen_crop_equals_mmseg_at_full_resolution() -> None:
    """At NYU's native 480x640 the scaled crop is exactly mmseg's hard-coded nyu_crop."""
    from mmseg.evaluation.metrics import DepthMetric

    g = torch.full((480, 640), 3.0)
    ours = EigenCropDepthMetric(crop_type="eigen", max_depth_eval=10.0)._get_eval_mask(g)
    ref = DepthMetric(crop_type="nyu_crop", max_depth_eval=10.0)._get_eval_mask(g)
    assert torch.equal(ours, ref)


def test_silog_is_the_bts_definition() -> None:
    """BTS bts_main.py compute_errors: 100 * sqrt(mean(d^2) - mean(d)^2), d = log(pred) - log(gt); scale invariant."""
    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 9.0, size=1000)
    p = g * np.exp(rng.normal(0.0, 0.1, size=g.shape))
    d = np.log(p) - np.log(g)
    want = 100.0 * np.sqrt(np.mean(d ** 2) - np.mean(d) ** 2)
    assert silog(torch.from_numpy(g).float(), torch.from_numpy(p).float()) == pytest.approx(want, rel=1e-4)
    assert silog(torch.from_numpy(g), torch.from_numpy(3.0 * p)) == pytest.approx(want, rel=1e-6)   # x3: unchanged
    mmseg_style = np.sqrt(np.mean(d ** 2) - 0.5 * np.mean(d) ** 2)
    assert abs(want - mmseg_style) > 1.0                                # the two definitions really differ


# ---- unreadable evaluation files: left out, counted, and an error when too many -----------------------------------
def _seg_samples(n_ok: int, n_bad: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_ok + n_bad):
        g = torch.from_numpy(rng.integers(0, 3, size=(8, 8))).long()[None]
        s = {"pred_sem_seg": {"data": g.clone()}, "gt_sem_seg": {"data": g}, "img_path": f"img{i}.jpg"}
        if i >= n_ok:   # an evaluation placeholder: no ground truth, flagged by the dataset
            s = {"pred_sem_seg": {"data": torch.zeros(1, 8, 8, dtype=torch.long)}, META_KEY: "cannot decode",
                 "img_path": f"bad{i}.jpg"}
        out.append(s)
    return out


def test_unreadable_evaluation_samples_are_left_out_and_counted() -> None:
    metric = CountedIoUMetric(iou_metrics=["mIoU"], max_skipped_fraction=0.2)
    metric.dataset_meta = {"classes": ("background",) + _voc.CLASSES}
    metric.process({}, _seg_samples(9, 1))
    got = metric.evaluate(10)
    assert got["eval_images"] == 9 and got["eval_skipped"] == 1
    assert got["mIoU"] == pytest.approx(100.0)             # the placeholder's all-zero prediction is not scored


@pytest.mark.parametrize("n_ok,n_bad", [(9, 3), (0, 2)])
def test_too_many_unreadable_evaluation_files_is_an_error(n_ok: int, n_bad: int) -> None:
    metric = CountedIoUMetric(iou_metrics=["mIoU"], max_skipped_fraction=0.2)
    metric.dataset_meta = {"classes": ("background",) + _voc.CLASSES}
    metric.process({}, _seg_samples(n_ok, n_bad))
    with pytest.raises(UserError, match=f"{n_bad} of {n_ok + n_bad} evaluation images are unreadable") as err:
        metric.evaluate(n_ok + n_bad)
    assert "\n" not in str(err.value) and "bad" in str(err.value)
