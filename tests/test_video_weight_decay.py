"""Weight decay of the 3D networks as TF Model Garden regularises them: every conv and the classifier, but not BN,
biases or the self-gating convolutions (``nn_blocks_3d.SelfGating`` builds its conv without a kernel_regularizer).
The full-size models are built on the meta device (no memory, no init cost) and the optimizer through mmengine's
constructor with the kinetics400 config's ``optim_wrapper``, so the groups counted are the ones a run trains."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SELF_GATING_WEIGHTS = 256 ** 2 + 512 ** 2 + 1024 ** 2 + 2048 ** 2      # 5,570,560: one gate per stage, no bias


def _decayed(model: nn.Module, paramwise_cfg: dict) -> tuple[int, int]:
    """(parameters with weight decay > 0, all trainable parameters) of ``model`` as the config's optimizer sees it."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    wrapper = DefaultOptimWrapperConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=4e-5)),
        paramwise_cfg)(model)
    decayed = sum(p.numel() for g in wrapper.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"])
    return decayed, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, total", [("resnet3d50", 33_617_872), ("resnetrs3d50", 48_129_840)])
def test_self_gating_is_not_decayed(name: str, total: int) -> None:
    from mmengine.config import Config

    from rs_transfer import create_model

    cfg = Config.fromfile(str(REPO / "configs" / "kinetics400.py"))
    paramwise = cfg.optim_wrapper.paramwise_cfg.to_dict()
    with torch.device("meta"):
        model = nn.Module()
        model.backbone = create_model(name, num_classes=400)     # names as in VideoRecognizer: backbone.*
    gates = sum(p.numel() for n, p in model.named_parameters() if ".gate.fc.weight" in n)
    assert gates == SELF_GATING_WEIGHTS == 5_570_560
    decayed, n = _decayed(model, paramwise)
    assert n == total
    without = {k: v for k, v in paramwise.items() if k != "custom_keys"}
    decayed_before, _ = _decayed(model, without)           # the rule before: only BN and biases left out
    assert decayed_before - decayed == 5_570_560
    norm_and_bias = sum(p.numel() for m in model.modules() for k, p in m.named_parameters(recurse=False)
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) or k == "bias")
    assert decayed == total - norm_and_bias - SELF_GATING_WEIGHTS
