"""The Kinetics-400 task (Table 5): data layout, data check, mini data, and config wiring for the runner."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_transfer.tasks.base import DataReport, RunContext, Task, home

from . import mini as mini_data
from .kinetics import SkipLog, _class_names, scan_split

LAYOUT = ("ROOT/{train,val}/<class>/*.mp4, or the official csv files ROOT/[annotations/]{train,validate}.csv "
          "(label,youtube_id,time_start,time_end,split) with ROOT/{train,val}/{youtube_id}_{start:06d}_{end:06d}.mp4")
SOURCE = ("https://github.com/cvdfoundation/kinetics-dataset (CVDF mirror of the Kinetics-400 videos and the "
          "official csv files)")
SKIP_LOG = "skipped_videos.txt"


@dataclass
class KineticsDataReport(DataReport):
    """Adds what a video set needs beyond counts: missing (csv rows without a file), corrupt (files neither
    decoder opens) and per-class counts. Missing/corrupt files are NOT problems: runs skip and count them;
    only an absent/empty split or no classes is."""

    missing: dict[str, list[str]] = field(default_factory=dict)
    corrupt: dict[str, list[str]] = field(default_factory=dict)
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)

    def details(self, limit: int = 20) -> str:
        """Human-readable lists for ``rs-transfer data check``: corrupt and missing files, per-class counts."""
        lines = []
        for split in self.per_class:
            counts = self.per_class[split]
            lo, hi = (min(counts.values()), max(counts.values())) if counts else (0, 0)
            lines.append(f"{split}: {len(counts)} classes, {lo}-{hi} videos per class; "
                         f"{len(self.missing.get(split, []))} missing, {len(self.corrupt.get(split, []))} corrupt")
            for kind in ("corrupt", "missing"):
                files = getattr(self, kind).get(split, [])
                lines += [f"  {kind}: {f}" for f in files[:limit]]
                if len(files) > limit:
                    lines.append(f"  ... and {len(files) - limit} more {kind} (--json lists all)")
            empty = [c for c, n in counts.items() if n == 0]
            if empty:
                lines.append(f"  classes without videos: {', '.join(empty[:limit])}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(missing=self.missing, corrupt=self.corrupt, per_class=self.per_class)
        return d


def _probe(path: Path) -> str | None:
    """``None`` when PyAV opens the file and decodes its first frame, else the error (header-level check: a file
    broken later in the stream is still caught, and skipped, at training time)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return "no video stream"
            next(c.decode(video=0))
        return None
    except StopIteration:
        return "no frames"
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"


def probe_files(paths: list[Path], cache_key: str) -> dict[str, str]:
    """``{path: error}`` for files that fail :func:`_probe`. Results are cached by (size, mtime) under
    ``$RS_TRANSFER_HOME/cache/probe`` so that re-checking 240k Kinetics files costs seconds after the first time."""
    cache_file = home() / "cache" / "probe" / f"{hashlib.sha1(cache_key.encode()).hexdigest()[:16]}.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    bad, fresh = {}, {}
    for p in paths:
        st = p.stat()
        key, stamp = str(p), [st.st_size, st.st_mtime_ns]
        hit = cache.get(key)
        err = hit[1] if hit and hit[0] == stamp else _probe(p)
        fresh[key] = [stamp, err]
        if err:
            bad[key] = err
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return bad


def check_data(root: Path) -> KineticsDataReport:
    root = Path(root)
    report = KineticsDataReport("kinetics400", root, LAYOUT, SOURCE)
    if not root.is_dir():
        report.problems.append(f"folder {root} does not exist")
        return report
    classes = _class_names(root)
    for split in ("train", "val"):
        try:
            index = scan_split(root, split, classes)
        except Exception as err:  # noqa: BLE001 - UserError naming the layout
            report.problems.append(str(err).split(";")[0])
            continue
        corrupt = probe_files([r.path for r in index.records], f"{root.resolve()}:{split}")
        report.counts[split] = len(index.records) - len(corrupt)
        report.counts[f"{split}_missing"] = len(index.missing)
        report.counts[f"{split}_corrupt"] = len(corrupt)
        report.missing[split], report.corrupt[split] = index.missing, sorted(corrupt)
        report.per_class[split] = index.per_class()
        if report.counts[split] == 0:
            report.problems.append(f"{split}: no readable videos ({len(index.missing)} missing, "
                                   f"{len(corrupt)} corrupt)")
    return report


def make_mini(root: Path) -> Path:
    return mini_data.make_mini(root)


# Mini preset: 8 frames at stride 2 of 32-pixel crops; 2 clips x 3 crops at test; no flips (the mini classes are
# motion directions, and a horizontal flip would turn "left" into "right").
MINI = dict(num_frames=8, frame_stride=2, crop_size=32, train_short_side=36, test_size=32, num_clips=2,
            num_crops=3, batch_size=8)


def configure(cfg: Any, ctx: RunContext) -> None:
    """Data root, skip log, class count, mini shrinking, then the ``recipe`` block (video/recipes.py)."""
    from .recipes import apply_recipe

    root = str(ctx.data_root)
    skip_log = str(Path(ctx.work_dir) / SKIP_LOG)
    classes = _class_names(Path(root))
    loaders = [cfg.train_dataloader, cfg.val_dataloader, cfg.get("test_dataloader") or cfg.val_dataloader]
    for loader in loaders:
        loader.dataset.data_root = root
        loader.dataset.skip_log = skip_log
    for ev in (cfg.val_evaluator, cfg.get("test_evaluator") or cfg.val_evaluator):
        ev.skip_log = skip_log
    if classes:
        cfg.model.backbone.num_classes = len(classes)
    if ctx.mini:
        for loader in loaders:
            ds = loader.dataset
            loader.update(num_workers=0, persistent_workers=False, pin_memory=False)
            ds.update(num_frames=MINI["num_frames"], frame_stride=MINI["frame_stride"])
            if ds.mode == "train":
                ds.update(crop_size=MINI["crop_size"], train_short_side=MINI["train_short_side"], flip=False)
                loader.batch_size = MINI["batch_size"]
            else:
                ds.update(test_size=MINI["test_size"], num_clips=MINI["num_clips"], num_crops=MINI["num_crops"])
                loader.batch_size = 4
        cfg.model.view_batch = 64
        cfg.global_batch_size = MINI["batch_size"]   # the mini run's GLOBAL batch (rs_transfer/batching.py)
    apply_recipe(cfg, mini=ctx.mini)
    views = f"{cfg.val_dataloader.dataset.num_clips}x{cfg.val_dataloader.dataset.num_crops}"
    ctx.extra.update(views=views, view_average=cfg.model.view_average, skip_log=skip_log,
                     frames=f"{cfg.train_dataloader.dataset.num_frames}x{cfg.train_dataloader.dataset.frame_stride}")


def skipped_videos(work_dir: Path) -> list[str]:
    """Files a run skipped (training and evaluation), from its skip log."""
    return SkipLog(Path(work_dir) / SKIP_LOG).skipped()


TASK = Task(
    name="kinetics400",
    title="Kinetics-400 top-1",
    metric="top1",
    config="kinetics400.py",
    data_layout=LAYOUT,
    data_source=SOURCE,
    make_mini=make_mini,
    check_data=check_data,
    configure=configure,
    data_dirname="kinetics400",
    description="Kinetics-400 video classification with 3D ResNets: 32x2 clips, 10x3-view evaluation (Table 5).",
)
