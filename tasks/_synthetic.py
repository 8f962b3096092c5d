"""Tiny deterministic scenes for the dense tasks' ``--preset mini`` data sets.

One generator serves all four dense tasks (VOC detection and segmentation, ADE20K, NYU depth) so that the mini data
sets share a single, tested drawing routine: a textured background with a few class-coloured rectangles/ellipses.
Every scene gives the image, a per-pixel class map, the object boxes and a metric depth map, so the task modules
only decide which of these they write and in which on-disk format.

Why these scenes: a few dozen CPU iterations must move every metric off its untrained value. Class identity is
therefore carried by colour, objects are large, and depth is a smooth function of what is visible (the background
is a receding floor/wall whose brightness follows its depth; each class sits at its own distance).
Everything derives from ``numpy.random.default_rng(seed)``, so the same seed writes byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Distinct, saturated colours (RGB), one per mini class id 1..8; class 0 is background.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 210, 40),
    (200, 60, 210), (40, 210, 210), (240, 130, 30), (250, 250, 250),
)


@dataclass
class Scene:
    """One synthetic image with every annotation the dense tasks need.

    ``labels`` holds class ids (0 background, 1..k objects); ``boxes`` rows are (class_id, x1, y1, x2, y2) in
    pixel coordinates with x2/y2 inclusive (VOC convention); ``depth`` is in metres.
    """

    image: np.ndarray                    # H x W x 3 uint8, RGB
    labels: np.ndarray                   # H x W uint8
    depth: np.ndarray                    # H x W float32, metres
    boxes: list[tuple[int, int, int, int, int]] = field(default_factory=list)


def make_scene(rng: np.random.Generator, height: int, width: int, num_classes: int, *, max_objects: int = 3,
               min_frac: float = 0.25, max_frac: float = 0.5) -> Scene:
    """Draw one scene with 1..``max_objects`` objects of classes 1..``num_classes``.

    Objects are placed in distinct horizontal slots so boxes rarely overlap much (the detector must be able to
    separate them after a few iterations); sizes are ``min_frac``..``max_frac`` of the image side.
    """
    if not 1 <= num_classes < len(CLASS_COLOURS):
        raise ValueError(f"num_classes must be 1..{len(CLASS_COLOURS) - 1}, got {num_classes}")
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    # Receding background: far (8 m) at the top, near (2 m) at the bottom; brightness follows distance.
    depth = np.broadcast_to(8.0 - 6.0 * rows, (height, width)).astype(np.float32).copy()
    shade = (60 + 120 * rows).astype(np.float32)
    image = np.repeat(shade[..., None], 3, axis=2) * np.array([0.9, 0.85, 0.8], np.float32)
    image = np.broadcast_to(image, (height, width, 3)).copy()
    image += rng.normal(0.0, 6.0, size=image.shape).astype(np.float32)
    labels = np.zeros((height, width), np.uint8)

    n = int(rng.integers(1, max_objects + 1))
    slot_w = width / n
    boxes: list[tuple[int, int, int, int, int]] = []
    for i in range(n):
        cls = int(rng.integers(1, num_classes + 1))
        bw = int(min(slot_w, width * rng.uniform(min_frac, max_frac)))
        bh = int(height * rng.uniform(min_frac, max_frac))
        x1 = int(i * slot_w + rng.uniform(0, max(slot_w - bw, 0)))
        y1 = int(rng.uniform(0, height - bh))
        x2, y2 = min(x1 + bw, width) - 1, min(y1 + bh, height) - 1
        region = np.zeros((height, width), np.uint8)
        if rng.random() < 0.5:
            cv2.rectangle(region, (x1, y1), (x2, y2), 1, thickness=-1)
        else:
            cv2.ellipse(region, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, 1, -1)
        inside = region.astype(bool)
        colour = np.array(CLASS_COLOURS[cls], np.float32)
        image[inside] = colour + rng.normal(0.0, 10.0, size=(int(inside.sum()), 3)).astype(np.float32)
        labels[inside] = cls
        depth[inside] = 1.0 + 0.7 * cls          # each class at its own distance (1.7 .. 6.6 m)
        boxes.append((cls, x1, y1, x2, y2))
    return Scene(np.clip(image, 0, 255).astype(np.uint8), labels, depth, boxes)


def ignore_boundaries(labels: np.ndarray, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """VOC-style masks: a ``width``-pixel band of ``ignore_index`` around every object outline."""
    out = labels.copy()
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    edges = cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)
    out[edges] = ignore_index
    return out


def write_jpeg(path: Path, image_rgb: np.ndarray, quality: int = 95) -> None:
    """Write an RGB image as JPEG (the real data sets' image format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not write {path}")


def write_png(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a single-channel PNG: 8-bit class ids, 16-bit depth, or (``palette``) an indexed-colour mask.

    VOC's official ``SegmentationClass`` masks are palette PNGs whose indices are the class ids; the SBD-derived
    ``SegmentationClassAug`` and ADE20K masks are plain 8-bit grey; NYU depth PNGs are 16-bit millimetres.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:
        from PIL import Image

        img = Image.fromarray(array.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = palette
        flat[255] = (224, 224, 192)             # VOC's colour for the ignore index
        img.putpalette(flat.reshape(-1).tolist())
        img.save(path)
        return
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def write_lines(path: Path, lines: list[str]) -> None:
    """A split file: one id per line, trailing newline (as the official ImageSets files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
