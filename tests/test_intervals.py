"""Intervals from per-sample outputs (rs_transfer/studies/intervals.py): identity resamples equal the metric, the
bootstrap covers a known truth ~95 % of the time, paired comparisons and the BH correction behave."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_transfer import eval_outputs
from rs_transfer.studies import intervals
from rs_transfer.eval_outputs import EvalOutputs


def _cls(hits_p: float, n: int, rng: np.random.Generator, classes: int = 10) -> EvalOutputs:
    label = rng.integers(classes, size=n)
    hit = rng.random(n) < hits_p
    top = np.stack([np.where(hit, label, (label + 1) % classes)] + [(label + k) % classes for k in (2, 3, 4, 5)], 1)
    return EvalOutputs("classification", {"metric": "top1"}, np.arange(n).astype(str),
                       {"top5": top.astype(np.int16), "label": label.astype(np.int16)})


def _det(rng: np.random.Generator, n: int = 12, classes: int = 3) -> EvalOutputs:
    d_img, d_box, d_score, d_lab, g_img, g_box, g_lab, g_hard = ([] for _ in range(8))
    for i in range(n):
        k = rng.integers(1, 4)
        boxes = np.sort(rng.uniform(0, 100, size=(k, 2, 2)), axis=1).reshape(k, 4)[:, [0, 2, 1, 3]] + [0, 0, 20, 20]
        labels = rng.integers(classes, size=k)
        g_img += [i] * k; g_box.append(boxes); g_lab.append(labels); g_hard.append(rng.random(k) < 0.2)
        for b, lab in zip(boxes, labels):      # one jittered hit, sometimes a wrong-class or stray box
            for jitter, cls in ((rng.normal(0, 4, 4), lab), (rng.normal(0, 30, 4), rng.integers(classes))):
                d_img.append(i); d_box.append(b + jitter); d_score.append(rng.random()); d_lab.append(cls)
    arrays = {"det_image": np.array(d_img, np.int32), "det_box": np.array(d_box, np.float32),
              "det_score": np.array(d_score, np.float32), "det_label": np.array(d_lab, np.int16),
              "gt_image": np.array(g_img, np.int32), "gt_box": np.concatenate(g_box).astype(np.float32),
              "gt_label": np.concatenate(g_lab).astype(np.int16), "gt_difficult": np.concatenate(g_hard)}
    return EvalOutputs("detection", {"metric": "AP50", "num_classes": classes}, np.array([f"im{i}" for i in range(n)]),
                       arrays)


def _eval_map(o: EvalOutputs, mode: str) -> float:
    """mmdet's eval_map on the outputs rebuilt as mmdet's VOCMetric hands them over (serial, no pool)."""
    from mmdet.evaluation.functional import mean_ap

    from rs_transfer.tasks._det_metric import _SerialPool

    dets, anns = [], []
    for i in range(len(o)):
        d, g = o["det_image"] == i, o["gt_image"] == i
        dets.append([np.hstack([o["det_box"][d & (o["det_label"] == c)],
                                o["det_score"][d & (o["det_label"] == c)][:, None]])
                     for c in range(o.meta["num_classes"])])
        easy, hard = g & ~o["gt_difficult"], g & o["gt_difficult"]
        anns.append({"bboxes": o["gt_box"][easy], "labels": o["gt_label"][easy].astype(np.int64),
                     "bboxes_ignore": o["gt_box"][hard], "labels_ignore": o["gt_label"][hard].astype(np.int64)})
    pool, mean_ap.Pool = mean_ap.Pool, _SerialPool
    try:
        return mean_ap.eval_map(dets, anns, iou_thr=0.5, eval_mode=mode, use_legacy_coordinate=True,
                                logger="silent")[0] * 100.0
    finally:
        mean_ap.Pool = pool


def test_detection_identity_resample_is_eval_map_and_duplicates_are_repeats() -> None:
    o = _det(np.random.default_rng(1))
    for key, mode in (("AP50", "11points"), ("AP50_area", "area")):
        s = intervals.scorer(o, key)
        assert s.value() == _eval_map(o, mode)
        # weight 2 on image 0 == image 0 appearing twice (AP recomputed from the resampled images' detections)
        w = np.ones((1, len(o)), np.int64); w[0, 0] = 2; w[0, 3] = 0
        ids = [0, 0] + [i for i in range(1, len(o)) if i != 3]
        rep = _subset(o, ids)                # the resampled set written out: image 0 twice, image 3 absent
        assert s.score(w)[0] == pytest.approx(_eval_map(rep, mode), abs=1e-4)


def _subset(o: EvalOutputs, idx: list[int]) -> EvalOutputs:
    parts = {k: [] for k in o.arrays}
    for new, i in enumerate(idx):
        d, g = o["det_image"] == i, o["gt_image"] == i
        for k in o.arrays:
            sel = d if k.startswith("det_") else g
            parts[k].append(np.full(sel.sum(), new, np.int32) if k.endswith("_image") else o[k][sel])
    return EvalOutputs(o.kind, o.meta, np.arange(len(idx)).astype(str),
                       {k: np.concatenate(v) for k, v in parts.items()})


def test_miou_identity_is_mmseg_and_pools_pixels() -> None:
    inter = np.array([[5, 0, 2], [1, 0, 0]]); union = np.array([[10, 0, 4], [1, 3, 0]])
    o = EvalOutputs("segmentation", {"metric": "mIoU", "rounding": 2}, np.array(["a", "b"]),
                    {"intersect": inter, "union": union})
    s = intervals.scorer(o)
    # sum I / sum U per class, not a mean of per-image IoUs; mmseg's float32 rounding to 2 decimals
    assert s.value() == float(np.round(np.float32(np.mean([6 / 11, 0 / 3, 2 / 4], dtype=np.float32)) * 100, 2))
    assert s.value() == pytest.approx(34.85, abs=1e-5)
    assert s.score(np.array([[2, 0]]))[0] == pytest.approx(100 * np.mean([10 / 20, 4 / 8]))   # class 1 absent


def test_bootstrap_covers_known_accuracy() -> None:
    """120 simulated test sets of 200 samples with true accuracy 0.7: the 95 % BCa interval must cover 70 in
    90-99 % of them (binomial sd of the coverage over 120 trials ~2 %)."""
    rng = np.random.default_rng(0)
    covered = 0
    trials = 120
    for t in range(trials):
        iv = intervals.interval(intervals.scorer(_cls(0.7, 200, rng)), resamples=1000, seed=t)
        covered += iv.low <= 70.0 <= iv.high
    assert 0.90 <= covered / trials <= 0.99


def test_paired_difference_and_bh() -> None:
    rng = np.random.default_rng(3)
    a, b = _cls(0.9, 300, rng), _cls(0.6, 300, rng)
    b.ids = b.ids[::-1].copy(); b.arrays = {k: v[::-1].copy() for k, v in b.arrays.items()}  # matched by id
    cmp = intervals.paired(a, b, resamples=500)
    assert cmp.difference.value == pytest.approx(intervals.metric(a) - intervals.metric(b))
    assert cmp.difference.low > 0 and cmp.p_value < 0.01
    same = intervals.paired(a, a, resamples=200)
    assert same.difference.value == 0 and same.p_value == 1.0
    adj = intervals.adjust([0.01, 0.04, float("nan"), 0.03])
    assert np.isnan(adj[2]) and adj[0] == pytest.approx(0.03) and adj[1] == adj[3] == pytest.approx(0.04)  # by hand


def test_seeds_interval_is_wider_when_seeds_disagree() -> None:
    rng = np.random.default_rng(5)
    base = _cls(0.7, 200, rng)
    other = EvalOutputs(base.kind, base.meta, base.ids, dict(base.arrays))
    flip = rng.random(200) < 0.15                 # a second seed that differs on some samples
    other.arrays["top5"] = np.where(flip[:, None], (base["top5"] + 1) % 10, base["top5"]).astype(np.int16)
    one = intervals.seeds_interval([intervals.scorer(base)] * 2, resamples=500)
    two = intervals.seeds_interval([intervals.scorer(base), intervals.scorer(other)], resamples=500)
    assert two.seeds == 2 and two.high - two.low > one.high - one.low


def test_saved_file_round_trip(tmp_path: Path) -> None:
    assert eval_outputs.save("classification", ["x"], top5=[[1]], label=[1]) is None   # no run collects
    with eval_outputs.collect_to(tmp_path):
        eval_outputs.save("classification", ["x", "y"], {"metric": "top1"}, top5=[[1], [2]], label=[1, 3])
    o = eval_outputs.load(tmp_path)
    assert o.kind == "classification" and o.ids.tolist() == ["x", "y"] and intervals.metric(o) == 50.0
    with pytest.raises(ValueError, match="one row per sample"):
        eval_outputs.pack("classification", ["x"], top5=[[1], [2]], label=[1, 2])


def test_video_metric_keeps_outputs_after_the_view_average(tmp_path: Path) -> None:
    """kinetics400's metric (one score vector per video, views already averaged by the recognizer): the kept
    top-5 reproduce top-1/top-5 exactly; an undecodable video is left out of both."""
    import torch

    from rs_transfer.video.metrics import VideoAccuracy

    rng = np.random.default_rng(0)
    metric = VideoAccuracy(topk=(1, 5))
    samples = [{"pred_score": torch.tensor(rng.random(8)), "label": int(rng.integers(8)), "valid": True}
               for _ in range(13)] + [{"pred_score": torch.zeros(8), "label": 0, "valid": False}]
    metric.process({}, samples)
    with eval_outputs.collect_to(tmp_path):
        got = metric.compute_metrics(metric.results)
    out = eval_outputs.load(tmp_path)
    assert len(out) == 13 and got["eval_videos"] == 13
    assert intervals.metric(out, "top1") == got["top1"] and intervals.metric(out, "top5") == got["top5"]


def test_paired_over_seed_pairs() -> None:
    rng = np.random.default_rng(7)
    a = [_cls(0.85, 150, rng) for _ in range(2)]
    b = [EvalOutputs(x.kind, x.meta, x.ids, {**x.arrays, "top5": np.where((rng.random(150) < 0.2)[:, None],
                                                                         (x["top5"] + 1) % 10, x["top5"])})
         for x in a]                                    # b = a with 20 % of its samples made wrong: a is better
    cmp = intervals.paired(a, b, resamples=400)
    expect = np.mean([intervals.metric(x) - intervals.metric(y) for x, y in zip(a, b)])
    assert cmp.difference.value == pytest.approx(expect) and cmp.difference.seeds == 2
    assert 0 < cmp.difference.low < expect < cmp.difference.high and cmp.p_value < 0.01
