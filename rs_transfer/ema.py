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
to the power ``r`` (after the warm-up: ``decay ** r``, rs_transfer/batching.py's rule). With gradient accumulation
``A`` the hook updates after each of the ``A`` micro-iterations of a step, while the weights stand still, so each
update uses ``1 - (1 - m) ** (1 / A)`` of the step's momentum ``m``.
"""
from __future__ import annotations

import torch
from mmengine.model import ExponentialMovingAverage


def tf_decay(decay: float, step: float) -> float:
    """``tf.train.ExponentialMovingAverage`` with ``num_updates=step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def momentum_per_iteration(decay: float, update: int, batch_ratio: float = 1.0, accumulation: int = 1,
                           warmup: bool = True) -> float:
    """mmengine momentum (``ema += momentum * (weights - ema)``) of the ``update``-th EMA update (1-based: the
    hook copies the weights at update 0), at global batch ``batch_ratio`` x the reference."""
    from rs_transfer.batching import per_iteration

    step = max(1.0, (update + 1) / accumulation)            # optimizer steps done when the update runs
    ref_decay = tf_decay(decay, step * batch_ratio) if warmup else decay
    return per_iteration(1.0 - ref_decay ** batch_ratio, accumulation)


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
