"""ONE runner for every task: task + backbone + weights -> mmengine config -> train/evaluate -> results.json.

Public API: :func:`prepare_run` (arguments -> the resolved run and its identity, without running: studies plan
with it) and :func:`run_experiment` (prepare, then train/evaluate; the CLI's ``rs-transfer run`` and every study
cell). Task-specific knowledge lives in the task module (contract: ``tasks/base.py``); everything here is generic.

Runner switches a config may set at top level (read and removed by :mod:`rs_transfer.runner.config`, turned into
mmengine objects):

- ``amp = "bf16" | "fp16" | None``: mixed precision through ``AmpOptimWrapper``, only when CUDA is available
  (recorded in results.json as ``amp``; CPU runs are fp32).
- ``ema = dict(decay=0.9999, reference_batch=4096) | None``: ``EMAHook`` with BN statistics averaged too
  (``update_buffers=True``; PROTOCOLS.md "EMA of weights ... also of BN statistics"); ``decay`` is per optimizer
  step at ``reference_batch``, converted to the run's global batch and accumulation (rs_transfer/runner/batch.py),
  with TF's warm-up ``min(decay, (1 + t) / (10 + t))`` (rs_transfer/runner/ema.py: without it a 10-epoch run would
  evaluate mostly its first step's weights), applied once per optimizer step whatever the accumulation. The legacy
  ``ema_momentum = float`` (mmengine momentum per optimizer step, constant) still works.
- ``compile = True | dict(**torch.compile options)``: ``torch.compile`` of the model's backbone in place
  (rs_transfer/runner/hooks.py ``CompileHook``; mmengine's own switch, which compiles the optimizer step too, fails on
  torch 2.13). Recorded in results.json as ``compile``.
- ``checkpoint_interval`` (optimizer steps, default: every validation) and ``log_interval`` (default 50).
- ``global_batch_size``, ``max_per_process_batch``, ``accumulation``: the protocol's batch, independent of the
  number of processes (rs_transfer/runner/batch.py): per-process batch, gradient accumulation, LR and iteration counts
  are derived from them; ``auto_scale_lr`` is ignored when ``global_batch_size`` is declared.

The input normalisation of the data preprocessor and of the loaded weights (mean and std) is checked after the
weights load, before the first step (rs_transfer/runner/normcheck.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_transfer.atomic import write_json_atomic
from rs_transfer.errors import UserError
from rs_transfer.paths import RESULTS_NAME
from rs_transfer.results import git_revision, to_jsonable
from rs_transfer.runner.config import build_config
from rs_transfer.runner.distributed import LAUNCHERS, init_distributed
from rs_transfer.runner.tracking import Tracking
from rs_transfer.runner.tracking import attach as attach_tracking
from rs_transfer.runner.tracking import finish as finish_tracking
from rs_transfer.studies.reuse import portable_hash
from rs_transfer.tasks import PRESETS, RunContext, Task, get_task
from rs_transfer.tasks._corrupt import summary as skipped_files_summary
from rs_transfer.tasks.mini import ensure_mini


# ---- weights ---------------------------------------------------------------------------------------------------
def weights_info(source: str | None, *, trust: bool = False, normalization: str | None = None) -> dict[str, Any]:
    """Path, checksum and input normalisation of a weight source, known BEFORE the model is built (the data
    preprocessor needs the normalisation). The file is read here, once: the model's initialiser
    (``rs_transfer.Pretrained``) is handed this same read by :func:`rs_transfer.weights.read_source`, and the
    sha256 is of the bytes that were loaded. ``normalization`` is the explicit ``--normalization``;
    ``normalization.how`` says how it was decided and ``normalization.warning`` is set when it is a default
    (results.json records both)."""
    from rs_transfer.weights import decide_normalization, read_source

    if not source:
        decision = decide_normalization(source=None, explicit=normalization)
        return {"source": None, "path": None, "sha256": None, "named": False, "normalization": decision.to_dict()}
    info = read_source(source, normalization=normalization, trust=trust)
    return {"source": str(source), "path": str(info.path), "sha256": info.raw.sha256,
            "named": info.spec is not None, "layout": info.mapped.layout.name, "wrapper": info.raw.wrapper,
            "normalization": info.decision.to_dict()}


# ---- running -----------------------------------------------------------------------------------------------------
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
    timing of :class:`rs_transfer.runner.hooks.TrainTimeHook` (its ``summary()`` plus ``segment``, this process's own
    train and eval seconds). The console shows ``header``, a progress bar and warnings; mmengine's full log goes to
    the work dir (rs_transfer/runner/console.py; ``--verbose`` shows it)."""
    import torch

    from rs_transfer.runner.checkpoints import preemption_guard
    from rs_transfer.runner.console import build_runner
    from rs_transfer.runner.hooks import FiniteLossHook, RunStatsHook, TrainTimeHook
    from rs_transfer.weights import mmengine_safe_globals

    # mmengine 0.10 checkpoints pickle HistoryBuffer, numpy scalars...: allow-list exactly those for resume.
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    with preemption_guard():  # SIGTERM/SIGINT: checkpoint at the next iteration boundary, then RunInterrupted
        runner = build_runner(cfg, header)
        # Measurement only (it changes nothing the run computes): registered here, not through the config's
        # custom_hooks, so the resolved config and its hash stay as they were and finished runs stay reusable.
        runner.register_hook(TrainTimeHook(), priority="LOWEST")
        runner.register_hook(FiniteLossHook(), priority="HIGHEST")   # a diverged run stops with one line
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


@dataclass
class PreparedRun:
    """Everything one run is, resolved and not yet run: what :func:`run_experiment` trains and what a study's plan
    compares (``config_hash`` is THE identity of :mod:`rs_transfer.studies.reuse`, the one results.json records)."""

    task: Task
    ctx: RunContext
    cfg: Any                      # the resolved mmengine Config
    cfg_path: Path
    facts: dict[str, Any]         # batch, EMA, AMP... facts results.json records
    weights: dict[str, Any]       # :func:`weights_info`
    data_root: Path
    work_dir: Path

    @property
    def resolved(self) -> dict[str, Any]:
        return to_jsonable(self.cfg.to_dict())

    @property
    def config_hash(self) -> str:
        return portable_hash(self.resolved, self.work_dir, self.data_root, self.weights.get("sha256"))


def default_work_dir(task: str, backbone: str, weights: str | None, protocol: str, preset: str, seed: int) -> Path:
    tag = (Path(weights).stem if weights and (os.sep in weights or "." in Path(weights).name) else weights) or "scratch"
    return Path("work_dirs") / f"{task}-{backbone}-{tag}-{protocol}-{preset}-seed{seed}"


def check_work_dir(work_dir: Path) -> None:
    """A work dir this run can write, or a one-line error naming what is in the way (a file, a file above it, a
    read-only or full file system), before anything is created or trained."""
    import errno

    for parent in [work_dir, *work_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == work_dir else f"sits under {parent}, which is a file"
                raise UserError(f"--work-dir {work_dir} {where}; choose a folder")
            break
    probe = work_dir / f".write-test-{os.getpid()}"
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        why = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full",
               errno.EDQUOT: "the disk quota is exceeded"}.get(err.errno, err.strerror or str(err))
        raise UserError(f"cannot write to --work-dir {work_dir}: {why}; choose another folder") from None


def prepare_run(task: str, backbone: str, *, weights: str | None = None, preset: str = "paper",
                protocol: str = "finetune", work_dir: str | Path | None = None, seed: int = 0,
                config: str | None = None, cfg_options: dict | None = None, model_overrides: dict | None = None,
                launcher: str = "none", world_size: int = 1, resume: bool = False,
                data_root: str | Path | None = None, trust: bool = False, strict: bool = True,
                normalization: str | None = None, check_data: bool = True) -> PreparedRun:
    """Validate the arguments, read the weights (once), find and check the data, and build the resolved config of
    one run. Used by :func:`run_experiment` and by every study's plan, so a plan computes exactly the identity the
    run will record. ``world_size``: the processes the run has (a study cell's own, not the planner's).
    ``check_data=False`` (planning): a data folder that fails its check is not an error yet."""
    the_task = get_task(task)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise UserError(f"--seed {seed}: a seed is an integer in 0..{2 ** 32 - 1} (numpy and torch accept no other)")
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    the_task.config_for(protocol)  # validates the protocol
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if the_task.run_protocol is not None and protocol != "finetune" and launcher != "none":
        raise UserError(f"protocol {protocol!r} runs in one process (features + scikit-learn); drop --launcher "
                        "and torchrun")
    from rs_transfer.backbones import get_spec

    get_spec(backbone)  # validates the name before any heavy work
    the_task.check_backbone(backbone)   # and that the task's config can build it (2D vs 3D)
    winfo = weights_info(weights, trust=trust, normalization=normalization)
    if weights and normalization is not None:  # the backbone's initialiser passes it to load_weights
        model_overrides = {**(model_overrides or {}), "weights_normalization": str(normalization)}
    if weights and (trust or not strict):
        model_overrides = {**(model_overrides or {}), **({"weights_trust": True} if trust else {}),
                           **({"weights_strict": False} if not strict else {})}
    if data_root is None:
        root = ensure_mini(the_task) if preset == "mini" else the_task.default_data_root()
    else:
        root = Path(data_root).expanduser()
    report = the_task.check(root)   # Kinetics: also the probe cache the task configuration reads
    if check_data:
        report.raise_if_bad()
    wd = Path(work_dir or default_work_dir(task, backbone, weights, protocol, preset, seed)).resolve()
    # Named sources stay names (load_weights then knows the publisher's normalisation); files become absolute paths.
    bb_weights = winfo["source"] if winfo.get("named") else winfo["path"]
    ctx = RunContext(task=task, backbone=backbone, backbone_kwargs={}, weights=bb_weights,
                     normalization=winfo["normalization"], preset=preset, protocol=protocol, data_root=Path(root),
                     work_dir=wd, seed=seed, launcher=launcher, world_size=world_size)
    cfg, cfg_path, facts = build_config(the_task, ctx, config=config, cfg_options=cfg_options,
                                        model_overrides=model_overrides, resume=resume)
    return PreparedRun(the_task, ctx, cfg, cfg_path, facts, winfo, Path(root), wd)


def run_experiment(task: str, backbone: str, *, weights: str | None = None, preset: str = "paper",
                   protocol: str = "finetune", work_dir: str | Path | None = None, seed: int = 0,
                   config: str | None = None, cfg_options: dict | None = None,
                   model_overrides: dict | None = None, launcher: str = "none", resume: bool = False,
                   data_root: str | Path | None = None, trust: bool = False,
                   strict: bool = True, normalization: str | None = None,
                   tracking: Tracking | None = None) -> dict[str, Any]:
    """Run one (task, backbone, weights, protocol, seed) and write ``work_dir/results.json`` atomically.

    Returns the results dict. ``model_overrides`` are extra ResNetRS kwargs (``se_ratio=0``,
    ``drop_path_rate=0.1``). ``data_root`` defaults to ``$RS_TRANSFER_HOME/data/<task>`` (``--preset mini``: the
    generated mini dataset). ``resume=True`` continues from the newest complete checkpoint in ``work_dir``
    (``results.json`` records its iteration as ``resumed_from``; None when there was none). ``trust`` / ``strict``
    are :func:`rs_transfer.load_weights`'s (CLI ``--trust`` / ``--no-strict``), ``normalization`` its explicit
    input normalisation (CLI ``--normalization imagenet|unit|MEAN,STD``). ``tracking``: also log to MLflow / W&B
    (:mod:`rs_transfer.runner.tracking`; not part of the config hash).
    """
    from rs_transfer.runner.lock import lock_for_run
    from rs_transfer.weights.loader import reads_once

    t0 = time.time()
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    world_size = init_distributed(launcher)
    with reads_once():   # the weights file is read here once; the model's initialiser gets the same read
        prep = prepare_run(task, backbone, weights=weights, preset=preset, protocol=protocol, work_dir=work_dir,
                           seed=seed, config=config, cfg_options=cfg_options, model_overrides=model_overrides,
                           launcher=launcher, world_size=world_size, resume=resume, data_root=data_root,
                           trust=trust, strict=strict, normalization=normalization)
        check_work_dir(prep.work_dir)
        # One run per work dir (rs_transfer/runner/lock.py): a second run into the same folder (another seed, a
        # second study, a requeued job racing the original) exits with one line naming the holder instead of
        # sharing checkpoints and results.json. Taken after validation: bad input creates no folder.
        with lock_for_run(prep.work_dir, launcher):
            attach_tracking(prep, tracking, _device())
            results = _run(prep, t0, resume=resume)
    if tracking is not None and (prep.work_dir / RESULTS_NAME).is_file() and _rank() == 0:
        finish_tracking(tracking, results, prep.work_dir / RESULTS_NAME)
    return results


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _run(prep: PreparedRun, t0: float, *, resume: bool) -> dict[str, Any]:
    from rs_transfer.runner.checkpoints import export_final_weights, prepare_resume, remove_training_checkpoints

    the_task, ctx, cfg, facts, winfo = prep.task, prep.ctx, prep.cfg, prep.facts, prep.weights
    task, backbone, protocol, preset, seed = ctx.task, ctx.backbone, ctx.protocol, ctx.preset, ctx.seed
    work_dir, root, cfg_path = prep.work_dir, prep.data_root, prep.cfg_path
    point = prepare_resume(cfg, work_dir) if resume and "train_cfg" in cfg else None
    resolved = to_jsonable(cfg.to_dict())

    from rs_transfer.runner.console import header_lines, print_header, start_log

    from rs_transfer import eval_outputs

    rank, throughput, trained, timing = 0, None, False, None
    with eval_outputs.collect_to(work_dir):   # each task's metric keeps its per-sample outputs there
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
        "config_file": str(cfg_path), "config": resolved,
        "config_hash": portable_hash(resolved, work_dir, root, winfo.get("sha256")),
        "git": git_revision(), "wall_time_s": wall_time_s, "device": _device(),
        "world_size": ctx.world_size, "launcher": ctx.launcher, "throughput_samples_per_s": throughput,
        **_timing_keys(timing, wall_time_s),
        "resumed_from": point.iteration if point else None, "final_weights": None, "data_root": str(root),
        "work_dir": str(work_dir), "extra": ctx.extra, **facts,
        # Unreadable images/annotations the datasets skipped (tasks/_corrupt.py): counts per phase, a few names.
        "skipped_files": skipped_files_summary(work_dir),
        # Per-sample outputs of the last evaluation (rs_transfer/eval_outputs.py), for confidence intervals.
        "eval_outputs": eval_outputs.FILENAME if eval_outputs.find(work_dir) else None,
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
