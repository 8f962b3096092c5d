"""The generated mini datasets (``--preset mini``), created once per machine and shared by every process.

A task's :meth:`~rs_transfer.tasks.base.Task.make_mini` writes the files; :func:`ensure_mini` puts them in place so
that concurrent processes (DDP ranks, parallel study cells) never see a half-written dataset. Light: imports no
torch or mmengine (``rs-transfer data mini`` uses it).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from .base import Task


def _stale(task: Task, root: Path, marker: Path) -> bool:
    """A mini copy an older generator wrote, that the task's own data check now rejects (a layout the readers
    changed, e.g. new split files): rewritten rather than failing every mini run on that machine."""
    if not marker.is_file() or task.check_data is None:
        return False
    return not task.check(root / json.loads(marker.read_text())["data_root"]).ok


def ensure_mini(task: Task) -> Path:
    """The task's mini dataset, created once: written into a private temporary folder, then renamed into place, so
    concurrent processes (DDP ranks, parallel studies) never see a half-written dataset. A copy that fails the
    task's data check (written by an older generator) is moved aside and written again."""
    root = task.mini_root()
    marker = root / "MINI.json"
    if _stale(task, root, marker):
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
            (tmp / "MINI.json").write_text(json.dumps({"task": task.name, "data_root": str(rel)}))
            try:
                os.rename(tmp, root)
            except OSError:
                if not marker.is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / json.loads(marker.read_text())["data_root"]
