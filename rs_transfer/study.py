"""Studies: a grid of runs (weights x tasks x protocols x seeds) on the one runner, resumable, ending in a report.

A study directory holds one folder per run (``<task>/<backbone>-<weights>-<protocol>-seed<k>``), ``study.json``
(the grid and the state of every cell) and the report. Re-running the same command skips runs whose results.json
exists and resumes a run that left a checkpoint, so an interrupted study continues where it stopped. Tasks whose
module does not exist yet are recorded as missing (shown as "—" in the report), never filled in.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.report import build_report, weights_label, write_report
from rs_transfer.results import read_results, write_json_atomic


def run_dir(out: Path, task: str, backbone: str, weights: str | None, protocol: str, seed: int) -> Path:
    return out / task / f"{backbone}-{weights_label(weights)}-{protocol}-seed{seed}"


def _matches(res: dict[str, Any], task: str, backbone: str, weights: str | None, preset: str) -> bool:
    return (res.get("task") == task and res.get("backbone") == backbone and res.get("preset") == preset
            and weights_label(res.get("weights")) == weights_label(weights))


def run_table4(*, backbone: str, weights: Sequence[str | None], out_dir: str | Path,
               tasks: Sequence[str] | None = None, protocols: Sequence[str] = ("finetune",), seeds: int = 1,
               preset: str = "paper", baseline: str | None = None, paper: bool = True,
               model_overrides: dict | None = None, cfg_options: dict | None = None, launcher: str = "none",
               data_roots: dict[str, str] | None = None, log=print, trust: bool = False,
               strict: bool = True, normalization: str | dict[str | None, str] | None = None) -> dict[str, Any]:
    """Run every (weights, task, protocol, seed) cell not done yet, then write the report. Returns study.json.
    ``normalization``: an explicit input normalisation for every weight source, or ``{source: normalisation}``."""
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
                        cell.update(state="done", value=done["value"], skipped=True)
                        log(f"[skip] {wd} (results.json exists)")
                        continue
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
                                             data_root=(data_roots or {}).get(task), trust=trust, strict=strict,
                                             normalization=norm)
                        cell.update(state="done", value=res["value"], seconds=round(time.time() - t0, 1))
                    except UserError as err:  # missing data, weights not cached...: the rest of the grid goes on
                        failures += 1
                        cell.update(state="failed", reason=str(err))
                        log(f"[failed] {task} {weights_label(w)} seed {seed}: {err}")
                    write_json_atomic(out / "study.json", {"study": "table4", "backbone": backbone,
                                                           "preset": preset, "cells": cells})
    base = baseline or (f"{backbone} / {weights_label(weights[0])}" + (" [mini]" if preset == "mini" else "")
                        if weights else None)
    try:
        rep = build_report([out], tasks=tasks, baseline=base, paper=paper)
    except UserError:  # the baseline row has no results (yet): report without differences
        rep = build_report([out], tasks=tasks, baseline=None, paper=paper)
    files = write_report(rep, out)
    study = {"study": "table4", "backbone": backbone, "preset": preset, "weights": list(weights), "tasks": tasks,
             "protocols": list(protocols), "seeds": seeds, "cells": cells, "failures": failures,
             "report": {k: str(v) for k, v in files.items()}}
    write_json_atomic(out / "study.json", study)
    return study
