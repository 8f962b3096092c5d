"""TF's distorted crop and the ImageNet crops, against figures worked out by hand from the reference's definitions:
``GenerateRandomCrop`` in TF's ``sample_distorted_bounding_box_op.cc`` and ``_decode_and_center_crop`` /
``_decode_and_random_crop`` in tensorflow/tpu ``resnet_preprocessing.py``."""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from rs_transfer.tasks._tf_crop import generate_crop, sample_crop


def scripted(*values: float) -> "callable":
    it: Iterator[float] = iter(values)
    return lambda: next(it)


def test_generate_crop_follows_the_kernel() -> None:
    # 375 x 500, ar 1, area 0.08-1: height from round(sqrt(15000)) = 122 to min(round(sqrt(187500)) = 433, 375).
    # Draw 0: h = 122, w = 122, area 14884 < 15000 -> one step up: 123 x 123 = 15129.
    assert generate_crop(375, 500, (0.08, 1.0), 1.0, scripted(0.0, 0.0, 0.0)) == (0, 0, 123, 123)
    # Draw -> 1: h = 122 + 253 = 375 = H (top 0, no draw); left = Uniform(500 - 375) = int(0.9999 * 125) = 124:
    # TF's Uniform(n) is in [0, n), so the crop stops one pixel short of the right edge.
    assert generate_crop(375, 500, (0.08, 1.0), 1.0, scripted(0.9999, 0.9999)) == (0, 124, 375, 375)
    # A tall image: round(173 * 4/3) = 231 > 100 lowers max height to int((100.5 - 1e-7) / (4/3)) = 75 (w 100).
    assert generate_crop(400, 100, (0.08, 1.0), 4 / 3, scripted(0.9999, 0.5)) == (162, 0, 75, 100)
    # Nothing fits: a 10 x 1000 strip cannot hold 8 % of its area at aspect 1.
    assert generate_crop(10, 1000, (0.08, 1.0), 1.0, scripted(0.5)) is None


def test_sample_crop_rejects_under_min_object_covered_and_draws_uniform_sides() -> None:
    torch.manual_seed(0)
    boxes = [sample_crop(375, 500, attempts=10) for _ in range(4000)]
    assert all(b is not None for b in boxes)
    frac = np.array([b[2] * b[3] / (375 * 500) for b in boxes])
    ar = np.array([b[3] / b[2] for b in boxes])
    assert frac.min() >= 0.1 and frac.max() <= 1.0                  # min_object_covered 0.1 beats area 0.08
    assert (ar.min() > 0.74) and (ar.max() < 1.345)
    assert all(b[0] + b[2] <= 375 and b[1] + b[3] <= 500 for b in boxes)
    # On a square image (no side limits either orientation): the side is uniform, not the area. For ar 1 the
    # height is uniform on [317, 1000] (316^2 < 0.1 of the image), median area ((317 + 1000) / 2)^2 / 1e6 = 0.43;
    # the spread of aspect ratios lowers it to ~0.39. torchvision's uniform area gives ~0.48 here.
    sq = [sample_crop(1000, 1000, attempts=10) for _ in range(4000)]
    assert 0.35 < float(np.median([h * w / 1e6 for _, _, h, w in sq])) < 0.43
    # Aspect ratio uniform in [3/4, 4/3]: median (3/4 + 4/3) / 2 = 1.042 (torchvision's log-uniform: 1.0).
    assert abs(float(np.median([w / h for _, _, h, w in sq])) - 1.042) < 0.015


def test_sample_crop_fails_as_tf_does() -> None:
    assert sample_crop(10, 1000, attempts=10) is None          # TF returns the whole image; callers decide
    calls = []

    def rand() -> float:
        calls.append(1)
        return 0.5

    assert sample_crop(10, 1000, attempts=7, rand=rand) is None and len(calls) == 7   # one aspect draw per attempt


def test_imagenet_eval_crop_is_tf_geometry() -> None:
    from rs_transfer.tasks._imagenet_data import centre_box, eval_transform

    # side int(224 / 256 * 305) = int(266.875) = 266 (tf.cast truncates); offsets (375 - 266 + 1) // 2 = 55 and
    # (305 - 266 + 1) // 2 = 20.
    assert centre_box(375, 305, 224, 32) == (55, 20, 266, 266)
    # 256 x 321 at 224: side 224 = the output, so the crop is returned as is; left = (321 - 224 + 1) // 2 = 49
    # (torchvision's center_crop would take 48).
    img = torch.arange(3 * 256 * 321, dtype=torch.int64).reshape(3, 256, 321).remainder(251).to(torch.uint8)
    assert torch.equal(eval_transform(img, 224, 32), img[:, 16:240, 49:273])


def test_imagenet_train_crop_falls_back_to_the_centre_crop() -> None:
    from rs_transfer.tasks._imagenet_data import TFTrainCrop, eval_transform

    strip = torch.randint(0, 256, (3, 10, 1000), dtype=torch.uint8)    # no distorted crop fits
    assert torch.equal(TFTrainCrop(8, 32)(strip), eval_transform(strip, 8, 32))
    img = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    torch.manual_seed(1)
    out = TFTrainCrop(224)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8


def test_cifar_inception_crop_is_tf_with_100_attempts() -> None:
    from rs_transfer.tasks.cifar100 import inception_crop

    np.random.seed(0)
    boxes = [inception_crop(32, 32) for _ in range(2000)]
    frac = np.array([h * w / 1024 for _, _, h, w in boxes])
    assert frac.min() >= 0.1 and all(t + h <= 32 and l + w <= 32 for t, l, h, w in boxes)
    # side uniform on [round(sqrt(0.08 * 1024)) = 9 .. 32] for ar 1: median area ~ (20.5 / 32)^2 = 0.41
    assert 0.33 < float(np.median(frac)) < 0.5
    assert inception_crop(2, 200) == (0, 0, 2, 200)          # nothing fits: SimCLR keeps the whole image


@pytest.mark.parametrize("side", [160, 192, 224, 256, 320])
def test_eval_crop_side_at_every_published_resolution(side: int) -> None:
    from rs_transfer.tasks._imagenet_data import centre_box

    top, left, h, w = centre_box(500, 375, side, 32)
    assert h == w == math.floor(side / (side + 32) * 375) and top == (500 - h + 1) // 2 and left == (375 - h + 1) // 2
