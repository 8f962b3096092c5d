"""Named weight sources: publisher, where each is published, its file in the local cache, the model (and model
options) it fits, its checksum when the publisher gives one, and the input normalisation it was trained with.

The table is data (``catalog.py``); this module resolves names and downloads. Nothing is downloaded at import or
implicitly. ``resolve`` finds a named source in ``$RS_TRANSFER_HOME/weights`` (default ``~/.cache/rs-transfer``) and
otherwise fails with the file name, the folder and the publisher. ``download`` (asked for explicitly:
``rs-transfer weights download NAME``) is resumable (HTTP Range into ``FILE.part``), verified and atomic (renamed
into place only once verified): against the published checksum where one exists (sha256 prefix in torch.hub file
names, MoCo's md5 prefixes), otherwise against the announced size only -- and it says so.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import urllib.request
from pathlib import Path

from .errors import CheckpointError
from rs_transfer.paths import EXPORT_NAME, weights_dir  # noqa: F401  (EXPORT_NAME re-exported)

from .catalog import SOURCES, WeightSource  # noqa: F401  (re-exported)
from .normalization import IMAGENET, NORMALIZATIONS, UNIT, Normalization  # noqa: F401  (re-exported)


CHECKPOINT_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".pkl", ".tar"}


def weights_home() -> Path:
    return weights_dir()


def get_source(name: str) -> WeightSource:
    try:
        return SOURCES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(SOURCES), n=4, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise CheckpointError(f"{name!r} is neither a file nor a named weight source.{hint} "
                              "`rs-transfer list weights` shows the named sources.") from None


def _folder_error(path: Path) -> CheckpointError:
    """``--weights <folder>``: say what the folder is and what is expected instead."""
    files = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    what = "a folder"
    if (path / "results.json").is_file() or (path / "last_checkpoint").is_file():
        what = "a run's work dir without its exported weights (the run did not finish, or predates the export)"
    held = f"; it holds {', '.join(files[:4])}{' ...' if len(files) > 4 else ''} (pass one of them)" if files else ""
    return CheckpointError(f"--weights {path} is {what}{held}. --weights takes a checkpoint file (.pth, .pt, "
                           f".safetensors, ...), a named source (`rs-transfer list weights`), or a work dir of a "
                           f"finished run (or pre-training) holding {EXPORT_NAME}")


def resolve(source: str | os.PathLike) -> tuple[Path, WeightSource | None]:
    """A path for ``source``: an existing file; a work dir holding ``weights.safetensors`` (what a finished run
    exports); or a named source present in the cache."""
    path = Path(source).expanduser()
    if path.is_file():
        return path, None
    if path.is_dir():
        if (path / EXPORT_NAME).is_file():
            return path / EXPORT_NAME, None
        raise _folder_error(path)
    looks_like_file = os.sep in str(source) or path.suffix in CHECKPOINT_SUFFIXES
    if not looks_like_file:
        spec = get_source(str(source))
        cached = weights_home() / spec.filename
        if cached.is_file():
            return cached, spec
        fetch = (f"run `rs-transfer weights download {spec.name}`" if spec.url else "get it from the publisher")
        raise CheckpointError(f"weights {spec.name!r} are not in the local cache: expected {cached}. "
                              f"Published at: {spec.published}. To fix, {fetch} or copy the file there "
                              f"(RS_TRANSFER_HOME moves the cache).")
    raise CheckpointError(f"checkpoint file not found: {path}")


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: Path) -> str:
    return _digest(path, "sha256")


def download(name: str, *, url: str | None = None, progress: bool = True) -> Path:
    """Download a named source into the cache: resumable, verified, atomic. ``url`` overrides (mirrors, tests)."""
    spec = get_source(name)
    url = url or spec.url
    if not url:
        raise CheckpointError(f"{spec.name!r} has no direct download. Published at: {spec.published}. "
                              f"Put the file at {weights_home() / spec.filename}.")
    dest = weights_home() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=60) as resp:
        resumed = done > 0 and resp.status == 206
        total = int(resp.headers.get("Content-Length") or 0) + (done if resumed else 0)
        with open(part, "ab" if resumed else "wb") as out:
            got = done if resumed else 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                got += len(chunk)
                if progress and total:
                    print(f"\r{spec.filename}: {got / 2**20:.1f}/{total / 2**20:.1f} MiB", end="", flush=True)
    if progress:
        print()
    size = part.stat().st_size
    if total and size != total:
        raise CheckpointError(f"{spec.filename}: got {size} of {total} bytes; run the same command again to "
                              "continue the download")
    for algo, prefix in (("sha256", spec.sha256_prefix), ("md5", spec.md5_prefix)):
        if prefix and not (digest := _digest(part, algo)).startswith(prefix):
            part.unlink()
            raise CheckpointError(f"{spec.filename}: checksum mismatch ({algo} {digest[:12]}..., expected "
                                  f"{prefix}...); the partial file was removed, download again.")
    if progress and not (spec.sha256_prefix or spec.md5_prefix):
        print(f"{spec.filename}: the publisher gives no checksum; verified the size only ({size} bytes)")
    from rs_transfer.atomic import commit_file

    commit_file(part, dest)   # fsync + rename + fsync of the folder: the verified file survives a power cut
    return dest
