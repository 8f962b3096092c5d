"""Resizing crops as the ResNet-RS input pipeline does, as named choices (``resize=`` of the ImageNet datasets).

- ``"tf1-bicubic"``: TF1's ``tf.image.resize_bicubic`` (``align_corners=False``, ``half_pixel_centers=False``), what
  tensorflow/tpu ``resnet_preprocessing.py`` calls on every training and eval crop at the ResNet-RS release, so the
  released TF weights were trained and evaluated on it. It does not anti-alias: a 2x downscale samples 4 taps
  around each output pixel and ignores the rest. Kernel (``tensorflow/core/kernels/image/resize_bicubic_op.cc``,
  legacy path): output pixel ``x`` reads input coordinate ``x * in / out`` (float32, no half-pixel offset), taps at
  ``floor - 1 .. floor + 2`` clamped to the image (edge pixels repeat), Keys cubic weights with ``a = -0.75`` (the
  legacy coefficient; ``-0.5`` is only used with half-pixel centres) looked up in a 1024-entry table
  (``lrintf(delta * 1024)``), rows first, then columns, float32. The result is float and may leave [0, 255].
- ``"bicubic-antialias"``: torchvision's bicubic with anti-aliasing (PIL-like; ``a = -0.5``, the kernel widened by
  the scale when shrinking). What this project used before; 3.9-7.5 grey levels away from TF's on average for the
  usual ImageNet downscales.

Both return uint8, as our pipeline carries images until the device normalises them. TF's float output is made uint8
the way tensorflow/tpu does before RandAugment (clip to [0, 255], ``tf.cast`` truncates: ``rounding="truncate"``);
where TF feeds the float straight to the network (no RandAugment: eval, vanilla recipe) the nearest uint8
(``rounding="nearest"``, at most half a grey level off, plus the clipped overshoot) is the closest we carry.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

RESIZE_METHODS = ("tf1-bicubic", "bicubic-antialias")
TABLE_SIZE = 1024            # kTableSize
TF1_CUBIC_A = -0.75          # legacy (no half-pixel centres) coefficient of GetCoeffsTable


def _coeffs_table(a: float = TF1_CUBIC_A) -> np.ndarray:
    """``InitCoeffsTable``: (TABLE_SIZE + 1, 2) float32; [i, 0] the weight at distance i/1024, [i, 1] at 1 + i/1024."""
    x = (np.arange(TABLE_SIZE + 1, dtype=np.float32) / np.float32(TABLE_SIZE)).astype(np.float64)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    x1 = x + 1.0
    far = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


_TABLE = _coeffs_table()


@functools.lru_cache(maxsize=512)
def tf1_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)``, each (out_size, 4): the four input taps of every output position and their weights,
    exactly as ``GetWeightsAndIndices<LegacyScaler, false>`` computes them (float32 scale and position)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be >= 1, got {in_size} -> {out_size}")
    scale = np.float32(in_size) / np.float32(out_size)
    pos = np.arange(out_size, dtype=np.float32) * scale                  # LegacyScaler: x * scale, float32
    loc = np.floor(pos).astype(np.int64)
    delta = (pos - loc.astype(np.float32)).astype(np.float32)
    offset = np.rint(delta * np.float32(TABLE_SIZE)).astype(np.int64)    # lrintf: half to even
    weight = np.stack([_TABLE[offset, 1], _TABLE[offset, 0], _TABLE[TABLE_SIZE - offset, 0],
                       _TABLE[TABLE_SIZE - offset, 1]], axis=1)
    index = np.clip(loc[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return index, weight


def _interpolate(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    """One separable pass along ``dim``: w0 v0 + w1 v1 + w2 v2 + w3 v3 in float32, in TF's order. The four taps of
    every output are gathered in one ``index_select`` (on uint8 for the first pass: a quarter of the bytes), then
    converted; the result is float32."""
    index, weight = tf1_taps(x.shape[dim], out_size)
    taps = x.index_select(dim, torch.from_numpy(index.reshape(-1)).to(x.device))
    taps = taps.view(*x.shape[:dim], out_size, 4, *x.shape[dim + 1:]).to(torch.float32)
    w = torch.from_numpy(weight).to(x.device)
    shape = [1] * x.ndim
    shape[dim] = out_size
    out = taps.select(dim + 1, 0) * w[:, 0].view(shape)
    for k in range(1, 4):
        out = out + taps.select(dim + 1, k) * w[:, k].view(shape)
    return out


def resize_tf1_bicubic(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_bicubic`` of a (..., H, W) tensor to ``size`` = (h, w): float32, unclipped, on ``img``'s device.
    Rows are interpolated first (TF's ``ComputeYInterpolation``), then columns; a 300 x 400 crop to 224 x 224 takes
    ~2-4 ms on one CPU core (torchvision's anti-aliased bicubic ~1-2 ms)."""
    h, w = int(size[0]), int(size[1])
    if img.ndim < 2:
        raise ValueError(f"resize_tf1_bicubic takes (..., H, W), got shape {tuple(img.shape)}")
    return _interpolate(_interpolate(img, img.ndim - 2, h), img.ndim - 1, w)


def to_uint8(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """TF's float resize output as uint8: clip to [0, 255], then ``truncate`` (``tf.cast``, before RandAugment) or
    ``nearest``."""
    x = x.clamp(0.0, 255.0)
    if rounding == "nearest":
        x = x.round()
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'truncate' or 'nearest', got {rounding!r}")
    return x.to(torch.uint8)


def check_method(method: str) -> str:
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize={method!r}: use one of {', '.join(RESIZE_METHODS)} ('tf1-bicubic': TF1 "
                         "resize_bicubic, the RS pipeline's; 'bicubic-antialias': torchvision's anti-aliased)")
    return method


def resize(img: torch.Tensor, size: tuple[int, int], method: str, rounding: str = "nearest") -> torch.Tensor:
    """A uint8 (..., H, W) image resized to ``size`` with the named ``method`` (module docstring); uint8 out."""
    check_method(method)
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    if method == "tf1-bicubic":
        return to_uint8(resize_tf1_bicubic(img, size), rounding)
    import torchvision.transforms.v2.functional as F
    from torchvision.transforms import InterpolationMode

    return F.resize(img, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
