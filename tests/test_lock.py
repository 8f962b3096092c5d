"""The work-dir lock (rs_transfer/runner/lock.py): one winner among racing processes, stale locks taken over, the
holder named in the error, and `rs-transfer run` refusing a work dir in use."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rs_transfer.errors import UserError
from rs_transfer.runner.lock import LOCK_NAME, WorkDirBusy, WorkDirLock, read_holder


def _race(work_dir: str, barrier, results) -> None:
    barrier.wait()
    try:
        with WorkDirLock(work_dir, log=lambda m: None):
            results.put(("won", os.getpid()))
            time.sleep(1.0)   # hold it while the others try
    except WorkDirBusy as err:
        results.put(("busy", str(err)))


def test_racing_processes_exactly_one_wins(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = [results.get(timeout=5) for _ in range(n)]
    won = [pid for kind, pid in got if kind == "won"]
    busy = [msg for kind, msg in got if kind == "busy"]
    assert len(won) == 1 and len(busy) == n - 1
    for msg in busy:   # each loser names the winner
        assert f"pid {won[0]}" in msg and socket.gethostname() in msg and "\n" not in msg
    assert not (tmp_path / LOCK_NAME).exists()   # released
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no temporaries left


def test_holder_named_with_slurm_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with WorkDirLock(tmp_path, what="rs-transfer run --seed 0"):
        monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
        with pytest.raises(WorkDirBusy) as info:
            WorkDirLock(tmp_path).acquire()
        holder = read_holder(tmp_path)
    msg = str(info.value)
    assert "SLURM job 4242_3" in msg and f"pid {os.getpid()}" in msg and "since 20" in msg
    assert holder is not None and holder.command == "rs-transfer run --seed 0"
    assert isinstance(info.value, UserError)   # the CLI prints it as one line


def test_dead_holder_on_this_host_is_taken_over(tmp_path: Path) -> None:
    code = ("import sys, time; from rs_transfer.runner.lock import WorkDirLock; "
            f"l = WorkDirLock({str(tmp_path)!r}); l.acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(WorkDirBusy):   # alive: refused
        WorkDirLock(tmp_path).acquire()
    os.kill(proc.pid, signal.SIGKILL)   # killed: no release, the lock file stays
    proc.wait()
    assert read_holder(tmp_path).pid == proc.pid
    said: list[str] = []
    with WorkDirLock(tmp_path, log=said.append):
        assert read_holder(tmp_path).pid == os.getpid()
    assert any("took over a stale lock" in m and f"process {proc.pid}" in m for m in said)


def _foreign_lock(work_dir: Path, age_s: float) -> None:
    """A lock held by a live-looking process on another node, last heartbeat ``age_s`` ago."""
    path = work_dir / LOCK_NAME
    path.write_text(json.dumps({"host": "node-17", "pid": 1, "started": time.time() - 3600, "token": "abc",
                                "job_id": "777", "command": "rs-transfer run"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_old_heartbeat_is_taken_over_fresh_one_is_not(tmp_path: Path) -> None:
    _foreign_lock(tmp_path, age_s=5)
    with pytest.raises(WorkDirBusy, match=r"host node-17, pid 1, SLURM job 777, .*last heartbeat \d+ s ago"):
        WorkDirLock(tmp_path, stale_after_s=60).acquire()
    _foreign_lock(tmp_path, age_s=120)
    said: list[str] = []
    with WorkDirLock(tmp_path, stale_after_s=60, log=said.append):
        pass
    assert any("heartbeat is 120 s old" in m for m in said)


def test_heartbeat_keeps_the_lock_fresh_and_release_spares_a_new_owner(tmp_path: Path) -> None:
    lock = WorkDirLock(tmp_path, heartbeat_s=0.05, log=lambda m: None)
    lock.acquire()
    old = time.time() - 100
    os.utime(tmp_path / LOCK_NAME, (old, old))
    time.sleep(0.3)
    assert read_holder(tmp_path).heartbeat_age_s < 5
    # someone took the lock over (we looked dead): our release must not remove their lock
    (tmp_path / LOCK_NAME).unlink()
    _foreign_lock(tmp_path, age_s=0)
    lock.release()
    assert read_holder(tmp_path).host == "node-17"


def test_waiting_for_a_busy_dir(tmp_path: Path) -> None:
    first = WorkDirLock(tmp_path, log=lambda m: None)
    first.acquire()
    import threading

    threading.Timer(0.5, first.release).start()
    said: list[str] = []
    with WorkDirLock(tmp_path, wait_s=20, heartbeat_s=0.2, log=said.append):
        pass
    assert any("waiting up to 20 s" in m for m in said)


def test_work_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        WorkDirLock(tmp_path / "f" / "run").acquire()


def test_refused_run_leaves_no_folder(tmp_path: Path) -> None:
    wd = tmp_path / "a" / "b"
    with WorkDirLock(wd):
        assert wd.is_dir()
    assert not (tmp_path / "a").exists()


def test_second_run_into_a_busy_work_dir_is_one_line(tmp_path: Path, capsys) -> None:
    from rs_transfer.cli import main

    with WorkDirLock(tmp_path / "wd", what="rs-transfer run --seed 0"):
        rc = main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--seed", "1",
                   "--work-dir", str(tmp_path / "wd")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "is in use by another run" in err and f"pid {os.getpid()}" in err
