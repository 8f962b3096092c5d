"""TF Model Garden RandAugment (tasks/_randaugment.py) against values worked out by hand from TF's definitions
(``official/vision/ops/augment.py``: ``level_to_arg``, ``wrapped_rotate``, ``translate_x``, ``shear_x``, ``blend``,
``contrast``, ``equalize``, ...). Small images; every test is deterministic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rs_transfer.tasks import _randaugment as ra
from rs_transfer.tasks._randaugment import OPS, TFRandAugment, level_to_arg


def _img(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def _abs_arg(name: str, m: float, translate_const: float = 100.0, cutout_const: float = 40.0) -> float:
    return abs(level_to_arg(name, m, translate_const, cutout_const)[0])


def test_level_to_arg_is_tf_scale() -> None:
    """m / 10 with _MAX_LEVEL = 10, beyond 10 allowed: the RS magnitude 15 means Rotate 45 deg, Shear 0.45,
    Translate 150 px (translate_const 100), enhance factor 2.8, posterize 6 bits, solarize threshold 384 (128 in uint8),
    SolarizeAdd +165, Cutout half-size 60 (cutout_const 40)."""
    assert _abs_arg("Rotate", 15) == pytest.approx(45.0) and _abs_arg("Rotate", 10) == pytest.approx(30.0)
    assert _abs_arg("ShearX", 15) == pytest.approx(0.45) and _abs_arg("ShearY", 10) == pytest.approx(0.3)
    assert _abs_arg("TranslateX", 15) == pytest.approx(150.0) and _abs_arg("TranslateY", 7, 20.0) == pytest.approx(14)
    for op in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert level_to_arg(op, 15, 100, 40) == (pytest.approx(2.8),) and level_to_arg(op, 0, 100, 40)[0] == 0.1
    assert [level_to_arg("Posterize", m, 100, 40)[0] for m in (0, 2.4, 2.5, 5, 10, 15)] == [0, 0, 1, 2, 4, 6]
    assert [level_to_arg("Solarize", m, 100, 40)[0] for m in (0, 5, 10, 15)] == [0, 128, 256, 384]
    assert [level_to_arg("SolarizeAdd", m, 100, 40)[0] for m in (5, 10, 15)] == [55, 110, 165]
    assert level_to_arg("Cutout", 15, 100, 40) == (60,) and level_to_arg("Cutout", 10, 100, 8) == (8,)
    assert all(level_to_arg(op, 15, 100, 40) == () for op in ("AutoContrast", "Equalize", "Invert"))
    torch.manual_seed(0)   # _randomly_negate_tensor: both signs for the geometric ops, never for enhance
    for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        signs = {math.copysign(1, level_to_arg(op, 10, 100, 40)[0]) for _ in range(64)}
        assert signs == {1.0, -1.0}, op
    assert all(level_to_arg("Color", 10, 100, 40)[0] > 0 for _ in range(64))


def test_rotate_45_degrees_at_magnitude_15_moves_a_pixel_where_tf_puts_it() -> None:
    """33 x 33 (centre (16, 16)), one bright pixel 10 px right of centre. TF's transform reads output (x, y) from
    centre + R(theta) (p - centre), so the pixel lands at centre + 10 (cos 45, -sin 45) = (x 23.07, y 8.93) ->
    (23, 9) for +45 deg and (23, 23) for -45 deg; the corners have no source and are 128 grey."""
    img = torch.zeros(3, 33, 33, dtype=torch.uint8)
    img[:, 16, 26] = 255
    for deg, where in ((45.0, (9, 23)), (-45.0, (23, 23))):
        out = ra.rotate(img, deg)
        bright = (out[0] == 255).nonzero().tolist()
        assert bright == [list(where)], (deg, bright)
        assert out[:, 0, 0].tolist() == [128] * 3 and out[:, 32, 32].tolist() == [128] * 3
    seen = set()
    torch.manual_seed(1)
    for _ in range(16):     # through the transform's own argument: magnitude 15 -> +-45 deg
        out = TFRandAugment(magnitude=15).apply_op("Rotate", img)
        seen.add(tuple((out[0] == 255).nonzero()[0].tolist()))
    assert seen == {(9, 23), (23, 23)}


def test_rotate_90_is_rot90_and_magnitude_0_geometry_is_identity() -> None:
    img = _img(17, 17)
    assert torch.equal(ra.rotate(img, 90.0), torch.rot90(img, 1, (1, 2)))   # magnitude 30
    assert torch.equal(ra.rotate(img, -90.0), torch.rot90(img, -1, (1, 2)))
    aug = TFRandAugment(magnitude=0)
    for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout"):
        assert torch.equal(aug.apply_op(op, _img(20, 28)), _img(20, 28)), op


def test_translate_moves_by_magnitude_over_10_times_translate_const() -> None:
    """m = 5, translate_const = 10: 5 px. TF ``translate_x`` reads input x + pixels; the vacated side is 128."""
    img = _img()
    torch.manual_seed(0)
    shifts = set()
    for _ in range(12):
        out = TFRandAugment(magnitude=5, translate_const=10).apply_op("TranslateX", img)
        if torch.equal(out[:, :, :27], img[:, :, 5:]) and (out[:, :, 27:] == 128).all():
            shifts.add(-5)
        elif torch.equal(out[:, :, 5:], img[:, :, :27]) and (out[:, :, :5] == 128).all():
            shifts.add(5)
        else:
            raise AssertionError("TranslateX is not a 5 px shift")
    assert shifts == {5, -5}
    out = ra.translate_y(img, 3.0)
    assert torch.equal(out[:, :29], img[:, 3:]) and (out[:, 29:] == 128).all()
    # fractional pixels round half away from zero (std::round in TF's NEAREST transform), not half-to-even
    assert torch.equal(ra.translate_x(img, 2.5)[:, :, :29], img[:, :, 3:])
    out = ra.translate_x(img, -2.5)                 # x - 2.5: x = 2 -> -1 (outside), x = 3 -> 1
    assert torch.equal(out[:, :, 3:], img[:, :, 1:30]) and (out[:, :, :3] == 128).all()


def test_shear_reads_x_plus_level_y() -> None:
    img = _img()
    out = ra.shear_x(img, 0.3)                      # output (x, y) <- input (round(x + 0.3 y), y)
    assert torch.equal(out[:, 0], img[:, 0])
    assert torch.equal(out[:, 10, :29], img[:, 10, 3:]) and (out[:, 10, 29:] == 128).all()
    out = ra.shear_y(img, -0.5)                     # output (x, y) <- input (x, round(y - 0.5 x))
    assert torch.equal(out[:, :, 0], img[:, :, 0])
    assert torch.equal(out[:, 4:, 8], img[:, :28, 8]) and (out[:, :4, 8] == 128).all()


def test_solarize_posterize_solarize_add_levels() -> None:
    px = torch.tensor([0, 20, 100, 127, 128, 200, 219, 255], dtype=torch.uint8).view(1, 1, 8).expand(3, 4, 8)
    aug = lambda m: TFRandAugment(magnitude=m)                                   # noqa: E731
    assert aug(5).apply_op("Solarize", px)[0, 0].tolist() == [0, 20, 100, 127, 127, 55, 36, 0]   # threshold 128
    assert aug(0).apply_op("Solarize", px)[0, 0].tolist() == [255, 235, 155, 128, 127, 55, 36, 0]  # all inverted
    # TF compares in uint8, so int(m / 10 * 256) wraps. Real TF 2.21, tf.where(x < th, x, 255 - x) on uint8 x in
    # 0..255, outputs at x = 0, 1, 127, 128, 200, 255: th 256 -> [255, 254, 128, 127, 55, 0] (Invert),
    # th 384 -> [0, 1, 127, 127, 55, 0] (as th 128).
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 2, 256)
    at = [0, 1, 127, 128, 200, 255]
    assert aug(10).apply_op("Solarize", ramp)[0, 0, at].tolist() == [255, 254, 128, 127, 55, 0]
    assert torch.equal(aug(10).apply_op("Solarize", ramp), aug(10).apply_op("Invert", ramp))
    assert aug(15).apply_op("Solarize", ramp)[0, 0, at].tolist() == [0, 1, 127, 127, 55, 0]
    assert torch.equal(aug(15).apply_op("Solarize", ramp), aug(5).apply_op("Solarize", ramp))
    assert aug(5).apply_op("Posterize", px)[0, 0].tolist() == [0, 0, 64, 64, 128, 192, 192, 192]   # 2 bits
    assert aug(10).apply_op("Posterize", px)[0, 0].tolist() == [0, 16, 96, 112, 128, 192, 208, 240]  # 4 bits
    assert aug(0).apply_op("Posterize", px)[0, 0].tolist() == [0, 0, 0, 0, 128, 128, 128, 128]  # shift clamped to 7
    assert aug(10).apply_op("SolarizeAdd", px)[0, 0].tolist() == [110, 130, 210, 237, 128, 200, 219, 255]
    assert aug(15).apply_op("SolarizeAdd", px)[0, 0].tolist() == [165, 185, 255, 255, 128, 200, 219, 255]


def test_enhance_ops_blend_as_tf() -> None:
    """Factor (m/10)*1.8 + 0.1: m = 5 is factor 1.0, the identity. TF contrast's degenerate is H*W/256 (4 at
    32 x 32, 16 at 64 x 64), not the mean grey (204 here): a flat 204 image at factor 0.1 becomes 24 / 34."""
    img = _img()
    for op in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert torch.equal(TFRandAugment(magnitude=5).apply_op(op, img), img), op
    flat = torch.full((3, 32, 32), 204, dtype=torch.uint8)
    assert (TFRandAugment(magnitude=0).apply_op("Contrast", flat) == 24).all()
    assert (ra.contrast(torch.full((3, 64, 64), 204, dtype=torch.uint8), 0.1) == 34).all()
    assert (TFRandAugment(magnitude=0).apply_op("Brightness", flat) == 20).all()   # trunc(0.1 * 204)
    assert (ra.brightness(flat, 2.8) == 255).all()                                  # extrapolation clips
    rgb = torch.zeros(3, 1, 3, dtype=torch.uint8)
    rgb[0, 0, 0] = rgb[1, 0, 1] = rgb[2, 0, 2] = 255
    # TF grey: trunc((w * x / 255) * 255.5) with w = 0.2989 / 0.5870 / 0.1140
    assert ra.color(rgb, 0.0)[:, 0].tolist() == [[76, 149, 29]] * 3
    sharp = torch.full((3, 5, 5), 100, dtype=torch.uint8)
    sharp[:, 2, 2] = 230
    deg = ra.sharpness(sharp, 0.0)[0]      # kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, truncated, border kept
    assert deg[2, 2] == 1950 // 13 and deg[1, 2] == deg[3, 3] == 1430 // 13 and (deg[0] == 100).all()
    assert ra.sharpness(sharp, 0.1)[0, 2, 2] == int(150 + 0.1 * (230 - 150))


def test_autocontrast_and_equalize_match_tf_formulas() -> None:
    img = torch.stack([torch.full((8, 8), 100), torch.full((8, 8), 7), torch.arange(64).view(8, 8) * 3])
    img[0, 0, :2] = torch.tensor([50, 150])
    out = ra.autocontrast(img.to(torch.uint8))
    assert out[0, 0, :3].tolist() == [0, 255, 127] and (out[1] == 7).all()     # trunc(127.5); flat channel kept
    assert out[2].max() == 255 and out[2, 0, 1] == int(3 * 255 / 189)
    x = _img(32, 32, seed=3)
    x[1] = x[1] // 64                                    # few grey levels: a coarse histogram
    x[2] = 9                                             # one level: step 0, left as is
    ref = []
    for ch in x.numpy().astype(np.int64):               # TF equalize.scale_channel, transcribed
        histo = np.bincount(ch.ravel(), minlength=256)
        nz = histo[histo != 0]
        step = (nz.sum() - nz[-1]) // 255
        if step == 0:
            ref.append(ch)
            continue
        lut = np.clip(np.concatenate([[0], ((np.cumsum(histo) + step // 2) // step)[:-1]]), 0, 255)
        ref.append(lut[ch])
    assert np.array_equal(TFRandAugment().apply_op("Equalize", x).numpy(), np.stack(ref))
    assert torch.equal(TFRandAugment().apply_op("Invert", x), 255 - x)


def test_cutout_is_a_grey_square_of_twice_the_level_arg() -> None:
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(20):
        out = TFRandAugment(magnitude=10, cutout_const=5).apply_op("Cutout", img)   # half-size 5
        ys, xs = (out[0] == 128).nonzero(as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert len(ys) == h * w and 5 <= h <= 10 and 5 <= w <= 10 and (out[:, ys, xs] == 128).all()
        assert int((out != 0).sum()) == 3 * h * w
        sizes.add((h, w))
    assert (10, 10) in sizes


@pytest.mark.parametrize("m", [0, 10, 15, 12.5])
def test_every_op_keeps_uint8_and_shape(m: float) -> None:
    img = _img(24, 40)
    aug = TFRandAugment(magnitude=m)
    for op in OPS:
        out = aug.apply_op(op, img)
        assert out.dtype == torch.uint8 and out.shape == img.shape, op


def test_transform_is_seeded_and_reaches_every_op(monkeypatch: pytest.MonkeyPatch) -> None:
    aug = TFRandAugment(num_ops=2, magnitude=15)
    img = _img()
    torch.manual_seed(7)
    a = [aug(img) for _ in range(6)]
    torch.manual_seed(7)
    b = [aug(img) for _ in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, img) for x in a)
    called: list[str] = []
    monkeypatch.setattr(TFRandAugment, "apply_op", lambda self, name, im: called.append(name) or im)
    layers = 680
    # The authors' tensorflow/tpu policy (the default) applies one of the 16 ops in every layer; Model Garden's
    # draws its identity branch 1 time in 17.
    for policy, (lo, hi) in (("tpu", (0, 0)), ("model-garden", (15, 70))):
        called.clear()
        torch.manual_seed(0)
        for _ in range(layers // 2):
            TFRandAugment(num_ops=2, magnitude=15, policy=policy)(img)
        counts = {op: called.count(op) for op in OPS}
        identity = layers - len(called)
        assert min(counts.values()) > 15 and lo <= identity <= hi, (policy, counts, identity)
    assert aug.policy == "tpu"
    called.clear()
    TFRandAugment(num_ops=3, prob_to_apply=0.0)(img)
    TFRandAugment(num_ops=0)(img)
    assert called == []


def test_validation_errors() -> None:
    for kwargs in (dict(num_ops=-1), dict(num_ops=1.5), dict(magnitude=-1), dict(magnitude=float("nan")),
                   dict(translate_const=-5), dict(cutout_const=float("inf")), dict(prob_to_apply=1.5),
                   dict(policy="garden")):
        with pytest.raises(ValueError):
            TFRandAugment(**kwargs)
    for bad in (_img().float(), _img()[:1], _img()[None]):
        with pytest.raises(ValueError, match="uint8 RGB"):
            TFRandAugment()(bad)


def test_train_transform_uses_it() -> None:
    from rs_transfer.tasks._imagenet_data import train_transform

    t = train_transform(32, dict(num_ops=2, magnitude=15))
    aug = t.transforms[-1]
    assert isinstance(aug, TFRandAugment) and aug.magnitude == 15.0 and aug.translate_const == 100.0
    out = t(_img(48, 40))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="unknown keys"):
        train_transform(32, dict(num_ops=2, magnitude=9, bins=31))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """No op leaves the device, and each gives the CPU's pixels (up to float32 rounding at exact ties)."""
    img = _img(64, 48)
    for op in OPS:
        for m in (7, 15):
            torch.manual_seed(3)
            cpu = TFRandAugment(magnitude=m).apply_op(op, img)
            torch.manual_seed(3)
            gpu = TFRandAugment(magnitude=m).apply_op(op, img.cuda())
            assert gpu.is_cuda and gpu.dtype == torch.uint8
            assert (gpu.cpu() != cpu).float().mean() <= 0.01, (op, m)      # float32 ties may round apart
    torch.manual_seed(0)
    assert TFRandAugment(magnitude=15)(img.cuda()).is_cuda
