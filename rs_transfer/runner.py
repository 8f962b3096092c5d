"""ONE runner for every task: task + backbone + weights -> mmengine config -> train/evaluate -> results.json.

Public API: :func:`run_experiment` (the CLI's ``rs-transfer run`` and the studies call it). Task-specific knowledge
lives in the task module (contract: ``tasks/base.py``); everything here is generic.

Runner switches a config may set at top level (read and removed by :mod:`rs_transfer.runconfig`, turned into
mmengine objects):

- ``amp = "bf16" | "fp16" | None``: mixed precision through ``AmpOptimWrapper``, only when CUDA is available
  (recorded in results.json as ``amp``; CPU runs are fp32).
- ``ema = dict(decay=0.9999, reference_batch=4096) | None``: ``EMAHook`` with BN statistics averaged too
  (``update_buffers=True``; PROTOCOLS.md "EMA of weights ... also of BN statistics"); ``decay`` is per optimizer
  step at ``reference_batch``, converted to the run's global batch and accumulation (rs_transfer/batching.py),
  with TF's warm-up ``min(decay, (1 + t) / (10 + t))`` (rs_transfer/ema.py: without it a 10-epoch run would
  evaluate mostly its first step's weights). The legacy ``ema_momentum = float`` (mmengine momentum per optimizer
  step, constant) still works.
- ``compile = True | dict(**torch.compile options)``: ``torch.compile`` of the model's backbone in place
  (rs_transfer/hooks.py ``CompileHook``; mmengine's own switch, which compiles the optimizer step too, fails on
  torch 2.13). Recorded in results.json as ``compile``.
- ``checkpoint_interval`` (optimizer steps, default: every validation) and ``log_interval`` (default 50).
- ``global_batch_size``, ``max_per_process_batch``, ``accumulation``: the protocol's batch, independent of the
  number of processes (rs_transfer/batching.py): per-process batch, gradient accumulation, LR and iteration counts
  are derived from them; ``auto_scale_lr`` is ignored when ``global_batch_size`` is declared.

The input normalisation of the data preprocessor and of the loaded weights (mean and std) is checked after the
weights load, before the first step (rs_transfer/normcheck.py).
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
from rs_transfer.runconfig import (  # noqa: F401  (re-exported: tasks and tests import them from here)
    RUNNER_SWITCHES, build_config, config_dir, lazy, parse_cfg_options, set_iterations)
from rs_transfer.normcheck import check_normalization  # noqa: F401  (re-exported: tasks call it before features)
from rs_transfer.tasks import PRESETS, RunContext, Task, get_task
from rs_transfer.tasks._corrupt import summary as skipped_files_summary
from rs_transfer.weights.normalization import warn_once_per_run

LAUNCHERS = ("none", "pytorch", "slurm")


# ---- weights ---------------------------------------------------------------------------------------------------
def weights_info(source: str | None, *, trust: bool = False, normalization: str | None = None) -> dict[str, Any]:
    """Path, checksum and input normalisation of a weight source, known BEFORE the model is built (the data
    preprocessor needs the normalisation). Decided by the same function as in :func:`rs_transfer.load_weights`
    (:func:`rs_transfer.weights.decide_normalization`), which decides again when ``ResNetRS.init_weights`` loads
    the file. ``normalization`` is the explicit ``--normalization``; ``normalization.how`` says how it was decided
    and ``normalization.warning`` is set when it is a default (results.json records both)."""
    from rs_transfer.weights import decide_normalization, read_source
    from rs_transfer.weights.sources import sha256

    if not source:
        decision = decide_normalization(source=None, explicit=normalization)
        return {"source": None, "path": None, "sha256": None, "named": False, "normalization": decision.to_dict()}
    info = read_source(source, normalization=normalization, trust=trust)
    return {"source": str(source), "path": str(info.path), "sha256": sha256(info.path),
            "named": info.spec is not None, "layout": info.mapped.layout.name, "wrapper": info.raw.wrapper,
            "normalization": info.decision.to_dict()}


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


def _used(runner: Any, cfg: Any) -> dict[str, Any]:
    """Facts read back from the built runner: the optimizer's base LR (after any scaling) and, for epoch-based
    loops, the samples consumed (epochs x the sampler's per-process length x processes, padding included)."""
    out: dict[str, Any] = {}
    try:
        out["lr"] = float(runner.optim_wrapper.optimizer.defaults["lr"])
    except (AttributeError, KeyError, TypeError):
        pass
    if "max_epochs" in cfg.train_cfg and "max_iters" not in cfg.train_cfg:
        try:
            per_epoch = len(runner.train_dataloader.sampler) * runner.world_size
            out["train_samples"] = int(cfg.train_cfg.max_epochs) * per_epoch
            out["optimizer_steps"] = -(-runner.train_loop.max_iters // int(cfg.optim_wrapper.get(
                "accumulative_counts", 1)))
        except (AttributeError, TypeError):
            pass
    return out


def _train(cfg: Any, header: list[str] | None = None
           ) -> tuple[dict[str, float], float | None, int, dict[str, Any], dict[str, Any]]:
    """Train + evaluate; metrics, throughput, rank, what the built runner actually used (LR, samples) and the
    timing of :class:`rs_transfer.hooks.TrainTimeHook` (its ``summary()`` plus ``segment``, this process's own
    train and eval seconds). The console shows ``header``, a progress bar and warnings; mmengine's full log goes to
    the work dir (rs_transfer/console.py; ``--verbose`` shows it)."""
    import torch

    from rs_transfer.checkpoints import preemption_guard
    from rs_transfer.console import build_runner
    from rs_transfer.hooks import RunStatsHook, TrainTimeHook
    from rs_transfer.weights import mmengine_safe_globals

    # mmengine 0.10 checkpoints pickle HistoryBuffer, numpy scalars...: allow-list exactly those for resume.
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    with preemption_guard():  # SIGTERM/SIGINT: checkpoint at the next iteration boundary, then RunInterrupted
        runner = build_runner(cfg, header)
        # Measurement only (it changes nothing the run computes): registered here, not through the config's
        # custom_hooks, so the resolved config and its hash stay as they were and finished runs stay reusable.
        runner.register_hook(TrainTimeHook(), priority="LOWEST")
        runner.train()
    stats = next(h for h in runner.hooks if isinstance(h, RunStatsHook))
    if not stats.metrics and cfg.get("resume") and runner.iter >= runner.max_iters and runner.val_loop is not None:
        runner.val_loop.run()  # resumed from the final checkpoint (killed during the last validation): evaluate it
    clock = next(h for h in runner.hooks if isinstance(h, TrainTimeHook))
    timing = {**clock.summary(), "segment": dict(clock.segment)}
    seg = clock.segment   # this segment's global training images / seconds (the one training clock)
    thr = seg["train_images"] / seg["train_time_s"] if seg["train_time_s"] > 0 and seg["train_images"] else None
    return stats.metrics, thr, runner.rank, _used(runner, cfg), timing


def _timing_keys(timing: dict[str, Any] | None, wall_time_s: float) -> dict[str, Any]:
    """results.json's timing keys. ``train_time_s`` / ``eval_time_s`` / ``train_images`` are summed over every
    segment of a resumed run (TrainTimeHook); ``startup_s`` is the rest of THIS segment's ``wall_time_s`` (set-up,
    data check, model build and weight loading, data-loader start and resume replay, checkpoint writes), because
    earlier segments' wall time is not recorded anywhere. All None for protocols that do not train (linear probe,
    kNN: features + scikit-learn)."""
    keys = ("train_time_s", "eval_time_s", "startup_s", "train_images", "train_images_per_s", "train_segments")
    if timing is None:
        return dict.fromkeys(keys)
    seg = timing["segment"]   # this process's own seconds, known even when the sums are not (summary())
    startup = max(0.0, wall_time_s - float(seg["train_time_s"]) - float(seg["eval_time_s"]))
    return {**{k: timing[k] for k in keys if k != "startup_s"}, "startup_s": round(startup, 3)}


def _portable(resolved: dict[str, Any], ctx: RunContext) -> Any:
    """The config with this machine's work/data folders replaced by placeholders: the hash then identifies the
    configuration, wherever it ran."""
    import json

    text = json.dumps(resolved).replace(str(ctx.work_dir), "<work_dir>").replace(str(ctx.data_root), "<data_root>")
    out = json.loads(text)
    for key in ("experiment_name", "resume", "load_from"):  # unique per run / how it ran, not what it computes
        out.pop(key, None)
    return out


def default_work_dir(task: str, backbone: str, weights: str | None, protocol: str, preset: str, seed: int) -> Path:
    """``work_dirs/<task>-<backbone>-<weights>-<protocol>-<preset>-seed<k>`` (a run without ``--work-dir``)."""
    tag = (Path(weights).stem if weights and (os.sep in weights or "." in Path(weights).name) else weights) or "scratch"
    return Path("work_dirs") / f"{task}-{backbone}-{tag}-{protocol}-{preset}-seed{seed}"


def _one_run_per_work_dir(fn: Any) -> Any:
    """Hold the work dir's lock (rs_transfer/worklock.py) for the whole run: a second run into the same folder
    (another seed, a second study, a requeued job racing the original) exits with one line naming the holder
    instead of sharing checkpoints and results.json."""
    import functools

    from rs_transfer.worklock import lock_for_run

    @functools.wraps(fn)
    def locked(task: str, backbone: str, **kw: Any) -> dict[str, Any]:
        wd = kw.get("work_dir") or default_work_dir(task, backbone, kw.get("weights"), kw.get("protocol", "finetune"),
                                                    kw.get("preset", "paper"), kw.get("seed", 0))
        with lock_for_run(Path(wd).resolve(), kw.get("launcher", "none")):
            return fn(task, backbone, **{**kw, "work_dir": wd})
    return locked


@_one_run_per_work_dir
@warn_once_per_run()  # weights_info and the backbone's load decide the normalisation: its warning prints once
def run_experiment(task: str, backbone: str, *, weights: str | None = None, preset: str = "paper",
                   protocol: str = "finetune", work_dir: str | Path | None = None, seed: int = 0,
                   config: str | None = None, cfg_options: dict | None = None,
                   model_overrides: dict | None = None, launcher: str = "none", resume: bool = False,
                   data_root: str | Path | None = None, trust: bool = False,
                   strict: bool = True, normalization: str | None = None) -> dict[str, Any]:
    """Run one (task, backbone, weights, protocol, seed) and write ``work_dir/results.json`` atomically.

    Returns the results dict. ``model_overrides`` are extra ResNetRS kwargs (``se_ratio=0``,
    ``drop_path_rate=0.1``). ``data_root`` defaults to ``$RS_TRANSFER_HOME/data/<task>`` (``--preset mini``: the
    generated mini dataset). ``resume=True`` continues from the newest complete checkpoint in ``work_dir``
    (``results.json`` records its iteration as ``resumed_from``; None when there was none). ``trust`` / ``strict``
    are :func:`rs_transfer.load_weights`'s (CLI ``--trust`` / ``--no-strict``), ``normalization`` its explicit
    input normalisation (CLI ``--normalization imagenet|unit|MEAN,STD``).
    """
    from rs_transfer.checkpoints import export_final_weights, prepare_resume, remove_training_checkpoints

    t0 = time.time()
    the_task = get_task(task)
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    the_task.config_for(protocol)  # validates the protocol
    if the_task.run_protocol is not None and protocol != "finetune" and launcher != "none":
        raise UserError(f"protocol {protocol!r} runs in one process (features + scikit-learn); drop --launcher "
                        "and torchrun")
    from rs_transfer.backbones import get_spec

    get_spec(backbone)  # validates the name before any heavy work
    winfo = weights_info(weights, trust=trust, normalization=normalization)
    if weights and normalization is not None:  # ResNetRS.init_weights passes it to load_weights
        model_overrides = {**(model_overrides or {}), "weights_normalization": str(normalization)}
    if weights and (trust or not strict):  # ResNetRS.init_weights passes them to load_weights
        model_overrides = {**(model_overrides or {}), **({"weights_trust": True} if trust else {}),
                           **({"weights_strict": False} if not strict else {})}
    if data_root is None:
        root = ensure_mini(the_task) if preset == "mini" else the_task.default_data_root()
    else:
        root = Path(data_root).expanduser()
    the_task.check(root).raise_if_bad()
    work_dir = Path(work_dir or default_work_dir(task, backbone, weights, protocol, preset, seed)).resolve()
    world_size = _init_distributed(launcher)
    # Named sources stay names (load_weights then knows the publisher's normalisation); files become absolute paths.
    bb_weights = winfo["source"] if winfo.get("named") else winfo["path"]
    ctx = RunContext(task=task, backbone=backbone, backbone_kwargs={}, weights=bb_weights,
                     normalization=winfo["normalization"], preset=preset, protocol=protocol, data_root=Path(root),
                     work_dir=work_dir, seed=seed, launcher=launcher, world_size=world_size)
    cfg, cfg_path, facts = build_config(the_task, ctx, config=config, cfg_options=cfg_options,
                                        model_overrides=model_overrides, resume=resume)
    point = prepare_resume(cfg, work_dir) if resume and "train_cfg" in cfg else None
    resolved = to_jsonable(cfg.to_dict())

    from rs_transfer.console import header_lines, print_header, start_log

    rank, throughput, trained, timing = 0, None, False, None
    if the_task.run_protocol is not None and protocol != "finetune":
        from mmengine.runner import set_random_seed

        set_random_seed(seed)
        print_header(header_lines(ctx, facts) + start_log(work_dir))
        metrics = the_task.run_protocol(cfg, ctx)
    else:
        metrics, throughput, rank, used, timing = _train(cfg, header_lines(ctx, facts))
        facts.update(used)
        trained = True
    if the_task.metric not in metrics:
        if not metrics:
            raise UserError(f"task {task}: no evaluation ran, so there is no {the_task.metric!r} to report; make "
                            "train_cfg.val_interval divide train_cfg.max_iters (or leave val_interval out)")
        raise RuntimeError(f"task {task}: the evaluator reported {sorted(metrics)} but not the headline metric "
                           f"{the_task.metric!r} (Task.metric must name one of the evaluator's keys)")
    wall_time_s = round(time.time() - t0, 3)
    results = {
        "schema": 1, "task": task, "task_title": the_task.title, "metric": the_task.metric,
        "value": float(metrics[the_task.metric]), "higher_is_better": the_task.higher_is_better,
        "backbone": backbone, "backbone_kwargs": ctx.backbone_kwargs, "protocol": protocol, "preset": preset,
        "weights": winfo, "seed": seed, "metrics": {k: to_jsonable(v) for k, v in metrics.items()},
        "config_file": str(cfg_path), "config": resolved, "config_hash": config_hash(_portable(resolved, ctx)),
        "git": git_revision(), "wall_time_s": wall_time_s, "device": _device(),
        "world_size": world_size, "launcher": launcher, "throughput_samples_per_s": throughput,
        **_timing_keys(timing, wall_time_s),
        "resumed_from": point.iteration if point else None, "final_weights": None, "data_root": str(root),
        "work_dir": str(work_dir), "extra": ctx.extra, **facts,
        # Unreadable images/annotations the datasets skipped (tasks/_corrupt.py): counts per phase, a few names.
        "skipped_files": skipped_files_summary(work_dir),
    }
    if preset == "mini":
        results["note"] = "MINI preset: tiny generated data, a few iterations; a smoke test, not a benchmark number"
    if rank == 0 and trained:  # the evaluated model without optimizer state; then the resume state can go
        # A config's ``recipe`` block (imagenet, kinetics400: the training toggles) travels with the weights.
        recipe = {"recipe": resolved["recipe"]} if isinstance(resolved.get("recipe"), dict) else {}
        exported = export_final_weights(work_dir, ctx.normalization, task=task, backbone=backbone,
                                        backbone_kwargs=to_jsonable(ctx.backbone_kwargs), seed=seed,
                                        weights_source=winfo["source"] or "none", **recipe)
        results["final_weights"] = str(exported) if exported else None
    if rank == 0:
        write_json_atomic(work_dir / RESULTS_NAME, results)
        if trained and results["final_weights"]:
            remove_training_checkpoints(work_dir)
    return results
