"""Building the resolved mmengine config of one run: the task's config file + backbone + weights' normalisation +
task wiring + ``--cfg-options`` + global batch / accumulation / LR / length (:mod:`rs_transfer.batching`) + the
generic training wiring (hooks, AMP/EMA switches, distributed).

Split from :mod:`rs_transfer.runner` (which re-exports the public names) to keep each module readable. The order
of the steps is the task contract (``tasks/base.py``).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from rs_transfer.batching import BATCH_KEYS
from rs_transfer.errors import UserError
from rs_transfer.tasks import RunContext, Task

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RUNNER_SWITCHES = ("amp", "ema", "ema_momentum", "compile", "checkpoint_interval", "log_interval")


def config_dir() -> Path:
    """Where task configs live: the source tree's ``configs/`` (editable install) or the installed package."""
    if CONFIG_DIR.is_dir():
        return CONFIG_DIR
    import rs_transfer.configs as pkg

    return Path(pkg.__file__).parent


# ---- config ------------------------------------------------------------------------------------------------------
def lazy(obj: Any) -> Any:
    """A class/function as the LazyObject that new-style configs hold for their own imports: anything the runner
    inserts must look the same, or mmengine cannot print/dump the config."""
    from mmengine.config.lazy import LazyObject

    return LazyObject(obj.__module__, obj.__name__)


def parse_cfg_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> dict, with mmengine's DictAction value parsing (ints, floats, lists, None)."""
    from mmengine.config import DictAction

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--cfg-options expects KEY=VALUE pairs, got {pair!r} (e.g. train_cfg.max_iters=100)")
        key, value = pair.split("=", 1)
        out[key] = DictAction._parse_iterable(value)
    return out


def load_config(task: Task, protocol: str, config: str | None) -> tuple[Any, Path]:
    from mmengine.config import Config

    path = Path(config) if config else config_dir() / task.config_for(protocol)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (pass an existing file to --config, or leave it out to use "
                        f"configs/{task.config_for(protocol)})")
    try:
        return Config.fromfile(str(path)), path
    except Exception as err:  # mmengine raises many types for malformed configs; the user needs the first line
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read config {path}: {type(err).__name__}: {msg}") from err


def check_cfg_options(cfg: Any, options: dict[str, Any]) -> None:
    """Typos, keys nothing reads and values of the wrong kind are one-line errors (rules: :mod:`rs_transfer.cfgcheck`).
    """
    from rs_transfer.cfgcheck import check_cfg_options as check

    check(cfg, options, list(RUNNER_SWITCHES) + list(BATCH_KEYS))


def merge_cfg_options(cfg: Any, options: dict[str, Any]) -> None:
    try:
        cfg.merge_from_dict(options)
    except Exception as err:
        raise UserError(f"--cfg-options {options}: {err}") from err


def _iter_schedulers(cfg: Any) -> list[Any]:
    scheds = cfg.get("param_scheduler") or []
    return [s for s in (scheds if isinstance(scheds, list) else [scheds]) if s.get("by_epoch", True) is False]


def _rescale_schedule(cfg: Any, old: int, new: int, *, checkpoints: bool = True) -> None:
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
    _rescale_schedule(cfg, old, max_iters)


def _fit_schedule(cfg: Any) -> None:
    """A user who sets only ``train_cfg.max_iters`` gets the schedule stretched to it (mmengine would otherwise
    fail on ``end <= begin`` or silently keep the LR flat after the old end)."""
    if "train_cfg" not in cfg or "max_iters" not in cfg.train_cfg:
        return
    ends = [int(s["end"]) for s in _iter_schedulers(cfg) if s.get("end") is not None]
    new = int(cfg.train_cfg.max_iters)
    if ends and max(ends) != new:
        _rescale_schedule(cfg, max(ends), new)
    if int(cfg.train_cfg.get("val_interval", new)) > new:
        cfg.train_cfg.val_interval = new


def _set_backbone(cfg: Any, backbone: str, model_overrides: dict[str, Any] | None, weights: str | None) -> dict:
    from rs_transfer.backbones import get_spec
    from rs_transfer.backbones.registry import _check_overrides

    spec = get_spec(backbone)
    if "model" not in cfg or "backbone" not in cfg.model:
        raise UserError("the config has no model.backbone dict; every task config must define "
                        "model = dict(..., backbone=dict(type=ResNetRS, <task-level keys>))")
    task_keys = {k: v for k, v in dict(cfg.model.backbone).items() if k != "type"}
    merged = {**spec.kwargs, **task_keys, **(model_overrides or {})}
    _check_overrides(spec.builder, merged, backbone)
    if weights:
        merged["weights"] = weights
    cfg.model.backbone = dict(type=lazy(spec.builder), **merged)
    return merged


def _apply_generic(cfg: Any, ctx: RunContext, resume: bool, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Work dir, seed, launcher, distributed backend, hooks, AMP/EMA switches. ``batch``: the facts of
    :func:`rs_transfer.batching.apply_batch` (EMA momentum follows global batch and accumulation). Returns facts."""
    from rs_transfer.batching import ema_momentum
    from rs_transfer.normcheck import NormalizationCheckHook
    import torch
    from mmengine.hooks import EMAHook, IterTimerHook, LoggerHook, ParamSchedulerHook
    from mmengine.hooks import DistSamplerSeedHook
    from mmengine.optim import AmpOptimWrapper
    from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer

    from rs_transfer.checkpoints import AtomicCheckpointHook  # atomic, preemptible; keeps only the newest

    facts: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    cfg.work_dir = str(ctx.work_dir)
    # mmengine names loggers/visualizers after the experiment (default: config name + timestamp to the second), so
    # two runs started in the same second in one process (a study, a resume) would share a logger: make it unique.
    if "experiment_name" not in cfg:
        cfg.experiment_name = f"{ctx.task}-{ctx.backbone}-{ctx.protocol}-seed{ctx.seed}-{uuid.uuid4().hex[:8]}"
    cfg.randomness = {**dict(cfg.get("randomness") or {}), "seed": ctx.seed}
    cfg.launcher = ctx.launcher
    cfg.resume = resume
    env = dict(cfg.get("env_cfg") or {})
    env["dist_cfg"] = {**dict(env.get("dist_cfg") or {}), "backend": "nccl" if cuda else "gloo"}
    cfg.env_cfg = env
    if not cuda:
        cfg.model_wrapper_cfg = dict(type="CPUDistributedDataParallel")

    switches = {k: cfg.pop(k) for k in RUNNER_SWITCHES if k in cfg}
    amp = switches.get("amp")
    if amp and cuda:
        cfg.optim_wrapper.type = lazy(AmpOptimWrapper)
        cfg.optim_wrapper.dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(amp, amp)
    facts["amp"] = amp if (amp and cuda) else None
    hooks = list(cfg.get("custom_hooks") or [])
    batch = batch or {}
    ema = ema_momentum(switches.get("ema"), switches.get("ema_momentum"), int(batch.get("global_batch_size", 1)),
                       int(batch.get("accumulation", 1)))
    if ema is not None and "decay" in ema:      # the recipe's decay at a reference batch, with TF's warm-up
        from rs_transfer.ema import WarmupEMA

        hooks.append(dict(type=lazy(EMAHook), ema_type=lazy(WarmupEMA), momentum=ema["momentum_per_iteration"],
                          decay=ema["decay"], batch_ratio=ema["batch_ratio"], accumulation=ema["accumulation"],
                          update_buffers=True))
    elif ema is not None:                        # the legacy per-step momentum, constant
        hooks.append(dict(type=lazy(EMAHook), momentum=ema["momentum_per_iteration"], update_buffers=True))
    facts["ema"] = ema
    facts["ema_momentum"] = ema["momentum_per_step"] if ema else None
    compile_opts = switches.get("compile")
    if compile_opts:   # our hook, not mmengine's whole-train_step compile (rs_transfer/hooks.py CompileHook)
        from rs_transfer.hooks import CompileHook

        opts = dict(compile_opts) if hasattr(compile_opts, "keys") else {}
        hooks.append(dict(type=lazy(CompileHook), options=opts))
        facts["compile"] = opts or True
    else:
        facts["compile"] = False
    # Before the first step, after the weights load: the data preprocessor's mean/std = the weights' (issue 8 §4).
    hooks += [dict(type=lazy(NormalizationCheckHook)), dict(type="RunStatsHook"), dict(type="RngStateHook")]
    from rs_transfer.weights.runhook import NormalizationMetaHook  # checkpoints record their normalisation

    hooks.append(dict(type=lazy(NormalizationMetaHook)))
    cfg.custom_hooks = hooks

    val_interval = int(cfg.train_cfg.get("val_interval", cfg.train_cfg.get("max_iters", 1)))
    defaults = dict(timer=dict(type=lazy(IterTimerHook)),
                    logger=dict(type=lazy(LoggerHook), interval=int(switches.get("log_interval", 50))),
                    param_scheduler=dict(type=lazy(ParamSchedulerHook)),
                    checkpoint=dict(type=lazy(AtomicCheckpointHook), by_epoch=False, max_keep_ckpts=1, save_last=True,
                                    interval=int(switches.get("checkpoint_interval", val_interval))),
                    sampler_seed=dict(type=lazy(DistSamplerSeedHook)))
    cfg.default_hooks = {**defaults, **dict(cfg.get("default_hooks") or {})}
    if "visualizer" not in cfg:
        cfg.visualizer = dict(type=lazy(Visualizer), vis_backends=[dict(type=lazy(LocalVisBackend)),
                                                                   dict(type=lazy(TensorboardVisBackend))])
    cfg.log_processor = {"by_epoch": False, **dict(cfg.get("log_processor") or {})}

    return facts


def build_config(task: Task, ctx: RunContext, *, config: str | None = None, cfg_options: dict | None = None,
                 model_overrides: dict | None = None, resume: bool = False) -> tuple[Any, Path, dict[str, Any]]:
    """The fully resolved mmengine Config for one run (what results.json records), plus facts for results."""
    from rs_transfer.batching import apply_batch

    cfg, path = load_config(task, ctx.protocol, config)
    reference_batch = cfg.get("global_batch_size")   # the batch the file's LR and length were written for
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        merge_cfg_options(cfg, cfg_options)
    ctx.backbone_kwargs = _set_backbone(cfg, ctx.backbone, model_overrides, ctx.weights)
    if isinstance(cfg.model.get("data_preprocessor"), dict):
        cfg.model.data_preprocessor.mean = list(ctx.normalization["mean"])
        cfg.model.data_preprocessor.std = list(ctx.normalization["std"])
    before = cfg.get("global_batch_size")
    task.configure(cfg, ctx)
    if cfg.get("global_batch_size") != before:   # the task (a mini preset) chose its own batch and LR
        reference_batch = cfg.get("global_batch_size")
    if cfg_options:  # the user has the last word, also over the task's mini shrinking
        merge_cfg_options(cfg, cfg_options)
        _fit_schedule(cfg)
    facts: dict[str, Any] = {}
    if "train_cfg" in cfg:  # generic training wiring last: it reads the switches the task may have changed
        batch = apply_batch(cfg, ctx.world_size, reference_batch, cfg_options)
        facts = _apply_generic(cfg, ctx, resume, batch)
        facts.update(batch)
    return cfg, path, facts
