"""Pascal VOC on disk: class names, the devkit folder, split files, annotation XML, and layout checks.

Shared by ``voc-det`` and ``voc-seg`` (and reused by the mini generators), so the two tasks agree on what a VOC
devkit looks like and report problems the same way: every problem names the file or folder and what is wrong.

Layout (the official tarballs, unpacked side by side)::

    <root>/VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt}
    <root>/VOCdevkit/VOC2012/{Annotations, JPEGImages, ImageSets/Main/trainval.txt,
                              ImageSets/Segmentation/{train,val,aug|trainaug|train_aug}.txt,
                              SegmentationClass/*.png (official, palette), SegmentationClassAug/*.png (SBD, grey)}
    <root>/benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}   (SBD as released; tasks/_sbd.py)

``--data-root`` may point at ``<root>`` or at ``VOCdevkit`` itself.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rs_transfer.errors import UserError

from .base import MINI_MARKER, is_mini  # noqa: F401  (re-exported: the mini generators and checks use them here)

CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# The standard VOC colour map (bit-interleaved), used for palette masks.
PALETTE = [[((i >> 0 & 1) << 7 | (i >> 3 & 1) << 6 | (i >> 6 & 1) << 5),
            ((i >> 1 & 1) << 7 | (i >> 4 & 1) << 6 | (i >> 7 & 1) << 5),
            ((i >> 2 & 1) << 7 | (i >> 5 & 1) << 6)] for i in range(21)]


def devkit(root: Path) -> Path:
    """The ``VOCdevkit`` folder for a data root that is either its parent or the folder itself."""
    root = Path(root)
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if root.name == "VOCdevkit" or (root / "VOC2012").is_dir() or (root / "VOC2007").is_dir():
        return root
    return root / "VOCdevkit"


def read_split(path: Path) -> list[str]:
    """Image ids of a split file (one per line; blank lines ignored). A line that is not UTF-8 text is a
    ``UserError`` naming the file and the line (ids name files: a mangled one cannot be guessed back)."""
    ids = []
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path} line {number} is not UTF-8 text ({raw[:40]!r}: {err.reason} at byte "
                            f"{err.start}); a split file lists one image id per line, e.g. 2007_000032") from None
        if line.strip():
            ids.append(line.split()[0])
    return ids


def write_annotation(path: Path, filename: str, width: int, height: int,
                     objects: list[tuple[str, int, int, int, int, bool]], folder: str = "VOC2012") -> None:
    """A VOC annotation XML. ``objects`` rows: (class name, xmin, ymin, xmax, ymax, difficult), 1-based pixels."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = folder
    ET.SubElement(ann, "filename").text = filename
    size = ET.SubElement(ann, "size")
    for tag, val in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(ann, "segmented").text = "0"
    for name, x1, y1, x2, y2, difficult in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        box = ET.SubElement(obj, "bndbox")
        for tag, val in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(val)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(ann)
    ET.ElementTree(ann).write(path, encoding="utf-8")


def check_annotation(path: Path) -> str | None:
    """Why a VOC annotation XML is unusable, or None. Checks what mmdet's VOCDataset relies on."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return f"{path}: unreadable annotation, malformed XML ({err})"
    except OSError as err:
        return f"{path}: cannot read ({err.strerror})"
    size = root.find("size")
    try:
        w, h = int(size.find("width").text), int(size.find("height").text)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return f"{path}: missing or non-integer <size><width>/<height>"
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASSES:
            return f"{path}: object {i} has unknown class {name!r} (expected one of the 20 VOC classes)"
        box = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore
        except (AttributeError, TypeError, ValueError):
            return f"{path}: object {i} ({name}) has a missing or non-numeric <bndbox>"
        if not (0 <= x1 <= x2 <= w + 1 and 0 <= y1 <= y2 <= h + 1):
            return f"{path}: object {i} ({name}) box {x1:g},{y1:g},{x2:g},{y2:g} is outside the {w}x{h} image"
    return None


def check_png(path: Path) -> str | None:
    """Why a mask PNG is unusable (missing, not a PNG, not single-channel), or None; reads the header only."""
    if not path.is_file():
        return f"missing mask {path}"
    try:
        from PIL import Image

        with Image.open(path) as img:
            if img.format != "PNG" or img.mode not in ("L", "P", "I;16", "I"):
                return f"{path}: expected a single-channel PNG, got {img.format} mode {img.mode}"
    except Exception as err:  # PIL raises several types for garbage files
        return f"{path}: unreadable image ({type(err).__name__})"
    return None


def check_jpeg(path: Path) -> str | None:
    """Why an image is unusable (missing, or its header is not an image's), or None. Header only: the check runs
    before every run over tens of thousands of files."""
    if not path.is_file():
        return f"missing image {path}"
    try:
        from PIL import Image

        with Image.open(path):
            pass
    except Exception as err:
        return f"{path}: unreadable image ({type(err).__name__})"
    return None


def check_split(split: Path, problems: list[str]) -> list[str]:
    """Read a split file, recording a problem when it is missing or empty. Its size is compared with the standard
    one by the rule every task shares (``DataReport.compare_sizes``): a warning, not a problem."""
    if not split.is_file():
        problems.append(f"missing split file {split}")
        return []
    try:
        ids = read_split(split)
    except UserError as err:
        problems.append(str(err))
        return []
    if not ids:
        problems.append(f"split file {split} is empty")
    return ids
