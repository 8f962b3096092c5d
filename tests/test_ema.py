"""The EMA warm-up against TF's definition: ``tf.train.ExponentialMovingAverage(decay, num_updates=step)`` uses
``min(decay, (1 + step) / (10 + step))`` at each step (tensorflow/tpu resnet_main.py; Model Garden's
``dynamic_decay``)."""
from __future__ import annotations

import math

import pytest
import torch

from rs_transfer.runner.ema import WarmupEMA, momentum_per_iteration


def _weights(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, generator=g) for _ in range(n)]


def test_updates_equal_tf_shadow_variables() -> None:
    """Same weight sequence through WarmupEMA and through TF's update rule, written out: equal after every step.
    (TF's shadow starts at the initial variable and mixes in step 1 at 2/11; mmengine copies step 1's weights.
    From step 2 on the updates are the same formula.)"""
    ws = _weights(40)
    model = torch.nn.Linear(3, 1, bias=False)
    ema = None
    shadow = None
    for t, w in enumerate(ws, 1):
        model.weight.data.copy_(w[None])
        if ema is None:
            ema = WarmupEMA(model, momentum=1e-4, decay=0.9999)
        ema.update_parameters(model)
        d = min(0.9999, (1 + t) / (10 + t))
        shadow = w.clone() if shadow is None else d * shadow + (1 - d) * w
        assert torch.allclose(ema.module.weight.data[0], shadow, atol=1e-6), t


def test_constant_after_warmup_and_converted_for_batch_and_accumulation() -> None:
    assert momentum_per_iteration(0.9999, 10 ** 6) == pytest.approx(1e-4)
    # batch 1024 = 1/4 of the reference: 0.9999 ** 0.25 per step; 4 micro-iterations per step
    m = momentum_per_iteration(0.9999, 10 ** 7, batch_ratio=0.25, accumulation=4)
    assert (1 - m) ** 4 == pytest.approx(0.9999 ** 0.25)
    assert momentum_per_iteration(0.9999, 10 ** 6, warmup=False) == pytest.approx(1e-4)


def _first_weights_left(steps: int, ratio: float, accumulation: int = 1, warmup: bool = True) -> float:
    """Share of the first weights in the average after ``steps`` optimizer steps: the product of (1 - m)."""
    log = 0.0
    for n in range(1, steps * accumulation):
        log += math.log1p(-momentum_per_iteration(0.9999, n, ratio, accumulation, warmup))
    return math.exp(log)


def test_short_runs_forget_their_first_steps_and_the_batch_does_not_matter() -> None:
    steps_10_epochs = round(10 * 1_281_167 / 4096)                       # 3,128 steps at 4096
    assert _first_weights_left(steps_10_epochs, 1.0, warmup=False) == pytest.approx(0.9999 ** 3127, rel=1e-6)
    assert _first_weights_left(steps_10_epochs, 1.0, warmup=False) > 0.7   # mmengine's constant momentum
    assert _first_weights_left(steps_10_epochs, 1.0) < 1e-6                # TF's warm-up
    # The same 10 epochs at batch 1024 with 2-step accumulation (4x the steps): the same horizon in samples.
    w4096 = [momentum_per_iteration(0.9999, n, 1.0) for n in (100, 1000, 3000)]
    w1024 = [1 - (1 - momentum_per_iteration(0.9999, 4 * n, 0.25)) ** 4 for n in (100, 1000, 3000)]
    assert w1024 == pytest.approx(w4096, rel=0.02)


def test_update_count_is_saved_for_resume() -> None:
    model = torch.nn.Linear(3, 1)
    ema = WarmupEMA(model, decay=0.9999, batch_ratio=0.5, accumulation=2)
    for _ in range(5):
        ema.update_parameters(model)
    again = WarmupEMA(model, decay=0.9999, batch_ratio=0.5, accumulation=2)
    again.load_state_dict(ema.state_dict())
    assert int(again.steps) == 5 and again.momentum_at(5) == ema.momentum_at(5)
