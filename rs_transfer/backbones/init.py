"""Named parameter initialisations of the 2D and 3D ResNets (backbone argument ``init``).

- ``"torch"``: what torchvision/timm do: bias-free convolutions Kaiming normal (fan_out, ReLU gain), convolutions
  with a bias (SE) PyTorch's default (Kaiming uniform, a = sqrt(5)), classifier N(0, 0.01). Default of the classes,
  so transfer configs (whose backbones load weights anyway) are unchanged.
- ``"tf"``: the authors' TF code, default of the pre-training configs (``imagenet``, ``kinetics400``; Table 1,
  Table 5, the scaling study):

  * every convolution, SE included, ``VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")``
    (tensorflow/tpu ``resnet_model.py conv2d_fixed_padding`` and ``resnet_layers.py squeeze_excitation``:
    ``tf.variance_scaling_initializer()``; Model Garden's 3D blocks and their SE: ``'VarianceScaling'``): a normal
    of stddev ``sqrt(1 / fan_in) / 0.87962566103423978`` truncated at two of those stddevs, so the drawn weights have
    std ``sqrt(1 / fan_in)``; biases zero (TF's default ``bias_initializer``);
  * the 2D classifier N(0, 0.01), bias zero (tensorflow/tpu ``tf.random_normal_initializer(stddev=.01)``; the same
    as ``"torch"``); the 3D classifier Keras ``'random_uniform'``, U(-0.05, 0.05), bias zero (Model Garden
    ``VideoClassificationModel``'s default ``kernel_initializer``, which ``build_video_classification_model``
    keeps);
  * the 3D self-gating convolution keeps TF's own ``TruncatedNormal(stddev=0.01)`` under both names.

BatchNorm is the same under both (gamma 1, beta 0; the last BN of a block zero-initialised where the model says so).
"""
from __future__ import annotations

import math

import torch
from torch import nn

INIT_SCHEMES = ("torch", "tf")
TRUNCATED_NORMAL_STD = 0.87962566103423978   # std of a unit normal truncated at +-2 (Keras/TF VarianceScaling)


def check_init(init: str) -> str:
    if init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)} ('tf': TF's VarianceScaling fan_in "
                         f"truncated normal, the authors' pre-training; 'torch': torchvision/timm), got {init!r}")
    return init


def fan_in(weight: torch.Tensor) -> int:
    """TF's fan_in of a conv/linear kernel: input channels x kernel size (PyTorch layout: dims 1 and after)."""
    return int(math.prod(weight.shape[1:]))


@torch.no_grad()
def tf_variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """In place: TF ``VarianceScaling(scale, "fan_in", "truncated_normal")``."""
    std = math.sqrt(scale / fan_in(weight)) / TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def init_convs_tf(model: nn.Module, skip: tuple[type[nn.Module], ...] = ()) -> None:
    """TF's conv initialisation over ``model``: every Conv2d/Conv3d (SE included) VarianceScaling fan_in truncated
    normal, bias zero; convolutions inside a module of a type in ``skip`` keep theirs (3D self-gating)."""
    skipped = {id(c) for m in model.modules() if isinstance(m, skip) for c in m.modules()}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and id(m) not in skipped:
            tf_variance_scaling_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
