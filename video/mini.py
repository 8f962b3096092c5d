"""``--preset mini`` data: a tiny deterministic Kinetics-layout set of real mp4 files that a model can learn.

Each video shows a random texture with a bright square panning in one direction; the class is the motion
direction (``left``, ``right``, ``up``, ``down``), so a single frame carries no label information and only a model
that uses time can beat chance (25%). Everything derives
from ``numpy.random.default_rng(seed)``; libx264 runs single-threaded so the same seed writes the same bytes.
One file in ``train`` is deliberately truncated, as real Kinetics downloads sometimes are: runs must skip and count
it, never stop.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CLASSES = ("down", "left", "right", "up")
# (dy, dx) pixels per frame for each class.
MOTION = {"left": (0, -2), "right": (0, 2), "up": (-2, 0), "down": (2, 0)}
# 24 frames: a mini training clip (8 frames at stride 2 spans 15) has 10 possible starts. 64 pixels wide: decord
# 0.6.0 mis-sizes some narrower h264 frames (48 wide fails), see decode.FallbackReader.
FRAMES, HEIGHT, WIDTH, FPS = 24, 48, 64, 12
COUNTS = {"train": 16, "val": 6}     # videos per class: 64 train, 24 val
CORRUPT = "train/left/corrupt_truncated.mp4"


def draw_video(rng: np.random.Generator, label: str, frames: int = FRAMES, height: int = HEIGHT,
               width: int = WIDTH) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames of a textured scene panning in direction ``label``.

    The texture (random 4x4-pixel blocks, one random tint per video) and a bright square both move by
    :data:`MOTION` pixels per frame, wrapping around the edges: every pixel carries the motion, no frame carries
    the label, and there is no per-frame noise to mask it (a sparse single moving object over independent noise
    was not learnable by a tiny 3D ResNet in a few dozen CPU iterations).
    """
    dy, dx = MOTION[label]
    blocks = rng.integers(0, 2, size=(height // 4, width // 4, 1)).repeat(4, 0).repeat(4, 1)
    tint = rng.integers(60, 256, size=3)
    scene = (blocks * tint + (1 - blocks) * (255 - tint) // 3).astype(np.uint8)
    side, y0, x0 = int(rng.integers(10, 16)), int(rng.integers(0, height)), int(rng.integers(0, width))
    scene[:side, :side] = 255
    scene = np.roll(scene, (y0, x0), axis=(0, 1))
    return np.stack([np.roll(scene, (dy * t, dx * t), axis=(0, 1)) for t in range(frames)])


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = FPS, codec: str = "libx264") -> Path:
    """Encode ``[T, H, W, 3]`` RGB frames (even H and W) with PyAV; near-lossless so the motion survives."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "veryfast", "threads": "1"}
        stream.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate(path: str | os.PathLike, keep: float = 0.4) -> Path:
    """Cut a file to ``keep`` of its bytes: the commonest real corruption (an interrupted download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_mini(root: str | os.PathLike, seed: int = 0, counts: dict[str, int] | None = None,
              corrupt: bool = True) -> Path:
    """Write the mini set into ``root`` (per-class folder layout) and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (counts or COUNTS).items():
        for label in CLASSES:
            for i in range(n):
                write_mp4(root / split / label / f"{label}_{i:03d}.mp4", draw_video(rng, label))
    if corrupt:
        victim = root / CORRUPT
        write_mp4(victim, draw_video(rng, "left"))
        truncate(victim)
    return root
