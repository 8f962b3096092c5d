"""TF1 ``resize_bicubic`` (tasks/_tf_resize.py) against outputs of real TensorFlow 2.21 (``tensorflow-cpu``,
``tf.compat.v1.image.resize_bicubic(images, size)``, i.e. align_corners=False, half_pixel_centers=False), computed
once in a scratch environment and pasted here (TF is no dependency). The inputs are written out or built from a
formula, so the test needs no random generator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rs_transfer.tasks._tf_resize import RESIZE_METHODS, resize, resize_tf1_bicubic, tf1_taps, to_uint8

A = [[172, 47, 117, 192, 67, 251, 195], [103, 9, 211, 21, 242, 36, 87], [70, 216, 88, 140, 58, 193, 230],
     [39, 87, 174, 88, 81, 165, 25], [77, 72, 9, 148, 115, 208, 243]]
TF_A_3x4 = [[172.0, 88.8359375, 119.28125, 257.71875],
            [79.99398040771484, 136.97808837890625, 107.63577270507812, 151.2389373779297],
            [47.505123138427734, 121.17674255371094, 87.19273376464844, 160.26443481445312]]
TF_A_2x11 = [[172.0, 82.70154571533203, 47.935272216796875, 106.89922332763672, 176.96559143066406,
              175.3692169189453, 71.47887420654297, 141.5491180419922, 257.2201232910156, 216.4481201171875,
              188.81431579589844],
             [47.84375, 133.1918182373047, 177.05911254882812, 139.2680206298828, 130.436279296875,
              104.1453857421875, 47.05315399169922, 110.81230926513672, 192.4882049560547, 143.46337890625,
              112.82294464111328]]
# (i*i*7 + j*13 + i*j*3) % 256 on a 23 x 31 grid, shrunk to 9 x 12 (TF, rounded to 4 decimals)
TF_PATTERN_9x12 = [
    [0.0, 33.3168, 67.7731, 100.1406, 134.8113, 167.5083, 201.5, 236.7049, -2.0127, 46.8594, 79.2269, 113.6832],
    [44.3747, 97.235, 155.692, 247.5655, 121.6379, 32.4486, 110.7128, 188.3465, 123.4418, 124.8814, 60.029, 124.1906],
    [187.609, 86.9662, 65.6555, 153.4677, 200.9388, 41.901, 110.5422, 165.269, 265.9734, 66.4125, 108.7352,
     205.2747],
    [165.0504, 51.7829, 63.5711, 205.525, 89.9116, 121.9913, 106.0384, 143.3761, 167.2322, 6.2175, 161.9736, 167.091],
    [175.1139, 52.4502, 126.467, 85.3562, 86.0372, 247.2553, 58.6055, 210.6029, 33.802, 152.4548, 95.3933, 122.5696],
    [186.5052, 25.433, 193.0098, 47.4409, 200.6465, 67.8477, 202.7181, 82.3642, 245.4489, 91.627, 241.3237, 98.7486],
    [8.0326, 212.273, 67.3983, 273.568, 123.2136, 33.0722, 194.4435, 69.0021, 181.9859, 118.8199, 22.7779, 180.1427],
    [222.7235, 135.1666, 33.3101, 263.0933, 155.6391, 54.6123, 114.1434, 148.4719, 51.1268, 198.1128, 142.5107,
     50.2995],
    [139.6172, 230.9616, 134.9813, 82.2499, 73.0715, 212.6786, 118.2735, 30.8022, 196.3784, 191.981, 119.4722,
     143.8624]]
# (i*61 + j*47 + i*j*5) % 256 on 4 x 5, enlarged to 7 x 10
TF_UP_7x10 = [
    [0.0, 19.0938, 47.0, 70.5, 94.0, 117.5, 141.0, 168.9062, 188.0, 192.4062],
    [28.9799, 49.0386, 78.3553, 100.5244, 127.7307, 182.2896, 203.9705, 148.131, 77.9966, 66.1865],
    [72.3626, 93.5523, 125.294, 156.6443, 181.5719, 214.2138, 200.2497, 105.8573, 7.9628, -10.0641],
    [101.8811, 121.7428, 157.2321, 219.1875, 240.5795, 170.1055, 79.5922, 52.7352, 56.0632, 53.8574],
    [144.7927, 175.0509, 203.661, 219.5477, 194.8709, 107.1683, 37.401, 66.0706, 124.2658, 132.4094],
    [176.4328, 222.5041, 237.8945, 159.2902, 74.2633, 66.4512, 101.4714, 136.4263, 166.2797, 172.3555],
    [189.4013, 241.3205, 251.926, 139.2376, 31.5863, 49.7623, 120.9754, 160.618, 183.5001, 189.3618]]
# a 6 x 6 RGB image (HWC) shrunk to 4 x 3: channels are resized independently
B = [[[197, 254, 79], [175, 192, 82], [99, 216, 177], [243, 29, 147], [147, 142, 167], [32, 193, 9]],
     [[185, 127, 32], [31, 202, 244], [151, 163, 254], [203, 114, 183], [28, 34, 128], [128, 164, 53]],
     [[133, 38, 232], [244, 17, 79], [132, 105, 42], [186, 31, 120], [1, 65, 231], [169, 57, 35]],
     [[102, 119, 11], [174, 82, 91], [128, 142, 99], [53, 140, 121], [170, 84, 203], [68, 6, 196]],
     [[47, 127, 244], [131, 204, 100], [180, 232, 78], [143, 148, 227], [186, 23, 207], [141, 117, 85]],
     [[48, 49, 69], [169, 163, 192], [95, 197, 94], [0, 113, 178], [36, 162, 48], [93, 131, 98]]]
TF_B_4x3 = [[[197.0, 254.0, 79.0], [99.0, 216.0, 177.0], [147.0, 142.0, 167.0]],
            [[160.78125, 63.0, 148.3125], [146.75, 125.5625, 149.875], [-12.5, 37.59375, 178.46875]],
            [[102.0, 119.0, 11.0], [128.0, 142.0, 99.0], [170.0, 84.0, 203.0]],
            [[42.34375, 88.75, 178.34375], [142.375, 222.9375, 84.03125], [112.5, 86.78125, 127.875]]]


def _pattern(h: int, w: int, f) -> torch.Tensor:   # noqa: ANN001  (a formula of the row and column index)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return torch.from_numpy((f(i, j) % 256).astype(np.uint8))


def test_matches_tensorflow_resize_bicubic() -> None:
    a = torch.tensor(A, dtype=torch.uint8)
    assert np.allclose(resize_tf1_bicubic(a, (3, 4)).numpy(), TF_A_3x4, atol=1e-4)
    assert np.allclose(resize_tf1_bicubic(a, (2, 11)).numpy(), TF_A_2x11, atol=1e-4)
    assert torch.equal(resize_tf1_bicubic(a, (5, 7)), a.float())            # same size: TF returns the input
    down = resize_tf1_bicubic(_pattern(23, 31, lambda i, j: i * i * 7 + j * 13 + i * j * 3), (9, 12))
    assert np.allclose(down.numpy(), TF_PATTERN_9x12, atol=2e-4)
    up = resize_tf1_bicubic(_pattern(4, 5, lambda i, j: i * 61 + j * 47 + i * j * 5), (7, 10))
    assert np.allclose(up.numpy(), TF_UP_7x10, atol=2e-4)
    rgb = torch.tensor(B, dtype=torch.uint8).permute(2, 0, 1)                # CHW, as the pipeline carries it
    assert np.allclose(resize_tf1_bicubic(rgb, (4, 3)).permute(1, 2, 0).numpy(), TF_B_4x3, atol=1e-4)
    batch = torch.stack([rgb, rgb.flip(0)])                                    # any leading dimensions
    assert torch.equal(resize_tf1_bicubic(batch, (4, 3))[1], resize_tf1_bicubic(rgb.flip(0), (4, 3)))


def test_kernel_is_tf1_legacy() -> None:
    """No half-pixel offset (output 0 reads input 0 exactly), edge taps clamped, Keys a = -0.75: at delta 0.5 the
    weights are (a/8, 1/2 - a/8, 1/2 - a/8, a/8) = (-0.09375, 0.59375, ...), which a = -0.5 (-0.0625) would not give."""
    index, weight = tf1_taps(4, 2)                      # positions 0 and 2: delta 0
    assert index.tolist() == [[0, 0, 1, 2], [1, 2, 3, 3]] and weight.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]
    index, weight = tf1_taps(3, 2)                      # position 1.5: delta 0.5
    assert index.tolist()[1] == [0, 1, 2, 2]
    assert weight[1].tolist() == pytest.approx([-0.09375, 0.59375, 0.59375, -0.09375])
    assert np.allclose(weight.sum(1), 1.0, atol=1e-6)


def test_uint8_conversion_and_named_methods() -> None:
    x = torch.tensor([-12.5, 0.4, 99.5, 99.7, 254.6, 257.7])
    assert to_uint8(x, "truncate").tolist() == [0, 0, 99, 99, 254, 255]      # tf.clip_by_value + tf.cast
    assert to_uint8(x, "nearest").tolist() == [0, 0, 100, 100, 255, 255]
    img = _pattern(23, 31, lambda i, j: i * i * 7 + j * 13 + i * j * 3).expand(3, 23, 31)
    tf1 = resize(img, (9, 12), "tf1-bicubic", "truncate")
    assert torch.equal(tf1, to_uint8(resize_tf1_bicubic(img, (9, 12)), "truncate"))
    aa = resize(img, (9, 12), "bicubic-antialias")
    assert aa.dtype == torch.uint8 and (aa.float() - tf1.float()).abs().mean() > 10   # not the same kernel
    assert set(RESIZE_METHODS) == {"tf1-bicubic", "bicubic-antialias"}
    with pytest.raises(ValueError, match="tf1-bicubic"):
        resize(img, (9, 12), "bicubic")
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(x, "floor")


def test_imagenet_transforms_resize_as_tf_by_default() -> None:
    """The RS pipeline (train crop, eval crop, device path) resizes with TF1's kernel unless told otherwise; train
    crops followed by RandAugment are truncated as TF casts them, eval crops rounded."""
    from rs_transfer.tasks._imagenet_data import TFTrainCrop, eval_transform, make_device_transform, train_transform

    img = _pattern(40, 52, lambda i, j: i * i * 7 + j * 13 + i * j * 3).expand(3, 40, 52).contiguous()
    side = int(16 / (16 + 32) * 40)                                               # TF: 13 px of the 40 px side
    top, left = (40 - side + 1) // 2, (52 - side + 1) // 2
    want = to_uint8(resize_tf1_bicubic(img[:, top:top + side, left:left + side], (16, 16)), "nearest")
    assert torch.equal(eval_transform(img, 16, 32), want)
    other = eval_transform(img, 16, 32, "bicubic-antialias")
    assert not torch.equal(other, want)
    assert torch.equal(make_device_transform(16, 32).evaluate(img), want)                  # decode="device" too
    assert make_device_transform(16, 32, resize="bicubic-antialias").train.transforms[0].resize == "bicubic-antialias"
    crop = train_transform(16, dict(num_ops=0, magnitude=10)).transforms[0]
    assert isinstance(crop, TFTrainCrop) and (crop.resize, crop.rounding) == ("tf1-bicubic", "truncate")
    assert train_transform(16, None).transforms[0].rounding == "nearest"
    assert train_transform(16, None, resize="bicubic-antialias").transforms[0].resize == "bicubic-antialias"
