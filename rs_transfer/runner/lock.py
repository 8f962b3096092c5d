"""One writer per work dir: a lock that works on shared file systems (NFS, Lustre, GPFS) and survives killed holders.

Why not ``fcntl.flock``: on NFS it is emulated (or silently local) depending on the mount, on Lustre it needs the
``flock`` mount option, and a lock held by a job on another node is invisible to ``flock`` on many clusters. What
every POSIX file system does atomically, including NFSv3+, is creating a name that must not exist yet. So:

- **Acquire.** The holder's facts (host, pid, SLURM job id, start time, a random token, the command) are written to a
  private temporary file, which is then hard-linked to ``WORK_DIR/.rs-transfer.lock`` (``link`` fails with EEXIST
  when the name exists: exactly one of any number of racers wins, and the lock file is never seen half-written).
  File systems without hard links fall back to ``O_CREAT | O_EXCL``.
- **Heartbeat.** A daemon thread touches the lock file every :data:`HEARTBEAT_S` seconds. Its mtime is set by the
  file server, and it is compared with the mtime of a file we just wrote (also the server's clock), so clock skew
  between nodes does not matter.
- **Stale.** A lock is stale when its host is this host and its pid is gone, or when its heartbeat is older than
  :data:`STALE_AFTER_S` (a holder on another node killed with SIGKILL, or a node that died). A stale lock is taken
  over: under a short-lived takeover guard (itself a create-exclusive file), the lock is read again and removed
  only if it still carries the token judged stale, so two processes taking over never remove each other's fresh
  lock.
- **Held.** :class:`WorkDirBusy` (a :class:`rs_transfer.errors.UserError`: the CLI prints one line) names the holder:
  host, pid, SLURM job, since when, last heartbeat. ``wait_s`` lets a requeued cell job wait for its predecessor's
  lock to be released or to go stale instead of failing.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError

LOCK_NAME = ".rs-transfer.lock"
GUARD_NAME = ".rs-transfer.lock.takeover"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 180.0    # > 2 x the NFS attribute cache (actimeo up to 60 s) + a few missed heartbeats
GUARD_STALE_S = 30.0     # a takeover takes milliseconds; a guard older than this belongs to a killed taker
WAIT_ENV = "RS_TRANSFER_LOCK_WAIT"   # seconds a run waits for a busy work dir (cell jobs set it; default 0)


class WorkDirBusy(UserError):
    """The work dir is locked by a live run; the message names it."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


def slurm_job_id() -> str | None:
    """This process's SLURM job as ``squeue`` shows it (``ARRAY_TASK`` form for array jobs), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


@dataclass(frozen=True)
class Holder:
    """Who holds a lock. ``heartbeat_age_s`` is filled in when read (seconds since the last heartbeat, by the file
    server's clock)."""

    host: str
    pid: int
    started: float
    token: str
    job_id: str | None = None
    command: str = ""
    heartbeat_age_s: float | None = None

    def describe(self) -> str:
        job = f", SLURM job {self.job_id}" if self.job_id else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        beat = f", last heartbeat {self.heartbeat_age_s:.0f} s ago" if self.heartbeat_age_s is not None else ""
        return f"host {self.host}, pid {self.pid}{job}, since {since}{beat}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def read_holder(work_dir: str | Path, *, now: float | None = None) -> Holder | None:
    """The current holder of ``work_dir``'s lock (None when unlocked or unreadable mid-takeover). ``now``: the file
    server's time (default: this machine's)."""
    path = Path(work_dir) / LOCK_NAME
    try:
        st = path.stat()
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data:
        # O_EXCL fallback between create and write: a holder we cannot name yet, judged by the file's age only
        data = {"host": "?", "pid": -1, "started": st.st_mtime, "token": f"unwritten-{st.st_ino}"}
    age = (time.time() if now is None else now) - st.st_mtime
    fields = {k: data.get(k) for k in ("host", "pid", "started", "token", "job_id", "command")}
    return Holder(**{**fields, "command": fields["command"] or "", "heartbeat_age_s": max(0.0, age)})


def stale_reason(holder: Holder, *, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why ``holder``'s lock may be taken over, or None while it looks alive."""
    if holder.host == socket.gethostname() and holder.pid > 0 and not _pid_alive(holder.pid):
        return f"its process {holder.pid} on this host is gone"
    if holder.heartbeat_age_s is not None and holder.heartbeat_age_s > stale_after_s:
        return f"its heartbeat is {holder.heartbeat_age_s:.0f} s old (> {stale_after_s:.0f} s)"
    return None


class WorkDirLock:
    """The lock of one work dir (see the module doc). Use as a context manager, or :meth:`acquire` /
    :meth:`release`. ``what`` names the holder's purpose in the lock file (the command line by default)."""

    def __init__(self, work_dir: str | Path, *, wait_s: float = 0.0, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, what: str | None = None, log: Any = None) -> None:
        self.work_dir = Path(os.path.abspath(work_dir))
        self.path = self.work_dir / LOCK_NAME
        self.wait_s, self.heartbeat_s, self.stale_after_s = float(wait_s), float(heartbeat_s), float(stale_after_s)
        self.what = what if what is not None else " ".join(Path(sys.argv[0]).name if i == 0 else a
                                                           for i, a in enumerate(sys.argv))
        self.log = log or (lambda msg: print(f"rs-transfer: {msg}", file=sys.stderr, flush=True))
        self.holder: Holder | None = None
        self._created: list[Path] = []   # folders acquire made (leaf first), removed again if left empty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- acquiring ---------------------------------------------------------------------------------------------
    def acquire(self) -> Holder:
        """Take the lock (taking over a stale one), or raise :class:`WorkDirBusy` naming the holder once
        ``wait_s`` has passed."""
        self._created = [d for d in (self.work_dir, *self.work_dir.parents) if not d.exists()]
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            probe = self.work_dir / f".{LOCK_NAME}.probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"work dir {self.work_dir}: it or a folder above it is a file; choose another "
                            "--work-dir") from None
        except OSError as err:
            raise UserError(f"work dir {self.work_dir} cannot be written ({err.strerror or err}); choose another "
                            "--work-dir") from None
        me = Holder(host=socket.gethostname(), pid=os.getpid(), started=time.time(), token=secrets.token_hex(8),
                    job_id=slurm_job_id(), command=self.what[:500])
        deadline = time.monotonic() + self.wait_s
        said_waiting = False
        while True:
            now = self._try_create(me)
            if now is None:
                self.holder = me
                self._start_heartbeat()
                return me
            other = read_holder(self.work_dir, now=now)
            if other is None:      # released (or taken over) between our attempt and the read: try again
                continue
            reason = stale_reason(other, stale_after_s=self.stale_after_s)
            if reason is not None:
                if self._remove_if_same(other):
                    self.log(f"{self.work_dir}: took over a stale lock ({other.describe()}): {reason}")
                continue
            if time.monotonic() >= deadline:
                raise WorkDirBusy(f"{self.work_dir} is in use by another run ({other.describe()}): wait for it to "
                                  "finish or use another work dir; a lock left by a killed run is taken over once "
                                  f"its process is gone or its heartbeat is {self.stale_after_s:.0f} s old", other)
            if not said_waiting:
                self.log(f"{self.work_dir} is in use ({other.describe()}): waiting up to {self.wait_s:.0f} s")
                said_waiting = True
            time.sleep(min(2.0, max(0.05, self.heartbeat_s / 4)))

    def _try_create(self, me: Holder) -> float | None:
        """Create the lock file holding ``me``; None on success, else the file server's current time."""
        tmp = self.work_dir / f".{LOCK_NAME}.{me.host}.{me.pid}.{me.token}"
        tmp.write_text(json.dumps({k: v for k, v in asdict(me).items() if k != "heartbeat_age_s"}))
        try:
            now = tmp.stat().st_mtime   # the server's clock, to compare with the holder's heartbeat
            try:
                os.link(tmp, self.path)
                return None
            except FileExistsError:
                return now
            except OSError as err:       # no hard links on this file system: create-exclusive instead
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                    raise
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return now
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def _remove_if_same(self, stale: Holder) -> bool:
        """Remove the lock if it still carries ``stale``'s token, under the takeover guard; True if removed."""
        guard = self.work_dir / GUARD_NAME
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - guard.stat().st_mtime > GUARD_STALE_S:
                    guard.unlink()    # a taker killed mid-takeover
            time.sleep(0.05)
            return False
        os.close(fd)
        try:
            again = read_holder(self.work_dir)
            if again is None or again.token != stale.token:
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    # ---- holding -----------------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="rs-transfer-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (never someone else's after a takeover);
        a work dir this lock created and that stayed empty is removed too."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.holder is None:
            return
        current = read_holder(self.work_dir)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
        else:
            self.log(f"{self.work_dir}: our lock was taken over by another run while we held it "
                     f"({current.describe() if current else 'now unlocked'})")
        self.holder = None
        for folder in self._created:   # only if empty: a run refused before writing anything leaves no folder
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def lock_for_run(work_dir: str | Path, launcher: str = "none") -> Iterator[WorkDirLock | None]:
    """The lock a run holds on its work dir: taken by rank 0 only (all ranks of one DDP run share the folder);
    waits ``$RS_TRANSFER_LOCK_WAIT`` seconds for a busy one (0: fail at once with one line)."""
    rank = 0 if launcher == "none" else int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    if rank != 0:
        yield None
        return
    try:
        wait = float(os.environ.get(WAIT_ENV, "0") or 0)
    except ValueError:
        raise UserError(f"{WAIT_ENV}={os.environ[WAIT_ENV]!r} is not a number of seconds") from None
    with WorkDirLock(work_dir, wait_s=wait) as lock:
        yield lock
