"""Studies: a grid of runs (weights x tasks x protocols x seeds) on the one runner, resumable, ending in a report.

A study directory holds one folder per run (``<task>/<backbone>-<weights>-<protocol>-seed<k>``), ``study.json``
(the grid and the state of every cell) and the report. Re-running the same command skips runs whose results.json
exists AND recorded the configuration the cell would run now (:func:`expected_hash`; another ``--cfg-options``,
seed or code default runs again), and resumes a run that left a checkpoint, so an interrupted study continues
where it stopped. Tasks whose
module does not exist yet are recorded as missing (shown as "—" in the report), never filled in.
"""
from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.report import build_report, weights_label, write_report
from rs_transfer.results import read_results, write_json_atomic


# Keys of a resolved config that differ between runs of the same configuration: a fresh name per run, where a
# resumed run starts from, and how the processes were launched (the world size itself shows in the batch keys).
VOLATILE_KEYS = ("experiment_name", "resume", "load_from", "launcher")


def portable_hash(resolved: dict[str, Any], work_dir: str | Path, data_root: str | Path) -> str:
    """Hash of a resolved config with this machine's folders replaced by placeholders and the per-run keys
    (:data:`VOLATILE_KEYS`) left out: equal for two runs of the same configuration, wherever and however (fresh
    or resumed) they ran."""
    import json

    from rs_transfer.results import config_hash

    text = json.dumps(resolved).replace(str(work_dir), "<work_dir>").replace(str(data_root), "<data_root>")
    out = json.loads(text)
    for key in VOLATILE_KEYS:
        out.pop(key, None)
    return config_hash(out)


def recorded_hash(res: dict[str, Any]) -> str | None:
    """:func:`portable_hash` of the config a results.json recorded (None for results without a config)."""
    if not isinstance(res.get("config"), dict):
        return None
    return portable_hash(res["config"], res.get("work_dir", ""), res.get("data_root", ""))


def expected_config(task: str, backbone: str, *, weights: str | None = None, preset: str = "paper",
                    protocol: str = "finetune", work_dir: str | Path, seed: int = 0, config: str | None = None,
                    cfg_options: dict | None = None, model_overrides: dict | None = None,
                    data_root: str | Path | None = None, world_size: int = 1,
                    normalization: str | None = None, trust: bool = False,
                    strict: bool = True) -> tuple[dict[str, Any], Path, Path]:
    """``(resolved config, work_dir, data_root)`` as ``run_experiment`` would resolve them for these arguments,
    without running: the same steps (weights' normalisation, data folder and its check, task wiring,
    --cfg-options, batch and hooks)."""
    from rs_transfer import runner as R
    from rs_transfer.results import to_jsonable
    from rs_transfer.tasks import RunContext, get_task

    the_task = get_task(task)
    winfo = R.weights_info(weights, normalization=normalization, trust=trust)
    if weights and (trust or not strict):  # as run_experiment
        model_overrides = {**(model_overrides or {}), **({"weights_trust": True} if trust else {}),
                           **({"weights_strict": False} if not strict else {})}
    if weights and normalization is not None:  # as run_experiment: the backbone's load gets the explicit choice
        model_overrides = {**(model_overrides or {}), "weights_normalization": str(normalization)}
    if data_root is None:
        root = R.ensure_mini(the_task) if preset == "mini" else the_task.default_data_root()
    else:
        root = Path(data_root).expanduser()
    the_task.check(root)   # as the runner does first (Kinetics: the probe cache the task configuration reads)
    wd = Path(work_dir).resolve()
    ctx = RunContext(task=task, backbone=backbone, backbone_kwargs={},
                     weights=winfo["source"] if winfo.get("named") else winfo["path"],
                     normalization=winfo["normalization"], preset=preset, protocol=protocol, data_root=Path(root),
                     work_dir=wd, seed=seed, launcher="none", world_size=world_size)
    cfg, _, _ = R.build_config(the_task, ctx, config=config, cfg_options=cfg_options,
                               model_overrides=model_overrides, resume=False)
    return to_jsonable(cfg.to_dict()), wd, Path(root)


def expected_hash(task: str, backbone: str, **kwargs: Any) -> str:
    """:func:`portable_hash` of :func:`expected_config`. A study reuses a row only when this equals the row's
    :func:`recorded_hash`."""
    resolved, wd, root = expected_config(task, backbone, **kwargs)
    return portable_hash(resolved, wd, root)


def launched_world_size(launcher: str) -> int:
    """The world size a run under ``launcher`` gets (torchrun / slurm set it in the environment)."""
    import os

    if launcher == "none":
        return 1
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def reusable(res: dict[str, Any] | None, expected: str, where: str = "a study row") -> bool:
    """A finished row may be reused only if it ran exactly the expected configuration (and it warns when the code
    that ran it was another commit: :func:`warn_if_other_code`)."""
    ok = res is not None and recorded_hash(res) == expected
    if ok:
        warn_if_other_code(res, where)
    return ok


@functools.cache
def _current_commit() -> str | None:
    from rs_transfer.results import git_revision

    return git_revision()["commit"]


def warn_if_other_code(res: dict[str, Any], where: str) -> None:
    """The config hash covers the configuration, not the code: a row reused from another commit may have run
    another pipeline (a changed crop or schedule does not change the config). Warn, naming both commits."""
    then, now = (res.get("git") or {}).get("commit"), _current_commit()
    if then and now and then != now:
        warnings.warn(f"{where}: reusing results.json computed by commit {then[:10]}; the code is now {now[:10]}. "
                      "The configuration is the same, the code may not be: if the change touched this pipeline, "
                      "run the study again in a new --work-dir", stacklevel=2)


def run_dir(out: Path, task: str, backbone: str, weights: str | None, protocol: str, seed: int) -> Path:
    return out / task / f"{backbone}-{weights_label(weights)}-{protocol}-seed{seed}"


def _denominators(res: dict[str, Any]) -> dict[str, Any]:
    """The counts behind a cell's number, where its task reports them (Kinetics: eval_videos, missing, corrupt)."""
    m = res.get("metrics") or {}
    keys = {"eval_videos": "eval_videos", "missing": "eval_missing", "corrupt": "eval_corrupt"}
    return {k: m[v] for k, v in keys.items() if v in m}


def _matches(res: dict[str, Any], task: str, backbone: str, weights: str | None, preset: str) -> bool:
    return (res.get("task") == task and res.get("backbone") == backbone and res.get("preset") == preset
            and weights_label(res.get("weights")) == weights_label(weights))


def run_table4(*, backbone: str, weights: Sequence[str | None], out_dir: str | Path,
               tasks: Sequence[str] | None = None, protocols: Sequence[str] = ("finetune",), seeds: int = 1,
               preset: str = "paper", baseline: str | None = None, paper: bool = True,
               model_overrides: dict | None = None, cfg_options: dict | None = None, launcher: str = "none",
               data_roots: dict[str, str] | None = None, log=print,
               normalization: str | dict[str | None, str] | None = None, trust: bool = False,
               strict: bool = True, alpha: float = 0.05) -> dict[str, Any]:
    """Run every (weights, task, protocol, seed) cell not done yet, then write the report. Returns study.json.
    ``normalization``: an explicit input normalisation for every weight source, or ``{source: normalisation}``;
    ``alpha``: the report's significance level for paired differences to the baseline (after BH)."""
    from rs_transfer.runner import run_experiment
    from rs_transfer.tasks import TABLE4_TASKS, TaskNotAvailable, get_task

    out = Path(out_dir)
    tasks = list(tasks or TABLE4_TASKS)
    for t in tasks:  # unknown names fail before any work; unavailable ones are allowed (shown as missing)
        try:
            get_task(t)
        except TaskNotAvailable:
            pass
    cells: list[dict[str, Any]] = []
    failures = 0
    for w in weights:
        norm = normalization.get(w) if isinstance(normalization, dict) else normalization
        for task in tasks:
            for protocol in protocols:
                for seed in range(seeds):
                    wd = run_dir(out, task, backbone, w, protocol, seed)
                    cell = {"task": task, "weights": w, "protocol": protocol, "seed": seed, "work_dir": str(wd)}
                    cells.append(cell)
                    done = read_results(wd)
                    if done is not None and _matches(done, task, backbone, w, preset):
                        try:
                            expected: str | None = expected_hash(
                                task, backbone, weights=w, preset=preset, protocol=protocol, work_dir=wd, seed=seed,
                                cfg_options=cfg_options, model_overrides=model_overrides,
                                data_root=(data_roots or {}).get(task), world_size=launched_world_size(launcher),
                                normalization=norm, trust=trust, strict=strict)
                        except UserError:   # e.g. its weights file is gone: the run itself says so
                            expected = None
                        if expected is not None and reusable(done, expected, str(wd)):
                            cell.update(state="done", value=done["value"], skipped=True,
                                        **_denominators(done))
                            log(f"[skip] {wd} (results.json exists with the same config hash)")
                            continue
                        log(f"[stale] {wd}: results.json ran another configuration (config hash differs); "
                            "running it again")
                    try:
                        the_task = get_task(task)
                        if protocol not in the_task.protocols:
                            cell.update(state="n/a", reason=f"{task} has no {protocol} protocol")
                            continue
                    except TaskNotAvailable as err:
                        cell.update(state="missing", reason=str(err))
                        log(f"[missing] {task}: task not available yet")
                        continue
                    resume = (wd / "last_checkpoint").is_file()
                    log(f"[{'resume' if resume else 'run'}] {task} {backbone} {weights_label(w)} {protocol} "
                        f"seed {seed} -> {wd}")
                    t0 = time.time()
                    try:
                        res = run_experiment(task, backbone, weights=w, preset=preset, protocol=protocol,
                                             work_dir=wd, seed=seed, cfg_options=cfg_options,
                                             model_overrides=model_overrides, launcher=launcher, resume=resume,
                                             data_root=(data_roots or {}).get(task), normalization=norm,
                                             trust=trust, strict=strict)
                        cell.update(state="done", value=res["value"], seconds=round(time.time() - t0, 1),
                                    **_denominators(res))
                    except UserError as err:  # missing data, weights not cached...: the rest of the grid goes on
                        failures += 1
                        cell.update(state="failed", reason=str(err))
                        log(f"[failed] {task} {weights_label(w)} seed {seed}: {err}")
                    write_json_atomic(out / "study.json", {"study": "table4", "backbone": backbone,
                                                           "preset": preset, "cells": cells})
    base = baseline or (f"{backbone} / {weights_label(weights[0])}" + (" [mini]" if preset == "mini" else "")
                        if weights else None)
    try:
        rep = build_report([out], tasks=tasks, baseline=base, paper=paper, alpha=alpha)
    except UserError:  # the baseline row has no results (yet): report without differences
        rep = build_report([out], tasks=tasks, baseline=None, paper=paper, alpha=alpha)
    files = write_report(rep, out)
    study = {"study": "table4", "backbone": backbone, "preset": preset, "weights": list(weights), "tasks": tasks,
             "protocols": list(protocols), "seeds": seeds, "cells": cells, "failures": failures,
             "report": {k: str(v) for k, v in files.items()}}
    write_json_atomic(out / "study.json", study)
    return study
