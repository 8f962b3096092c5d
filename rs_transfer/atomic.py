"""Write-then-rename, the one way every file a run or study leaves is written (results.json, reports, checkpoints,
exported weights, caches): readers see the old file or the new one, never a partial one, and a crash leaves no
temporary file behind.

The temporary file sits in the target's folder (a rename is atomic only within one file system), is fsynced before
the rename and the folder after it (so the rename survives a power cut), and gets the mode ``open(path, "w")`` would
give (``mkstemp`` makes 0600 files, which other users and a web server showing reports could not read).
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def new_file_mode(path: Path) -> int:
    """The existing file's mode when replacing one, else 0o666 minus the umask (read without changing it)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    try:  # Linux >= 4.7 reports the umask without changing it (no window in which another thread sees umask 0)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories: so that a rename survives a power cut; not on all platforms)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(tmp: Path, final: Path) -> None:
    """Make a fully written temporary file the real one: fsync, rename over ``final``, fsync the folder."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` for writers that need a file name (``torch.save``, safetensors); on a
    clean exit it replaces ``path``, on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        os.chmod(tmp, mode)   # after the writer: some (safetensors) replace the file they were given
        commit_file(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (configs' classes and numpy scalars made JSON-friendly first)."""
    from rs_transfer.results import to_jsonable

    return write_bytes_atomic(path, (json.dumps(to_jsonable(obj), indent=2) + "\n").encode())
