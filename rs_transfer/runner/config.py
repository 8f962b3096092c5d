"""Building the resolved mmengine config of one run: the task's config file + backbone + weights' normalisation +
task wiring + ``--cfg-options`` + global batch / accumulation / LR / length (:mod:`rs_transfer.runner.batch`) + the
generic training wiring (hooks, AMP/EMA switches, distributed).

Split from :mod:`rs_transfer.runner` (which re-exports the public names) to keep each module readable. The order
of the steps is the task contract (``tasks/base.py``).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rs_transfer.errors import UserError
from rs_transfer.runner.batch import BATCH_KEYS
from rs_transfer.runner.schedule import fit_schedule

if TYPE_CHECKING:  # types only: tasks import the runner's schedule helpers, never the other way at run time
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
    """Typos, keys nothing reads and values of the wrong kind are one-line errors (rules: :mod:`rs_transfer.runner.cfgcheck`).
    """
    from rs_transfer.runner.cfgcheck import check_cfg_options as check

    check(cfg, options, list(RUNNER_SWITCHES) + list(BATCH_KEYS))


def merge_cfg_options(cfg: Any, options: dict[str, Any]) -> None:
    try:
        cfg.merge_from_dict(options)
    except Exception as err:
        raise UserError(f"--cfg-options {options}: {err}") from err


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
    _check_builds(spec.builder, merged, backbone, model_overrides)
    if weights:
        merged["weights"] = weights
    cfg.model.backbone = dict(type=lazy(spec.builder), **merged)
    return merged


def _check_builds(builder: Any, kwargs: dict[str, Any], backbone: str, overrides: dict[str, Any] | None) -> None:
    """Values the constructor refuses (``width=-1``, an unknown ``shortcut``) are a one-line error before any work:
    the backbone is built on the meta device (no memory, no weights), where its own checks run."""
    import torch

    try:
        with torch.device("meta"):
            builder(**kwargs)
    except (ValueError, RuntimeError, TypeError, AssertionError, KeyError, ZeroDivisionError) as err:
        given = ", ".join(f"{k}={v}" for k, v in (overrides or {}).items()) or "its registered arguments"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"backbone {backbone} cannot be built with {given}: {first}") from None


def _apply_generic(cfg: Any, ctx: RunContext, resume: bool, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Work dir, seed, launcher, distributed backend, hooks, AMP/EMA switches. ``batch``: the facts of
    :func:`rs_transfer.runner.batch.apply_batch` (EMA momentum follows global batch and accumulation). Returns facts."""
    import torch

    from rs_transfer.registry import hook
    from rs_transfer.runner.ema import ema_momentum

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
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(amp, amp)
    facts["amp"] = amp if (amp and cuda) else None
    hooks = list(cfg.get("custom_hooks") or [])
    batch = batch or {}
    ema = ema_momentum(switches.get("ema"), switches.get("ema_momentum"), int(batch.get("global_batch_size", 1)),
                       int(batch.get("accumulation", 1)))
    if ema is not None and "decay" in ema:      # the recipe's decay at a reference batch, with TF's warm-up
        hooks.append(dict(type="EMAHook", ema_type="rs_transfer.WarmupEMA", momentum=ema["momentum_per_iteration"],
                          decay=ema["decay"], batch_ratio=ema["batch_ratio"], accumulation=ema["accumulation"],
                          update_buffers=True))
    elif ema is not None:                        # the legacy per-step momentum, constant
        hooks.append(dict(type="EMAHook", momentum=ema["momentum_per_iteration"], update_buffers=True))
    facts["ema"] = ema
    facts["ema_momentum"] = ema["momentum_per_step"] if ema else None
    compile_opts = switches.get("compile")
    if compile_opts:   # our hook, not mmengine's whole-train_step compile (rs_transfer/runner/hooks.py CompileHook)
        opts = dict(compile_opts) if hasattr(compile_opts, "keys") else {}
        hooks.append(dict(type=hook("CompileHook"), options=opts))
        facts["compile"] = opts or True
    else:
        facts["compile"] = False
    # Before the first step, after the weights load: the data preprocessor's mean/std = the weights' (issue 8 §4);
    # checkpoints record their normalisation (NormalizationMetaHook). Hooks are named by registry name
    # (rs_transfer/registry.py), never by module path: the config hash must not change when code moves.
    hooks += [dict(type=hook("NormalizationCheckHook")), dict(type=hook("RunStatsHook")),
              dict(type=hook("RngStateHook")), dict(type=hook("NormalizationMetaHook"))]
    cfg.custom_hooks = hooks

    val_interval = int(cfg.train_cfg.get("val_interval", cfg.train_cfg.get("max_iters", 1)))
    defaults = dict(timer=dict(type="IterTimerHook"),
                    logger=dict(type="LoggerHook", interval=int(switches.get("log_interval", 50))),
                    param_scheduler=dict(type="ParamSchedulerHook"),
                    # atomic, preemptible; keeps only the newest (rs_transfer/runner/checkpoints.py)
                    checkpoint=dict(type=hook("AtomicCheckpointHook"), by_epoch=False, max_keep_ckpts=1,
                                    save_last=True, interval=int(switches.get("checkpoint_interval", val_interval))),
                    sampler_seed=dict(type="DistSamplerSeedHook"))
    cfg.default_hooks = {**defaults, **dict(cfg.get("default_hooks") or {})}
    if "visualizer" not in cfg:
        cfg.visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"),
                                                               dict(type="TensorboardVisBackend")])
    cfg.log_processor = {"by_epoch": False, **dict(cfg.get("log_processor") or {})}

    return facts


def build_config(task: Task, ctx: RunContext, *, config: str | None = None, cfg_options: dict | None = None,
                 model_overrides: dict | None = None, resume: bool = False) -> tuple[Any, Path, dict[str, Any]]:
    """The fully resolved mmengine Config for one run (what results.json records), plus facts for results."""
    from rs_transfer.runner.batch import apply_batch

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
        fit_schedule(cfg)
    facts: dict[str, Any] = {}
    if "train_cfg" in cfg:  # generic training wiring last: it reads the switches the task may have changed
        batch = apply_batch(cfg, ctx.world_size, reference_batch, cfg_options)
        facts = _apply_generic(cfg, ctx, resume, batch)
        facts.update(batch)
    return cfg, path, facts
