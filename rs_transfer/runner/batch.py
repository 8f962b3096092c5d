"""A protocol's batch and length, independent of the number of processes: global batch -> per-process batch and
gradient accumulation, learning rate, iteration counts, EMA and BatchNorm momenta.

A training config declares, at top level (PROTOCOLS.md "Protocol length and batch"):

- ``global_batch_size = G``: the reference config's total batch per optimizer step (all processes x accumulation),
  e.g. mmdet ``..._1x_voc0712``: 8 GPUs x 2 = 16.
- its length: ``train_cfg.max_iters`` in optimizer steps AT ``G`` (iteration-based loops; iteration-based
  ``param_scheduler`` boundaries, MultiStepLR milestones and ``checkpoint_interval`` count the same steps), or
  ``train_cfg.max_epochs`` (epoch-based loops).
- ``max_per_process_batch = M`` (optional, default: no limit): the largest batch one device holds. With ``W``
  processes the runner uses the smallest accumulation ``A`` with ``G % (W * A) == 0`` and ``G / (W * A) <= M``.
- ``accumulation = A`` (optional, default ``None`` = derived as above): force ``A`` micro-batches per step.
  ``--cfg-options accumulation=4`` or ``max_per_process_batch=8`` set either from the command line.

The runner then sets ``train_dataloader.batch_size = G // (W * A)`` (a clear error when that does not divide),
``optim_wrapper.accumulative_counts = A`` (mmengine averages the A micro-batch gradients, and skips DDP's gradient
sync between them), and multiplies every iteration count by ``A`` (mmengine counts micro-iterations), so the number
of optimizer steps and of samples seen is the same on 1 or 64 GPUs. ``auto_scale_lr`` is ignored: the global batch
is fixed, so the LR needs no scaling by world size. (mmengine advances iteration-based LR schedules per
micro-iteration, so an accumulated step uses the LR its last micro-batch sees: within one step of the reference
schedule's; with a constant LR, A accumulated micro-batches equal one batch of G to float precision, which
tests/test_runner.py checks.)

If a user changes ``global_batch_size`` (``--cfg-options global_batch_size=512``), the LR is scaled linearly from
the reference batch (Goyal et al. 2017) and an iteration-based length is kept in SAMPLES (steps x G_ref / G), both
recorded in results.json; setting ``optim_wrapper.optimizer.lr`` or ``train_cfg.max_iters`` explicitly opts out.
The reference batch is the config file's ``global_batch_size``, or the one ``Task.configure`` sets (mini presets
choose their own small batch and the LR that goes with it).

The one documented exception: BatchNorm statistics are computed over the per-process batch (``G / (W * A)``), unless
a config turns on SyncBN (``sync_bn``), which then pools the W processes (still not the A micro-batches).

A config without ``global_batch_size`` keeps the old per-process meaning (batch x processes x accumulation, LR from
``auto_scale_lr``) with a warning: its result depends on the number of processes.
"""
from __future__ import annotations

import warnings
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.runner.schedule import rescale_schedule, scale_iterations

BATCH_KEYS = ("global_batch_size", "max_per_process_batch", "accumulation")


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r} (config file or --cfg-options {name}=N)")
    return int(value)


def derive_accumulation(global_batch: int, world_size: int, max_per_process: int | None,
                        accumulation: int | None) -> int:
    """The accumulation ``A`` for ``G`` samples per step over ``W`` processes (see the module docstring)."""
    if accumulation is not None:
        a = positive_int(accumulation, "accumulation")
        if global_batch % (world_size * a):
            raise UserError(f"global_batch_size {global_batch} is not divisible by {world_size} process(es) x "
                            f"accumulation {a}; choose an accumulation (or number of processes) whose product "
                            f"divides it, or leave accumulation unset to derive it")
        return a
    if global_batch % world_size:
        raise UserError(f"global_batch_size {global_batch} is not divisible by {world_size} processes; run on a "
                        f"number of processes that divides it (the protocol's global batch stays fixed)")
    if max_per_process is None:
        return 1
    cap = positive_int(max_per_process, "max_per_process_batch")
    per_rank = global_batch // world_size
    for a in range(1, per_rank + 1):
        if per_rank % a == 0 and per_rank // a <= cap:
            return a
    raise AssertionError("unreachable: a = per_rank always fits")  # pragma: no cover


def _user_set(options: dict[str, Any] | None, *keys: str) -> bool:
    """Did ``--cfg-options`` set one of ``keys`` (or a dict above it, e.g. ``optim_wrapper.optimizer=dict(...)``)?"""
    for dotted, value in (options or {}).items():
        for key in keys:
            if dotted == key:
                return True
            if key.startswith(dotted + ".") and isinstance(value, dict):
                rest, node = key[len(dotted) + 1:].split("."), value
                while rest and isinstance(node, dict) and rest[0] in node:
                    node = node[rest.pop(0)]
                if not rest:
                    return True
    return False


def _legacy(cfg: Any, world_size: int) -> dict[str, Any]:
    """A config without ``global_batch_size``: per-process batch, LR from ``auto_scale_lr`` (mmengine scales by
    processes x batch only, so ``base_batch_size`` is divided by the accumulation to count it too)."""
    accum = int(cfg.optim_wrapper.get("accumulative_counts", 1))
    per = int(cfg.train_dataloader.batch_size)
    warnings.warn(f"the config declares no global_batch_size: batch {per} per process x {world_size} process(es) "
                  f"x accumulation {accum}; this result depends on the number of processes", stacklevel=3)
    lr_scale = 1.0
    scale = cfg.get("auto_scale_lr")
    if scale and scale.get("enable"):
        base = float(scale["base_batch_size"])
        cfg.auto_scale_lr = dict(enable=True, base_batch_size=base / accum)
        lr_scale = per * accum * world_size / base
    g = per * accum * world_size
    steps = int(cfg.train_cfg.max_iters) // accum if "max_iters" in cfg.train_cfg else None
    return dict(global_batch_size=g, per_process_batch_size=per, accumulation=accum, reference_batch_size=None,
                lr_scale=lr_scale, lr=float(cfg.optim_wrapper.optimizer.get("lr", 0.0)) * lr_scale,
                optimizer_steps=steps, train_samples=steps * g if steps is not None else None)


def apply_batch(cfg: Any, world_size: int, reference_batch: int | None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write per-process batch, accumulation, LR and micro-iteration counts into ``cfg``; return the facts
    results.json records. ``reference_batch``: the global batch the config's LR and length were written for."""
    if cfg.get("global_batch_size") is None:
        return _legacy(cfg, world_size)
    g = positive_int(cfg.global_batch_size, "global_batch_size")
    ref = positive_int(reference_batch, "global_batch_size") if reference_batch is not None else g
    a = derive_accumulation(g, world_size, cfg.get("max_per_process_batch"), cfg.get("accumulation"))
    per = g // (world_size * a)
    cfg.pop("auto_scale_lr", None)   # the global batch is fixed: no scaling by world size (module docstring)
    cfg.train_dataloader.batch_size = per
    cfg.optim_wrapper.accumulative_counts = a
    opt = cfg.optim_wrapper.optimizer
    lr_scale = 1.0
    if g != ref and not _user_set(options, "optim_wrapper.optimizer.lr"):
        lr_scale = g / ref   # linear scaling rule from the reference batch
        opt.lr = float(opt.lr) * lr_scale
    iteration_based = "max_iters" in cfg.train_cfg
    if iteration_based and g != ref and not _user_set(options, "train_cfg.max_iters"):
        old = int(cfg.train_cfg.max_iters)
        new = max(1, round(old * ref / g))   # same number of samples: steps x G constant
        cfg.train_cfg.max_iters = new
        if cfg.train_cfg.get("val_interval"):
            cfg.train_cfg.val_interval = max(1, min(new, round(int(cfg.train_cfg.val_interval) * ref / g)))
        rescale_schedule(cfg, old, new, checkpoints=False)
        if cfg.get("checkpoint_interval"):
            cfg.checkpoint_interval = max(1, round(int(cfg.checkpoint_interval) * ref / g))
    steps = int(cfg.train_cfg.max_iters) if iteration_based else None
    scale_iterations(cfg, a)
    facts: dict[str, Any] = dict(global_batch_size=g, per_process_batch_size=per, accumulation=a,
                                 reference_batch_size=ref, lr_scale=lr_scale, lr=float(opt.lr),
                                 optimizer_steps=steps, train_samples=steps * g if steps is not None else None)
    if cfg.get("model") is not None and cfg.model.get("bn_momentum") is not None:
        # The config's BN momentum is per optimizer step; BN updates once per micro-batch forward: A updates with
        # 1 - (1 - m)^(1/A) keep the running statistics' horizon in steps.
        m = float(cfg.model.bn_momentum)
        cfg.model.bn_momentum = 1.0 - (1.0 - m) ** (1.0 / a)
        facts["bn_momentum"] = cfg.model.bn_momentum
    return facts
