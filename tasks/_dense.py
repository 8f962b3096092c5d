"""Config wiring shared by the dense tasks (VOC det/seg, ADE20K, NYU depth).

Why a helper module: the four ``Task.configure`` functions do the same generic surgery on their mmengine config --
fit the heads' input channels to the chosen backbone (a width multiplier changes them), point the datasets at the
data root, and shrink loaders/schedules for ``--preset mini`` -- and it must be done the same way everywhere.
Nothing here knows a particular data set.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def stage_channels(backbone_kwargs: dict[str, Any]) -> list[int]:
    """Output channels of the four backbone stages for these ResNetRS kwargs.

    Built from ResNetRS itself (one block per stage, no weights) so the numbers can never drift from the
    implementation, while costing milliseconds even for RS-420.
    """
    from rs_transfer.backbones import ResNetRS

    arch = {k: v for k, v in backbone_kwargs.items()
            if k in ("width", "stem", "stem_width", "stem_pool", "shortcut", "se_ratio", "in_chans")}
    probe = ResNetRS(depth=None, layers=(1, 1, 1, 1), num_classes=0, **arch)
    return [int(info["num_chs"]) for info in probe.feature_info]


def iter_datasets(loader: dict) -> Iterator[dict]:
    """Every leaf dataset dict inside a dataloader config (through Concat/Repeat wrappers)."""
    stack = [loader["dataset"]]
    while stack:
        ds = stack.pop()
        if "datasets" in ds:
            stack.extend(ds["datasets"])
        elif "dataset" in ds:
            stack.append(ds["dataset"])
        else:
            yield ds


def set_data_root(cfg: Any, root: Path) -> None:
    """Point every dataset of the train/val/test loaders at ``root``."""
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(key) is None:
            continue
        for ds in iter_datasets(cfg[key]):
            ds["data_root"] = str(root)


def set_skip_log(cfg: Any, path: Path) -> None:
    """Every dataset of the run logs unreadable files to ``path`` (``tasks/_corrupt.py``; the runner reads it)."""
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(key) is None:
            continue
        for ds in iter_datasets(cfg[key]):
            ds["skip_log"] = str(path)


def small_loaders(cfg: Any, train_batch: int, val_batch: int = 1) -> None:
    """In-process loading (2 shared CPU cores: worker processes only cost start-up time). ``train_batch`` is the
    mini preset's GLOBAL batch (the runner splits it over the processes, without accumulation; the mini LR the
    task sets goes with it: rs_transfer/runner/batch.py)."""
    cfg.global_batch_size = train_batch
    cfg.max_per_process_batch = None
    for key, batch in (("train_dataloader", train_batch), ("val_dataloader", val_batch),
                       ("test_dataloader", val_batch)):
        if cfg.get(key) is None:
            continue
        cfg[key]["batch_size"] = batch
        cfg[key]["num_workers"] = 0
        cfg[key]["persistent_workers"] = False


def replace_in_pipelines(cfg: Any, transform: type, **updates: Any) -> int:
    """Update the keyword arguments of every ``transform`` step in every loader pipeline; returns how many."""
    n = 0
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(key) is None:
            continue
        for ds in iter_datasets(cfg[key]):
            for step in ds.get("pipeline", []):
                if _is(step.get("type"), transform):
                    step.update(updates)
                    n += 1
    return n


def drop_from_pipelines(cfg: Any, transform: type) -> None:
    """Remove every ``transform`` step from the train pipelines (mini runs: e.g. colour jitter on data whose classes
    are told apart by colour)."""
    for ds in iter_datasets(cfg["train_dataloader"]):
        ds["pipeline"] = [step for step in ds.get("pipeline", []) if not _is(step.get("type"), transform)]


def _is(type_: Any, cls: type) -> bool:
    """Does a config ``type`` (a class once ``Config.fromfile`` resolved the imports, or a registry string) name
    ``cls``?"""
    return type_ is cls or (isinstance(type_, str) and type_.split(".")[-1] == cls.__name__)


def fit_seg_heads(cfg: Any, backbone_kwargs: dict[str, Any]) -> None:
    """Decode/auxiliary head input channels for the chosen backbone (mmseg heads take explicit channel lists)."""
    chans = stage_channels(backbone_kwargs)
    model = cfg.model
    for key in ("decode_head", "auxiliary_head"):
        head = model.get(key)
        if head is None:
            continue
        idx = head.get("in_index", -1)
        head["in_channels"] = [chans[i] for i in idx] if isinstance(idx, (list, tuple)) else chans[idx]


def shrink_seg_heads(cfg: Any, channels: int) -> None:
    """Narrow decode/auxiliary heads for CPU mini runs (the head design is unchanged, only its width)."""
    for key in ("decode_head", "auxiliary_head"):
        head = cfg.model.get(key)
        if head is not None:
            head["channels"] = channels


def mini_segmentation(cfg: Any, *, crop: tuple[int, int], scale: tuple[int, int], ratio: tuple[float, float],
                      iters: int, batch: int, channels: int, lr: float) -> None:
    """Shrink an mmseg config for a CPU smoke run: small crops/scales, narrow heads, few iterations, no workers.

    ``crop`` is (h, w) as mmseg's RandomCrop takes it; ``scale`` is (w, h) as mmcv's Resize takes it.
    """
    from mmcv.transforms import RandomResize
    from mmseg.datasets.transforms import PhotoMetricDistortion, RandomCrop, Resize

    from rs_transfer.runner.schedule import set_iterations

    cfg.model.data_preprocessor["size"] = tuple(crop)
    replace_in_pipelines(cfg, RandomResize, scale=tuple(scale), ratio_range=tuple(ratio))
    replace_in_pipelines(cfg, RandomCrop, crop_size=tuple(crop))
    replace_in_pipelines(cfg, Resize, scale=tuple(scale))
    drop_from_pipelines(cfg, PhotoMetricDistortion)   # synthetic classes are told apart by colour
    shrink_seg_heads(cfg, channels)
    set_iterations(cfg, iters)
    small_loaders(cfg, batch)
    cfg.optim_wrapper.optimizer["lr"] = lr
    quiet_logs(cfg, max(1, iters // 4))


def quiet_logs(cfg: Any, interval: int) -> None:
    """Log every ``interval`` iterations (the runner built the logger hook before ``configure`` ran)."""
    hooks = cfg.get("default_hooks")
    if hooks is not None and hooks.get("logger") is not None:
        hooks["logger"]["interval"] = interval


def check_split_pairs(report: Any, split: str, img_dir: Path, ann_dir: Path, *, expected: int | None,
                      check_pair: Callable[[Path, Path], list[str]], split_name: str = "the standard split",
                      ann_noun: str = "annotation") -> None:
    """One split of an ``images/<split>/*.jpg`` + ``annotations/<split>/*.png`` layout (ADE20K, mmseg's NYU):
    both folders exist, the image count (equal to ``expected`` when given: real data only), every image checked
    with its PNG by ``check_pair(image, png) -> problems``, and no PNG without an image. Problems go to ``report``."""
    missing = [d for d in (img_dir, ann_dir) if not d.is_dir()]
    if missing:
        report.problems.extend(f"missing folder {d}" for d in missing)
        return
    images = sorted(img_dir.glob("*.jpg"))
    report.counts[split] = len(images)
    if not images:
        report.problems.append(f"no .jpg images in {img_dir}")
    elif expected is not None and len(images) != expected:
        report.problems.append(f"{split}: {img_dir} holds {len(images)} images, {split_name} has {expected}")
    for img in images:
        for problem in check_pair(img, ann_dir / f"{img.stem}.png"):
            report.add(problem)                 # unreadable files are skipped by runs, not problems
    stray = {p.stem for p in ann_dir.glob("*.png")} - {p.stem for p in images}
    report.problems.extend(f"{ann_noun} {ann_dir / s}.png has no image {img_dir / s}.jpg" for s in sorted(stray))
