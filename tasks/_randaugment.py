"""RandAugment as TF Model Garden defines it (``official/vision/ops/augment.py``: class ``RandAugment``,
``level_to_arg``, ``NAME_TO_FUNC``), on uint8 CHW torch tensors (CPU or CUDA), for the ResNet-RS pre-training recipe.

Scale: a magnitude ``m`` is TF's level, read as ``m / _MAX_LEVEL`` with ``_MAX_LEVEL = 10.``; it may exceed 10 (the
RS recipe uses 15 above depth 50: Rotate 45 deg, Shear 0.45, Translate 1.5 x ``translate_const`` px).

Choices where TF's own code bases disagree, or where TF's result depends on its version (all on purpose):

- Op choice (``policy``): ``"tpu"`` (default) is the authors' code, tensorflow/tpu ``distort_image_with_randaugment``
  (``models/official/efficientnet/autoaugment.py``, which the ResNet-RS ``resnet_preprocessing.py`` imports): each
  layer draws one of the 16 ``available_ops`` uniformly and always applies it. ``"model-garden"`` is TF Model
  Garden's later ``RandAugment`` class: ``tf.switch_case`` with ``maxval=len(available_ops) + 1`` and an identity
  ``default`` branch, so 1 layer in 17 does nothing. Either way the chosen op is applied (``prob_to_apply=None``,
  the default: the per-op ``prob`` drawn in [0.2, 0.8] only reaches ``PROB_FUNCS``, none of which is in
  RandAugment).
- Fill 128 grey where a geometric op leaves no source pixel (``wrap``/``unwrap`` with ``replace_value=[128] * 3``, as
  with tf.contrib / tfa ``transform``, constant fill). Model Garden's current ``transform`` calls keras'
  ``image_preprocessing.transform``, whose default ``fill_mode='reflect'`` mirrors the image instead (tensorflow/models
  issue #10493); that artefact is not reproduced.
- ``translate_const = 100`` px (the ``RandAugment`` class default and tensorflow/tpu's hparams). Model Garden's config
  dataclass ``common.RandAugment`` defaults to 10, which its ResNet-RS yaml files do not override.
- Solarize: threshold ``int(m / 10 * 256)``, compared with the uint8 image as TF does it: ``tf.where(image <
  threshold, ...)`` turns the Python int into a uint8 tensor, so the threshold wraps modulo 256 (checked in TF
  2.21): m = 10 gives 256 -> 0, every pixel inverted (Solarize is Invert); m = 15 gives 384 -> 128.
- Contrast: TF's degenerate image is ``sum(histogram) / 256`` = H * W / 256 (clipped to 255), *not* the mean grey
  level (a known TF quirk, reproduced: at 224 px it is 196, from 256 px on 255).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as F

MAX_LEVEL = 10.0        # TF _MAX_LEVEL
REPLACE = 128           # TF replace_value = [128] * 3
POLICIES = ("tpu", "model-garden")   # op choice: 16 ops (authors' tensorflow/tpu) or 16 + identity (Model Garden)
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")  # TF available_ops


def _round(x: torch.Tensor) -> torch.Tensor:
    """std::round (half away from zero), what TF's NEAREST projective transform uses; torch.round is half-to-even."""
    t = x.trunc()
    return torch.where((x - t).abs() == 0.5, t + x.sign(), torch.round(x))


def _project(img: torch.Tensor, a: tuple, b: tuple) -> torch.Tensor:
    """TF ``ImageProjectiveTransformV3`` (NEAREST, constant fill) + ``wrap``/``unwrap``: output pixel (x, y) reads
    input (round(a0 x + a1 y + a2), round(b0 x + b1 y + b2)); outside the image it is ``REPLACE``. float32 like TF."""
    c, h, w = img.shape
    ys = torch.arange(h, device=img.device, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, device=img.device, dtype=torch.float32).view(1, w)
    xi = _round(a[0] * xs + a[1] * ys + a[2])
    yi = _round(b[0] * xs + b[1] * ys + b[2])
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().view(-1)
    out = img.reshape(c, h * w)[:, idx].view(c, h, w)
    return torch.where(inside, out, REPLACE).to(torch.uint8)


def rotate(img: torch.Tensor, degrees: float) -> torch.Tensor:
    """TF ``wrapped_rotate``/``_convert_angles_to_transform``: about ((w-1)/2, (h-1)/2); degrees -> float32 radians."""
    _, h, w = img.shape
    ang = torch.tensor(degrees * (math.pi / 180.0), dtype=torch.float32, device=img.device)
    cos, sin = torch.cos(ang), torch.sin(ang)
    wm, hm = float(w - 1), float(h - 1)
    x_off = (wm - (cos * wm - sin * hm)) / 2.0
    y_off = (hm - (sin * wm + cos * hm)) / 2.0
    return _project(img, (cos, -sin, x_off), (sin, cos, y_off))


def shear_x(img: torch.Tensor, level: float) -> torch.Tensor:
    """TF ``shear_x``: transform [1, level, 0, 0, 1, 0]."""
    return _project(img, (1.0, level, 0.0), (0.0, 1.0, 0.0))


def shear_y(img: torch.Tensor, level: float) -> torch.Tensor:
    """TF ``shear_y``: transform [1, 0, 0, level, 1, 0]."""
    return _project(img, (1.0, 0.0, 0.0), (level, 1.0, 0.0))


def translate_x(img: torch.Tensor, pixels: float) -> torch.Tensor:
    """TF ``translate_x``: ``translate(image, [-pixels, 0])``, i.e. output x reads input x + pixels (float, rounded)."""
    return _project(img, (1.0, 0.0, pixels), (0.0, 1.0, 0.0))


def translate_y(img: torch.Tensor, pixels: float) -> torch.Tensor:
    """TF ``translate_y``: output y reads input y + pixels."""
    return _project(img, (1.0, 0.0, 0.0), (0.0, 1.0, pixels))


def blend(img1: torch.Tensor, img2: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``blend``: img1 + factor * (img2 - img1) in float32, clipped to [0, 255], truncated to uint8 (TF clips only
    when extrapolating; interpolated values are in range anyway)."""
    if factor == 0.0:
        return img1.expand_as(img2).to(torch.uint8)
    if factor == 1.0:
        return img2
    a, b = img1.to(torch.float32), img2.to(torch.float32)
    return (a + factor * (b - a)).clamp(0.0, 255.0).to(torch.uint8)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """TF ``tf.image.rgb_to_grayscale`` on uint8: x * (1/255) (float32), weights [0.2989, 0.5870, 0.1140], back to
    uint8 by ``convert_image_dtype`` (x 255.5, truncated); 1 channel."""
    f = img.to(torch.float32) * (1.0 / 255.0)
    g = f[0] * 0.2989 + f[1] * 0.5870 + f[2] * 0.1140
    return (g * 255.5).to(torch.uint8).unsqueeze(0)


def color(img: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``color`` (PIL ImageEnhance.Color): blend(grayscale, image)."""
    return blend(grayscale(img).expand_as(img), img, factor)


def contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``contrast``: the degenerate image is the constant ``sum(histogram of the grey image) / 256`` = H*W/256,
    clipped to [0, 255] and truncated, exactly as TF computes it (not PIL's mean grey level)."""
    _, h, w = img.shape
    mean = min(max(h * w / 256.0, 0.0), 255.0)
    return blend(torch.full_like(img, int(mean)), img, factor)


def brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``brightness`` = blend(zeros, image): factor * x, clipped, truncated; torchvision's is the same."""
    return F.adjust_brightness(img, factor)


def sharpness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``sharpness``: 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 (VALID), truncated to uint8, border pixels kept,
    then blend(degenerate, image). Computed in integers (floor(sum / 13)); TF's float32 conv can land 1 below where
    the sum is a multiple of 13. torchvision's ``adjust_sharpness`` rounds instead, so it is not used."""
    c, h, w = img.shape
    if h < 3 or w < 3:
        return img
    x = img.to(torch.int32)
    s = 4 * x[:, 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            s = s + x[:, dy:dy + h - 2, dx:dx + w - 2]
    degenerate = img.clone()
    degenerate[:, 1:-1, 1:-1] = torch.div(s, 13, rounding_mode="floor").to(torch.uint8)
    return blend(degenerate, img, factor)


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    """TF ``autocontrast``: per channel x * 255/(hi-lo) - lo * 255/(hi-lo) in float32, clipped, truncated; a flat
    channel is left as is. (torchvision divides by (hi-lo)/255 instead, which can truncate one level lower.)"""
    f = img.to(torch.float32)
    lo, hi = f.amin(dim=(-2, -1), keepdim=True), f.amax(dim=(-2, -1), keepdim=True)
    rng = hi - lo
    scale = 255.0 / torch.where(rng > 0, rng, torch.ones_like(rng))
    out = (f * scale + (-lo * scale)).clamp(0.0, 255.0).to(torch.uint8)
    return torch.where(rng > 0, out, img)


def posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    """TF ``posterize``: (x >> (8 - bits)) << (8 - bits); TF's shift kernels clamp the shift to [0, 7], so bits 0
    keeps 1 bit and bits > 8 keeps all; torchvision's mask is the same for 1..8 bits."""
    shift = min(max(8 - int(bits), 0), 7)
    return F.posterize(img, 8 - shift)


def solarize(img: torch.Tensor, threshold: int) -> torch.Tensor:
    """TF ``solarize``: where(x < threshold, x, 255 - x) with the threshold cast to uint8 as TF casts it (modulo
    256: 256 -> 0 inverts every pixel, 384 -> 128). torchvision's op is the same for 0..255."""
    return F.solarize(img, int(threshold) % 256)


def solarize_add(img: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    """TF ``solarize_add``: pixels below ``threshold`` get ``addition`` added (int64, clipped to [0, 255])."""
    added = (img.to(torch.int64) + int(addition)).clamp(0, 255).to(torch.uint8)
    return torch.where(img < threshold, added, img)


def cutout(img: torch.Tensor, pad_size: int) -> torch.Tensor:
    """TF ``cutout``/``_fill_rectangle``: centre (cy, cx) uniform over the image (height drawn first), rows
    [max(0, cy - pad), min(h, cy + pad)) x the same for columns set to ``REPLACE``."""
    _, h, w = img.shape
    cy, cx = int(torch.randint(h, ()).item()), int(torch.randint(w, ()).item())
    out = img.clone()
    out[:, max(0, cy - pad_size):min(h, cy + pad_size), max(0, cx - pad_size):min(w, cx + pad_size)] = REPLACE
    return out


NAME_TO_FUNC: dict[str, Callable[..., torch.Tensor]] = {
    "AutoContrast": autocontrast, "Equalize": F.equalize, "Invert": F.invert, "Rotate": rotate,
    "Posterize": posterize, "Solarize": solarize, "Color": color, "Contrast": contrast, "Brightness": brightness,
    "Sharpness": sharpness, "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
    "TranslateY": translate_y, "Cutout": cutout, "SolarizeAdd": solarize_add}


def _randomly_negate(v: float) -> float:
    """TF ``_randomly_negate_tensor``: keep when floor(u + 0.5) is 1 (u >= 0.5), else negate: 50% each."""
    return v if torch.rand(()).item() >= 0.5 else -v


def level_to_arg(name: str, level: float, translate_const: float, cutout_const: float) -> tuple:
    """TF ``level_to_arg`` for the RandAugment ops (Python floats, as TF computes them from a float magnitude):
    Rotate (l/10)*30 deg, Shear (l/10)*0.3 and Translate (l/10)*translate_const, each negated half the time
    (``_rotate/_shear/_translate_level_to_arg``); Color/Contrast/Brightness/Sharpness (l/10)*1.8 + 0.1, never negated
    (``_enhance_level_to_arg``); Posterize int((l/10)*4) bits, Solarize threshold int((l/10)*256), SolarizeAdd
    addition int((l/10)*110), Cutout half-size int((l/10)*cutout_const) (``_mult_to_arg``)."""
    r = level / MAX_LEVEL
    if name == "Rotate":
        return (_randomly_negate(r * 30.0),)
    if name in ("ShearX", "ShearY"):
        return (_randomly_negate(r * 0.3),)
    if name in ("TranslateX", "TranslateY"):
        return (_randomly_negate(r * float(translate_const)),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (r * 1.8 + 0.1,)
    mult = {"Posterize": 4, "Solarize": 256, "SolarizeAdd": 110, "Cutout": cutout_const}.get(name)
    return () if mult is None else (int(r * mult),)


class TFRandAugment:
    """TF Model Garden ``RandAugment`` for one uint8 CHW image (CPU or CUDA tensor; random numbers from torch's
    global CPU generator, so mmengine's seeding makes it reproducible and a CUDA image never syncs for them).

    ``num_ops``: layers (TF ``num_layers``); ``magnitude``: TF level, 0 or more (float allowed, not limited to 10);
    ``translate_const`` (px at level 10) and ``cutout_const`` (half-size at level 10): TF's ``RandAugment`` defaults;
    ``prob_to_apply``: TF's optional per-layer probability (None: always, TF's default); ``policy``: ``"tpu"``
    (every layer applies one of the 16 ops, the authors' code) or ``"model-garden"`` (1 layer in 17 does nothing)."""

    def __init__(self, num_ops: int = 2, magnitude: float = 10.0, translate_const: float = 100.0,
                 cutout_const: float = 40.0, prob_to_apply: float | None = None, policy: str = "tpu") -> None:
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"RandAugment num_ops must be an integer >= 0, got {num_ops!r}")
        for name, v in (("magnitude", magnitude), ("translate_const", translate_const),
                        ("cutout_const", cutout_const)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"RandAugment {name} must be a finite number >= 0 (TF scale: level / 10), "
                                 f"got {v!r}")
        if prob_to_apply is not None and not 0.0 <= float(prob_to_apply) <= 1.0:
            raise ValueError(f"RandAugment prob_to_apply must be in [0, 1] or None, got {prob_to_apply!r}")
        if policy not in POLICIES:
            raise ValueError(f"RandAugment policy must be one of {', '.join(POLICIES)} ('tpu': the authors' "
                             f"tensorflow/tpu op choice; 'model-garden': plus an identity branch), got {policy!r}")
        self.policy = policy
        self.num_ops, self.magnitude = num_ops, float(magnitude)
        self.translate_const, self.cutout_const = float(translate_const), float(cutout_const)
        self.prob_to_apply = None if prob_to_apply is None else float(prob_to_apply)

    def apply_op(self, name: str, img: torch.Tensor) -> torch.Tensor:
        """One named op at this magnitude (its random sign / cutout position drawn now)."""
        args = level_to_arg(name, self.magnitude, self.translate_const, self.cutout_const)
        return NAME_TO_FUNC[name](img, *args)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError("TFRandAugment takes one uint8 RGB image shaped (3, H, W), got "
                             f"{getattr(img, 'dtype', type(img))} {tuple(getattr(img, 'shape', ()))}")
        choices = len(OPS) + (self.policy == "model-garden")   # Model Garden: len(OPS) is the identity branch
        for _ in range(self.num_ops):
            k = int(torch.randint(choices, ()).item())
            if k == len(OPS):
                continue
            if self.prob_to_apply is not None and torch.rand(()).item() >= self.prob_to_apply:
                continue
            img = self.apply_op(OPS[k], img)
        return img

    def __repr__(self) -> str:
        return (f"TFRandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, translate_const="
                f"{self.translate_const}, cutout_const={self.cutout_const}, prob_to_apply={self.prob_to_apply}, "
                f"policy={self.policy!r})")
