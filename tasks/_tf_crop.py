"""TF's random crop, ``tf.image.sample_distorted_bounding_box`` with the whole image as the only box: the training
crop of the ResNet-RS input pipeline (tensorflow/tpu ``resnet_preprocessing.py``) and of SimCLR's
``crop_and_resize`` (CIFAR fine-tuning).

It is not torchvision's ``RandomResizedCrop``, which draws the area uniformly and the aspect ratio log-uniformly.
TF's kernel (``tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc``, ``GenerateRandomCrop``), per
attempt:

- aspect ratio ``ar`` (w / h) uniform in the range;
- ``height`` from ``round(sqrt(min_area / ar))`` to ``max_height = round(sqrt(max_area / ar))`` (lowered until
  ``round(max_height * ar) <= W``, capped at ``H``), uniform over those integers: the crop's side, not its area, is
  uniform, so small crops are more frequent than with torchvision;
- ``width = round(height * ar)``; when rounding puts the area outside the range, height is moved by one once each
  way; the attempt fails if the box still breaks a bound;
- offsets ``Uniform(H - h)`` and ``Uniform(W - w)``: TF's ``Uniform(n)`` is in ``[0, n)``, so a crop never touches
  the bottom or right edge unless it spans the whole side (kept: it is what the reference trains on);
- ``min_object_covered = 0.1`` with the image as the box rejects crops under 10 % of the image, so the
  ``area_range`` of 0.08-1 works as 0.1-1.

``lrintf`` rounds half to even, as Python's ``round`` does.
"""
from __future__ import annotations

import math
from collections.abc import Callable

Box = tuple[int, int, int, int]   # (top, left, height, width)


def torch_random() -> float:
    """One uniform [0, 1) draw from torch's global RNG (seeded per data-loader worker)."""
    import torch

    return float(torch.rand(()))


def _uniform(n: int, rand: Callable[[], float]) -> int:
    """TF's ``Uniform(n)``: an integer in [0, n)."""
    return min(int(rand() * n), n - 1)


def generate_crop(height: int, width: int, area: tuple[float, float], ar: float,
                  rand: Callable[[], float]) -> Box | None:
    """One attempt of ``GenerateRandomCrop`` for a fixed aspect ratio ``ar``; None when it fails."""
    min_area, max_area = area[0] * width * height, area[1] * width * height
    h = round(math.sqrt(min_area / ar))
    max_h = round(math.sqrt(max_area / ar))
    if round(max_h * ar) > width:                 # the tallest crop whose rounded width still fits
        max_h = int((width + 0.5 - 1e-7) / ar)
        if round(max_h * ar) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += _uniform(max_h - h + 1, rand)
    w = round(h * ar)
    a = w * h
    if a < min_area:
        h += 1
        w = round(h * ar)
        a = w * h
    if a > max_area:
        h -= 1
        w = round(h * ar)
        a = w * h
    if a < min_area or a > max_area or w > width or h > height or w <= 0 or h <= 0:
        return None
    top = _uniform(height - h, rand) if h < height else 0
    left = _uniform(width - w, rand) if w < width else 0
    return top, left, h, w


def sample_crop(height: int, width: int, *, area: tuple[float, float] = (0.08, 1.0),
                aspect: tuple[float, float] = (3 / 4, 4 / 3), min_object_covered: float = 0.1,
                attempts: int = 10, rand: Callable[[], float] = torch_random) -> Box | None:
    """``(top, left, h, w)`` of TF's distorted crop, or None when every attempt failed (TF then returns the whole
    image; the ResNet pipeline replaces that by its centre crop, SimCLR keeps the whole image)."""
    for _ in range(attempts):
        ar = rand() * (aspect[1] - aspect[0]) + aspect[0]
        box = generate_crop(height, width, area, ar, rand)
        if box is not None and box[2] * box[3] >= min_object_covered * height * width:
            return box
    return None
