"""FLOPs of a forward pass, counted one way for ``inspect``, the scaling study and study cost estimates.

A multiply-add counts as 2 FLOPs (torch's ``FlopCounterMode``; the paper's Table 2 counts the same way: ResNet-RS-350
at 256 px is 68.75 B here, 69 B there). mmengine's complexity analysis counts a multiply-add as 1: convert with
:data:`MMENGINE_TO_FLOPS` before comparing. ``FlopCounterMode`` counts matrix products and convolutions only (the
multiply-adds, nearly all of a ResNet's work); element-wise work (BatchNorm, activations, upsampling) and custom
operators (mmcv's RoIAlign, NMS) count 0.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MMENGINE_TO_FLOPS = 2   # mmengine/fvcore "flops" are multiply-adds


@dataclass(frozen=True)
class ModelFlops:
    """Forward FLOPs of one sample of a run's model, at its training and at its evaluation input (``None``: not
    counted, ``*_how`` then says why), each with a phrase saying what was counted."""

    train_forward: int | None
    train_how: str
    eval_forward: int | None
    eval_how: str

    @property
    def train_per_sample(self) -> int | None:
        """Training FLOPs of one sample: forward + backward = 3 x forward (backward ~ 2 x forward: gradients of the
        activations and of the weights; frozen stages skip the latter, so this is an upper estimate there)."""
        return 3 * self.train_forward if self.train_forward else None


def count_flops(model: Any, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of ``model`` on zeros of ``shape`` (eval mode, no autograd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape))
    return int(counter.get_total_flops())


def model_flops(cfg: Any) -> ModelFlops:
    """Forward FLOPs per sample of the WHOLE model a resolved run config trains, as :func:`count_flops` counts
    (multiply-add = 2), built once for training and evaluation input:

    - a segmentor/depth model (encoder-decoder): at the data preprocessor's crop for training; its evaluation input
      (whole images resized keeping their aspect ratio) varies, so evaluation is not counted;
    - a detector (two-stage, mmdet): at its resize scale, see :func:`detector_forward_flops`;
    - a classifier (backbone + head): at the train / val dataset's ``size`` (``resolution`` for ImageNet) crop;
    - a video classifier: one training clip; an evaluation video is all its views (:func:`_video`).
    Anything else (frozen-feature protocols whose dataset has no fixed crop) is not counted, and says so."""
    import warnings

    from mmengine.registry import MODELS, DefaultScope

    model_cfg = cfg.model
    crop = (model_cfg.get("data_preprocessor") or {}).get("size")
    train_ds = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    val_ds = (cfg.get("val_dataloader") or {}).get("dataset") or {}
    mtype = model_cfg.get("type")
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
        warnings.simplefilter("ignore")   # model-building notices (mmseg loss defaults) are not the plan's business
        if crop and hasattr(mtype, "encode_decode"):
            model = MODELS.build(model_cfg)
            forward = _forward_flops(model, (1, 3, *crop), mode="tensor")
            return ModelFlops(forward, f"whole model at {crop[0]}x{crop[1]}", None,
                              "not counted for this encoder-decoder: its evaluation images keep their aspect ratio")
        if "rpn_head" in model_cfg and "roi_head" in model_cfg:
            return _detector(cfg, MODELS.build(model_cfg))
        has_head = "num_classes" in (model_cfg.get("backbone") or {})
        if has_head and isinstance(train_ds.get("num_frames"), int) and isinstance(train_ds.get("crop_size"), int):
            return _video(MODELS.build(model_cfg["backbone"]), train_ds, val_ds)
        size = _crop(train_ds)
        if size is not None and has_head:
            model = MODELS.build(model_cfg["backbone"])
            train = _forward_flops(model, (1, 3, size, size))
            vsize = _crop(val_ds)
            if vsize is None:
                return ModelFlops(train, f"classifier at {size} px", None, "no fixed evaluation crop")
            ev = train if vsize == size else _forward_flops(model, (1, 3, vsize, vsize))
            return ModelFlops(train, f"classifier at {size} px", ev, f"classifier at {vsize} px")
    why = "not counted for this model (no fixed input size)"
    return ModelFlops(None, why, None, why)


def _crop(ds: Any) -> int | None:
    """A classification dataset's square input side: ``size`` (the fine-tuning tasks) or ``resolution`` (ImageNet:
    the training crop and the evaluation centre crop are both resized to it)."""
    for key in ("size", "resolution"):
        if isinstance(ds.get(key), int):
            return int(ds[key])
    return None


def _video(model: Any, train_ds: Any, val_ds: Any) -> ModelFlops:
    """A video classifier (3D backbone + head) on one training clip (``num_frames`` x ``crop_size``^2) and on one
    evaluation sample: every view of a video (``num_clips`` x ``num_crops`` clips of ``test_size``^2) is a forward,
    and the views are averaged, so a video costs views x one clip."""
    t, crop = int(train_ds["num_frames"]), int(train_ds["crop_size"])
    train = _forward_flops(model, (1, 3, t, crop, crop))
    how = f"3D classifier on a {t}x{crop}x{crop} clip"
    if not all(isinstance(val_ds.get(k), int) for k in ("num_frames", "test_size")):
        return ModelFlops(train, how, None, "no fixed evaluation clip")
    vt, side = int(val_ds["num_frames"]), int(val_ds["test_size"])
    views = int(val_ds.get("num_clips") or 1) * int(val_ds.get("num_crops") or 1)
    one = train if (vt, side) == (t, crop) else _forward_flops(model, (1, 3, vt, side, side))
    return ModelFlops(train, how, views * one, f"3D classifier, {views} views of {vt}x{side}x{side} per video")


def _forward_flops(model: Any, shape: tuple[int, ...], **kwargs: Any) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape), **kwargs)
    return int(counter.get_total_flops())


def _detector(cfg: Any, model: Any) -> ModelFlops:
    """A two-stage detector's train and eval forward FLOPs (:func:`detector_forward_flops`) at the padded resize
    scales of its train and val pipelines, RoIs as its ``train_cfg`` samples and its ``test_cfg`` keeps."""
    train_scale = resize_scale(cfg.get("train_dataloader"))
    val_scale = resize_scale(cfg.get("val_dataloader"))
    divisor = int((cfg.model.get("data_preprocessor") or {}).get("pad_size_divisor") or 1)
    out: list[tuple[int | None, str]] = []
    for scale, rois, which in ((train_scale, _rcnn_rois(cfg.model, "train_cfg"), "train"),
                               (val_scale, _rcnn_rois(cfg.model, "test_cfg"), "val")):
        if scale is None or rois is None:
            out.append((None, f"detector: no fixed resize scale or RoI count in its {which} config"))
            continue
        w, h = (math.ceil(s / divisor) * divisor for s in scale)
        out.append((detector_forward_flops(model, (1, 3, h, w), rois),
                    f"whole detector at {w}x{h} (the {scale[0]}x{scale[1]} resize scale, padded: real images keep "
                    f"their aspect ratio inside it, so an upper-end approximation), RoI head on {rois} RoIs "
                    f"({'sampled' if which == 'train' else 'proposals kept'}); RoIAlign and NMS not counted"))
    return ModelFlops(out[0][0], out[0][1], out[1][0], out[1][1])


def detector_forward_flops(model: Any, shape: tuple[int, ...], rois: int) -> int:
    """FLOPs of a two-stage detector's forward (mmdet ``TwoStageDetector``) on one image of ``shape`` (already
    padded): backbone + neck + RPN head on the whole image, then the RoI head's box branch on ``rois`` RoIs.
    Why a fixed RoI count and not a forward of the whole model: the proposals a forward keeps depend on the image
    (a blank one keeps few after NMS), while a training step runs the box head on exactly its sampler's ``num`` RoIs
    and evaluation on up to ``test_cfg.rpn.max_per_img`` proposals."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h, w = shape[-2:]
    boxes = torch.tensor([[0.0, 0.0, 0.0, w / 4, h / 4]]).repeat(rois, 1)   # batch index 0; size irrelevant here
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        feats = model.extract_feat(torch.zeros(shape))
        model.rpn_head(feats)
        model.roi_head._bbox_forward(feats, boxes)
    return int(counter.get_total_flops())


def _rcnn_rois(model_cfg: Any, key: str) -> int | None:
    """RoIs the box head sees per image: the R-CNN sampler's ``num`` in training, the RPN's kept proposals in test."""
    part = model_cfg.get(key) or {}
    try:
        n = part["rcnn"]["sampler"]["num"] if key == "train_cfg" else part["rpn"]["max_per_img"]
    except (KeyError, TypeError):
        return None
    return int(n) if n else None


def resize_scale(loader: Any) -> tuple[int, int] | None:
    """The (w, h) ``scale`` of the first fixed ``Resize`` in a data loader's pipelines (nested datasets too)."""
    for step in _pipeline_steps((loader or {}).get("dataset")):
        kind = step.get("type")
        name = kind if isinstance(kind, str) else getattr(kind, "__name__", "")
        scale = step.get("scale")
        if name.split(".")[-1] == "Resize" and isinstance(scale, (tuple, list)) and len(scale) == 2:
            return int(scale[0]), int(scale[1])
    return None


def _pipeline_steps(ds: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(ds, dict):
        return
    yield from (s for s in ds.get("pipeline") or [] if isinstance(s, dict))
    for inner in [ds.get("dataset"), *(ds.get("datasets") or [])]:
        yield from _pipeline_steps(inner)
