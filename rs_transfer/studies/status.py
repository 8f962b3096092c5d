"""``rs-transfer study status DIR``: the state of every cell of a planned study, and resubmitting what failed.

It reads ``DIR/plan.json`` (written by the study command, or by its ``--dry-run``) and each cell's own files
(:func:`rs_transfer.studies.cells.cell_state`): done / running on job X / queued / failed with its last error line /
stale / partial / to run, the progress and ETA of running cells from their logs, and the compute spent by the done
cells against their estimate. ``--resubmit`` submits the failed, partial, stale and not-started cells again as one
SLURM array with the options the plan was submitted with (a partial cell resumes from its checkpoint).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "the state of every cell of a study folder (and --resubmit of the failed ones)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the study folder (its --out; holds plan.json)")
    p.add_argument("--resubmit", action="store_true",
                   help="submit the failed, partial, stale and not-started cells again (SLURM, with the options "
                        "of the plan's last submission); cells queued or running are left alone")


def _hours(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 3600:.2f}"


def status_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of ``plan`` with its current state, progress and ETA."""
    from rs_transfer.studies.cells import plan_states, read_jobs

    slurm = plan.get("slurm") or {}
    rows = plan_states(plan, read_jobs(slurm["log_folder"]) if slurm.get("log_folder") else {})
    for r in rows:
        r["eta"] = f"{r['eta_s'] / 60:.1f} min" if r.get("eta_s") is not None else ""
        gpus = int(r.get("world_size") or 1)
        r["est_h"] = _hours(r["estimate_s"] * gpus) if r.get("estimate_s") else ""
        r["actual_h"] = _hours(float(r["train_time_s"]) * gpus) if r.get("train_time_s") else ""
    return rows


def compute_summary(rows: list[dict[str, Any]]) -> str:
    """GPU-hours spent by the done cells (their measured training time x GPUs) against the plan's estimate for them,
    and the estimate of what is left."""
    done = [r for r in rows if r["state"] == "done" and r.get("train_time_s")]
    spent = sum(float(r["train_time_s"]) * int(r.get("world_size") or 1) for r in done)
    est_done = [r for r in done if r.get("estimate_s")]
    vs = ""
    if est_done:
        est = sum(float(r["estimate_s"]) * int(r.get("world_size") or 1) for r in est_done)
        act = sum(float(r["train_time_s"]) * int(r.get("world_size") or 1) for r in est_done)
        vs = f"; the {len(est_done)} with an estimate: {_hours(act)} actual vs {_hours(est)} estimated"
    left = [r for r in rows if r["state"] not in ("done", "invalid")]
    left_est = [float(r["estimate_s"]) * int(r.get("world_size") or 1) for r in left if r.get("estimate_s")]
    rest = f"; left: {len(left)} cell(s), {_hours(sum(left_est))} GPU-h estimated for {len(left_est)}" if left else ""
    return f"compute: {_hours(spent)} GPU-h of training spent by {len(done)} done cell(s){vs}{rest}"


def run(args: argparse.Namespace) -> int:
    from rs_transfer.errors import UserError
    from rs_transfer.studies.cells import PlannedCell, format_table, read_plan
    from rs_transfer.studies.executor import SlurmOptions
    from rs_transfer.studies.planning import submit_plan

    out = Path(args.dir)
    plan = read_plan(out)
    rows = status_rows(plan)
    print(format_table(rows, [("name", "cell"), ("state", "state"), ("detail", "detail"), ("progress", "progress"),
                              ("eta", "ETA"), ("est_h", "est. GPU-h"), ("actual_h", "actual GPU-h")]))
    counts = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    print(compute_summary(rows))
    if not args.resubmit:
        failed = counts.get("failed", 0)
        if failed and plan.get("slurm"):
            print(f"resubmit the {failed} failed cell(s): rs-transfer study status {out} --resubmit")
        return 0
    if not plan.get("slurm"):
        raise UserError(f"{out}/plan.json was not submitted to SLURM: run the study command with --executor slurm "
                        "(or again without it to run the cells here)")
    fields = set(PlannedCell.__dataclass_fields__)
    cells = [PlannedCell(**{k: v for k, v in c.items() if k in fields}) for c in plan["cells"]]
    opts = SlurmOptions(**plan["slurm"])
    if opts.timeout_min is None and not any(c.estimate_s for c in cells):
        raise UserError("the plan has no time estimate: resubmit with the study command and --timeout-min")
    pending = submit_plan(out, cells, opts, name=f"{plan.get('study', 'study')}-resubmit")
    print(f"{pending} cell(s) not done; the study command collects the report when they are")
    return 0
