"""Pascal VOC detection metric for Table 4: AP at IoU 0.5 in percent, 11-point (VOC07) or area (VOC2010+) version.

Why a subclass of mmdet's ``VOCMetric`` (which stays the reference computation, ``eval_map`` with the devkit's
+1-pixel coordinates and "difficult" objects ignored): mmdet rounds AP50 to three decimals and reports a fraction,
and two instances of it (11-point and area) would both write ``pascal_voc/AP50``. This one reports the unrounded
value in percent (Table 4 prints 80.0) under its own key: ``AP50`` (11-point, the headline, as the VOC2007 devkit)
or ``AP50_area``.
"""
from __future__ import annotations

import warnings
from typing import Any

from mmdet.evaluation import VOCMetric
from mmdet.registry import METRICS


@METRICS.register_module(force=True)
class VOCAP50Metric(VOCMetric):
    """mmdet's VOC mAP at IoU 0.5, unrounded and in percent, keyed ``AP50`` (11points) or ``AP50_area``."""

    default_prefix = None

    def __init__(self, eval_mode: str = "11points", **kwargs: Any) -> None:
        kwargs.pop("iou_thrs", None)
        kwargs.pop("metric", None)
        super().__init__(iou_thrs=0.5, metric="mAP", eval_mode=eval_mode, **kwargs)
        self.key = "AP50" if eval_mode == "11points" else "AP50_area"

    def compute_metrics(self, results: list) -> dict[str, float]:
        # With one IoU threshold mmdet's unrounded 'mAP' is exactly the AP50 it rounds. Both VOC versions are
        # reported on purpose, so mmdet's "VOC2007 uses 11points" warning is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Pascal VOC20")
            return {self.key: float(super().compute_metrics(results)["mAP"]) * 100.0}
