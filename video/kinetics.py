"""Kinetics-400 on disk: the two standard layouts and a map-style dataset; unreadable videos go to the skip log
every task shares (``tasks/_corrupt.SkipLog``: ``phase<TAB>path<TAB>reason`` in ``skipped_files.tsv``).

Layouts (the CVDF / ActivityNet download scripts' and mmaction2's):

- folders: ``ROOT/{train,val}/<class name>/<any name>.mp4`` (``validate`` is accepted for ``val``);
- official csv: ``ROOT/[annotations/]{train,validate|val}.csv`` with columns ``label,youtube_id,time_start,
  time_end,split`` and files ``{youtube_id}_{time_start:06d}_{time_end:06d}.<ext>`` anywhere under the split
  folder (flat or in class folders). With a csv, rows whose file is absent are *missing* (reported, left out).
- mmaction2 (``tools/data/kinetics``): ``ROOT/videos_{train,val}/`` with ``ROOT/[annotations/]kinetics400_{train,
  val}_list_videos.txt``, one ``<path relative to videos_<split>> <label index>`` line per video (mmaction2's
  ``VideoDataset`` format). Class names come from ``label_map_k400.txt`` (line i = class i, mmaction2's file) when
  present, else from the class folders in the paths, else ``class_<i>``; listed files that are absent are missing.

Search order per split: the mmaction2 list, the csv, the class folders.

The dataset is map-style (``__len__``/``__getitem__``), so a sampler shards it over DDP ranks (training:
video/sampler.py). A file that cannot be decoded is written to the skip log and replaced by the next index
(training) or returned as an invalid all-zero sample that the metric leaves out and counts (evaluation): never
fatal, never uncounted.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rs_transfer.tasks._corrupt import SkipLog  # one skip-log format for every task

from . import transforms as T
from .decode import VideoDecodeError, VideoReader, frame_size, open_video

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
SPLIT_DIRS = {"train": ("train", "videos_train"), "val": ("val", "validate", "validation", "videos_val"),
              "test": ("test", "videos_test")}
CSV_NAMES = {"train": ("train",), "val": ("validate", "val", "validation"), "test": ("test",)}
LIST_NAME = "kinetics400_{split}_list_videos.txt"     # mmaction2's annotation file
LABEL_MAP = "label_map_k400.txt"                      # mmaction2's class names, line i = label i


@dataclass
class VideoRecord:
    path: Path
    label: int


@dataclass
class SplitIndex:
    """What is on disk for one split: usable records, the class names, and the csv rows whose file is absent."""

    split: str
    layout: str                      # "folders", "csv" or "mmaction2"
    classes: list[str]
    records: list[VideoRecord]
    missing: list[str] = field(default_factory=list)
    source: Path | None = None       # the csv or list file that names the split's videos (None: folders)

    def per_class(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for r in self.records:
            counts[self.classes[r.label]] += 1
        return counts


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in SPLIT_DIRS[split] if (root / d).is_dir()), None)


def _csv_file(root: Path, split: str) -> Path | None:
    for folder in (root, root / "annotations", root / "kinetics400"):
        for name in CSV_NAMES[split]:
            if (folder / f"{name}.csv").is_file():
                return folder / f"{name}.csv"
    return None


def _list_file(root: Path, split: str) -> Path | None:
    for folder in (root, root / "annotations"):
        if (folder / LIST_NAME.format(split=split)).is_file():
            return folder / LIST_NAME.format(split=split)
    return None


def _read_list(path: Path) -> list[tuple[str, int]]:
    """``(relative path, label)`` of an mmaction2 list file; a malformed line is a one-line error naming it."""
    from rs_transfer.errors import UserError

    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{path}:{n}: expected '<video path> <label index>' (mmaction2's list format), got "
                            f"{line.strip()[:80]!r}")
        out.append((parts[0], int(parts[1])))
    return out


def _list_classes(root: Path, rows: list[tuple[str, int]]) -> list[str]:
    """Class names of mmaction2 label indices: ``label_map_k400.txt``, else the class folders in the paths."""
    count = max((y for _, y in rows), default=-1) + 1
    for folder in (root, root / "annotations"):
        if (folder / LABEL_MAP).is_file():
            names = [n.strip() for n in (folder / LABEL_MAP).read_text().splitlines() if n.strip()]
            if len(names) >= count:
                return names
    names = {}
    for rel, y in rows:
        parent = Path(rel).parent.name
        names.setdefault(y, parent or f"class_{y}")
    return [names.get(i, f"class_{i}") for i in range(count)]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if rows and not need <= set(rows[0]):
        from rs_transfer.errors import UserError

        raise UserError(f"{path}: expected the official Kinetics columns {sorted(need)}, got {list(rows[0])}")
    return rows


def _class_names(root: Path) -> list[str] | None:
    """Classes from the training split (list, csv, folders), so val labels index the same list as train labels."""
    list_path = _list_file(root, "train")
    if list_path is not None:
        return _list_classes(root, _read_list(list_path))
    csv_path = _csv_file(root, "train")
    if csv_path is not None:
        return sorted({r["label"] for r in _read_csv(csv_path)})
    d = _split_dir(root, "train")
    if d is not None:
        return sorted(p.name for p in d.iterdir() if p.is_dir())
    return None


def scan_split(root: str | os.PathLike, split: str, classes: list[str] | None = None) -> SplitIndex:
    """Index one split of ``root`` (either layout); raises ``UserError`` naming the expected layout if neither."""
    from rs_transfer.errors import UserError

    root = Path(root)
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {list(SPLIT_DIRS)}, got {split!r}")
    classes = classes or _class_names(root)
    list_path, csv_path, split_dir = _list_file(root, split), _csv_file(root, split), _split_dir(root, split)
    if list_path is not None:
        rows = _read_list(list_path)
        classes = classes or _list_classes(root, rows)
        base = split_dir if split_dir is not None else root / f"videos_{split}"
        records, missing = [], []
        for rel, y in rows:
            if y >= len(classes):
                raise UserError(f"{list_path}: label {y} of {rel}, but the training split has {len(classes)} "
                                "classes")
            path = base / rel
            if path.is_file():
                records.append(VideoRecord(path, y))
            else:
                missing.append(rel)
        return SplitIndex(split, "mmaction2", classes, records, missing, list_path)
    if csv_path is not None:
        rows = _read_csv(csv_path)
        classes = classes or sorted({r["label"] for r in rows})
        lookup = {c: i for i, c in enumerate(classes)}
        files: dict[str, Path] = {}
        if split_dir is not None:
            for dirpath, _, names in os.walk(split_dir):
                for n in names:
                    stem, ext = os.path.splitext(n)
                    if ext.lower() in VIDEO_EXTS:
                        files.setdefault(stem, Path(dirpath) / n)
        records, missing = [], []
        for r in rows:
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            if stem in files and r["label"] in lookup:
                records.append(VideoRecord(files[stem], lookup[r["label"]]))
            else:
                missing.append(stem)
        return SplitIndex(split, "csv", classes, records, missing, csv_path)
    if split_dir is None:
        raise UserError(f"{root}: no Kinetics {split} split; expected {root}/{SPLIT_DIRS[split][0]}/<class>/*.mp4, "
                        f"{root}/{CSV_NAMES[split][0]}.csv with {root}/{SPLIT_DIRS[split][0]}/*.mp4, or mmaction2's "
                        f"{root}/{LIST_NAME.format(split=split)} with {root}/videos_{split}/")
    classes = classes or sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    records = []
    for i, c in enumerate(classes):
        folder = split_dir / c
        if folder.is_dir():
            records += [VideoRecord(p, i) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_EXTS]
    return SplitIndex(split, "folders", classes, records)


class KineticsDataset(Dataset):
    """Kinetics clips. ``mode="train"``: one random clip of ``num_frames`` at ``frame_stride``, scale jitter
    (``scale_jitter=True``: random-resized crop, area 0.08-1, aspect 0.5-2) or the baseline random ``crop_size``
    crop of the video at short side ``train_short_side`` (TF resizes to ``min_image_size`` 256 first), horizontal
    flip; only the crop is resized. ``mode="test"``: ``num_clips`` evenly spaced clips x ``num_crops`` (1 = centre,
    3 = along the long side) views of the video decoded at short side ``test_size``, stacked as
    ``[V, C, T, H, W]`` for :class:`~rs_transfer.video.recognizer.VideoRecognizer` to average.

    At test time, decoding at the short side (``decode_short_side=True``) uses the decoders' own scaling (decord
    width/height, swscale in PyAV), so 720p frames never reach Python; the union of the clips' frames is decoded
    (and scaled) once.
    Only decoder failures make a video "corrupt" (skipped and logged); an exception in a transform is a bug and
    raises. ``exclude`` lists the paths ``data check`` found unreadable: they are never opened.

    Items may be ``index`` or ``(index, seed)`` (video/sampler.py): with a seed, every random draw of the sample
    comes from a generator seeded with it. Samples are ``{"inputs": uint8 tensor, "data_samples": {"label",
    "index", "valid"}}`` so mmengine's ``default_collate`` batches them.
    """

    def __init__(self, data_root: str, split: str = "train", *, mode: str = "train", num_frames: int = 32,
                 frame_stride: int = 2, crop_size: int = 224, train_short_side: int = 256,
                 scale_jitter: bool = True, area_range: tuple[float, float] = (0.08, 1.0),
                 aspect_range: tuple[float, float] = (0.5, 2.0), flip: bool = True, test_size: int = 256,
                 num_clips: int = 10, num_crops: int = 3, backend: str = "auto", skip_log: str | None = None,
                 max_retries: int = 20, classes: list[str] | None = None, decode_short_side: bool = True,
                 exclude: list[str] | None = None) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.index = scan_split(data_root, split, classes)
        self.classes = self.index.classes
        known_bad = set(map(str, exclude or ()))
        self.records = [r for r in self.index.records if str(r.path) not in known_bad]
        self.excluded = len(self.index.records) - len(self.records)
        if not self.records:
            from rs_transfer.errors import UserError

            raise UserError(f"{data_root}: the {split} split has no readable video files ({self.excluded} known "
                            f"corrupt; `rs-transfer data check --task kinetics400` lists what is there)")
        self.mode, self.num_frames, self.frame_stride = mode, num_frames, frame_stride
        self.crop_size, self.train_short_side, self.scale_jitter = crop_size, train_short_side, scale_jitter
        self.area_range, self.aspect_range, self.flip = tuple(area_range), tuple(aspect_range), flip
        self.test_size, self.num_clips, self.num_crops = test_size, num_clips, num_crops
        self.backend, self.skip_log, self.max_retries = backend, SkipLog(skip_log), max_retries
        self.decode_short_side = decode_short_side

    @property
    def num_views(self) -> int:
        return 1 if self.mode == "train" else self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.records)

    # ---- decoding: the only place where an exception means "this file is unreadable" ------------------------
    def _open(self, rec: VideoRecord, short: int) -> VideoReader:
        size = T.short_side_size(*frame_size(rec.path), short) if self.decode_short_side else None
        return open_video(rec.path, self.backend, size)

    def _read(self, reader: VideoReader, rec: VideoRecord, indices: list[int]) -> torch.Tensor:
        try:
            frames = reader.get(indices)
        except VideoDecodeError:
            raise
        except Exception as err:  # noqa: BLE001 - a broken stream can fail anywhere inside a decoder
            raise VideoDecodeError(f"{rec.path}: {reader.backend}: {type(err).__name__}: {err}") from err
        return T.to_cthw(frames)

    # ---- sampling and augmentation (errors here are bugs and propagate) ---------------------------------------
    def _train_clip(self, rec: VideoRecord, g: torch.Generator | None) -> torch.Tensor:
        # Decoded at full size: the crop is cut from the original frames and resized once, which equals resizing
        # to the short side first (TF's min_image_size) for scale jitter (an area fraction is scale-free) and for
        # the baseline crop (T.random_crop_of_short_side), and is cheaper than a decoder-side resize of every pixel.
        reader = open_video(rec.path, self.backend)
        clip = self._read(reader, rec, T.random_clip(len(reader), self.num_frames, self.frame_stride, g))
        if self.scale_jitter:
            clip = T.random_resized_crop(clip, self.crop_size, self.area_range, self.aspect_range, generator=g)
        else:
            clip = T.random_crop_of_short_side(clip, self.crop_size, max(self.train_short_side, self.crop_size), g)
        return (T.random_flip(clip, generator=g) if self.flip else clip).contiguous()

    def _test_views(self, rec: VideoRecord) -> torch.Tensor:
        reader = self._open(rec, self.test_size)
        clips = T.uniform_clips(len(reader), self.num_frames, self.frame_stride, self.num_clips)
        union = sorted({i for c in clips for i in c})        # each frame decoded (and resized) once for all clips
        # decoded at the short side already (decode_short_side), else resized here, once for the union
        frames = T.resize_short_side(self._read(reader, rec, union), self.test_size)
        pos = {i: k for k, i in enumerate(union)}
        views = []
        for c in clips:
            clip = frames[:, [pos[i] for i in c]]
            views += (T.three_crops(clip, self.test_size) if self.num_crops == 3
                      else [T.center_crop(clip, self.test_size)])
        return torch.stack(views)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        idx, seed = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), None)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        for attempt in range(self.max_retries if self.mode == "train" else 1):
            i = (idx + attempt) % len(self.records)
            rec = self.records[i]
            try:
                inputs = self._train_clip(rec, g) if self.mode == "train" else self._test_views(rec)
                return {"inputs": inputs, "data_samples": {"label": rec.label, "index": i, "valid": True}}
            except VideoDecodeError as err:
                self.skip_log.add("train" if self.mode == "train" else "eval", str(rec.path), str(err))
        if self.mode == "train":
            raise RuntimeError(f"{self.max_retries} consecutive unreadable videos from index {idx}; "
                               f"see {self.skip_log.path}")
        size = self.test_size
        empty = torch.zeros(self.num_views, 3, self.num_frames, size, size, dtype=torch.uint8)
        return {"inputs": empty, "data_samples": {"label": self.records[idx].label, "index": idx, "valid": False}}
