"""``init="tf"`` (rs_transfer/backbones/init.py): TF's VarianceScaling(1.0, fan_in, truncated normal) for every
convolution, TF's defaults for SE biases and the 3D head, and the pre-training configs that use it. Statistics are
checked on small networks (width 0.25, one block per stage): seconds on a CPU."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rs_transfer.backbones.init import TRUNCATED_NORMAL_STD, fan_in, tf_variance_scaling_


def _convs(model: nn.Module, skip: tuple[type, ...] = ()) -> list[nn.Module]:
    skipped = {id(c) for m in model.modules() if isinstance(m, skip) for c in m.modules()}
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and id(m) not in skipped]


def _check_tf_conv(m: nn.Module) -> None:
    w = m.weight.detach().double()
    target = 1 / math.sqrt(fan_in(w))            # what VarianceScaling(1.0, fan_in) aims at
    bound = 2 * target / TRUNCATED_NORMAL_STD    # truncation at 2 stddev of the underlying normal
    assert w.abs().max() <= bound * (1 + 1e-6), m
    if w.numel() >= 4000:                          # enough draws for the std to be within 6 %
        assert w.std().item() == pytest.approx(target, rel=0.06), (m, w.numel())
    if m.bias is not None:
        assert torch.count_nonzero(m.bias) == 0, m


def test_variance_scaling_statistics() -> None:
    """The truncated normal of stddev sqrt(1/fan_in)/0.8796 has std sqrt(1/fan_in) and no value beyond 2 stddev."""
    torch.manual_seed(0)
    w = torch.empty(256, 128, 3, 3)
    tf_variance_scaling_(w)
    s = 1 / math.sqrt(128 * 9) / TRUNCATED_NORMAL_STD
    assert w.std().item() == pytest.approx(1 / math.sqrt(128 * 9), rel=0.01)
    assert w.abs().max().item() <= 2 * s and w.abs().max().item() > 1.9 * s
    assert (w.abs() > s).double().mean().item() == pytest.approx(0.2848, abs=0.01)   # P(1<|z|<2 | |z|<2)


def test_resnetrs_tf_init() -> None:
    from rs_transfer.backbones import ResNetRS

    torch.manual_seed(0)
    tf = ResNetRS(layers=(1, 1, 1, 1), width=0.25, num_classes=10, init="tf")
    for m in _convs(tf):                              # stem, blocks, shortcuts, SE (bias zero)
        _check_tf_conv(m)
    se = [m for m in tf.modules() if type(m).__name__ == "SqueezeExcite"]
    assert se and all(torch.count_nonzero(s.fc1.bias) == 0 for s in se)
    assert tf.fc.weight.std().item() == pytest.approx(0.01, rel=0.2) and torch.count_nonzero(tf.fc.bias) == 0
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in tf.modules() if hasattr(b, "bn3"))
    torch.manual_seed(0)
    pt = ResNetRS(layers=(1, 1, 1, 1), width=0.25, num_classes=10)   # default: torch (Kaiming fan_out)
    conv = pt.layer4[0].conv2                          # 3x3, 128 -> 128 at width 0.25: fan_out 1152 = fan_in
    c1 = pt.layer4[0].conv1                            # 1x1 256 -> 128: fan_in 256, fan_out 128
    assert c1.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.06)
    assert tf.layer4[0].conv1.weight.std().item() == pytest.approx(math.sqrt(1 / 256), rel=0.06)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.06)
    assert torch.count_nonzero(pt.layer1[0].se.fc1.bias) > 0          # PyTorch's default uniform bias
    with pytest.raises(ValueError, match="init must be one of"):
        ResNetRS(layers=(1, 1, 1, 1), width=0.25, init="keras")


def test_resnet3d_tf_init() -> None:
    from rs_transfer.video.resnet3d import ResNet3D, SelfGating

    torch.manual_seed(0)
    m = ResNet3D(layers=(1, 1, 1, 1), width=0.25, num_classes=400, se_ratio=0.25, stem="deep", init="tf")
    for c in _convs(m, skip=(SelfGating,)):
        _check_tf_conv(c)
    gates = [g for g in m.modules() if isinstance(g, SelfGating)]
    assert gates and all(g.fc.weight.abs().max() <= 0.02 and torch.count_nonzero(g.fc.bias) == 0 for g in gates)
    w = m.fc.weight.detach()                           # Keras 'random_uniform': U(-0.05, 0.05)
    assert w.abs().max() <= 0.05 and w.std().item() == pytest.approx(0.1 / math.sqrt(12), rel=0.05)
    assert torch.count_nonzero(m.fc.bias) == 0
    torch.manual_seed(0)
    pt = ResNet3D(layers=(1, 1, 1, 1), width=0.25, num_classes=400)
    assert pt.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_pretraining_configs_use_tf_init() -> None:
    """imagenet (Table 1, scaling study) and kinetics400 (Table 5) build their backbones with init="tf"; transfer
    configs keep the class default."""
    from pathlib import Path

    from mmengine.config import Config

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("imagenet", "kinetics400"):
        assert Config.fromfile(str(configs / f"{name}.py")).model.backbone.init == "tf", name
    for name in ("cifar100_finetune", "voc_seg"):
        assert "init" not in Config.fromfile(str(configs / f"{name}.py")).model.backbone, name
