"""Every iteration count of a run in one place: schedule length changes (mini presets, ``train_cfg.max_iters``),
the batch rule's rescaling (:mod:`rs_transfer.runner.batch`) and the optimizer-step -> micro-iteration conversion.

Iteration-based ``param_scheduler`` boundaries, MultiStepLR milestones, cosine ``T_max`` and ``checkpoint_interval``
all move together, proportionally, so a shortened or accumulated run keeps the reference schedule's shape.
"""
from __future__ import annotations

from typing import Any


def _iter_schedulers(cfg: Any) -> list[Any]:
    scheds = cfg.get("param_scheduler") or []
    return [s for s in (scheds if isinstance(scheds, list) else [scheds]) if s.get("by_epoch", True) is False]


def rescale_schedule(cfg: Any, old: int, new: int, *, checkpoints: bool = True) -> None:
    """Move every iteration-based scheduler's begin/end, MultiStepLR ``milestones`` and cosine ``T_max`` from a
    schedule of ``old`` iterations to ``new`` proportionally; with ``checkpoints``, also ``checkpoint_interval``
    (at least one mid-run checkpoint, at most two: the rule for shortened runs)."""
    def move(v: int) -> int:
        # Boundaries inside the schedule keep >= 2 iterations: mmengine's LinearLR warm-up over ONE iteration never
        # reaches the base LR (it stays at start_factor and the chained cosine decays from there).
        return 0 if not v else new if v >= old else min(new - 1, max(2, round(v * new / old)))

    for s in _iter_schedulers(cfg):
        s["begin"], s["end"] = move(int(s.get("begin", 0))), move(int(s.get("end", old)))
        if "T_max" in s:
            s["T_max"] = s["end"] - s["begin"]
        if s.get("milestones"):  # counted from the scheduler's begin, which moved proportionally too
            s["milestones"] = [max(1, round(int(m) * new / old)) for m in s["milestones"]]
    scheds = cfg.get("param_scheduler")
    if isinstance(scheds, list):  # a run too short for a phase (a 1-step run has no room for warm-up) drops it
        cfg.param_scheduler = [s for s in scheds if s.get("by_epoch", True) is not False
                               or int(s.get("end", new)) > int(s.get("begin", 0))]
    if checkpoints and "checkpoint_interval" in cfg:  # at least one mid-run checkpoint, at most two (slow on CPU)
        cfg.checkpoint_interval = max(move(int(cfg.checkpoint_interval)), new // 2)


def set_iterations(cfg: Any, max_iters: int, *, val_interval: int | None = None) -> None:
    """Change an iteration-based schedule's length, rescaling every iteration-based ``param_scheduler`` begin/end
    proportionally (warm-up keeps its share) and ``checkpoint_interval``. Tasks call this for ``--preset mini``;
    the runner calls it when ``--cfg-options train_cfg.max_iters=N`` leaves the schedule at another length."""
    # The schedule's own length (not train_cfg.max_iters, which --cfg-options may already have changed).
    ends = [int(s["end"]) for s in _iter_schedulers(cfg) if s.get("end") is not None]
    old = max(ends) if ends else int(cfg.train_cfg.max_iters)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = val_interval or max_iters
    rescale_schedule(cfg, old, max_iters)


def fit_schedule(cfg: Any) -> None:
    """A user who sets only ``train_cfg.max_iters`` gets the schedule stretched to it (mmengine would otherwise
    fail on ``end <= begin`` or silently keep the LR flat after the old end)."""
    if "train_cfg" not in cfg or "max_iters" not in cfg.train_cfg:
        return
    ends = [int(s["end"]) for s in _iter_schedulers(cfg) if s.get("end") is not None]
    new = int(cfg.train_cfg.max_iters)
    if ends and max(ends) != new:
        rescale_schedule(cfg, max(ends), new)
    if int(cfg.train_cfg.get("val_interval", new)) > new:
        cfg.train_cfg.val_interval = new


def scale_iterations(cfg: Any, factor: int) -> None:
    """Every iteration count of an iteration-based loop x ``factor`` (optimizer steps -> micro-iterations)."""
    tc = cfg.train_cfg
    if factor == 1 or "max_iters" not in tc:
        return
    old = int(tc.max_iters)
    tc.max_iters = old * factor
    if tc.get("val_interval"):
        tc.val_interval = int(tc.val_interval) * factor
    rescale_schedule(cfg, old, old * factor, checkpoints=False)
    if cfg.get("checkpoint_interval"):
        cfg.checkpoint_interval = int(cfg.checkpoint_interval) * factor
