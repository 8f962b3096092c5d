"""Video decoding with decord, or PyAV when decord is missing or fails on a file; both give the same RGB frames.

torchvision 0.28 has no video reader and pytorchvideo's torchvision decoder is broken (STACK.md), so these are the
two decoders. A file that neither can open or decode raises :class:`VideoDecodeError`; the dataset turns that into
"skipped and counted", never into a crashed run.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

BACKENDS = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """The file is missing, truncated, or not a video either decoder can read."""


class VideoReader(Protocol):
    backend: str

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (each in ``[0, len)``) as a ``[T, H, W, 3]`` uint8 RGB array."""
        ...


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def frame_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the first video stream from the container header (nothing is decoded)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            ctx = container.streams.video[0].codec_context
            h, w = int(ctx.height), int(ctx.width)
    except VideoDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - PyAV raises assorted types on bad files
        raise VideoDecodeError(f"{path}: cannot read the header ({type(err).__name__}: {err})") from err
    if h <= 0 or w <= 0:
        raise VideoDecodeError(f"{path}: header gives frame size {w}x{h}")
    return h, w


class DecordReader:
    """decord; ``size=(h, w)`` makes decord scale while decoding (its ``width``/``height``), so full-resolution
    frames never reach Python."""

    backend = "decord"

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None) -> None:
        import decord

        h, w = size if size else (-1, -1)
        # One thread per reader: the data loader's workers already parallelise across videos.
        self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, width=w, height=h)
        self._n = len(self._vr)
        if self._n <= 0:
            raise VideoDecodeError(f"{path}: no video frames")

    def __len__(self) -> int:
        return self._n

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self._vr.get_batch(list(indices)).asnumpy()


class PyAVReader:
    """Sequential decode (no seeking: seeking lands on key frames and makes frame indices codec-dependent)."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None) -> None:
        import av

        self._path, self._size = str(path), size
        with av.open(self._path) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            n = container.streams.video[0].frames
            if n <= 0:  # container without a frame count (some webm/mkv): count by decoding
                n = sum(1 for _ in container.decode(video=0))
        if n <= 0:
            raise VideoDecodeError(f"{path}: no video frames")
        self._n = n

    def __len__(self) -> int:
        return self._n

    def get(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = sorted(set(int(i) for i in indices))
        last, got = wanted[-1], {}
        with av.open(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:  # swscale resizes while converting when a size is given
                    got[i] = (frame.to_ndarray(format="rgb24") if self._size is None else
                              frame.to_ndarray(format="rgb24", width=self._size[1], height=self._size[0]))
                if i >= last:
                    break
        if len(got) < len(wanted):  # header promised more frames than the stream holds: repeat the last one
            if not got:
                raise VideoDecodeError(f"{self._path}: decoded no frames")
            tail = got[max(got)]
            got.update({i: tail for i in wanted if i not in got})
        return np.stack([got[int(i)] for i in indices])


class FallbackReader:
    """``auto`` mode: decord, and PyAV for the rest of this file as soon as decord fails on it.

    decord 0.6.0 fails on some valid files (e.g. h264 frames 48 pixels wide: "DECORDArrayCopyFromTo: The size must
    exactly match"); PyAV decodes the same frames there, so such a file is slower, not lost.
    """

    def __init__(self, path: str | os.PathLike, first: VideoReader, size: tuple[int, int] | None = None) -> None:
        self._path, self._reader, self._size = path, first, size
        self.backend = first.backend

    def __len__(self) -> int:
        return len(self._reader)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        try:
            return self._reader.get(indices)
        except Exception:  # noqa: BLE001
            if self._reader.backend != "decord":
                raise
            self._reader = PyAVReader(self._path, self._size)
            self.backend = "pyav"
            return self._reader.get([min(i, len(self._reader) - 1) for i in indices])


def open_video(path: str | os.PathLike, backend: str = "auto", size: tuple[int, int] | None = None) -> VideoReader:
    """A reader for ``path``. ``auto`` = decord, falling back to PyAV when decord is absent or fails on the file.
    ``size=(h, w)``: frames are decoded scaled to that size."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: no such file")
    errors = []
    order = {"auto": ("decord", "pyav"), "decord": ("decord",), "pyav": ("pyav",)}[backend]
    for name in order:
        if name == "decord" and backend == "auto" and not decord_available():
            continue
        try:
            reader = DecordReader(path, size) if name == "decord" else PyAVReader(path, size)
            return FallbackReader(path, reader, size) if backend == "auto" else reader
        except Exception as err:  # noqa: BLE001 - both libraries raise assorted types on bad files
            errors.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise VideoDecodeError(f"{path}: cannot decode ({'; '.join(errors)})")


def read_frames(path: str | os.PathLike, indices: Sequence[int], backend: str = "auto") -> np.ndarray:
    """Open, then decode ``indices``; any failure is a :class:`VideoDecodeError`."""
    reader = open_video(path, backend)
    try:
        return reader.get(indices)
    except VideoDecodeError:
        raise
    except Exception as err:  # noqa: BLE001
        raise VideoDecodeError(f"{path}: {reader.backend} failed: {err}") from err
