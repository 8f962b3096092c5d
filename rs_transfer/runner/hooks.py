"""Small mmengine hooks and wrappers the runner adds to every training run.

- :class:`RunStatsHook`: the last validation metrics (what results.json reports).
- :class:`TrainTimeHook`: training time, validation time and training images, summed over resumed segments
  (results.json ``train_time_s``, ``eval_time_s``, ``train_images_per_s``; the scaling study's training time).
- :class:`RngStateHook`: stores the torch RNG state in each checkpoint and restores it when training resumes, so
  that dropout / stochastic depth draw the same numbers as in an uninterrupted run (mmengine replays the data loader
  on resume, which reproduces the data-side randomness, but not the model-side torch RNG).
- :class:`CompileHook`: the runner's ``compile`` switch, ``torch.compile`` of the model's backbone in place.
- :class:`CPUDistributedDataParallel`: mmengine passes ``device_ids=[LOCAL_RANK]`` to DDP, which torch rejects for
  CPU modules; this wrapper drops it so that ``torchrun`` + gloo works on CPU-only machines (tests, laptops).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from rs_transfer.registry import HOOKS


@HOOKS.register_module()
class RunStatsHook(Hook):
    """Records the metrics of the last validation. (Training speed: :class:`TrainTimeHook`, the one clock.)"""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        self.metrics = dict(metrics or {})


TIMING_KEY = "rs_transfer_train_timing"   # message_hub runtime info: saved in every checkpoint, restored on resume
EVAL_LOG = "eval_times.json"               # every validation's time by iteration (see TrainTimeHook)


def _cuda_sync() -> None:
    """Wait for queued GPU work before a clock stops, so that a step's kernels are not billed to what follows."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _batch_len(data_batch: Any) -> int | None:
    """Images (or clips) of one process's batch: mmengine's ``{"inputs": tensor or list, ...}``."""
    inputs = data_batch.get("inputs") if isinstance(data_batch, dict) else None
    try:
        return len(inputs) if inputs is not None else None
    except TypeError:
        return None


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """A training loss that is NaN or infinite stops the run with one line (iteration, loss): a diverged run must
    not go on to publish a number. Registered by the runner in code, like :class:`TrainTimeHook`: it changes
    nothing a finite run computes, so it is not part of the config (nor of its hash)."""

    priority = "HIGHEST"

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        import math

        from rs_transfer.errors import UserError

        for key, value in (outputs or {}).items():
            if "loss" not in key:
                continue
            v = float(value.detach().float().mean()) if hasattr(value, "detach") else float(value)
            if not math.isfinite(v):
                raise UserError(f"training stopped: {key} = {v} at iteration {runner.iter + 1} (the run diverged; "
                                "no result is written). Lower the learning rate, check the weights and the "
                                "input normalisation")


@HOOKS.register_module()
class TrainTimeHook(Hook):
    """Training time, validation time and training images of a run, continued across resumes.

    What counts (rank 0's clock, ``time.perf_counter``):

    - **training**: a clock that runs from the first training iteration of a segment (a process's run of the
      train loop) to its end, including the wait for the next batch between iterations (data loading is part of
      training) and the EMA / LR-scheduler / logging hooks of each iteration, and paused for
    - **validation**: ``before_val`` .. ``after_val`` (the EMA weight swap and the evaluator included), counted
      in ``eval_time_s`` instead, and for
    - **checkpoint saving**: paused from ``before_save_checkpoint`` (mmengine calls it after copying the state to
      CPU, which stays in training time: under a second per checkpoint) until the end of that iteration's
      ``after_train_iter`` hooks (this hook runs last, priority LOWEST), i.e. the file write and its rotation.
    - Not counted at all (it is start-up, ``startup_s`` in results.json): what precedes the first iteration of a
      segment, including mmengine's replay of the data loader on resume (an uninterrupted run does not do it) and
      the data-loader start-up and first batch of the segment.

    Training images: the per-process batch of each iteration times the world size (mmengine's samplers give every
    rank the same number of samples per iteration; padding included).

    Persistence: the sums live in ``runner.message_hub`` runtime info under :data:`TIMING_KEY` (a ``resumed`` key:
    ``Runner.save_checkpoint`` stores ``message_hub.state_dict()`` in the checkpoint, ``Runner.resume`` loads it
    back), and :meth:`before_save_checkpoint` writes the values as of the save into the checkpoint itself (mmengine
    copies the hub into the checkpoint before calling the hook). A resumed run therefore continues the sums of the
    segment that wrote the checkpoint: iterations that run after that checkpoint and are repeated after the resume
    are counted once, as in an uninterrupted run. mmengine saves *before* validating, so the validation of the
    checkpoint's own iteration is not in its sums and is not repeated after a resume: each validation is also
    written to ``WORK_DIR/eval_times.json`` (:data:`EVAL_LOG`; rank 0, atomically), and a resumed segment adds the
    ones of its start iteration that its sums do not hold (``eval_through_iter``). A run resumed from a
    checkpoint without the sums (older code) reports no times (None) instead of the last segments' part.

    Under DDP every rank measures; rank 0's values are what the checkpoint and results.json record (the gradient
    all-reduce of each iteration keeps the ranks within one iteration of each other).
    """

    priority = "LOWEST"   # after_train_iter after the checkpoint hook (VERY_LOW): resumes the clock after a save

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.sums = self._zero()
        # this segment only: results.json startup_s and throughput_samples_per_s
        self.segment: dict[str, float] = {"train_time_s": 0.0, "eval_time_s": 0.0, "train_images": 0}
        self._mark: float | None = None    # the training clock runs since _mark; None: paused
        self._val_start: float | None = None
        self._training = False

    @staticmethod
    def _zero() -> dict[str, Any]:
        return {"train_time_s": 0.0, "eval_time_s": 0.0, "train_images": 0, "train_iters": 0, "segments": 0,
                "complete": True, "eval_through_iter": -1}

    # ---- the validations after the checkpoint ----
    @staticmethod
    def _eval_log(runner: Any) -> Path | None:
        work_dir = getattr(runner, "work_dir", None)
        return Path(work_dir) / EVAL_LOG if work_dir else None

    def _read_eval_log(self, runner: Any) -> list[dict[str, Any]]:
        path = self._eval_log(runner)
        try:
            entries = json.loads(path.read_text()) if path is not None and path.is_file() else []
        except (OSError, ValueError):
            return []          # unreadable: the gap stays, as before the log existed
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict) and {"iter", "s"} <= set(e)]

    def _log_eval(self, runner: Any, spent: float) -> None:
        from mmengine.dist import is_main_process

        path = self._eval_log(runner)
        if path is None or not is_main_process():
            return
        from rs_transfer.atomic import write_json_atomic

        write_json_atomic(path, [*self._read_eval_log(runner), {"iter": int(runner.iter), "s": spent}])

    # ---- the clock ----
    def _pause(self, sync: bool = False) -> None:
        if self._mark is None:
            return
        if sync:
            _cuda_sync()
        spent = self.clock() - self._mark
        self.sums["train_time_s"] += spent
        self.segment["train_time_s"] += spent
        self._mark = None

    def _resume(self) -> None:
        if self._training and self._mark is None:
            self._mark = self.clock()

    def _publish(self, runner: Any) -> dict[str, Any]:
        value = dict(self.sums)
        runner.message_hub.update_info(TIMING_KEY, value, resumed=True)
        return value

    # ---- training ----
    def before_train(self, runner: Any) -> None:
        saved = runner.message_hub.get_info(TIMING_KEY)   # restored from the checkpoint by Runner.resume
        self.sums = {**self._zero(), **(saved if isinstance(saved, dict) else {})}
        if not isinstance(saved, dict) and int(getattr(runner, "iter", 0) or 0) > 0:
            # Resumed from a checkpoint written before these sums existed: the earlier segments are unknown, and
            # stay so in every later checkpoint (summary() then reports no training time rather than a part).
            self.sums["complete"] = False
        self.sums["segments"] += 1
        start, last = int(getattr(runner, "iter", 0) or 0), int(getattr(runner, "max_iters", 0) or 0)
        if start == 0:
            path = self._eval_log(runner)
            if path is not None and path.is_file():
                path.unlink(missing_ok=True)      # an earlier run's validations in this work dir
        elif start < last and self.sums["eval_through_iter"] < start:
            # The validation of the checkpoint's iteration ran after the save and is not repeated. (Resumed at the
            # end, the runner repeats an unfinished final validation itself.)
            missed = [e["s"] for e in self._read_eval_log(runner) if int(e["iter"]) == start]
            self.sums["eval_time_s"] += float(sum(missed))
            self.sums["eval_through_iter"] = start if missed else self.sums["eval_through_iter"]
        self.segment = {"train_time_s": 0.0, "eval_time_s": 0.0, "train_images": 0}
        self._training, self._mark = True, None   # the clock starts at the first iteration (after any replay)
        self._publish(runner)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._resume()
        n = _batch_len(data_batch)
        if n is None:
            n = int(getattr(runner.train_dataloader, "batch_size", None) or 0)
        self.sums["train_images"] += n * int(getattr(runner, "world_size", 1) or 1)
        self.segment["train_images"] += n * int(getattr(runner, "world_size", 1) or 1)
        self.sums["train_iters"] += 1

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        self._resume()   # after a checkpoint save in this iteration's hooks

    def after_train_epoch(self, runner: Any) -> None:
        # Epoch-based loops save at epoch end: the next epoch's data-loader start is training. After the last
        # epoch (mmengine's iteration loop calls this once, at its end) nothing trains: the clock stays paused,
        # so a run resumed from its final checkpoint adds no time between here and after_train.
        if int(getattr(runner, "iter", 0) or 0) < int(getattr(runner, "max_iters", 0) or 0):
            self._resume()

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        self._pause(sync=True)
        value = self._publish(runner)
        hub = checkpoint.get("message_hub")
        if isinstance(hub, dict):   # mmengine copied the hub's state before calling this hook: bring it up to date
            hub.setdefault("runtime_info", {})[TIMING_KEY] = dict(value)
            hub.setdefault("resumed_keys", {})[TIMING_KEY] = True

    def after_train(self, runner: Any) -> None:
        self._pause(sync=True)
        self._training = False
        self._publish(runner)

    # ---- validation ----
    def before_val(self, runner: Any) -> None:
        self._pause(sync=True)
        self._val_start = self.clock()

    def after_val(self, runner: Any) -> None:
        if self._val_start is not None:
            _cuda_sync()
            spent = self.clock() - self._val_start
            self.sums["eval_time_s"] += spent
            self.segment["eval_time_s"] += spent
            self._val_start = None
            self.sums["eval_through_iter"] = int(getattr(runner, "iter", 0) or 0)
            self._log_eval(runner, spent)
        self._publish(runner)
        self._resume()   # validation inside the train loop: training continues

    def summary(self) -> dict[str, Any]:
        """results.json's timing keys (rounded; ``train_images_per_s`` None without training time). A run resumed
        from a checkpoint without the sums reports None for all but ``train_segments``: a part of the training time
        is not the training time."""
        if not self.sums.get("complete", True):
            return {"train_time_s": None, "eval_time_s": None, "train_images": None, "train_images_per_s": None,
                    "train_segments": int(self.sums["segments"])}
        train, images = float(self.sums["train_time_s"]), int(self.sums["train_images"])
        return {"train_time_s": round(train, 3), "eval_time_s": round(float(self.sums["eval_time_s"]), 3),
                "train_images": images, "train_images_per_s": round(images / train, 3) if train > 0 else None,
                "train_segments": int(self.sums["segments"])}


@HOOKS.register_module()
class CompileHook(Hook):
    """``compile = True`` or ``dict(**torch.compile options)``: compiles the model's ``backbone`` (the whole model
    when it has none) in place with ``nn.Module.compile``, so state-dict keys, checkpoints, the EMA copy and the
    exported weights are what they are without it.

    Not mmengine's own ``compile`` switch: that compiles ``train_step`` with the optimizer step inside, which Dynamo
    cannot trace through mmengine's optim wrapper (torch 2.13: ``InternalTorchDynamoError`` in ``SGD.step``,
    "'UserDefinedDictVariable' object has no attribute 'items'"). Runs at ``before_train``, after ``EMAHook`` made
    its copy in ``before_run``; EMA evaluation swaps the averaged weights into this (compiled) model."""

    priority = "LOW"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.compiled: str | None = None

    def before_train(self, runner: Any) -> None:
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        target = getattr(model, "backbone", None)
        target = target if isinstance(target, torch.nn.Module) else model
        target.compile(**self.options)
        self.compiled = type(target).__name__
        runner.logger.info(f"torch.compile: {self.compiled} compiled in place ({self.options or 'defaults'}); "
                           "the first iterations include compilation")


@HOOKS.register_module()
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
