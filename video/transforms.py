"""Clip sampling and the few video transforms the recipe needs, written on plain tensors.

pytorchvideo 0.1.5's transforms import a torchvision module that no longer exists (STACK.md) and the whole set
needed here is five short functions, so they live here instead of behind a compatibility alias. Clips are
``[T, H, W, C]`` uint8 as decoded and ``[C, T, H, W]`` uint8 after :func:`to_cthw`; every spatial transform applies
the same crop to all frames of a clip. Every random function takes a ``generator``: the training dataset passes one
seeded per sample (video/sampler.py), so a clip's draws do not depend on workers or on a resume; without one they
use torch's global generator.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# ---- temporal sampling ---------------------------------------------------------------------------------------
def clip_indices(num_video_frames: int, num_frames: int, stride: int, start: int) -> list[int]:
    """``num_frames`` indices ``start, start+stride, ...``; a video shorter than the clip loops (TF Model Garden)."""
    return [(start + i * stride) % num_video_frames for i in range(num_frames)]


def random_clip(num_video_frames: int, num_frames: int, stride: int,
                generator: torch.Generator | None = None) -> list[int]:
    """Training: one clip at a uniformly random start among all starts that fit (start 0 if none fits)."""
    span = (num_frames - 1) * stride + 1
    start = int(torch.randint(0, max(num_video_frames - span, 0) + 1, (), generator=generator).item())
    return clip_indices(num_video_frames, num_frames, stride, start)


def uniform_clips(num_video_frames: int, num_frames: int, stride: int, num_clips: int) -> list[list[int]]:
    """Test: ``num_clips`` clips with starts evenly spaced from the first to the last start that fits."""
    span = (num_frames - 1) * stride + 1
    last = max(num_video_frames - span, 0)
    starts = [round(last * k / (num_clips - 1)) if num_clips > 1 else last // 2 for k in range(num_clips)]
    return [clip_indices(num_video_frames, num_frames, stride, s) for s in starts]


# ---- spatial transforms (on [T, H, W, C] uint8) -----------------------------------------------------------------
def to_cthw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[T, H, W, C] -> [C, T, H, W] (the layout Conv3d expects) as a VIEW of the decoded buffer: crops are then free,
    and :func:`resize` reads the frames in their decoded (channels-last) order without a copy. uint8 is kept so
    worker -> main copies stay small; call ``.contiguous()`` on the final clip."""
    return torch.as_tensor(frames).permute(3, 0, 1, 2)


def resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a [C, T, H, W] uint8 clip to ``size`` = (h, w).

    The frames go through ``F.interpolate`` as a channels-last uint8 batch [T, C, H, W] (torch's fast uint8 path, no
    float copy; 2.5x faster than float on a 32-frame clip); where a build lacks that kernel, in float.
    """
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    x = clip.permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last)  # frames as a batch: [T, C, H, W]
    try:
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    except RuntimeError:  # no uint8 kernel on this build/device
        y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        y = y.round_().clamp_(0, 255).to(torch.uint8)
    return y.permute(1, 0, 2, 3)


def short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(h, w) scaled so that the short side is ``short`` (aspect kept, rounded)."""
    scale = short / min(h, w)
    return max(short, round(h * scale)), max(short, round(w * scale))


def resize_short_side(clip: torch.Tensor, short: int) -> torch.Tensor:
    h, w = clip.shape[-2:]
    if min(h, w) == short:
        return clip
    return resize(clip, short_side_size(h, w, short))


def crop(clip: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    return clip[..., top:top + h, left:left + w]


def random_resized_crop(clip: torch.Tensor, size: int, area: tuple[float, float] = (0.08, 1.0),
                        aspect: tuple[float, float] = (0.5, 2.0), attempts: int = 10,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale jittering of the RS recipe: Inception-style crop (area fraction, log-uniform aspect) -> size x size."""
    h, w = clip.shape[-2:]
    log_a = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(attempts):
        target = h * w * float(torch.empty(()).uniform_(*area, generator=generator))
        ratio = math.exp(float(torch.empty(()).uniform_(*log_a, generator=generator)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=generator).item())
            left = int(torch.randint(0, w - cw + 1, (), generator=generator).item())
            return resize(crop(clip, top, left, ch, cw), (size, size))
    side = min(h, w)  # no valid sample: the central square (torchvision's fallback, aspect clamped to 1)
    return resize(crop(clip, (h - side) // 2, (w - side) // 2, side, side), (size, size))


def random_crop(clip: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random size x size window."""
    h, w = clip.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=generator).item())
    left = int(torch.randint(0, w - size + 1, (), generator=generator).item())
    return crop(clip, top, left, size, size)


def random_crop_of_short_side(clip: torch.Tensor, size: int, short: int,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Baseline augmentation (no scale jitter): a random ``size`` x ``size`` window of the clip resized to short side
    ``short``, computed as the corresponding window of the original (``size * min(h, w) / short`` pixels) resized
    once, so that only the crop is ever resized."""
    h, w = clip.shape[-2:]
    side = min(h, w, max(1, round(size * min(h, w) / short)))
    return resize(random_crop(clip, side, generator), (size, size))


def random_flip(clip: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    return clip.flip(-1) if float(torch.rand((), generator=generator)) < p else clip


def three_crops(clip: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Test views: size x size crops at the start, centre and end of the long side (the short side is ``size``)."""
    h, w = clip.shape[-2:]
    if w >= h:
        return [crop(clip, (h - size) // 2, left, size, size) for left in (0, (w - size) // 2, w - size)]
    return [crop(clip, top, (w - size) // 2, size, size) for top in (0, (h - size) // 2, h - size)]


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    h, w = clip.shape[-2:]
    return crop(clip, (h - size) // 2, (w - size) // 2, size, size)
