"""A tiny stand-in for SLURM's command-line tools that runs jobs on this machine (tests only).

Installed by the ``fake_slurm`` fixture (tests/test_executor.py) as ``sbatch``, ``srun``, ``sacct``, ``squeue``,
``scancel`` and ``scontrol`` wrappers on PATH; state lives in ``$FAKE_SLURM_DIR``:

- ``sbatch SCRIPT``: keeps a copy of the script (``submitted/<id>.sh``, so tests can check the resources asked for),
  prints ``Submitted batch job <id>`` and starts a detached runner that executes the array's tasks with bash,
  at most ``%P`` at a time, with the SLURM_* environment a real array task sees. ``FAKE_SLURM_HOLD=1``: submit only.
- ``srun [options] CMD``: runs CMD as the job step (``--output``/``--error`` with ``%A %a %j %t`` filled in).
- ``sacct``/``squeue``: the tasks' states (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED), ``|``-separated.
- ``scancel ID [--signal SIG]``: cancel, or signal the job step; ``scontrol requeue ID``: the task runs again.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake-slurm"))


def _task_file(task: str) -> Path:
    return STATE / "jobs" / f"{task}.json"


def _flag(task: str, what: str) -> Path:
    """Per-task files other commands write (only the runner writes the task's JSON: no lost updates)."""
    return STATE / "jobs" / f"{task}.{what}"


def _read(task: str) -> dict:
    try:
        return json.loads(_task_file(task).read_text())
    except (OSError, ValueError):
        return {}


def _write(task: str, **fields: object) -> None:
    data = {**_read(task), **fields}
    tmp = _task_file(task).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, _task_file(task))


def _next_id() -> int:
    counter = STATE / "next_id"
    n = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(n + 1))
    return n


def _options(script: str) -> dict[str, str]:
    opts = {}
    for m in re.finditer(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, re.M):
        opts[m.group(1)] = (m.group(2) or "true").strip("'")
    return opts


def sbatch(args: list[str]) -> int:
    path = Path(args[-1])
    text = path.read_text()
    (STATE / "submitted").mkdir(parents=True, exist_ok=True)
    (STATE / "jobs").mkdir(parents=True, exist_ok=True)
    jid = _next_id()
    (STATE / "submitted" / f"{jid}.sh").write_text(text)
    spec = _options(text).get("array")
    indices, parallel = [None], 1
    if spec:
        rng, _, par = spec.partition("%")
        lo, _, hi = rng.partition("-")
        indices = list(range(int(lo), int(hi or lo) + 1))
        parallel = int(par or len(indices))
    for i in indices:
        _write(f"{jid}_{i}" if i is not None else str(jid), state="PENDING", starts=0)
    if os.environ.get("FAKE_SLURM_HOLD") != "1":
        subprocess.Popen([sys.executable, __file__, "_runner", str(jid), json.dumps(indices), str(parallel)],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(STATE / f"runner-{jid}.log", "a"))
    print(f"Submitted batch job {jid}")
    return 0


def _start(jid: int, index: int | None, opts: dict[str, str]) -> subprocess.Popen:
    task = f"{jid}_{index}" if index is not None else str(jid)
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    env = {**os.environ, "SLURM_JOB_ID": str(jid if index is None else jid * 1000 + index), "SLURM_JOB_NUM_NODES": str(nodes),
           "SLURM_NTASKS": str(nodes * per_node), "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_JOB_NODELIST": socket.gethostname(), "FAKE_SLURM_TASK": task}
    if index is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(jid), SLURM_ARRAY_TASK_ID=str(index))
    proc = subprocess.Popen(["bash", str(STATE / "submitted" / f"{jid}.sh")], env=env, start_new_session=True)
    _write(task, state="RUNNING", pgid=proc.pid, starts=_read(task).get("starts", 0) + 1)
    return proc


def runner(jid: int, indices: list[int | None], parallel: int) -> int:
    """Run the tasks, ``parallel`` at a time; a task flagged for requeue runs again when it exits."""
    opts = _options((STATE / "submitted" / f"{jid}.sh").read_text())
    waiting, running = list(indices), {}
    while waiting or running:
        while waiting and len(running) < parallel:
            i = waiting.pop(0)
            running[i] = _start(jid, i, opts)
        time.sleep(0.1)
        for i, proc in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            task = f"{jid}_{i}" if i is not None else str(jid)
            del running[i]
            if _flag(task, "requeue").exists():
                _flag(task, "requeue").unlink()
                _write(task, state="PENDING")
                waiting.insert(0, i)
            elif _flag(task, "cancel").exists():
                _write(task, state="CANCELLED")
            else:
                _write(task, state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc)
    return 0


def srun(args: list[str]) -> int:
    out = err = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("--output", "--error"):
            value = args.pop(0)
            for key, var in (("%A", "SLURM_ARRAY_JOB_ID"), ("%a", "SLURM_ARRAY_TASK_ID"), ("%j", "SLURM_JOB_ID")):
                value = value.replace(key, os.environ.get(var, ""))
            value = value.replace("%t", "0")
            if opt == "--output":
                out = value
            else:
                err = value
    task = os.environ.get("FAKE_SLURM_TASK", "")
    if task:
        _flag(task, "step").write_text(str(os.getpid()))
    for fd, path in ((1, out), (2, err)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
    os.execvp(args[0], args)
    return 127


def _tasks(ids: list[str]) -> list[str]:
    names = sorted(p.stem for p in (STATE / "jobs").glob("*.json"))
    return [n for n in names if not ids or n in ids or n.split("_")[0] in ids]


def sacct(args: list[str]) -> int:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for task in _tasks(ids):
        print(f"{task}|{_read(task).get('state', 'UNKNOWN')}|{socket.gethostname()}")
    return 0


def squeue(args: list[str]) -> int:
    for task in _tasks([]):
        state = _read(task).get("state")
        if state in ("PENDING", "RUNNING"):
            print(f"{task}|{state}")
    return 0


def _signal_group(task: str, sig: int) -> None:
    pgid = _read(task).get("pgid")
    if pgid:
        try:
            os.killpg(int(pgid), sig)
        except ProcessLookupError:
            pass


def scancel(args: list[str]) -> int:
    sig = None
    if "--signal" in args:
        i = args.index("--signal")
        sig = getattr(signal, "SIG" + args[i + 1].removeprefix("SIG"))
        del args[i:i + 2]
    for task in _tasks(args):
        if sig is not None:   # like SLURM: to the job step's processes, here the step's main process
            if _flag(task, "step").exists():
                os.kill(int(_flag(task, "step").read_text()), sig)
        else:
            _flag(task, "cancel").touch()
            _signal_group(task, signal.SIGTERM)
    return 0


def scontrol(args: list[str]) -> int:
    if args[:1] != ["requeue"]:
        print(f"fake scontrol: unsupported {args}", file=sys.stderr)
        return 1
    for task in _tasks(args[1:]):
        _flag(task, "requeue").touch()
        pgid = _read(task).get("pgid")
        if pgid:   # like SLURM, asynchronously: scontrol returns first, then the running job is terminated
            subprocess.Popen([sys.executable, __file__, "_kill", str(pgid), "2"], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def kill_later(pgid: int, delay_s: float) -> int:
    time.sleep(delay_s)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return 0


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "_kill":
        return kill_later(int(args[0]), float(args[1]))
    if cmd == "_runner":
        return runner(int(args[0]), json.loads(args[1]), int(args[2]))
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scancel": scancel,
            "scontrol": scontrol}[cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
