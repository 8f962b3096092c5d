"""Pascal VOC detection metric for Table 4: AP at IoU 0.5 in percent, 11-point (VOC07) or area (VOC2010+) version.

Why a subclass of mmdet's ``VOCMetric`` (which stays the reference computation, ``eval_map`` with the devkit's
+1-pixel coordinates and "difficult" objects ignored): mmdet rounds AP50 to three decimals and reports a fraction,
and two instances of it (11-point and area) would both write ``pascal_voc/AP50``. This one reports the unrounded
value in percent (Table 4 prints 80.0) under its own key: ``AP50`` (11-point, the headline, as the VOC2007 devkit)
or ``AP50_area``. Unreadable test images are left out and counted (``eval_images`` / ``eval_skipped``, reported by
the metric with ``report_counts=True`` only, so that two instances on one loader do not clash; ``tasks/_corrupt.py``).

mmdet's ``eval_map`` computes per-image TP/FP in a forked ``multiprocessing.Pool``; forked from a process that
already runs threads (torch's, TensorBoard's writer) a worker can deadlock on an inherited lock -- seen here as a
10-minute stall at the end of a run. The same function runs in this process instead (``_SerialPool``): identical
numbers, seconds for the 4,952 VOC07 test images.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from mmdet.evaluation import VOCMetric
from mmdet.registry import METRICS

from ._corrupt import SkipCountingMetric


@METRICS.register_module(force=True)
class VOCAP50Metric(SkipCountingMetric, VOCMetric):
    """mmdet's VOC mAP at IoU 0.5, unrounded and in percent, keyed ``AP50`` (11points) or ``AP50_area``."""

    default_prefix = None

    def __init__(self, eval_mode: str = "11points", max_skipped_fraction: float = 0.01, report_counts: bool = True,
                 **kwargs: Any) -> None:
        kwargs.pop("iou_thrs", None)
        kwargs.pop("metric", None)
        super().__init__(iou_thrs=0.5, metric="mAP", eval_mode=eval_mode, **kwargs)
        self.key = "AP50" if eval_mode == "11points" else "AP50_area"
        self._init_counts(max_skipped_fraction, report_counts)

    def process(self, data_batch: Any, data_samples: Any) -> None:
        from ._datasets import sample_id

        kept = self._split(data_samples)
        super().process(data_batch, kept)
        n = len(kept)   # each image's (annotations, detections) gets its sample id
        for j, sample in enumerate(kept):
            i = len(self.results) - n + j
            self.results[i] = (*self.results[i], sample_id(sample.get("img_path", f"#{i}")))

    def compute_metrics(self, results: list) -> dict[str, float]:
        # With one IoU threshold mmdet's unrounded 'mAP' is exactly the AP50 it rounds. Both VOC versions are
        # reported on purpose, so mmdet's "VOC2007 uses 11points" warning is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Pascal VOC20")
            kept, counts = self._counted(results)
            if self.report_counts:   # the headline instance keeps the outputs (both instances see the same ones)
                save_detections(kept, eval_mode=self.eval_mode, key=self.key)
            kept = [r[:2] for r in kept]
            from mmdet.evaluation.functional import mean_ap

            pool, mean_ap.Pool = mean_ap.Pool, _SerialPool
            try:
                value = float(super().compute_metrics(kept)["mAP"]) * 100.0
            finally:
                mean_ap.Pool = pool
            return {self.key: value, **counts}


class _SerialPool:
    """The part of ``multiprocessing.Pool`` that ``eval_map`` uses, run in the calling process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def starmap(self, fn: Callable, iterable: Iterable) -> list:
        return list(itertools.starmap(fn, iterable))

    def close(self) -> None:
        pass


def save_detections(results: list, *, eval_mode: str, key: str) -> None:
    """Keep every image's detections and ground truth (rs_transfer/eval_outputs.py, kind ``detection``) from
    mmdet's per-image ``(annotations, per-class [x1, y1, x2, y2, score] arrays, sample id)`` results."""
    import numpy as np

    from rs_transfer import eval_outputs

    if eval_outputs.destination() is None or not results:
        return
    det = {"image": [], "box": [], "score": [], "label": []}
    gt = {"image": [], "box": [], "label": [], "difficult": []}
    for i, (ann, dets, _) in enumerate(results):
        for c, arr in enumerate(dets):
            det["image"].append(np.full(len(arr), i, np.int32))
            det["box"].append(arr[:, :4].astype(np.float32))
            det["score"].append(arr[:, 4].astype(np.float32))
            det["label"].append(np.full(len(arr), c, np.int16))
        for boxes, labels, hard in ((ann["bboxes"], ann["labels"], False),
                                    (ann["bboxes_ignore"], ann["labels_ignore"], True)):
            gt["image"].append(np.full(len(labels), i, np.int32))
            gt["box"].append(np.asarray(boxes, np.float32).reshape(-1, 4))
            gt["label"].append(np.asarray(labels, np.int16))
            gt["difficult"].append(np.full(len(labels), hard, bool))
    eval_outputs.save("detection", [r[2] for r in results],
                      {"metric": key, "eval_mode": eval_mode, "num_classes": len(results[0][1]), "iou_thr": 0.5},
                      **{f"det_{k}": np.concatenate(v) for k, v in det.items()},
                      **{f"gt_{k}": np.concatenate(v) for k, v in gt.items()})
