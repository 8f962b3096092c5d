"""ONE runner for every task: task + backbone + weights -> mmengine config -> train/evaluate -> results.json.

Public API: :func:`run_experiment` (the CLI's ``rs-transfer run`` and the studies call it). Task-specific knowledge
lives in the task module (contract: ``tasks/base.py``); everything here is generic.

Runner switches a config may set at top level (read and removed here, turned into mmengine objects):

- ``amp = "bf16" | "fp16" | None``: mixed precision through ``AmpOptimWrapper``, only when CUDA is available
  (recorded in results.json as ``amp``; CPU runs are fp32).
- ``ema_momentum = float | None``: ``EMAHook`` (momentum 1e-4 per step = decay 0.9999, the RS recipe), with BN
  statistics averaged too (``update_buffers=True``; PROTOCOLS.md "EMA of weights ... also of BN statistics").
- ``checkpoint_interval`` (iterations, default: every validation) and ``log_interval`` (default 50).
- ``auto_scale_lr = dict(enable=True, base_batch_size=B)``: LR x (processes x batch x accumulation) / B, so results do
  not depend on GPU count; mmengine counts processes x batch only, so ``base_batch_size`` is divided by
  ``optim_wrapper.accumulative_counts`` here.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.results import RESULTS_NAME, config_hash, git_revision, to_jsonable, write_json_atomic
from rs_transfer.tasks import PRESETS, RunContext, Task, get_task

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LAUNCHERS = ("none", "pytorch", "slurm")
RUNNER_SWITCHES = ("amp", "ema_momentum", "checkpoint_interval", "log_interval")


def config_dir() -> Path:
    """Where task configs live: the source tree's ``configs/`` (editable install) or the installed package."""
    if CONFIG_DIR.is_dir():
        return CONFIG_DIR
    import rs_transfer.configs as pkg

    return Path(pkg.__file__).parent


# ---- weights ---------------------------------------------------------------------------------------------------
def weights_info(source: str | None) -> dict[str, Any]:
    """Path, checksum and input normalisation of a weight source, known BEFORE the model is built (the data
    preprocessor needs the normalisation). Same rules as :func:`rs_transfer.load_weights`, which checks them again
    when ``ResNetRS.init_weights`` loads the file."""
    from rs_transfer.weights import IMAGENET, NORMALIZATIONS, UNIT, read_checkpoint, resolve
    from rs_transfer.weights.sources import sha256

    if not source:
        return {"source": None, "path": None, "sha256": None,
                "normalization": {"name": IMAGENET.name, "mean": list(IMAGENET.mean), "std": list(IMAGENET.std)}}
    path, spec = resolve(source)
    if spec is not None:
        norm = spec.normalization
    else:
        raw = read_checkpoint(path)
        if raw.meta.get("normalization") in NORMALIZATIONS:
            norm = NORMALIZATIONS[raw.meta["normalization"]]
        else:
            norm = UNIT if raw.wrapper in ("simclrv1", "simclrv2") else IMAGENET
    return {"source": str(source), "path": str(path), "sha256": sha256(path),
            "normalization": {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std)}}


# ---- data --------------------------------------------------------------------------------------------------------
def ensure_mini(task: Task) -> Path:
    """The task's mini dataset, created once: written into a private temporary folder, then renamed into place, so
    concurrent processes (DDP ranks, parallel studies) never see a half-written dataset."""
    import json

    root = task.mini_root()
    marker = root / "MINI.json"
    if not marker.is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.parent / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            data_root = Path(task.make_mini(tmp)).resolve()
            rel = data_root.relative_to(tmp.resolve())
            (tmp / "MINI.json").write_text(json.dumps({"task": task.name, "data_root": str(rel)}))
            try:
                os.rename(tmp, root)
            except OSError:
                if not marker.is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / json.loads(marker.read_text())["data_root"]


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


def merge_cfg_options(cfg: Any, options: dict[str, Any]) -> None:
    try:
        cfg.merge_from_dict(options)
    except Exception as err:
        raise UserError(f"--cfg-options {options}: {err}") from err


def set_iterations(cfg: Any, max_iters: int, *, val_interval: int | None = None) -> None:
    """Change an iteration-based schedule's length, rescaling every ``param_scheduler`` begin/end proportionally
    (warm-up keeps its share of the schedule). Tasks call this for ``--preset mini``."""
    old = int(cfg.train_cfg.max_iters)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = val_interval or max_iters
    scheds = cfg.get("param_scheduler") or []
    for s in scheds if isinstance(scheds, list) else [scheds]:
        for key in ("begin", "end", "T_max"):
            if key in s and s[key] is not None:
                s[key] = max(1, round(s[key] * max_iters / old)) if s[key] else 0


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


def _apply_generic(cfg: Any, ctx: RunContext, resume: bool) -> dict[str, Any]:
    """Work dir, seed, launcher, distributed backend, hooks, AMP/EMA switches, LR scaling. Returns facts for results."""
    import torch
    from mmengine.hooks import CheckpointHook, EMAHook, IterTimerHook, LoggerHook, ParamSchedulerHook
    from mmengine.hooks import DistSamplerSeedHook
    from mmengine.optim import AmpOptimWrapper
    from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer

    facts: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    cfg.work_dir = str(ctx.work_dir)
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
    if switches.get("ema_momentum"):
        hooks.append(dict(type=lazy(EMAHook), momentum=float(switches["ema_momentum"]), update_buffers=True))
    facts["ema_momentum"] = switches.get("ema_momentum")
    hooks += [dict(type="RunStatsHook"), dict(type="RngStateHook")]
    cfg.custom_hooks = hooks

    val_interval = int(cfg.train_cfg.get("val_interval", cfg.train_cfg.get("max_iters", 1)))
    defaults = dict(timer=dict(type=lazy(IterTimerHook)),
                    logger=dict(type=lazy(LoggerHook), interval=int(switches.get("log_interval", 50))),
                    param_scheduler=dict(type=lazy(ParamSchedulerHook)),
                    checkpoint=dict(type=lazy(CheckpointHook), by_epoch=False, max_keep_ckpts=2, save_last=True,
                                    interval=int(switches.get("checkpoint_interval", val_interval))),
                    sampler_seed=dict(type=lazy(DistSamplerSeedHook)))
    cfg.default_hooks = {**defaults, **dict(cfg.get("default_hooks") or {})}
    if "visualizer" not in cfg:
        cfg.visualizer = dict(type=lazy(Visualizer), vis_backends=[dict(type=lazy(LocalVisBackend)),
                                                                   dict(type=lazy(TensorboardVisBackend))])
    cfg.log_processor = {"by_epoch": False, **dict(cfg.get("log_processor") or {})}

    accum = int(cfg.optim_wrapper.get("accumulative_counts", 1))
    bs = int(cfg.train_dataloader.batch_size)
    facts.update(batch_size_per_process=bs, accumulative_counts=accum,
                 effective_batch_size=bs * accum * ctx.world_size)
    scale = cfg.get("auto_scale_lr")
    if scale and scale.get("enable"):
        base = float(scale["base_batch_size"])
        cfg.auto_scale_lr = dict(enable=True, base_batch_size=base / accum)
        facts["lr_scale"] = bs * accum * ctx.world_size / base
    else:
        facts["lr_scale"] = 1.0
    return facts


def build_config(task: Task, ctx: RunContext, *, config: str | None = None, cfg_options: dict | None = None,
                 model_overrides: dict | None = None, resume: bool = False) -> tuple[Any, Path, dict[str, Any]]:
    """The fully resolved mmengine Config for one run (what results.json records), plus facts for results."""
    cfg, path = load_config(task, ctx.protocol, config)
    if cfg_options:
        merge_cfg_options(cfg, cfg_options)
    ctx.backbone_kwargs = _set_backbone(cfg, ctx.backbone, model_overrides, ctx.weights)
    if isinstance(cfg.model.get("data_preprocessor"), dict):
        cfg.model.data_preprocessor.mean = list(ctx.normalization["mean"])
        cfg.model.data_preprocessor.std = list(ctx.normalization["std"])
    facts = _apply_generic(cfg, ctx, resume) if "train_cfg" in cfg else {}
    task.configure(cfg, ctx)
    if cfg_options:  # the user has the last word, also over the task's mini shrinking
        merge_cfg_options(cfg, cfg_options)
    if "train_dataloader" in cfg:
        bs, accum = int(cfg.train_dataloader.batch_size), int(cfg.optim_wrapper.get("accumulative_counts", 1))
        facts.update(batch_size_per_process=bs, effective_batch_size=bs * accum * ctx.world_size)
    return cfg, path, facts


# ---- running -----------------------------------------------------------------------------------------------------
def _init_distributed(launcher: str) -> int:
    """Initialise torch.distributed ourselves on CPU (mmengine's init calls torch.cuda.set_device); world size."""
    import torch
    import torch.distributed as dist

    if launcher == "none":
        return 1
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if launcher == "pytorch" and "RANK" not in os.environ:
        raise UserError("--launcher pytorch needs torchrun: `torchrun --nproc_per_node N -m rs_transfer.cli run ... "
                        "--launcher pytorch`")
    if launcher == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _train(cfg: Any) -> tuple[dict[str, float], float | None, int]:
    import torch
    from mmengine.runner import Runner

    from rs_transfer.hooks import RunStatsHook
    from rs_transfer.weights import mmengine_safe_globals

    # mmengine 0.10 checkpoints pickle HistoryBuffer, numpy scalars...: allow-list exactly those for resume.
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    runner = Runner.from_cfg(cfg)
    runner.train()
    stats = next(h for h in runner.hooks if isinstance(h, RunStatsHook))
    thr = stats.throughput(int(cfg.train_dataloader.batch_size), runner.world_size)
    return stats.metrics, thr, runner.rank


def run_experiment(task: str, backbone: str, *, weights: str | None = None, preset: str = "paper",
                   protocol: str = "finetune", work_dir: str | Path | None = None, seed: int = 0,
                   config: str | None = None, cfg_options: dict | None = None,
                   model_overrides: dict | None = None, launcher: str = "none", resume: bool = False,
                   data_root: str | Path | None = None) -> dict[str, Any]:
    """Run one (task, backbone, weights, protocol, seed) and write ``work_dir/results.json`` atomically.

    Returns the results dict. ``model_overrides`` are extra ResNetRS kwargs (``se_ratio=0``,
    ``drop_path_rate=0.1``). ``data_root`` defaults to ``$RS_TRANSFER_HOME/data/<task>`` (``--preset mini``: the
    generated mini dataset). ``resume=True`` continues from the last checkpoint in ``work_dir``.
    """
    t0 = time.time()
    the_task = get_task(task)
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    the_task.config_for(protocol)  # validates the protocol
    from rs_transfer.backbones import get_spec

    get_spec(backbone)  # validates the name before any heavy work
    winfo = weights_info(weights)
    if data_root is None:
        root = ensure_mini(the_task) if preset == "mini" else the_task.default_data_root()
    else:
        root = Path(data_root).expanduser()
    the_task.check(root).raise_if_bad()
    if work_dir is None:
        tag = (Path(weights).stem if weights and (os.sep in weights or "." in Path(weights).name) else weights) or "scratch"
        work_dir = Path("work_dirs") / f"{task}-{backbone}-{tag}-{protocol}-{preset}-seed{seed}"
    work_dir = Path(work_dir).resolve()
    world_size = _init_distributed(launcher)
    ctx = RunContext(task=task, backbone=backbone, backbone_kwargs={}, weights=winfo["path"],
                     normalization=winfo["normalization"], preset=preset, protocol=protocol, data_root=Path(root),
                     work_dir=work_dir, seed=seed, launcher=launcher, world_size=world_size)
    cfg, cfg_path, facts = build_config(the_task, ctx, config=config, cfg_options=cfg_options,
                                        model_overrides=model_overrides, resume=resume)
    resolved = to_jsonable(cfg.to_dict())

    rank, throughput = 0, None
    if the_task.run_protocol is not None and protocol != "finetune":
        from mmengine.runner import set_random_seed

        set_random_seed(seed)
        metrics = the_task.run_protocol(cfg, ctx)
    else:
        metrics, throughput, rank = _train(cfg)
    if the_task.metric not in metrics:
        raise RuntimeError(f"task {task}: the evaluator reported {sorted(metrics)} but not the headline metric "
                           f"{the_task.metric!r}")
    results = {
        "schema": 1, "task": task, "task_title": the_task.title, "metric": the_task.metric,
        "value": float(metrics[the_task.metric]), "higher_is_better": the_task.higher_is_better,
        "backbone": backbone, "backbone_kwargs": ctx.backbone_kwargs, "protocol": protocol, "preset": preset,
        "weights": winfo, "seed": seed, "metrics": {k: to_jsonable(v) for k, v in metrics.items()},
        "config_file": str(cfg_path), "config": resolved, "config_hash": config_hash(resolved),
        "git": git_revision(), "wall_time_s": round(time.time() - t0, 3), "device": _device(),
        "world_size": world_size, "launcher": launcher, "throughput_samples_per_s": throughput,
        "resumed": resume, "data_root": str(root), "work_dir": str(work_dir), "extra": ctx.extra, **facts,
    }
    if preset == "mini":
        results["note"] = "MINI preset: tiny generated data, a few iterations; a smoke test, not a benchmark number"
    if rank == 0:
        write_json_atomic(work_dir / RESULTS_NAME, results)
    return results
