"""A cache for the ImageNet header pass that runs before every run (``tasks/imagenet.py`` ``check_data``).

Why: the runner checks the data at the start of each run, and the header pass opens and reads all 1.33M ILSVRC2012
files; on a network file system that is minutes per run, spent again on a dataset that has not changed. The result
of each file's check is kept in ``$RS_TRANSFER_HOME/cache/headers/<sha1 of the data root>.json`` (the convention of
the Kinetics probe cache, ``video/task.py``), keyed by the file's path with its size and ``mtime_ns``. A file whose
size or mtime changed, or that is new, is read again; a file that cannot be stat'ed is always re-checked (its
``cannot read`` reason comes from the check itself). Cached results are the check's own strings, so the unreadable
files reported, and their counts, are the same with or without the cache.

The stamp is taken BEFORE the file is read: a file rewritten during the check carries a newer stamp than the one
recorded, so the next run reads it again. The cache is written atomically (a private temporary file, then
``os.replace``), only when something changed; a cache that cannot be read or written is ignored (a cold pass).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import home

VERSION = 1
Entry = tuple[int, int, "str | None"]   # size, mtime_ns, the check's reason (None: fine)


def cache_file(root: Path) -> Path:
    """Where the cache of the data root ``root`` lives (one file per resolved root)."""
    key = str(Path(root).resolve())
    return home() / "cache" / "headers" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read(file: Path) -> dict[str, Entry]:
    """The cached entries; {} when the file is missing, unreadable or not in this version's shape."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("files"), dict):
        return {}
    out: dict[str, Entry] = {}
    for path, e in data["files"].items():
        if (isinstance(e, list) and len(e) == 3 and all(isinstance(v, int) for v in e[:2])
                and (e[2] is None or isinstance(e[2], str))):
            out[path] = (e[0], e[1], e[2])
    return out


def _write(file: Path, entries: dict[str, Entry]) -> None:
    try:
        from rs_transfer.atomic import write_text_atomic

        write_text_atomic(file, json.dumps({"version": VERSION, "files": {p: list(e) for p, e in entries.items()}}))
    except OSError:
        pass   # a read-only cache folder: the next run does a cold pass, nothing worse


def cached_problems(root: Path, paths: Sequence[str], check: Callable[[str], str | None], *,
                    workers: int | None = None) -> list[str | None]:
    """``check(path)`` for every path, in order, reusing the results cached for ``root`` whose size and mtime
    still match; the cache is rewritten with exactly ``paths`` when any was (re)checked or one disappeared."""
    file = cache_file(root)
    cache = _read(file)
    n = workers or min(32, 4 * (os.cpu_count() or 1))
    # stat and read in threads: both are file-system latency (the GIL is released while waiting).
    with ThreadPoolExecutor(max_workers=n) as pool:
        stamps = list(pool.map(_stamp, paths, chunksize=256))
        todo = [i for i, (p, s) in enumerate(zip(paths, stamps))
                if s is None or (hit := cache.get(p)) is None or hit[:2] != s]
        fresh = list(pool.map(check, [paths[i] for i in todo], chunksize=256))
    checked = dict(zip(todo, fresh))   # the (re)checked ones; every other path has a valid cache entry
    results: list[str | None] = [checked[i] if i in checked else cache[p][2] for i, p in enumerate(paths)]
    entries = {p: (s[0], s[1], why) for p, s, why in zip(paths, stamps, results) if s is not None}
    if todo or entries.keys() != cache.keys():
        _write(file, entries)
    return results
