"""A study as a PLAN of cells, and the state of each cell read from its own folder.

Why: a study that leaves one machine has many writers (array jobs, requeues, a second study command) and no
single loop that knows what happened. So nothing is kept in one shared file that many processes rewrite:

- ``STUDY/plan.json`` is written once per study command (atomically) by the planning process: every cell with its
  ``rs-transfer run`` arguments, work dir, identity (``config_hash``, computed by the same ``prepare_run`` the run
  uses, with the cell's OWN world size) and the planned train samples.
- Each cell's state lives in its work dir: ``results.json`` (done, or stale when its recorded identity differs),
  the run's lock ``.rs-transfer.lock`` (running: host, pid, SLURM job), ``cell_job.json`` (the cell job's own
  record: failed with the last error line, requeued...), a checkpoint (partial). :func:`cell_state` derives the
  state from those files; ``study.json`` and ``study status`` are derived from the plan plus these files.
- The submitit folder's ``jobs.json`` names the job of each submitted cell, so a cell not started yet shows as
  queued (via ``sacct``) and a second study command submits nothing twice.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rs_transfer.atomic import write_json_atomic
from rs_transfer.errors import UserError

PLAN_NAME = "plan.json"
STATES = ("done", "running", "queued", "failed", "stale", "partial", "to run")
SUBMITTED_STATES = ("PENDING", "REQUEUED", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "RESIZING")


@dataclass
class PlannedCell:
    """One cell of a plan: its name, the ``rs-transfer run`` arguments (without ``--work-dir/--resume/--launcher``),
    work dir, identity, planned training samples and the plan-time state. ``env``: environment variables the cell's
    run needs wherever it runs (transfer12's feature cache folder): where things are kept, never what is computed,
    so they are not part of ``config_hash``; kept in the plan so that ``study status --resubmit`` passes them on."""

    name: str
    work_dir: str
    run_args: list[str]
    config_hash: str | None
    world_size: int = 1
    train_samples: int | None = None
    train_flops: float | None = None     # (forward + backward) FLOPs per sample x train_samples (multiply-add = 2)
    eval_flops: float | None = None      # forward FLOPs per eval sample x eval samples x validations of the schedule
    estimate_s: float | None = None
    estimate_source: str | None = None
    state: str = "to run"
    info: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def option_args(flag: str, options: dict[str, Any] | None) -> list[str]:
    """``{"a.b": 1}`` -> ``["--cfg-options", "a.b=1"]``, checked to parse back to exactly the same values (the
    cell job re-reads them through ``rs-transfer run``)."""
    from rs_transfer.runner import parse_cfg_options

    if not options:
        return []
    pairs = [f"{k}={_literal(v)}" for k, v in options.items()]
    if parse_cfg_options(pairs) != dict(options):
        raise UserError(f"{flag} {' '.join(pairs)}: these values do not survive the command line (dict values?); "
                        "run this study with --executor local")
    return [flag, *pairs]


def _literal(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        inner = ",".join(_literal(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return str(value) if not isinstance(value, str) else value


def write_plan(out: Path, study: str, cells: list[PlannedCell], **meta: Any) -> Path:
    """``OUT/plan.json``. A plan written without SLURM options keeps those of an earlier submission (``slurm``), so
    that ``study status`` still finds the cells' jobs after a local command in the same folder."""
    if meta.get("slurm") is None:
        with contextlib.suppress(UserError, KeyError):
            meta["slurm"] = read_plan(out).get("slurm")
    return write_json_atomic(Path(out) / PLAN_NAME, {"study": study, "planned": time.time(), **meta,
                                                     "cells": [asdict(c) for c in cells]})


def read_plan(out: str | Path) -> dict[str, Any]:
    path = Path(out) / PLAN_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the study command (or the same command with --dry-run) first; "
                        "`study status` reads the plan it writes") from None
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None


# ---- state of a cell ---------------------------------------------------------------------------------------------
def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (``sacct``); empty when sacct is not on PATH or fails."""
    import shutil

    if not job_ids or shutil.which("sacct") is None:
        return {}
    cmd = ["sacct", "-o", "JobID,State", "--parsable2", "-X"]
    for main in sorted({j.split("_")[0] for j in job_ids}):
        cmd += ["-j", main]
    try:
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) >= 2 and parts[0] in job_ids:
            out[parts[0]] = parts[1].split()[0] if parts[1] else "UNKNOWN"
    return out


def cell_state(cell: dict[str, Any], job: dict[str, Any] | None = None, sacct: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """The state of one planned cell from its folder (see the module doc): ``{"state": ..., "detail": ...}`` plus,
    for a done cell, its value and measured training seconds."""
    from rs_transfer.results import read_results
    from rs_transfer.runner.checkpoints import find_resume_point
    from rs_transfer.runner.lock import read_holder, stale_reason
    from rs_transfer.studies.executor import read_job_state
    from rs_transfer.studies.reuse import recorded_hash

    wd = Path(cell["work_dir"])
    res = read_results(wd)
    stale = res is not None and bool(cell.get("config_hash")) and recorded_hash(res) != cell["config_hash"]
    if res is not None and not stale:
        return {"state": "done", "value": res.get("value"), "train_time_s": res.get("train_time_s"),
                "train_images_per_s": res.get("train_images_per_s"), "device": res.get("device"),
                "wall_time_s": res.get("wall_time_s"), "detail": f"{res.get('metric')} = {res.get('value')}"}
    holder = read_holder(wd)
    if holder is not None and stale_reason(holder) is None:
        where = f"job {holder.job_id}" if holder.job_id else f"{holder.host} pid {holder.pid}"
        return {"state": "running", "detail": f"on {where} since "
                f"{time.strftime('%H:%M', time.gmtime(holder.started))} UTC", **_progress(wd)}
    record = read_job_state(wd)
    job_state = (sacct or {}).get(str((job or {}).get("job_id")), "")
    failed_since = record is not None and record.get("state") == "failed" and record.get("time", 0) > (
        job or {}).get("submitted", 0)
    if job and job_state in SUBMITTED_STATES and not failed_since:
        return {"state": "queued" if job_state != "RUNNING" else "running",
                "detail": f"job {job['job_id']} {job_state.lower()}"}
    if stale:
        return {"state": "stale", "detail": "results.json ran another configuration (config hash differs)"}
    if record is not None and record.get("state") == "failed":
        return {"state": "failed", "detail": f"job {record.get('job_id')}: {record.get('error', '')}"}
    point, _ = find_resume_point(wd)
    if point is not None:
        return {"state": "partial", "detail": f"checkpoint at iteration {point.iteration}", **_progress(wd)}
    return {"state": "to run", "detail": ""}


def _progress(wd: Path) -> dict[str, Any]:
    """Progress and ETA of a running or partial cell from its newest mmengine log line ``Iter(train) [i/n]`` and
    its logged ``time`` per iteration."""
    import re

    logs = sorted(wd.glob("*/*.log"))
    if not logs:
        return {}
    try:
        text = logs[-1].read_text(errors="replace")[-20000:]
    except OSError:
        return {}
    hits = re.findall(r"Iter\(train\) \[\s*(\d+)/(\d+)\].*?\btime: ([\d.]+)", text)
    if not hits:
        return {}
    i, n, per_it = int(hits[-1][0]), int(hits[-1][1]), float(hits[-1][2])
    return {"progress": f"{i}/{n}", "eta_s": round((n - i) * per_it, 1)}


def plan_states(plan: dict[str, Any], jobs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every planned cell with its current state (one ``sacct`` call for all submitted cells)."""
    jobs = jobs or {}
    ids = [str(jobs[c["name"]]["job_id"]) for c in plan["cells"] if c["name"] in jobs]
    sacct = sacct_states(ids)
    return [{**c, **cell_state(c, jobs.get(c["name"]), sacct)} for c in plan["cells"]]


def read_jobs(log_folder: str | Path) -> dict[str, Any]:
    from rs_transfer.studies.executor import JOBS_NAME

    try:
        return json.loads((Path(log_folder) / JOBS_NAME).read_text())
    except (OSError, ValueError):
        return {}


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table (``columns``: (key, heading))."""
    cells = [[heading for _, heading in columns]]
    for row in rows:
        cells.append(["" if row.get(k) is None else str(row.get(k)) for k, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def command_line(cell: dict[str, Any]) -> str:
    """The ``rs-transfer run`` command that runs (or resumes) ``cell`` by hand (with the cell's ``env``)."""
    env = [f"{k}={v}" for k, v in sorted((cell.get("env") or {}).items())]
    return shlex.join([*(["env", *env] if env else []), "rs-transfer", "run", *cell["run_args"], "--work-dir",
                       cell["work_dir"], "--resume"])
