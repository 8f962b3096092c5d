"""Monocular depth on a shared ResNet backbone: a small FPN depth head and the NYU (Eigen) evaluation metric.

Why our own head: mmseg 1.2.2 ships ``DepthEstimator``, ``NYUDataset`` and ``DepthMetric`` but only one depth head
(``VPDDepthHead``), which is built for VPD's diffusion features (fixed channel layout and a deconvolution stack).
``FPNDepthHead`` is the plain alternative for a 4-stage CNN: FPN top-down fusion of strides 4..32 (as the
segmentation heads do), a 3x3 fusion conv, a 1-channel prediction squashed to ``(0, max_depth)`` by a sigmoid (the
bounded-output convention of BTS/AdaBins/VPD, 10 m for NYU), trained with the scale-invariant log loss.

Why our own metric: mmseg's ``DepthMetric`` hard-codes the Eigen crop as pixel rows 45:471, cols 41:601 of a 480x640
map; ``EigenCropDepthMetric`` uses the same crop as fractions of the map, so it is identical at 480x640 and still
meaningful on the mini set's small images. It also reports the delta accuracies as percentages (Table 4 prints
81.2, not 0.812), and ``silog`` as BTS/AdaBins report it, ``100 * sqrt(E[d^2] - E[d]^2)`` with
``d = log(pred) - log(gt)`` (mmseg's is ``sqrt(E[d^2] - 0.5 E[d]^2)``, the training loss's variance focus, not
x100); predictions are clipped to the evaluation range first, as BTS does. Per-image averaging and the other
formulas are mmseg's (= BTS's). Unreadable test frames, and frames without a single valid depth pixel in the
evaluated region (a per-image mean over nothing is NaN), are left out and counted (``tasks/_corrupt.py``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.evaluation.metrics import DepthMetric
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import METRICS, MODELS
from torch import Tensor, nn

from ._corrupt import SkipCountingMetric

# Eigen et al. 2014 crop of the 480x640 NYU frame, as fractions: rows 45..471, cols 41..601.
EIGEN_CROP = (45 / 480, 471 / 480, 41 / 640, 601 / 640)
PERCENT_KEYS = ("d1", "d2", "d3")


@MODELS.register_module(force=True)
class FPNDepthHead(BaseDecodeHead):
    """FPN decoder -> one depth channel in metres, ``sigmoid * max_depth``.

    ``in_channels``: the four backbone stage widths (``input_transform='multiple_select'``, ``in_index=(0,1,2,3)``).
    The prediction has stride 4; ``loss_by_feat`` and inference upsample it bilinearly to the label/image size.
    """

    def __init__(self, max_depth: float = 10.0, **kwargs: Any) -> None:
        kwargs.setdefault("input_transform", "multiple_select")
        kwargs.setdefault("in_index", (0, 1, 2, 3))
        kwargs.setdefault("num_classes", 1)
        kwargs.setdefault("threshold", 0.5)   # unused by depth; silences the binary-segmentation warning
        super().__init__(**kwargs)
        self.max_depth = max_depth
        self.lateral = nn.ModuleList(
            ConvModule(c, self.channels, 1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg, inplace=False)
            for c in self.in_channels)
        self.smooth = nn.ModuleList(
            ConvModule(self.channels, self.channels, 3, padding=1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
            for _ in self.in_channels)
        self.fuse = ConvModule(self.channels * len(self.in_channels), self.channels, 3, padding=1,
                               norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        feats = self._transform_inputs(inputs)
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):          # top-down: coarse context into finer maps
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="bilinear",
                                                    align_corners=self.align_corners)
        outs = [conv(x) for conv, x in zip(self.smooth, lat)]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=self.align_corners)
                            for o in outs[1:]]
        x = self.fuse(torch.cat(outs, dim=1))
        if self.dropout is not None:
            x = self.dropout(x)
        return torch.sigmoid(self.conv_seg(x)) * self.max_depth

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: list) -> dict[str, Tensor]:
        """Depth losses on the label grid (prediction upsampled to it); invalid pixels (depth 0) are masked by
        the loss (SiLogLoss ignores targets <= eps)."""
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples]).to(seg_logits)
        pred = F.interpolate(seg_logits, size=gt.shape[2:], mode="bilinear", align_corners=self.align_corners)
        losses = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        out: dict[str, Tensor] = {}
        for loss in losses:
            out[loss.loss_name] = out.get(loss.loss_name, 0) + loss(pred, gt)
        return out


@METRICS.register_module(force=True)
class EigenCropDepthMetric(SkipCountingMetric, DepthMetric):
    """mmseg's ``DepthMetric`` with the Eigen crop scaled to the map size, d1..d3 in percent, BTS's ``silog``, and
    ``eval_images`` / ``eval_skipped`` counts.

    ``crop_type='eigen'`` applies the crop; ``None`` evaluates every valid pixel. Valid = ``min_depth_eval < gt <
    max_depth_eval`` (NYU: 1e-3 m and 10 m, the usual cap); ground truth 0 (no raw depth measured) is never valid.
    """

    def __init__(self, crop_type: str | None = "eigen", max_skipped_fraction: float = 0.01,
                 report_counts: bool = True, **kwargs: Any) -> None:
        if crop_type not in (None, "eigen"):
            raise ValueError(f"crop_type must be 'eigen' or None, got {crop_type!r}")
        super().__init__(crop_type=None, **kwargs)
        self.eigen = crop_type == "eigen"
        self._init_counts(max_skipped_fraction, report_counts)

    def _get_eval_mask(self, gt_depth: Tensor) -> Tensor:
        valid = (gt_depth > self.min_depth_eval) & (gt_depth < self.max_depth_eval)
        if self.eigen:
            h, w = gt_depth.shape[-2:]
            top, bottom, left, right = EIGEN_CROP
            crop = torch.zeros_like(valid)
            crop[..., round(top * h):round(bottom * h), round(left * w):round(right * w)] = True
            valid &= crop
        return valid

    def process(self, data_batch: Any, data_samples: Any) -> None:
        """mmseg's masking per image, then the per-image metrics and counts right away (mmseg keeps every image's
        masked maps until the end): the same numbers, averaged the same way, plus a sample id per image. An image
        with no pixel to score is skipped and counted (mmseg's per-image mean would be 0/0 = NaN for every metric)."""
        from ._datasets import sample_id

        for sample in self._split(data_samples):
            gt = sample["gt_depth_map"]["data"].squeeze()
            if not self._get_eval_mask(gt).any():
                path = sample.get("depth_map_path") or sample.get("img_path", "?")
                top = float(gt.max()) if gt.numel() else 0.0
                why = ("every pixel is 0 = not measured" if top <= 0 else
                       f"no pixel within {self.min_depth_eval:g}..{self.max_depth_eval:g} m in the evaluated region, "
                       f"max {top:g} m: wrong units?")
                self._skip_no_target(str(path), f"no valid ground-truth depth: {why}")
                continue
            super().process(data_batch, [sample])
            if self.format_only:
                continue
            gt, pred = self.results.pop()
            clamped = pred.clamp(self.min_depth_eval, self.max_depth_eval)   # as _calc_all_metrics does
            ratio = torch.max(gt / clamped, clamped / gt)
            below = [int((ratio < 1.25 ** p).sum()) for p in (1, 2, 3)]
            self.results.append(_DepthImage(sample_id(sample.get("img_path", f"#{len(self.results)}")),
                                            self._calc_all_metrics(gt, pred), int(gt.numel()), below))

    def _calc_all_metrics(self, gt_depth: Tensor, pred_depth: Tensor) -> dict[str, float]:
        # BTS (bts_main.py / eval_with_pngs.py): predictions clipped to [min_depth_eval, max_depth_eval] first.
        pred_depth = pred_depth.clamp(self.min_depth_eval, self.max_depth_eval)
        out = DepthMetric._calc_all_metrics(gt_depth, pred_depth)
        out["silog"] = silog(gt_depth, pred_depth)
        return out

    def compute_metrics(self, results: list) -> dict[str, float]:
        kept, counts = self._counted(results)
        if not kept:
            from rs_transfer.errors import UserError

            raise UserError("no evaluation image with valid ground-truth depth: there is no depth metric to report")
        keys = list(self.metrics)
        metrics = {k: sum(r.values[k] for r in kept) / len(kept) for k in keys}   # mmseg's DepthMetric average
        from rs_transfer import eval_outputs

        eval_outputs.save("depth", [r.id for r in kept], {"metric": "d1", "per_image_keys": keys,
                                                           "percent_keys": list(PERCENT_KEYS)},
                          valid=np.asarray([r.valid for r in kept], dtype=np.int64),
                          below=np.asarray([r.below for r in kept], dtype=np.int64).reshape(-1, 3),
                          per_image=np.asarray([[r.values[k] for k in keys] for r in kept], dtype=np.float64))
        return {**{k: (v * 100.0 if k in PERCENT_KEYS else v) for k, v in metrics.items()}, **counts}


class _DepthImage:
    """One evaluated image (picklable: DDP gathers metric results): sample id, per-image metrics, valid pixels,
    pixels with delta below 1.25, 1.25^2, 1.25^3."""

    def __init__(self, id: str, values: dict[str, float], valid: int, below: list[int]) -> None:
        self.id, self.values, self.valid, self.below = id, values, valid, below


def silog(gt: Tensor, pred: Tensor) -> float:
    """Scale-invariant log error of one image as BTS and AdaBins report it: ``100 * sqrt(E[d^2] - E[d]^2)``,
    ``d = log(pred) - log(gt)`` over the valid pixels (computed in float64: the difference of two close means)."""
    d = torch.log(pred.double()) - torch.log(gt.double())
    return float(torch.sqrt((d.pow(2).mean() - d.mean().pow(2)).clamp(min=0.0)) * 100.0)
