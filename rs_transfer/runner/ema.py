"""The EMA of weights as the RS references compute it, for mmengine's ``EMAHook``.

Both references warm the decay up: tensorflow/tpu ``resnet_main.py`` builds
``tf.train.ExponentialMovingAverage(decay=0.9999, num_updates=global_step)``, whose decay at step ``t`` is
``min(0.9999, (1 + t) / (10 + t))``, and TF Model Garden's EMA optimizer (the 3D ResNet-RS configs) has
``dynamic_decay=True`` with the same formula. mmengine's ``ExponentialMovingAverage`` has a constant momentum, so
its average starts as the first step's weights and forgets them at 0.9999 per step: after a 10-epoch run at batch
4096 (3,128 steps) 0.9999^3128 = 73 % of the evaluated weights would still be the first step's, after 90 epochs
6 %, after 350 epochs 0.002 %. The paper's scaling study trains for 10, 100 and 350 epochs, so the warm-up decides
whether its short runs mean anything.

The decay is given per optimizer step at a reference global batch (4096 images, 1024 clips). At global batch ``G``
one step is ``r = G / ref`` reference steps: step ``t`` uses the reference decay at reference step ``t * r``, raised
to the power ``r`` (after the warm-up: ``decay ** r``, rs_transfer/runner/batch.py's rule). With gradient accumulation
``A`` the hook updates after each of the ``A`` micro-iterations of a step, while the weights stand still, so each
update uses ``1 - (1 - m) ** (1 / A)`` of the step's momentum ``m``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from mmengine.model import ExponentialMovingAverage

from rs_transfer.errors import UserError
from rs_transfer.registry import MODELS
from rs_transfer.runner.batch import positive_int


def per_iteration(step_momentum: float, accumulation: int) -> float:
    """EMA momentum per micro-iteration for ``step_momentum`` per optimizer step: the weights stand still over the
    ``accumulation`` micro-iterations of a step, so that many updates of 1 - (1 - m)^(1/A) are one update of m."""
    if accumulation == 1 or step_momentum == 1.0:
        return step_momentum
    return -math.expm1(math.log1p(-step_momentum) / accumulation)


def ema_momentum(ema: Any, ema_momentum_switch: Any, global_batch: int, accumulation: int) -> dict[str, Any] | None:
    """EMAHook momentum per micro-iteration from the runner switches (None: no EMA).

    ``ema = dict(decay=0.9999, reference_batch=4096)``: decay per optimizer step at the reference global batch
    (the RS recipe: 0.9999 at 4096 on ImageNet; at 1024 for Kinetics), warmed up as TF's (rs_transfer/runner/ema.py:
    the momenta here are the ones after the warm-up). At global batch G a step sees G/ref
    reference steps' worth of samples: decay_G = decay ** (G / ref), mmengine momentum = 1 - decay_G (mmengine:
    ema = (1 - momentum) * ema + momentum * weights). The legacy ``ema_momentum = m`` is that momentum per step
    directly. EMAHook updates after every micro-iteration, and the weights do not change between the A micro-
    iterations of one step, so A updates of 1 - (1 - m)^(1/A) equal one update of m.
    """
    if ema is not None and ema_momentum_switch is not None:
        raise UserError("set either ema=dict(decay=..., reference_batch=...) or the legacy ema_momentum, not both")
    if ema is not None:
        if not hasattr(ema, "get") or ema.get("decay") is None:
            raise UserError(f"ema must be dict(decay=0.9999, reference_batch=4096) or None, got {ema!r}")
        decay = float(ema["decay"])
        ref = positive_int(ema.get("reference_batch", global_batch), "ema.reference_batch")
        if not 0.0 < decay < 1.0:
            raise UserError(f"ema.decay must be in (0, 1), got {decay}")
        per_step = 1.0 - decay ** (global_batch / ref)      # after the warm-up (rs_transfer/runner/ema.py)
        out: dict[str, Any] = dict(decay=decay, reference_batch=ref, batch_ratio=global_batch / ref,
                                   accumulation=accumulation, warmup="min(decay, (1 + t) / (10 + t))")
    elif ema_momentum_switch:
        per_step = float(ema_momentum_switch)
        out = dict(ema_momentum=per_step)
    else:
        return None
    if not 0.0 < per_step <= 1.0:
        raise UserError(f"EMA momentum per step must be in (0, 1], got {per_step}")
    out.update(momentum_per_step=per_step, momentum_per_iteration=per_iteration(per_step, accumulation))
    return out


def tf_decay(decay: float, step: float) -> float:
    """``tf.train.ExponentialMovingAverage`` with ``num_updates=step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def momentum_per_iteration(decay: float, update: int, batch_ratio: float = 1.0, accumulation: int = 1,
                           warmup: bool = True) -> float:
    """mmengine momentum (``ema += momentum * (weights - ema)``) of the ``update``-th EMA update (1-based: the
    hook copies the weights at update 0), at global batch ``batch_ratio`` x the reference."""
    step = max(1.0, (update + 1) / accumulation)            # optimizer steps done when the update runs
    ref_decay = tf_decay(decay, step * batch_ratio) if warmup else decay
    return per_iteration(1.0 - ref_decay ** batch_ratio, accumulation)


@MODELS.register_module()
class WarmupEMA(ExponentialMovingAverage):
    """``ExponentialMovingAverage`` with TF's decay warm-up, converted for the run's global batch and accumulation.

    ``momentum`` (mmengine's argument) is the constant momentum per iteration after the warm-up; it is kept so the
    hook's and the checkpoint's view of the EMA stay mmengine's. The update count (``steps``) is a buffer that
    checkpoints save, so a resumed run continues the warm-up where it stopped."""

    def __init__(self, model: torch.nn.Module, momentum: float = 0.0002, interval: int = 1,
                 device: torch.device | None = None, update_buffers: bool = False, *, decay: float = 0.9999,
                 batch_ratio: float = 1.0, accumulation: int = 1) -> None:
        super().__init__(model, momentum=momentum, interval=interval, device=device, update_buffers=update_buffers)
        self.decay, self.batch_ratio, self.accumulation = float(decay), float(batch_ratio), int(accumulation)
        self._momentum = momentum

    def momentum_at(self, update: int) -> float:
        return momentum_per_iteration(self.decay, update, self.batch_ratio, self.accumulation)

    def update_parameters(self, model: torch.nn.Module) -> None:
        self._momentum = self.momentum_at(int(self.steps))     # once per update (one host sync), not per tensor
        super().update_parameters(model)

    def avg_func(self, averaged_param: torch.Tensor, source_param: torch.Tensor, steps: torch.Tensor) -> None:
        averaged_param.lerp_(source_param, self._momentum)
