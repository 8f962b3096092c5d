"""Study cells as cluster jobs: one SLURM job array per study through submitit, preemption-safe.

A study's plan hands over its cells to run; each :class:`Cell` is the ``rs-transfer run`` arguments of one run plus its work dir. Why this shape:

- **One job array** (submitit ``map_array``): a four-source, three-seed Table 4 is 60 runs, a sweep 50 more; one
  array is one scheduler entry, and ``--max-parallel`` caps how many run at once.
- **A cell job is a subprocess** ``rs-transfer run ... --resume`` (:class:`CellJob`). The training process keeps its
  own SIGTERM path (rs_transfer/checkpoints.py ``preemption_guard``: a checkpoint at the next iteration boundary,
  then ``RunInterrupted``), while the submitit process around it owns the job's fate: on the time-limit signal
  (``USR2``, ``--signal USR2@SIGNAL_DELAY_S``) submitit calls :meth:`CellJob.checkpoint`, which forwards SIGTERM to
  the run, waits for its checkpoint, and hands submitit the same cell again: the job is requeued and resumes from
  that checkpoint (the runner's resume is exact). When SLURM preempts with SIGTERM, the run checkpoints by itself;
  the cell job then asks submitit for the same requeue by sending itself the USR2 submitit listens to.
- **A multi-GPU cell** runs one task per GPU, each its own ``rs-transfer run --launcher slurm`` (DDP through the
  existing launcher; the protocol's global batch does not depend on the GPU count). Only rank 0 checkpoints and
  requeues (submitit's rule); the other ranks stop at the same iteration (``_agreed_stop``).
- **The work-dir lock** (rs_transfer/runner/lock.py) is taken by the run itself; a cell job sets
  ``RS_TRANSFER_LOCK_WAIT`` so that a requeued job racing its killed predecessor waits for the old lock to be
  released or to go stale instead of failing.
- **The cell's environment** (:attr:`Cell.env`, e.g. transfer12's ``RS_TRANSFER_FEATURE_CACHE``) is set for the
  run subprocess only: the job, not the sbatch script or the submitting shell, carries what a cell needs, so every
  cell of one array can have its own and a resubmission from ``study status`` gets the same.
- **State per cell**: the cell job writes ``WORK_DIR/cell_job.json`` atomically (running / interrupted / requeued /
  done / failed, job id, host, the last error line), which ``study status`` reads.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rs_transfer.atomic import write_json_atomic
from rs_transfer.errors import UserError
from rs_transfer.runner.lock import STALE_AFTER_S, WAIT_ENV, slurm_job_id

JOB_STATE_NAME = "cell_job.json"
JOBS_NAME = "jobs.json"          # in the submitit folder: which job runs which cell
SIGNAL_DELAY_S = 180             # SLURM's warning before the time limit: a checkpoint of the biggest cell fits
TIMEOUT_MARGIN = 1.5             # --timeout-min default: estimate x margin, rounded up, at least MIN_TIMEOUT_MIN
MIN_TIMEOUT_MIN = 30
EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class Cell:
    """One run of a study. ``run_args``: the ``rs-transfer run`` arguments without ``--work-dir``, ``--resume`` and
    ``--launcher`` (the cell job adds them); ``estimate_s``: the plan's estimated training seconds, if known;
    ``env``: ``(NAME, VALUE)`` pairs set for the run (a tuple: the cell stays frozen and hashable)."""

    name: str
    work_dir: str
    run_args: tuple[str, ...]
    estimate_s: float | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SlurmOptions:
    """The CLI's ``--slurm-partition --gpus-per-cell --nodes-per-cell --timeout-min --max-parallel --slurm-extra``
    and the submitit log folder."""

    log_folder: str
    partition: str | None = None
    gpus_per_cell: int = 1
    nodes_per_cell: int = 1
    timeout_min: int | None = None
    max_parallel: int = 16
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("gpus_per_cell", "nodes_per_cell", "max_parallel"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.timeout_min is not None and int(self.timeout_min) < 1:
            raise UserError(f"--timeout-min must be at least 1 minute, not {self.timeout_min}")

    @property
    def tasks(self) -> int:
        return int(self.gpus_per_cell) * int(self.nodes_per_cell)


def parse_slurm_extra(pairs: Sequence[str] | None) -> dict[str, str]:
    """``--slurm-extra account=abc qos=high constraint=a100`` -> sbatch options (``--account=abc`` ...)."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value:
            raise UserError(f"--slurm-extra takes KEY=VALUE sbatch options (e.g. account=abc qos=high), not {pair!r}")
        out[key.replace("_", "-")] = value
    return out


def timeout_minutes(cells: Sequence[Cell], opts: SlurmOptions) -> int:
    """The array's time limit: ``--timeout-min``, else the longest cell's estimate x :data:`TIMEOUT_MARGIN` plus the
    checkpoint warning, at least :data:`MIN_TIMEOUT_MIN`. A cell longer than that is requeued and resumes."""
    if opts.timeout_min is not None:
        return int(opts.timeout_min)
    known = [c.estimate_s for c in cells if c.estimate_s]
    if not known:
        raise UserError("no time estimate for these cells: give --timeout-min (the per-job limit; a cell that needs "
                        "longer is requeued and resumes from its checkpoint)")
    need = max(known) * TIMEOUT_MARGIN + SIGNAL_DELAY_S
    return max(MIN_TIMEOUT_MIN, int(-(-need // 60)))


# ---- the job ---------------------------------------------------------------------------------------------------------
def _write_state(work_dir: Path, **fields: Any) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(work_dir / JOB_STATE_NAME, {"host": socket.gethostname(), "pid": os.getpid(),
                                                  "job_id": slurm_job_id() or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
                                                  "time": time.time(), **fields})


def read_job_state(work_dir: str | Path) -> dict[str, Any] | None:
    """``WORK_DIR/cell_job.json`` (None when no cell job ever ran there)."""
    try:
        return json.loads((Path(work_dir) / JOB_STATE_NAME).read_text())
    except (OSError, ValueError):
        return None


class CellJob:
    """What a submitit job runs for one cell (picklable; submitit's checkpoint protocol, as
    ``submitit.helpers.Checkpointable``)."""

    def __init__(self, cell: Cell, launcher: str = "none") -> None:
        self.cell, self.launcher = cell, launcher
        self._child: subprocess.Popen | None = None
        self._tail: deque[str] = deque(maxlen=20)

    def __getstate__(self) -> dict[str, Any]:
        return {"cell": self.cell, "launcher": self.launcher}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cell"], state["launcher"])  # type: ignore[misc]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rs_transfer.cli", "run", *self.cell.run_args, "--work-dir",
                self.cell.work_dir, "--resume", "--launcher", self.launcher]

    @staticmethod
    def _rank() -> int:
        for var in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
            if os.environ.get(var):
                return int(os.environ[var])
        return 0

    def __call__(self) -> dict[str, Any]:
        wd = Path(self.cell.work_dir)
        rank = self._rank()
        if rank == 0:
            _write_state(wd, state="running", cell=self.cell.name, command=self.command())
        env = {**os.environ, **dict(self.cell.env), WAIT_ENV: str(int(STALE_AFTER_S + 60))}

        def no_usr2() -> None:  # SLURM signals every process of the step; only the submitit process handles USR2
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)

        self._child = subprocess.Popen(self.command(), env=env, stderr=subprocess.PIPE, text=True,
                                       preexec_fn=no_usr2)
        reader = threading.Thread(target=self._copy_stderr, daemon=True)
        reader.start()
        while self._child.poll() is None:   # poll, not wait(): the signal handler may need to reap the child
            time.sleep(0.2)
        reader.join(timeout=10)
        rc = self._child.returncode
        if rc == 0:
            res = json.loads((wd / "results.json").read_text()) if rank == 0 else {}
            if rank == 0:
                _write_state(wd, state="done", cell=self.cell.name, value=res.get("value"))
            return {"cell": self.cell.name, "value": res.get("value"), "results": str(wd / "results.json")}
        if rc in (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM):
            # SLURM preempted us with SIGTERM: the run saved a checkpoint. Ask submitit to requeue (its USR2 path
            # calls checkpoint(), which now finds the run finished, then requeues).
            if rank == 0:
                _write_state(wd, state="interrupted", cell=self.cell.name, rc=rc)
                os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
            time.sleep(SIGNAL_DELAY_S)   # rank > 0: rank 0 requeues the whole job, which ends this one
        last = next((line for line in reversed(self._tail) if line.strip()), f"exit status {rc}")
        if rank == 0:
            _write_state(wd, state="failed", cell=self.cell.name, rc=rc, error=last.strip())
        raise RuntimeError(f"cell {self.cell.name} failed (exit status {rc}): {last.strip()}")

    def _copy_stderr(self) -> None:
        """The run's stderr goes on to the job's log, and its last lines are kept for the failure message."""
        assert self._child is not None and self._child.stderr is not None
        for line in self._child.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            self._tail.append(line.rstrip("\n"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's time-limit / preemption hook (runs in the signal handler of rank 0): stop the run at its next
        iteration boundary (it saves a checkpoint), wait for it, and return the same cell to requeue."""
        import submitit

        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + SIGNAL_DELAY_S - 30
            while time.monotonic() < deadline and not _reaped(child):
                time.sleep(0.2)
            if not _reaped(child):   # no iteration boundary in time: resume from the last periodic checkpoint
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
        _write_state(Path(self.cell.work_dir), state="requeued", cell=self.cell.name)
        return submitit.helpers.DelayedSubmission(CellJob(self.cell, self.launcher))


def _reaped(child: subprocess.Popen) -> bool:
    """Whether ``child`` has exited, without ``Popen`` locks (this may run in a signal handler that interrupted
    ``Popen.poll`` in the same thread)."""
    if child.returncode is not None:
        return True
    try:
        pid, status = os.waitpid(child.pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if pid == 0:
        return False
    child.returncode = os.waitstatus_to_exitcode(status)
    return True


# ---- submitting ------------------------------------------------------------------------------------------------------
def make_executor(kind: str, cells: Sequence[Cell], opts: SlurmOptions, name: str = "rs-transfer") -> Any:
    """A submitit executor for ``cells``: ``slurm`` (sbatch job arrays) or ``local`` (submitit's local executor:
    the same job protocol on this machine, for trying a study's cluster path without a cluster)."""
    import submitit

    folder = Path(opts.log_folder) / "%j"
    minutes = timeout_minutes(cells, opts)
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=30)
        params: dict[str, Any] = dict(
            job_name=name, time=minutes, nodes=int(opts.nodes_per_cell), ntasks_per_node=int(opts.gpus_per_cell),
            array_parallelism=int(opts.max_parallel), signal_delay_s=SIGNAL_DELAY_S, stderr_to_stdout=False)
        if opts.partition:
            params["partition"] = opts.partition
        gpus_per_node = int(opts.gpus_per_cell)
        if gpus_per_node:
            params["gpus_per_node"] = gpus_per_node
        if opts.extra:
            params["additional_parameters"] = dict(opts.extra)
        ex.update_parameters(**params)
        return ex
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=30)
        ex.update_parameters(timeout_min=minutes, signal_delay_s=SIGNAL_DELAY_S)
        return ex
    raise UserError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def launcher_for(opts: SlurmOptions, kind: str) -> str:
    """DDP through the existing launcher when a cell has more than one task."""
    return "slurm" if kind == "slurm" and opts.tasks > 1 else "none"


def submit_cells(cells: Sequence[Cell], kind: str, opts: SlurmOptions, *, name: str = "rs-transfer") -> list[Any]:
    """Submit ``cells`` as one array; record which job runs which cell in ``LOG_FOLDER/jobs.json`` (merged with
    earlier submissions: the newest job of a cell wins). Returns submitit's jobs, in the order of ``cells``."""
    if not cells:
        return []
    ex = make_executor(kind, cells, opts, name)
    launcher = launcher_for(opts, kind)
    # One array (submitit's batch() is map_array over callables): each element is a CellJob *instance*, so
    # submitit finds its checkpoint() when the time-limit signal comes.
    with ex.batch():
        jobs = [ex.submit(CellJob(cell, launcher)) for cell in cells]
    record_path = Path(opts.log_folder) / JOBS_NAME
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    now = time.time()
    for cell, job in zip(cells, jobs):
        record[cell.name] = {"job_id": str(job.job_id), "executor": kind, "work_dir": cell.work_dir,
                             "submitted": now, "cell": asdict(cell)}
    write_json_atomic(record_path, record)
    return jobs


# ---- command-line options (every study that can leave the machine) --------------------------------------------------
def add_executor_arguments(p: Any) -> None:
    """``--executor --dry-run`` and the SLURM options of a study command."""
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local: the cells run one after another here (default); slurm: one SLURM job array over "
                        "the cells to run (submitit); the same command again collects the report")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (every cell: state, samples to train, estimate) and write it as "
                        "OUT/plan.json; runs and submits nothing")
    p.add_argument("--gpu", default=None, metavar="NAME",
                   help="estimate cells without a measured throughput from their training FLOPs at this GPU's "
                        "peak bf16 TFLOP/s (A100, H100, H200, B200, L40S, L4...) x --assume-mfu")
    p.add_argument("--assume-mfu", type=float, default=0.35,
                   help="model FLOPs utilisation assumed with --gpu (default 0.35)")
    p.add_argument("--slurm-partition", default=None, help="SLURM partition of the cell jobs")
    p.add_argument("--gpus-per-cell", type=int, default=1,
                   help="GPUs per node of one cell job; more than one runs DDP (--launcher slurm) in the job")
    p.add_argument("--nodes-per-cell", type=int, default=1, help="nodes of one cell job (default 1)")
    p.add_argument("--timeout-min", type=int, default=None,
                   help="time limit of a cell job in minutes (default: the plan's estimate x 1.5; a cell that "
                        "needs longer is requeued and resumes from its checkpoint)")
    p.add_argument("--max-parallel", type=int, default=16, help="cell jobs running at once (the array's %%N)")
    p.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more sbatch options, e.g. account=abc qos=high constraint=a100")
    p.add_argument("--slurm-folder", default=None,
                   help="submitit's folder for job scripts and logs (default: OUT/slurm; must be on a file system "
                        "the compute nodes see)")


def slurm_options(args: Any, out: str | Path) -> SlurmOptions:
    """:class:`SlurmOptions` from a study command's arguments."""
    return SlurmOptions(log_folder=str(Path(args.slurm_folder or Path(out) / "slurm").absolute()),
                        partition=args.slurm_partition, gpus_per_cell=args.gpus_per_cell,
                        nodes_per_cell=args.nodes_per_cell, timeout_min=args.timeout_min,
                        max_parallel=args.max_parallel, extra=parse_slurm_extra(args.slurm_extra))
