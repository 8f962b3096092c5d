"""The video classifier mmengine trains: normalisation, a ResNetRS backbone, label smoothing, multi-view testing.

Inputs arrive as uint8 ``[N, C, T, H, W]`` (training) or ``[N, V, C, T, H, W]`` (V test views per video) so that
data-loader workers ship bytes, not floats; :class:`VideoDataPreprocessor` moves them to the device and
normalises there (the runner writes the weight source's mean/std into it).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS


def average_views(logits: torch.Tensor, num_views: int, how: str = "prob") -> torch.Tensor:
    """``[N * V, K]`` logits of V views per video -> ``[N, K]`` class scores averaged over the views.

    ``prob`` averages softmax probabilities (TF Model Garden video eval, the paper's 30-view numbers); ``logit``
    averages raw logits (pytorchvideo). Top-1 rarely differs; the choice is named so that reports can say which.
    """
    if logits.shape[0] % num_views:
        raise ValueError(f"{logits.shape[0]} view logits are not a multiple of {num_views} views")
    scores = logits.float().softmax(-1) if how == "prob" else logits.float()
    if how not in ("prob", "logit"):
        raise ValueError(f"how must be 'prob' or 'logit', got {how!r}")
    return scores.view(-1, num_views, scores.shape[-1]).mean(1)


class VideoDataPreprocessor(BaseDataPreprocessor):
    """Device transfer + ``(x - mean) / std`` with mean/std in 0-255 units over the channel axis (``C`` of
    ``[..., C, T, H, W]``)."""

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1), False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        data["inputs"] = (data["inputs"].float() - self.mean) / self.std
        return data


class VideoRecognizer(BaseModel):
    """``backbone`` (a ``dict(type=ResNetRS, ...)`` the runner completes) as a video classifier.

    ``label_smoothing`` is the Table 5 toggle of that name; ``view_batch`` bounds how many test views go through
    the network at once (30 views of 32x256x256 do not fit one forward on most devices).
    """

    def __init__(self, backbone: dict, *, label_smoothing: float = 0.0, view_average: str = "prob",
                 view_batch: int = 8, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type=VideoDataPreprocessor),
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone) if isinstance(backbone, dict) else backbone
        self.label_smoothing, self.view_average, self.view_batch = label_smoothing, view_average, view_batch

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or x.shape[0] <= self.view_batch:
            return self.backbone(x)
        return torch.cat([self.backbone(c) for c in x.split(self.view_batch)])

    def forward(self, inputs: torch.Tensor, data_samples: dict[str, torch.Tensor] | None = None,
                mode: str = "tensor") -> Any:
        views = inputs.shape[1] if inputs.ndim == 6 else 1
        x = inputs.flatten(0, 1) if inputs.ndim == 6 else inputs
        logits = self._logits(x)
        if mode == "tensor":
            return logits
        labels = data_samples["label"].long()
        if mode == "loss":
            if views > 1:
                labels = labels.repeat_interleave(views)
            return {"loss": F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)}
        if mode == "predict":
            scores = average_views(logits, views, self.view_average)
            valid = data_samples.get("valid", torch.ones_like(labels, dtype=torch.bool))
            return [{"pred_score": s.cpu(), "label": int(y), "valid": bool(v)}
                    for s, y, v in zip(scores, labels, valid)]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")
