"""``rs-transfer data check --deep``: decode every file a run would read, in parallel, and name the damaged ones.

Why: the ordinary check reads headers only (it runs before every run, over tens of thousands of files), so an
image or mask with a valid header and a truncated or corrupted body passed it and then failed inside a data-loader
worker. The deep check decodes each file completely, as strictly as possible:

- JPEG/PNG: Pillow decodes every pixel (a truncated body raises, where OpenCV would return a partly grey image with
  a warning) and, for PNG, checks every chunk's CRC first; then OpenCV's ``imdecode``, the decoder the loading
  transforms use, must return an image;
- XML annotations: parsed.

Tasks list their files through ``Task.data_files(root)`` (see ``tasks/base.py``). Decoding runs in threads
(Pillow and OpenCV release the GIL while decoding), with a progress bar on a terminal.
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rs_transfer.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def decode_problem(path: Path) -> str | None:
    """Why ``path`` does not decode completely, or None."""
    from rs_transfer.tasks._corrupt import cv2_problem, read_problem

    path = Path(path)
    data, problem = read_problem(path)
    if data is None:
        return problem
    suffix = path.suffix.lower()
    if suffix == ".xml":
        try:
            ET.fromstring(data)
        except ET.ParseError as err:
            return f"malformed XML ({err})"
        return None
    if suffix not in IMAGE_SUFFIXES:
        return None
    import io

    from PIL import Image

    try:
        if suffix == ".png":
            with Image.open(io.BytesIO(data)) as img:
                img.verify()  # chunk CRCs: catches damaged bodies that still inflate
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Image.UnidentifiedImageError:
        return "cannot decode (not an image Pillow recognises: damaged header or another format)"
    except Exception as err:  # noqa: BLE001  (Pillow raises OSError, SyntaxError, zlib.error, ...)
        lines = str(err).strip().splitlines()
        return f"cannot decode ({type(err).__name__}: {lines[-1] if lines else 'damaged'})"
    return cv2_problem(data)  # the decoder the loading transforms use must return an image too


def decode_all(files: Sequence[Path], *, workers: int | None = None,
               progress: bool | None = None) -> list[tuple[Path, str]]:
    """(file, problem) for every file that does not decode, in input order. ``progress``: a bar on stderr (default:
    when stderr is a terminal)."""
    workers = workers or min(32, os.cpu_count() or 1)
    show = sys.stderr.isatty() if progress is None else progress
    results: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(decode_problem, files, chunksize=16)
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("decode", total=len(files))
                for r in it:
                    results.append(r)
                    bar.advance(task)
        else:
            results = list(it)
    return [(f, r) for f, r in zip(files, results) if r is not None]


def deep_check(task: object, root: Path, *, workers: int | None = None,
               progress: bool | None = None) -> tuple[int, list[tuple[Path, str]]]:
    """Decode every file of ``task`` (a :class:`rs_transfer.tasks.Task`) under ``root``: (files decoded, damaged)."""
    lister = getattr(task, "data_files", None)
    if lister is None:
        raise UserError(f"data check --deep: task {getattr(task, 'name', task)} does not list its files for "
                        "decoding; the ordinary check (without --deep) is all there is for it")
    files = sorted({Path(p) for p in lister(Path(root)) if Path(p).is_file()})
    return len(files), decode_all(files, workers=workers, progress=progress)
