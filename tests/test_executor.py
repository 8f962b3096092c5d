"""Study cells as SLURM jobs through submitit (rs_transfer/studies/executor.py), with sbatch/srun/sacct/squeue/scancel/
scontrol replaced by tests/fake_slurm.py, which runs the jobs on this machine (fixture ``fake_slurm`` in
conftest.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_CLI, slurm_settled
from rs_transfer.studies.executor import (JOBS_NAME, Cell, CellJob, SlurmOptions, parse_slurm_extra,
                                  read_job_state, submit_cells, timeout_minutes)
from rs_transfer.errors import UserError

MINI = ("--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--seed", "1", *TINY_CLI)


def _cell(tmp_path: Path, name: str, *extra: str, estimate_s: float | None = None) -> Cell:
    return Cell(name=name, work_dir=str(tmp_path / "study" / name), run_args=(*MINI, *extra), estimate_s=estimate_s)


def test_options_and_time_limit() -> None:
    assert parse_slurm_extra(["account=abc", "--qos=high", "mail_type=END"]) == {
        "account": "abc", "qos": "high", "mail-type": "END"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_slurm_extra(["account"])
    with pytest.raises(UserError, match="--gpus-per-cell must be at least 1"):
        SlurmOptions(log_folder="x", gpus_per_cell=0)
    cells = [Cell("a", "/a", (), estimate_s=3600), Cell("b", "/b", (), estimate_s=600)]
    # the longest cell's estimate x 1.5, plus the checkpoint warning, in whole minutes
    assert timeout_minutes(cells, SlurmOptions(log_folder="x")) == 93
    assert timeout_minutes(cells[1:2], SlurmOptions(log_folder="x")) == 30     # the floor
    assert timeout_minutes(cells, SlurmOptions(log_folder="x", timeout_min=45)) == 45
    with pytest.raises(UserError, match="--timeout-min"):
        timeout_minutes([Cell("c", "/c", ())], SlurmOptions(log_folder="x"))


def test_sbatch_script_asks_for_the_cells_resources(tmp_path: Path, fake_slurm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")   # submit, do not run
    cells = [_cell(tmp_path, f"c{i}") for i in range(3)]
    opts = SlurmOptions(log_folder=str(tmp_path / "logs"), partition="gpu", gpus_per_cell=4, nodes_per_cell=2,
                        timeout_min=90, max_parallel=2, extra={"account": "abc", "qos": "high"})
    jobs = submit_cells(cells, "slurm", opts, name="table4")
    scripts = list((fake_slurm / "submitted").glob("*.sh"))
    assert len(scripts) == 1   # one array, not one job per cell
    text = scripts[0].read_text()
    for line in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=2", "--time=90",
                 "--array=0-2%2", "--account=abc", "--qos=high", "--signal=USR2@180", "--job-name=table4"):
        assert f"#SBATCH {line}" in text, (line, text)
    assert re.search(r"^srun .* -m submitit\.core\._submit ", text, re.M)
    assert [j.job_id for j in jobs] == [f"{scripts[0].stem}_{i}" for i in range(3)]
    # each array element runs its own cell, DDP through the existing launcher (8 tasks: 2 nodes x 4 GPUs)
    for cell, job in zip(cells, jobs):
        fn = job.submission().function
        assert isinstance(fn, CellJob) and fn.cell == cell
        cmd = fn.command()
        assert cmd[cmd.index("--work-dir") + 1] == cell.work_dir and cmd[-3:] == ["--resume", "--launcher", "slurm"]
    record = json.loads((tmp_path / "logs" / JOBS_NAME).read_text())
    assert {k: v["job_id"] for k, v in record.items()} == {c.name: j.job_id for c, j in zip(cells, jobs)}


def test_array_runs_cells_and_records_a_failure(tmp_path: Path, fake_slurm: Path) -> None:
    good = _cell(tmp_path, "good", "--cfg-options", "train_cfg.max_iters=4")
    bad = _cell(tmp_path, "bad", "--cfg-options", "train_cfg.max_iter=4")   # misspelt key: a one-line UserError
    jobs = submit_cells([good, bad], "slurm", SlurmOptions(log_folder=str(tmp_path / "logs"), timeout_min=20))
    out = jobs[0].result()
    assert out["cell"] == "good" and out["value"] == json.loads(Path(out["results"]).read_text())["value"]
    assert read_job_state(good.work_dir)["state"] == "done"
    with pytest.raises(Exception, match="max_iters"):
        jobs[1].result()
    failed = read_job_state(bad.work_dir)
    assert failed["state"] == "failed" and failed["rc"] == 2 and "train_cfg.max_iters" in failed["error"]
    assert failed["job_id"] == jobs[1].job_id
    # submitit returns a result once the job wrote it; the job's process (and so SLURM's state) ends a moment later
    deadline, states = time.time() + 60, ""
    while time.time() < deadline:
        states = subprocess.run(["sacct", "-o", "JobID,State", "--parsable2", "-j", jobs[0].job_id.split("_")[0]],
                                capture_output=True, text=True).stdout
        if "|RUNNING" not in states and "|PENDING" not in states:
            break
        time.sleep(0.1)
    assert f"{jobs[0].job_id}|COMPLETED" in states and f"{jobs[1].job_id}|FAILED" in states


def test_local_executor_runs_a_cell(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cell = _cell(tmp_path, "local", "--cfg-options", "train_cfg.max_iters=4", estimate_s=10)
    job, = submit_cells([cell], "local", SlurmOptions(log_folder=str(tmp_path / "logs")))
    assert job.result()["cell"] == "local"
    assert (Path(cell.work_dir) / "results.json").is_file() and read_job_state(cell.work_dir)["state"] == "done"


def test_cell_job_runs_with_the_cells_env(tmp_path: Path, monkeypatch) -> None:
    """A cell's ``env`` reaches its run (transfer12's feature cache), and only its run: the job's own environment
    and that of the process that submitted it stay as they were."""
    monkeypatch.delenv("RS_TEST_CELL_ENV", raising=False)
    cell = Cell(name="env", work_dir=str(tmp_path / "env"), run_args=(), env=(("RS_TEST_CELL_ENV", "/cache/x"),))
    job = CellJob(cell)
    # stands in for `rs-transfer run`: records what it was given as the run's results.json
    script = ("import json, os, sys; wd = sys.argv[sys.argv.index('--work-dir') + 1]; "
              "json.dump({'value': os.environ.get('RS_TEST_CELL_ENV')}, open(os.path.join(wd, 'results.json'), 'w'))")
    monkeypatch.setattr(job, "command", lambda: [sys.executable, "-c", script, "--work-dir", cell.work_dir])
    assert job()["value"] == "/cache/x" and "RS_TEST_CELL_ENV" not in os.environ
    from dataclasses import asdict

    from rs_transfer.studies.cells import command_line

    assert command_line({**asdict(cell), "env": dict(cell.env)}).startswith(
        "env RS_TEST_CELL_ENV=/cache/x rs-transfer run ")


def _wait_for_training(job, work_dir: Path, iters: int, segment: int, timeout: float = 300) -> int:
    """Wait until the ``segment``-th run (1: the first, 2: after one requeue...) of the cell logs a training
    iteration; return that run's pid (the lock holder)."""
    from rs_transfer.runner.lock import read_holder

    deadline = time.time() + timeout
    while time.time() < deadline and not job.done():
        logs = sorted(work_dir.glob("*/*.log"))
        holder = read_holder(work_dir)
        if (len(logs) >= segment and holder is not None
                and re.search(rf"Iter\(train\) \[\s*\d+/{iters}\]", logs[segment - 1].read_text())):
            return holder.pid
        time.sleep(0.05)
    raise AssertionError(f"no training iteration logged in {work_dir}: {job.stderr()}")


@pytest.mark.slow
def test_preempted_cell_requeues_and_resumes_exactly(tmp_path: Path, fake_slurm: Path) -> None:
    """The time-limit USR2 (submitit's checkpoint(): the run saves, the job is requeued), then a preemption's
    SIGTERM that reaches the run itself (it saves; the cell job asks submitit to requeue): the third start resumes
    and ends with the metrics of an uninterrupted run."""
    iters = ("--cfg-options", "log_interval=1", "train_cfg.max_iters=150")
    ref = subprocess.run([sys.executable, "-m", "rs_transfer.cli", "run", *MINI, *iters, "--work-dir",
                          str(tmp_path / "ref")], capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    cell = _cell(tmp_path, "preempted", *iters)
    wd = Path(cell.work_dir)
    job, = submit_cells([cell], "slurm", SlurmOptions(log_folder=str(tmp_path / "logs"), timeout_min=20))
    _wait_for_training(job, wd, 150, segment=1)
    job._interrupt(timeout=True)          # scancel JOB --signal USR2, as SLURM does before the time limit
    run_pid = _wait_for_training(job, wd, 150, segment=2)
    os.kill(run_pid, signal.SIGTERM)      # preemption: SLURM's SIGTERM reaches the training process
    job.result()
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((wd / "results.json").read_text())
    assert b["resumed_from"] and 1 <= b["resumed_from"] < 150
    assert b["metrics"] == a["metrics"] and b["config_hash"] == a["config_hash"]
    task = slurm_settled(fake_slurm)[job.job_id]
    assert task["starts"] == 3 and task["state"] == "COMPLETED"
    log = job.stderr() or ""
    assert log.count("--resume: resuming from") == 2, log[-3000:]
    assert not (wd / ".rs-transfer.lock").exists()
    assert read_job_state(wd)["state"] == "done"
