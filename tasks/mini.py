"""The generated mini datasets (``--preset mini``), created once per machine and shared by every process.

A task's :meth:`~rs_transfer.tasks.base.Task.make_mini` writes the files; :func:`ensure_mini` puts them in place so
that concurrent processes (DDP ranks, parallel study cells) never see a half-written dataset. Light: imports no
torch or mmengine (``rs-transfer data mini`` uses it).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
import socket
from pathlib import Path

from .base import Task


@functools.lru_cache(maxsize=1)
def _package_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def generator(task: Task) -> str:
    """A digest of the code that writes and reads ``task``'s mini set: this package's sources (the suite's writers
    and shared readers) and the module of ``task.make_mini`` (``video/`` for Kinetics). Recorded in ``MINI.json``; a
    copy written by other code is written again, so a changed layout (new split files, another class) never meets
    a mini set from before it. No data check, no torch: a few dozen small files read once per process."""
    h = hashlib.sha256(_package_digest().encode())
    writer = inspect.getsourcefile(task.make_mini)
    if writer:
        h.update(Path(writer).read_bytes())
    return h.hexdigest()[:16]


def _stale(task: Task, marker: Path) -> bool:
    return marker.is_file() and json.loads(marker.read_text()).get("generator") != generator(task)


def ensure_mini(task: Task) -> Path:
    """The task's mini dataset, created once: written into a private temporary folder, then renamed into place, so
    concurrent processes (DDP ranks, parallel studies) never see a half-written dataset. A copy that other code
    wrote (:func:`generator`) is moved aside and written again."""
    root = task.mini_root()
    marker = root / "MINI.json"
    if _stale(task, marker):
        old = root.parent / f".{root.name}.stale-{socket.gethostname()}-{os.getpid()}"
        try:
            os.rename(root, old)          # another process may have moved it first: then it is gone already
        except OSError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    if not marker.is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.parent / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            data_root = Path(task.make_mini(tmp)).resolve()
            rel = data_root.relative_to(tmp.resolve())
            (tmp / "MINI.json").write_text(json.dumps({"task": task.name, "data_root": str(rel),
                                                       "generator": generator(task)}))
            try:
                os.rename(tmp, root)
            except OSError:
                if not marker.is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / json.loads(marker.read_text())["data_root"]
