"""Planning a study's cells (identity, samples, time estimate), printing the plan, and submitting what is left.

The estimate of a cell's training time comes from throughput MEASURED by finished cells of the same task and
backbone (their results.json ``train_images_per_s``, with the device that measured it named as the source); a cell
with no measurement has no estimate (shown as ``?``), and a SLURM submission then needs ``--timeout-min``. Nothing
is made up: the source of every estimate is printed.

:func:`plan_study` is the one planner of the row studies (table1, table5, scaling: one cell per row and seed) and
:func:`cell_world` the one world size of a cell, used by the plan and by the loop that collects the cells' runs;
:func:`plan_or_submit` is what every planner does with its cells (write plan.json, print it or submit the rest).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.studies.cells import (PLAN_NAME, PlannedCell, cell_state, format_table, option_args, plan_states,
                                      read_jobs, write_plan)
from rs_transfer.studies.executor import Cell, SlurmOptions, submit_cells

RESUBMIT_STATES = ("to run", "partial", "stale", "failed")


def run_args(task: str, backbone: str, kwargs: dict[str, Any]) -> list[str]:
    """The ``rs-transfer run`` arguments of a cell with these :func:`run_experiment` keyword arguments."""
    args = ["--task", task, "--backbone", backbone, "--preset", kwargs.get("preset", "paper"), "--protocol",
            kwargs.get("protocol", "finetune"), "--seed", str(kwargs.get("seed", 0))]
    if kwargs.get("weights"):   # a file: absolute (the job may start elsewhere); a named source stays a name
        w = str(kwargs["weights"])
        args += ["--weights", str(Path(w).absolute()) if Path(w).exists() else w]
    if kwargs.get("normalization"):
        args += ["--normalization", str(kwargs["normalization"])]
    if kwargs.get("data_root"):
        args += ["--data-root", str(Path(kwargs["data_root"]).absolute())]
    if kwargs.get("config"):
        args += ["--config", str(Path(kwargs["config"]).absolute())]
    args += option_args("--cfg-options", kwargs.get("cfg_options"))
    args += option_args("--backbone-options", kwargs.get("model_overrides"))
    if kwargs.get("trust"):
        args.append("--trust")
    if kwargs.get("strict") is False:
        args.append("--no-strict")
    return args


def measured_throughput(out: Path) -> dict[tuple[str, str, str], tuple[float, str]]:
    """``(task, backbone, preset) -> (train images/s, device)`` measured by the finished runs under ``out``."""
    import json

    found: dict[tuple[str, str, str], tuple[float, str]] = {}
    for path in sorted(Path(out).rglob("results.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        thr = res.get("train_images_per_s")
        if isinstance(thr, (int, float)) and thr > 0:
            found[(str(res.get("task")), str(res.get("backbone")), str(res.get("preset")))] = (
                float(thr), str(res.get("device") or "unknown device"))
    return found


_EPOCH_SETS: dict[str, tuple[int | None, str]] = {}   # per training-set config: listed once per plan


def epoch_samples(cfg: Any, world: int) -> tuple[int | None, str]:
    """``(samples, how)`` an epoch-based run trains: epochs x its training set as the run lists it (the dataset is
    built from the resolved config, as the Runner builds it), padded to the world size as mmengine's DefaultSampler
    pads it (results.json's ``train_samples`` counts the same). ``(None, why)`` when the set cannot be listed here
    (no data on this machine): the plan then shows ``?`` and says why."""
    import copy

    train = cfg.get("train_cfg") or {}
    if "max_epochs" not in train or "max_iters" in train:
        return None, ""
    spec = cfg.train_dataloader.dataset
    key = repr(spec)
    if key not in _EPOCH_SETS:
        from mmengine.registry import DATASETS

        try:
            n: int | None = len(DATASETS.build(copy.deepcopy(spec)))
            _EPOCH_SETS[key] = (n, f"{n:,} training samples listed in {spec.get('data_root', 'the data root')}")
        except Exception as err:   # noqa: BLE001  (an estimate: any reason the set cannot be listed is shown)
            first = str(err).splitlines()[0] if str(err) else ""
            _EPOCH_SETS[key] = (None, f"training set not listed here ({type(err).__name__}: {first[:200]})")
    n, how = _EPOCH_SETS[key]
    if not n:
        return None, how
    epochs = int(train["max_epochs"])
    return epochs * -(-n // world) * world, f"{epochs} epochs x {how}"


_FLOPS: dict[str, Any] = {}   # per model and input: equal for every seed and weight source
_EVAL_SAMPLES: dict[str, tuple[int | None, str]] = {}   # per evaluation set


def _model_flops(task: str, backbone: str, kwargs: dict[str, Any], cfg: Any) -> Any:
    """:func:`rs_transfer.bench.flops.model_flops` of the cell's model, built once per task and model."""
    from rs_transfer.bench.flops import model_flops

    key = repr((task, backbone, kwargs.get("preset"), kwargs.get("model_overrides"), kwargs.get("cfg_options")))
    if key not in _FLOPS:
        _FLOPS[key] = model_flops(cfg)
    return _FLOPS[key]


def validations(cfg: Any) -> int | None:
    """How often the training loop runs validation (mmengine's Iter/EpochBasedTrainLoop: at every ``val_interval``-th
    iteration or epoch from ``val_begin`` on, and after the last); 0 without a validation loop, None when unknown
    (dynamic intervals, no mmengine training loop: protocols that do not train through the Runner)."""
    train_cfg = cfg.get("train_cfg") or {}
    if any(cfg.get(k) is None for k in ("val_dataloader", "val_cfg", "val_evaluator")):
        return 0   # mmengine's Runner builds a validation loop only with all three
    length = train_cfg.get("max_iters") or train_cfg.get("max_epochs")
    if not length or train_cfg.get("dynamic_intervals"):
        return None
    interval = int(train_cfg.get("val_interval") or (1000 if "max_iters" in train_cfg else 1))
    begin, length = max(int(train_cfg.get("val_begin", 1)), 1), int(length)
    if begin > length:
        return 0
    multiples = length // interval - (begin - 1) // interval
    return multiples + (1 if length % interval else 0)


def eval_samples(cfg: Any) -> tuple[int | None, str]:
    """Samples of one validation: the length of the config's validation dataset, built here (once per data folder
    and options). ``(None, why)`` when it cannot be read on this machine (data not here yet)."""
    import warnings

    from mmengine.registry import DATASETS, DefaultScope

    ds_cfg = (cfg.get("val_dataloader") or {}).get("dataset")
    key = repr(ds_cfg)
    if key not in _EVAL_SAMPLES:
        try:
            with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
                warnings.simplefilter("ignore")
                _EVAL_SAMPLES[key] = (len(DATASETS.build(ds_cfg)), "")
        except Exception as err:   # noqa: BLE001 -- any reason a set is not readable here only leaves it unknown
            _EVAL_SAMPLES[key] = (None, f"evaluation set not readable here ({type(err).__name__}: "
                                        f"{str(err).splitlines()[0][:120] if str(err) else ''})")
    return _EVAL_SAMPLES[key]


def _eval_flops(cell: PlannedCell, cfg: Any, forward: int | None, how: str) -> None:
    """``cell.eval_flops`` = forward FLOPs per evaluation sample x samples of one validation x validations the
    schedule runs; ``cell.info["eval_flops"]`` says what was counted, or why not."""
    if not forward:
        cell.info["eval_flops"] = how
        return
    runs = validations(cfg)
    if runs is None:
        cell.info["eval_flops"] = "number of validations unknown (no mmengine training loop with a fixed interval)"
        return
    samples, why = eval_samples(cfg) if runs else (0, "")
    if samples is None:
        cell.info["eval_flops"] = why
        return
    cell.eval_flops = float(forward * samples * runs)
    cell.info["eval_flops"] = f"forward FLOPs of the {how} x {samples:,} eval samples x {runs} validation(s)"


def plan_cell(out: Path, name: str, task: str, backbone: str, wd: Path, world: int, kwargs: dict[str, Any],
              measured: dict[tuple[str, str, str], tuple[float, str]] | None = None, *,
              flops: bool = False, gpu: tuple[str, float] | None = None,
              env: dict[str, str] | None = None) -> PlannedCell:
    """One cell's plan entry: identity by the run's own ``prepare_run`` (with the cell's world size), planned train
    samples, estimate and current state. A cell that cannot be prepared (weights gone...) is ``invalid``.
    ``flops``: also count the training FLOPs (builds the model once per task and model: for --dry-run).
    ``flops`` also counts the evaluation FLOPs (forward per eval sample x eval samples x validations).
    ``gpu``: ``(device name, assumed MFU)``: without a measured throughput (which times training only), the
    estimate is the training + evaluation FLOPs at that device's peak bf16 TFLOP/s (rs_transfer/bench/backbone.py's
    table) x the MFU, stated as such.
    ``env``: environment variables the cell's run needs (:attr:`PlannedCell.env`; not part of its identity)."""
    from rs_transfer.runner import prepare_run

    try:
        args = run_args(task, backbone, kwargs)
        no_cli = None
    except UserError as err:   # options a command line cannot carry: the cell can still run here (local)
        args, no_cli = [], str(err)
    wd = Path(wd).absolute()   # the compute nodes' jobs and `study status` may start elsewhere
    try:
        prep = prepare_run(task, backbone, work_dir=wd, world_size=world, check_data=False, **kwargs)
    except UserError as err:
        return PlannedCell(name=name, work_dir=str(wd), run_args=args, config_hash=None, world_size=world,
                           state="invalid", info={"error": str(err)}, env=dict(env or {}))
    samples = prep.facts.get("train_samples")
    counted = ""
    if samples is None:   # an epoch-based run: its length is the training set the run will list
        samples, counted = epoch_samples(prep.cfg, world)
    cell = PlannedCell(name=name, work_dir=str(wd), run_args=args, config_hash=prep.config_hash, world_size=world,
                       train_samples=int(samples) if samples else None, env=dict(env or {}))
    if counted:
        cell.info["samples"] = counted
    thr = (measured if measured is not None else measured_throughput(out)).get(
        (task, backbone, kwargs.get("preset", "paper")))
    if thr and cell.train_samples:
        cell.estimate_s = round(cell.train_samples / thr[0], 1)
        cell.estimate_source = f"measured {thr[0]:.1f} img/s on {thr[1]} (training only)"
    if flops and cell.train_samples:
        counted = _model_flops(task, backbone, kwargs, prep.cfg)
        per_sample = counted.train_per_sample
        cell.train_flops = float(per_sample * cell.train_samples) if per_sample else None
        cell.info["flops"] = f"3 x forward FLOPs of the {counted.train_how}" if per_sample else counted.train_how
        _eval_flops(cell, prep.cfg, counted.eval_forward, counted.eval_how)
    if cell.estimate_s is None and gpu and cell.train_flops:
        from rs_transfer.bench.backbone import peak_bf16_tflops

        peak = peak_bf16_tflops(gpu[0])
        if peak is None:
            raise UserError(f"--gpu {gpu[0]!r} is not in the peak TFLOP/s table (A100, H100, H200, GH200, B200, "
                            "L40S, L40, L4, A10); name one of those or leave --gpu out")
        total = cell.train_flops + (cell.eval_flops or 0.0)
        cell.estimate_s = float(f"{total / (world * peak * 1e12 * gpu[1]):.4g}")
        cell.estimate_source = (f"{gpu[0]} peak {peak:g} TFLOP/s x assumed MFU {gpu[1]:g}, train + "
                                + ("eval FLOPs" if cell.eval_flops is not None else "no eval (not counted)"))
    if no_cli:
        cell.info["no_cli"] = no_cli
    cell.state = cell_state(asdict(cell))["state"]
    return cell


def plan_table(cells: list[PlannedCell]) -> str:
    """The plan as text: one row per cell, then what its FLOPs count and the totals."""
    rows = [{"cell": c.name, "state": c.state, "world": c.world_size,
             "samples": f"{c.train_samples:,}" if c.train_samples else "?",
             "flops": f"{c.train_flops:.3g}" if c.train_flops else "?",
             "eval": f"{c.eval_flops:.3g}" if c.eval_flops is not None else "?",
             "hours": f"{c.estimate_s * c.world_size / 3600:.2f}" if c.estimate_s else "?",
             "source": c.estimate_source or c.info.get("error", "no measurement yet")} for c in cells]
    table = format_table(rows, [("cell", "cell"), ("state", "state"), ("world", "GPUs"),
                                ("samples", "train samples"), ("flops", "train FLOPs"), ("eval", "eval FLOPs"),
                                ("hours", "est. GPU-h"), ("source", "estimate from")])
    todo = [c for c in cells if c.state in RESUBMIT_STATES]
    known = [c.estimate_s * c.world_size for c in todo if c.estimate_s]
    total = f"{sum(known) / 3600:.2f} GPU-h estimated for {len(known)} of them" if known else "no estimate yet"
    return f"{table}{_flops_notes(cells)}\n{len(cells)} cells: {sum(c.state == 'done' for c in cells)} done, " \
           f"{len(todo)} to run ({total})"


def _flops_notes(cells: list[PlannedCell]) -> str:
    """One line per distinct way the cells' train and eval FLOPs were counted (or why not), grouped by task."""
    def task(c: PlannedCell) -> str:
        return c.name.split("/")[0]

    lines = sorted({f"train FLOPs: {c.info['flops']}, x train samples (multiply-add = 2)" for c in cells
                    if c.train_flops and c.info.get("flops")})
    lines += sorted({f"train FLOPs ? {task(c)}: {c.info['flops']}" for c in cells
                     if not c.train_flops and c.info.get("flops")})
    lines += sorted({f"eval FLOPs: {c.info['eval_flops']}" for c in cells
                     if c.eval_flops is not None and c.info.get("eval_flops")})
    lines += sorted({f"eval FLOPs ? {task(c)}: {c.info['eval_flops']}" for c in cells
                     if c.eval_flops is None and c.info.get("eval_flops")})
    lines += [f"train samples{'' if known else ' ?'}: {h}" for known, h in sorted(
        {(bool(c.train_samples), c.info["samples"]) for c in cells if c.info.get("samples")})]
    return "".join(f"\n{line}" for line in lines)


def submit_plan(out: Path, planned: list[PlannedCell], opts: SlurmOptions, *, name: str,
                log: Callable[[str], Any] = print, states: tuple[str, ...] = RESUBMIT_STATES) -> int:
    """Submit the planned cells whose state is in ``states`` as one SLURM array; cells queued or running are never
    submitted twice. Returns how many cells are not done (submitted now or before)."""
    plan = {"cells": [asdict(c) for c in planned]}
    current = plan_states(plan, read_jobs(opts.log_folder))
    to_submit: list[Cell] = []
    pending = 0
    for cell in current:
        state = cell["state"]
        if state == "invalid":
            log(f"[invalid] {cell['name']}: {cell['info'].get('error')}")
        elif state in states and not cell["run_args"]:
            log(f"[not submitted] {cell['name']}: {cell['info'].get('no_cli')}")
        elif state in ("queued", "running"):
            log(f"[{state}] {cell['name']}: {cell['detail']} (not submitted again)")
            pending += 1
        elif state in states:
            to_submit.append(Cell(name=cell["name"], work_dir=cell["work_dir"], run_args=tuple(cell["run_args"]),
                                  estimate_s=cell.get("estimate_s"),
                                  env=tuple(sorted((cell.get("env") or {}).items()))))
            pending += 1
    if to_submit:
        jobs = submit_cells(to_submit, "slurm", opts, name=name)
        main = str(jobs[0].job_id).split("_")[0]
        log(f"submitted {len(jobs)} cell(s) as SLURM job array {main} (logs: {opts.log_folder})")
    return pending


def cell_world(executor: str, slurm_opts: SlurmOptions | None, launcher: str) -> int:
    """The world size a cell RUNS with (part of its identity: the global batch splits over it): a SLURM cell job's
    tasks, else what ``launcher`` gives in this process. The planner and the collecting loop both use this, so a
    cell submitted with ``--gpus-per-cell 2`` is found again by the same hash, whatever the login node's env says.
    ``executor="slurm"`` without ``slurm_opts`` is refused here, before any cell is planned."""
    from rs_transfer.runner.distributed import launched_world_size

    if executor == "slurm" and slurm_opts is None:
        raise UserError("--executor slurm needs the SLURM options (rs_transfer.studies.executor.SlurmOptions)")
    return slurm_opts.tasks if executor == "slurm" and slurm_opts is not None else launched_world_size(launcher)


def plan_study(work_dir: Path, study: str, task: str, backbone: str, cells: Iterable[tuple[Path, dict[str, Any]]],
               *, finished: dict[str, Any] | None, launcher: str, executor: str, dry_run: bool,
               slurm_opts: SlurmOptions | None, gpu: tuple[str, float] | None, log: Callable[[str], Any],
               unit: str = "row", **meta: Any) -> bool:
    """A row study (table1, table5, scaling) as a plan: one cell per ``(run folder, run_experiment kwargs)``, named
    by its folder, written to ``WORK_DIR/plan.json`` and printed (``dry_run``) or its cells not done submitted as one
    SLURM array. ``finished``: recorded hash -> results of the study's finished runs, for studies that reuse a run
    from anywhere in the folder (:func:`rs_transfer.studies.reuse.finished_runs`); None: only the cell's own folder
    counts (:func:`cell_state`). True when every cell is done (the caller then runs its loop, which reuses them all,
    and reports)."""
    world = cell_world(executor, slurm_opts, launcher)
    measured, planned = measured_throughput(work_dir), []
    for sdir, kwargs in cells:
        cell = plan_cell(work_dir, sdir.name, task, backbone, sdir, world, kwargs, measured, flops=True, gpu=gpu)
        if finished is not None and cell.config_hash in finished:   # the reuse rule: a finished run in the study
            cell.state = "done"
        planned.append(cell)
    return plan_or_submit(work_dir, study, planned, executor=executor, dry_run=dry_run, slurm_opts=slurm_opts,
                          log=log, unit=unit, backbone=backbone, **meta)


def plan_or_submit(work_dir: Path, study: str, planned: list[PlannedCell], *, executor: str, dry_run: bool,
                   slurm_opts: SlurmOptions | None, log: Callable[[str], Any], unit: str = "cell",
                   **meta: Any) -> bool:
    """Write ``WORK_DIR/plan.json`` (``meta``: the study's own fields), then print it (``dry_run``: False) or submit
    its cells not done as one SLURM array. True when every cell is done: the caller then collects the runs (its
    loop reuses each by the reuse rule) and writes the report; the same command again is how a study collects."""
    write_plan(work_dir, study, planned, executor=executor, **meta, slurm=asdict(slurm_opts) if slurm_opts else None)
    if dry_run:
        log(plan_table(planned))
        log(f"plan: {work_dir / PLAN_NAME}")
        return False
    if all(c.state == "done" for c in planned):
        return True
    pending = submit_plan(work_dir, [c for c in planned if c.state != "done"], slurm_opts,  # type: ignore[arg-type]
                          name=study, log=log)
    log(f"{pending} {unit}(s) not done yet: `rs-transfer study status {work_dir}` shows them; run this command "
        "again when they finish to write the report")
    return pending == 0
