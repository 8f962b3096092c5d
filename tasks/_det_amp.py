"""Faster R-CNN parts that keep box geometry in float32 under bf16 autocast (``amp=bf16`` on a GPU).

Why: under autocast the RPN's convolutions hand out bf16 scores and box deltas. bf16 has 8 significant bits, so a
proposal corner near x = 600 px is only known to 4 px, and mmcv's NMS and RoIAlign kernels have no bf16 version
(``expected scalar type Float but found BFloat16``; found by tests/test_cpu_amp.py on the CPU, the same dtype
reaches the CUDA kernels). The convolutions stay in bf16 (the cost); decoding, NMS and RoI pooling, cheap and
precision-bound, run in float32. Without autocast every tensor is already float32 and nothing changes.
"""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models import RPNHead, SingleRoIExtractor
from torch import Tensor


class FloatProposalRPNHead(RPNHead):
    """mmdet's ``RPNHead`` with proposals decoded and NMS-ed in float32 (see the module docstring)."""

    def _predict_by_feat_single(self, cls_score_list: list[Tensor], bbox_pred_list: list[Tensor],
                                score_factor_list: list[Tensor], mlvl_priors: list[Tensor], img_meta: dict,
                                cfg: Any, rescale: bool = False, with_nms: bool = True) -> Any:
        return super()._predict_by_feat_single([s.float() for s in cls_score_list],
                                               [b.float() for b in bbox_pred_list], score_factor_list,
                                               [p.float() for p in mlvl_priors], img_meta, cfg, rescale, with_nms)


class FloatRoIExtractor(SingleRoIExtractor):
    """mmdet's ``SingleRoIExtractor`` pooling float32 features (mmcv's RoIAlign has no bf16 kernel); the pooled
    7x7 features go on to the box head, whose linear layers autocast casts back to bf16."""

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor, roi_scale_factor: float | None = None) -> Tensor:
        if torch.is_autocast_enabled(feats[0].device.type):
            with torch.autocast(feats[0].device.type, enabled=False):
                return super().forward(tuple(f.float() for f in feats), rois.float(), roi_scale_factor)
        return super().forward(feats, rois, roi_scale_factor)
