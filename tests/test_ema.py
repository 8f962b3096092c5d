"""The EMA warm-up against TF's definition: ``tf.train.ExponentialMovingAverage(decay, num_updates=step)`` uses
``min(decay, (1 + step) / (10 + step))`` at each step (tensorflow/tpu resnet_main.py; Model Garden's
``dynamic_decay``)."""
from __future__ import annotations

import math

import pytest
import torch

from rs_transfer.runner.ema import WarmupEMA, step_momentum


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


def test_constant_after_warmup_and_converted_for_the_batch() -> None:
    assert step_momentum(0.9999, 10 ** 6) == pytest.approx(1e-4)
    # batch 1024 = 1/4 of the reference: 0.9999 ** 0.25 per step
    assert 1 - step_momentum(0.9999, 10 ** 7, batch_ratio=0.25) == pytest.approx(0.9999 ** 0.25)
    assert step_momentum(0.9999, 1, warmup=False) == pytest.approx(1e-4)
    assert step_momentum(0.9999, 1) == pytest.approx(9 / 11)          # TF: min(0.9999, 2 / 11) at step 1


def _first_weights_left(steps: int, ratio: float, warmup: bool = True) -> float:
    """Share of the first weights in the average after ``steps`` optimizer steps: the product of (1 - m)."""
    return math.exp(sum(math.log1p(-step_momentum(0.9999, t, ratio, warmup)) for t in range(2, steps + 1)))


def test_short_runs_forget_their_first_steps_and_the_batch_does_not_matter() -> None:
    steps_10_epochs = round(10 * 1_281_167 / 4096)                       # 3,128 steps at 4096
    assert _first_weights_left(steps_10_epochs, 1.0, warmup=False) == pytest.approx(0.9999 ** 3127, rel=1e-6)
    assert _first_weights_left(steps_10_epochs, 1.0, warmup=False) > 0.7   # mmengine's constant momentum
    assert _first_weights_left(steps_10_epochs, 1.0) < 1e-6                # TF's warm-up
    # The same 10 epochs at batch 1024 (4x the steps): the same horizon in samples.
    w4096 = [step_momentum(0.9999, n, 1.0) for n in (100, 1000, 3000)]
    w1024 = [1 - (1 - step_momentum(0.9999, 4 * n, 0.25)) ** 4 for n in (100, 1000, 3000)]
    assert w1024 == pytest.approx(w4096, rel=0.02)


@pytest.mark.parametrize("warmup", [True, False])
def test_accumulation_updates_once_per_optimizer_step_as_tf(warmup: bool) -> None:
    """A = 4 micro-iterations per step; the optimizer moves the weights at the last one, where mmengine's hook then
    calls the EMA, as after the other three. TF applies the EMA once after each train op with the step's decay
    (its shadow starts at the initial weights). The average must equal TF's after every step, the last included
    (splitting the momentum over the 4 calls gave the last step's weights a quarter of their share)."""
    accumulation, decay = 4, 0.99
    ws = _weights(13)                       # ws[0]: initial weights, ws[t]: after optimizer step t
    model = torch.nn.Linear(3, 1, bias=False)
    model.weight.data.copy_(ws[0][None])
    ema = WarmupEMA(model, momentum=1 - decay, decay=decay, accumulation=accumulation, warmup=warmup)
    shadow = ws[0].clone()
    for t in range(1, len(ws)):
        for k in range(accumulation):       # micro-iterations of step t; the last one ran optimizer.step()
            if k == accumulation - 1:
                model.weight.data.copy_(ws[t][None])
            ema.update_parameters(model)
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        shadow = d * shadow + (1 - d) * ws[t]
        assert torch.allclose(ema.module.weight.data[0], shadow, atol=1e-6), t
    assert [ema.momentum_at(n) for n in range(3)] == [0.0, 0.0, 0.0] and ema.momentum_at(7) > 0


def test_update_count_is_saved_for_resume() -> None:
    model = torch.nn.Linear(3, 1)
    ema = WarmupEMA(model, decay=0.9999, batch_ratio=0.5, accumulation=2)
    for _ in range(5):
        ema.update_parameters(model)
    again = WarmupEMA(model, decay=0.9999, batch_ratio=0.5, accumulation=2)
    again.load_state_dict(ema.state_dict())
    assert int(again.steps) == 5 and again.momentum_at(5) == ema.momentum_at(5)
