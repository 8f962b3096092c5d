"""Small mmengine hooks and wrappers the runner adds to every training run.

- :class:`RunStatsHook`: the last validation metrics (what results.json reports) and training throughput.
- :class:`RngStateHook`: stores the torch RNG state in each checkpoint and restores it when training resumes, so
  that dropout / stochastic depth draw the same numbers as in an uninterrupted run (mmengine replays the data loader
  on resume, which reproduces the data-side randomness, but not the model-side torch RNG).
- :class:`CPUDistributedDataParallel`: mmengine passes ``device_ids=[LOCAL_RANK]`` to DDP, which torch rejects for
  CPU modules; this wrapper drops it so that ``torchrun`` + gloo works on CPU-only machines (tests, laptops).
"""
from __future__ import annotations

import time
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import HOOKS, MODEL_WRAPPERS


@HOOKS.register_module(force=True)
class RunStatsHook(Hook):
    """Records the metrics of the last validation and samples/second over training iterations.

    Throughput counts the time between consecutive training iterations (data loading included, validation
    excluded), times the global batch size (per-process batch x world size).
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.train_time = 0.0
        self.train_iters = 0
        self._mark: float | None = None

    def before_train(self, runner: Any) -> None:
        self._mark = time.perf_counter()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.train_time += now - self._mark
            self.train_iters += 1
        self._mark = now

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        self.metrics = dict(metrics or {})
        self._mark = time.perf_counter()   # validation time is not training time

    def throughput(self, batch_size: int, world_size: int) -> float | None:
        if self.train_iters == 0 or self.train_time <= 0:
            return None
        return self.train_iters * batch_size * world_size / self.train_time


@HOOKS.register_module(force=True)
class RngStateHook(Hook):
    """Saves the torch (and CUDA) RNG state with every checkpoint; restores it at the first iteration after resume."""

    priority = "LOW"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault("meta", {})["rs_transfer_rng"] = state

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        self._pending = (checkpoint.get("meta") or {}).get("rs_transfer_rng")

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        # Restored here, not at load time: on resume mmengine first replays the data loader, which must not see
        # the restored state (it did not see it in the uninterrupted run either).
        if self._pending is not None:
            torch.set_rng_state(self._pending["torch"])
            if "cuda" in self._pending and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._pending["cuda"])
            self._pending = None


@MODEL_WRAPPERS.register_module(force=True)
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMDistributedDataParallel that works for CPU modules (gloo): ``device_ids`` only for CUDA modules."""

    def __init__(self, module: torch.nn.Module, detect_anomalous_params: bool = False, **kwargs: Any) -> None:
        if not any(p.is_cuda for p in module.parameters()):
            kwargs.pop("device_ids", None)
            kwargs.pop("output_device", None)
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)
