"""Named weight sources: where each is published, its file name in the local cache, and its input normalisation.

Nothing is downloaded at import or implicitly. ``resolve`` finds a named source in ``$RS_TRANSFER_HOME/weights``
(default ``~/.cache/rs-transfer/weights``) and otherwise fails with the file name, the folder and the publisher.
``download`` (asked for explicitly: ``rs-transfer weights download NAME``) is resumable (HTTP Range into
``FILE.part``), checksummed (the sha256 prefix in the published file name, torch.hub convention) and atomic
(renamed into place only once verified).
"""
from __future__ import annotations

import difflib
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .formats import CheckpointError


@dataclass(frozen=True)
class Normalization:
    """Input normalisation in 0-255 pixel units (mmengine data-preprocessor convention)."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET = Normalization("imagenet", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
# SimCLR v1/v2 (TF) feed images in [0, 1] without mean/std; so do their PyTorch conversions.
UNIT = Normalization("unit-range", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
NORMALIZATIONS = {n.name: n for n in (IMAGENET, UNIT)}


@dataclass(frozen=True)
class WeightSource:
    name: str
    arch: str                     # registered model it fits
    filename: str                 # name in the local cache
    published: str                # where a person gets it (URL or instructions)
    url: str | None = None        # direct download, if one exists
    sha256_prefix: str | None = None
    normalization: Normalization = IMAGENET
    imagenet_top1: float | None = None
    recipe: str = ""


_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
_TV = "https://download.pytorch.org/models"
_SIMCLR_HOW = ("TF checkpoint gs://simclr-checkpoints/simclrv2/pretrained/{m}, converted to PyTorch with "
               "github.com/Separius/SimCLRv2-Pytorch (convert.py {m}/model.ckpt-*), which writes {m}.pth")


def _timm(arch: str, file: str, top1: float) -> WeightSource:
    return WeightSource(f"{arch}.tf_in1k", arch, file.split("/")[1], f"{_TIMM}/{file}", f"{_TIMM}/{file}",
                        file.rsplit("-", 1)[1].split(".")[0], IMAGENET, top1, "RS recipe (official TF ckpt via timm)")


def _tv(depth: int, v: int, file: str, top1: float) -> WeightSource:
    return WeightSource(f"resnet{depth}.tv{'' if v == 1 else '2'}_in1k", f"resnet{depth}", file, f"{_TV}/{file}",
                        f"{_TV}/{file}", file.rsplit("-", 1)[1].split(".")[0], IMAGENET, top1,
                        "torchvision IMAGENET1K_V%d (%s)" % (v, "90 epochs, step decay" if v == 1 else "new recipe"))


def _simclrv2(depth: int) -> WeightSource:
    m = f"r{depth}_1x_sk0"
    return WeightSource(f"simclrv2-r{depth}-1x-sk0", f"resnet{depth}", f"{m}.pth", _SIMCLR_HOW.format(m=m),
                        normalization=UNIT, recipe="SimCLRv2 self-supervised, 800 epochs")


SOURCES: dict[str, WeightSource] = {s.name: s for s in [
    _timm("resnetrs50", "v0.1-rs-weights/resnetrs50_ema-6b53758b.pth", 78.8),
    _timm("resnetrs101", "v0.1-rs-weights/resnetrs101_i192_ema-1509bbf6.pth", 81.2),
    _timm("resnetrs152", "v0.1-rs-weights/resnetrs152_i256_ema-a9aff7f9.pth", 83.0),
    _timm("resnetrs200", "v0.1-tpu-weights/resnetrs200_c-6b698b88.pth", 83.4),
    _timm("resnetrs270", "v0.1-rs-weights/resnetrs270_ema-b40e674c.pth", 83.8),
    _timm("resnetrs350", "v0.1-rs-weights/resnetrs350_i256_ema-5a1aa8f1.pth", 84.0),
    _timm("resnetrs420", "v0.1-rs-weights/resnetrs420_ema-972dee69.pth", 84.4),
    _tv(50, 1, "resnet50-0676ba61.pth", 76.13), _tv(50, 2, "resnet50-11ad3fa6.pth", 80.86),
    _tv(101, 1, "resnet101-63fe2227.pth", 77.37), _tv(101, 2, "resnet101-cd907fc2.pth", 81.89),
    _tv(152, 1, "resnet152-394f9c45.pth", 78.31), _tv(152, 2, "resnet152-f82ba261.pth", 82.28),
    _simclrv2(50), _simclrv2(101), _simclrv2(152),
    WeightSource("simclrv1-r50-1x", "resnet50", "resnet50-1x.pth",
                 "TF checkpoint gs://simclr-checkpoints/simclrv1/ResNet50_1x, converted with "
                 "github.com/tonylins/simclr-converter (writes {'state_dict': torchvision keys})",
                 normalization=UNIT, recipe="SimCLR self-supervised, 1000 epochs"),
]}


CHECKPOINT_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".pkl", ".tar"}


def weights_home() -> Path:
    return Path(os.environ.get("RS_TRANSFER_HOME", Path.home() / ".cache" / "rs-transfer")) / "weights"


def get_source(name: str) -> WeightSource:
    try:
        return SOURCES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(SOURCES), n=4, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise CheckpointError(f"{name!r} is neither a file nor a named weight source.{hint} "
                              "`rs-transfer list weights` shows the named sources.") from None


def resolve(source: str | os.PathLike) -> tuple[Path, WeightSource | None]:
    """A path for ``source`` (an existing file, or a named source present in the cache)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path, None
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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name: str, *, url: str | None = None, progress: bool = True) -> Path:
    """Download a named source into the cache: resumable, checksummed, atomic. ``url`` overrides (mirrors, tests)."""
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
    digest = sha256(part)
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
        part.unlink()
        raise CheckpointError(f"{spec.filename}: checksum mismatch (sha256 {digest[:12]}..., expected "
                              f"{spec.sha256_prefix}...); the partial file was removed, download again.")
    os.replace(part, dest)
    return dest
