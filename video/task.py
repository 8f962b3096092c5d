"""The Kinetics-400 task (Table 5): data layout, data check, mini data, and config wiring for the runner."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_transfer.tasks._corrupt import SKIP_LOG, SkipLog  # one skip log (phase, path, reason) for every task
from rs_transfer.tasks.base import DataReport, RunContext, Task, home

from . import mini as mini_data
from .kinetics import _class_names, scan_split

LAYOUT = ("ROOT/{train,val}/<class>/*.mp4, or the official csv files ROOT/[annotations/]{train,validate}.csv "
          "(label,youtube_id,time_start,time_end,split) with ROOT/{train,val}/{youtube_id}_{start:06d}_{end:06d}.mp4")
SOURCE = ("https://github.com/cvdfoundation/kinetics-dataset (CVDF mirror of the Kinetics-400 videos and the "
          "official csv files)")


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


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def _cache_file(cache_key: str) -> Path:
    return home() / "cache" / "probe" / f"{hashlib.sha1(cache_key.encode()).hexdigest()[:16]}.json"


def _read_cache(cache_key: str) -> dict[str, list]:
    try:
        return json.loads(_cache_file(cache_key).read_text())
    except (OSError, ValueError):
        return {}


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def probe_files(paths: list[Path], cache_key: str, workers: int | None = None,
                wait_s: float = 3600.0) -> dict[str, str]:
    """``{path: error}`` for files that fail :func:`_probe`.

    Probed in parallel (threads: PyAV releases the GIL while it decodes), once per machine: local rank 0 probes
    and writes the cache; the other local ranks of a ``torchrun`` wait for it (up to ``wait_s``) instead of
    opening every file again. Results are cached by (size, mtime) under ``$RS_TRANSFER_HOME/cache/probe``, so
    re-checking 240k Kinetics files costs seconds after the first time.
    """
    from concurrent.futures import ThreadPoolExecutor

    def misses(cache: dict[str, list]) -> list[Path]:
        return [p for p in paths if (cache.get(str(p)) or [None])[0] != _stamp(p)]

    cache = _read_cache(cache_key)
    todo = misses(cache)
    if todo and _local_rank() != 0:
        deadline = time.monotonic() + wait_s
        while todo and time.monotonic() < deadline:
            time.sleep(2.0)
            cache = _read_cache(cache_key)
            todo = misses(cache)
    if todo:
        n = workers or min(32, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=n) as pool:
            for p, err in zip(todo, pool.map(_probe, todo)):
                cache[str(p)] = [_stamp(p), err]
        fresh = {str(p): cache[str(p)] for p in paths}
        try:
            from rs_transfer.atomic import write_text_atomic

            write_text_atomic(_cache_file(cache_key), json.dumps(fresh))
        except OSError:
            pass
    return {str(p): cache[str(p)][1] for p in paths if cache[str(p)][1]}


def known_corrupt(root: Path, split: str) -> list[str] | None:
    """The files of ``split`` that the last ``data check`` (run before every run) found unreadable, from its cache;
    None when the cache does not cover the split's current files (then nothing is excluded up front)."""
    index = scan_split(root, split, _class_names(root))
    cache = _read_cache(f"{Path(root).resolve()}:{split}")
    bad = []
    for r in index.records:
        hit = cache.get(str(r.path))
        if not hit or hit[0] != _stamp(r.path):
            return None
        if hit[1]:
            bad.append(str(r.path))
    return sorted(bad)


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
    """Data root, skip log, known-corrupt files, class count, mini shrinking, resumable sampling, then the
    ``recipe`` block (video/recipes.py). Refuses to start when ``data check`` found too much of val unreadable."""
    from rs_transfer.runner.config import lazy

    from .metrics import DEFAULT_MAX_UNREADABLE, check_unreadable
    from .recipes import apply_recipe
    from .resnet3d import describe, resolve_arch
    from .sampler import ResumeSamplerHook

    root = str(ctx.data_root)
    skip_log = str(Path(ctx.work_dir) / SKIP_LOG)
    classes = _class_names(Path(root))
    loaders = [cfg.train_dataloader, cfg.val_dataloader, cfg.get("test_dataloader") or cfg.val_dataloader]
    bad = {split: known_corrupt(Path(root), split) or [] for split in ("train", "val")}
    for loader in loaders:
        loader.dataset.data_root = root
        loader.dataset.skip_log = skip_log
        # data check (run just before) probed every file: known-bad ones are excluded, and counted by the metric.
        loader.dataset.exclude = bad[loader.dataset.split if loader.dataset.split in bad else "val"]
    val_index = scan_split(Path(root), cfg.val_dataloader.dataset.split, classes)
    for ev in (cfg.val_evaluator, cfg.get("test_evaluator") or cfg.val_evaluator):
        ev.update(skip_log=skip_log, known_corrupt=len(bad["val"]), missing=len(val_index.missing))
    check_unreadable(len(bad["val"]), len(val_index.records),
                     float(cfg.val_evaluator.get("max_unreadable", DEFAULT_MAX_UNREADABLE)), where="data check (val)")
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
        cfg.global_batch_size = MINI["batch_size"]   # the mini run's GLOBAL batch (rs_transfer/runner/batch.py)
    apply_recipe(cfg, mini=ctx.mini)
    hooks = [h for h in cfg.get("custom_hooks", []) if "ResumeSamplerHook" not in str(h.get("type"))]
    cfg.custom_hooks = hooks + [dict(type=lazy(ResumeSamplerHook))]
    views = f"{cfg.val_dataloader.dataset.num_clips}x{cfg.val_dataloader.dataset.num_crops}"
    arch = describe(resolve_arch(**ctx.backbone_kwargs)) if "temporal_kernels" in ctx.backbone_kwargs else None
    ctx.extra.update(views=views, view_average=cfg.model.view_average, skip_log=skip_log, architecture=arch,
                     inflate=ctx.backbone_kwargs.get("inflate"), known_corrupt={k: len(v) for k, v in bad.items()},
                     frames=f"{cfg.train_dataloader.dataset.num_frames}x{cfg.train_dataloader.dataset.frame_stride}")


def skipped_videos(work_dir: Path) -> list[str]:
    """Files a run skipped (training and evaluation), from its skip log."""
    return SkipLog(Path(work_dir) / SKIP_LOG).files()


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
