"""The classification transfer suite (Kornblith, Shlens & Le 2019's datasets) read through torchvision's classes.

Each dataset module (``tasks/food101.py``, ``tasks/dtd.py``, ...) describes its release with a :class:`Suite`:
how to open a split with torchvision's own dataset class (``download=False``, so a missing folder is an error,
never a download), the headline metric, the official split sizes, and a mini writer that produces the SAME on-disk
layout from small generated images. Everything else is shared here so that the dataset modules stay small and the
ten datasets cannot drift apart:

- :class:`TvClassDataset`: a split as ``{"inputs": uint8 CHW, "data_samples": label}`` items, with the frozen
  features' eval crop (resize the shorter side to ``size / crop_fraction``, centre ``size`` x ``size``) or the
  fine-tuning augmentation (inception crop + flip);
- :func:`check_data`: opens every split through torchvision (the layout check is torchvision's own reader), counts,
  labels in range, the standard sizes (warnings), and a header check of every image for ``data check --deep``;
- :func:`configure`: the protocol's wiring and the mini preset's shrinking.

The frozen-feature protocols (linear, few-shot) and the feature cache are in ``tasks/_frozen.py``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from rs_transfer.errors import UserError

from .base import DataReport, RunContext, Task

# The frozen-feature protocols; "finetune" is mmengine's loop (tasks/base.py).
SUITE_PROTOCOLS: tuple[str, ...] = ("linear", "fewshot", "finetune")
MINI_MARKER = "RS_TRANSFER_MINI"   # the mini writers leave it in the data root: sizes are then not compared
MINI_SIZE = 24                     # generated images: 24 x 24 (some writers vary it per image)


class Source(NamedTuple):
    """Part of a split: a torchvision dataset (``dataset[i] -> (PIL image, target)``), the items of it that belong
    to the split, and their labels (int64; for multi-label tasks an N x C int8 array of 1 / 0 (difficult only,
    ignored) / -1)."""

    dataset: Any
    indices: np.ndarray
    labels: np.ndarray
    part: str = ""     # "val": the dataset creators' validation images inside the training split (Aircraft, ...)


@dataclass(frozen=True)
class Suite:
    """One transfer dataset. ``load(root, split)`` opens ``split`` ("train" = what Kornblith et al. train on, e.g.
    train+val for DTD and Flowers; "test") with torchvision's class and returns its :class:`Source` parts."""

    name: str
    title: str
    metric: str                        # "top1" | "mean_per_class" | "mAP11"
    num_classes: int
    load: Callable[[Path, str], list[Source]]
    layout: str
    source: str
    sizes: dict[str, int]              # the standard split sizes (Kornblith et al.'s protocol)
    write_mini: Callable[[Path, np.random.Generator], Path]
    torchvision_class: str
    split_note: str                    # which official split (partition, trainval / test, seeded draw)
    multilabel: bool = False
    data_dirname: str = ""
    protocols: tuple[str, ...] = SUITE_PROTOCOLS
    release_check: Callable[[Path], list[str]] | None = None   # real data only: warnings (e.g. md5 vs release)


def labels_of(ds: Any) -> list[int]:
    """Integer labels of a torchvision classification dataset without decoding an image (the classes keep them in
    an attribute whose name differs per class)."""
    for attr in ("_labels", "targets", "y"):
        if hasattr(ds, attr):
            return [int(v) for v in getattr(ds, attr)]
    if hasattr(ds, "_samples"):                       # StanfordCars: (path, label) pairs
        return [int(t) for _, t in ds._samples]
    raise UserError(f"torchvision {type(ds).__name__} keeps its labels in no attribute this suite knows")


def whole(ds: Any, part: str = "") -> Source:
    """Every item of a single-label torchvision dataset (``part="val"``: the creators' validation set)."""
    labels = np.asarray(labels_of(ds), dtype=np.int64)
    return Source(ds, np.arange(len(labels)), labels, part)


def creators_val(sources: Sequence[Source]) -> np.ndarray:
    """Positions (in the split's item order) of the creators' validation images: Kornblith et al. select their
    hyper-parameters on them for Aircraft, VOC2007, DTD and Flowers (SimCLR B.8.1), then refit on train + val."""
    out, start = [], 0
    for s in sources:
        if s.part == "val":
            out.append(np.arange(start, start + len(s.indices)))
        start += len(s.indices)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def open_split(suite: Suite, root: Path, split: str) -> list[Source]:
    """``suite.load`` with torchvision's 'not found' / parse errors turned into one-line ``UserError``s."""
    try:
        return suite.load(Path(root), split)
    except (RuntimeError, FileNotFoundError, KeyError, ValueError, IndexError, OSError) as err:
        raise UserError(f"{suite.name}: torchvision's {suite.torchvision_class} cannot read the {split} split at "
                        f"{root} ({type(err).__name__}: {err}). Expected layout: {suite.layout}. Get it from "
                        f"{suite.source} (or use --preset mini).") from None


def split_labels(sources: Sequence[Source]) -> np.ndarray:
    return np.concatenate([s.labels for s in sources]) if sources else np.zeros(0, np.int64)


def identity(sources: Sequence[Source]) -> str:
    """A digest of which files a split holds and their labels (paths relative to nothing: the item order and the
    labels, plus the dataset class and its root), for the feature cache's key."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{type(s.dataset).__name__}|{getattr(s.dataset, 'root', '')}|{len(s.dataset)}".encode())
        h.update(np.ascontiguousarray(s.indices, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(s.labels).tobytes())
    return h.hexdigest()


class TvClassDataset(Dataset):
    """One split of a suite task; items ``{"inputs": uint8 CHW tensor, "data_samples": label}`` (multi-label:
    a float tensor of 1 / 0 / -1 per class).

    ``augment=False`` (frozen features, fine-tuning's test): resize the shorter side to ``round(size /
    crop_fraction)`` (bilinear, anti-aliased) and take the centre ``size`` x ``size`` (0.875: the 224 centre of
    256, the ImageNet evaluation crop Kornblith et al. use). ``augment=True`` (fine-tuning): Inception-style
    random-resized crop (area 8-100 %, aspect 3/4-4/3) to ``size`` and a horizontal flip, "random crops with resize
    and flips" (Kornblith et al. 2019; SimCLR B.8). ``indices`` keeps only those items, in that order; ``subset``
    ("fit" / "holdout") the training images minus / only the held-out ``holdout`` fraction (the linear probe's
    split rule; ``holdout="creators-val"``: the creators' validation images), for ``run --sweep``.
    """

    def __init__(self, task: str, data_root: str, split: str = "train", augment: bool = False, size: int = 224,
                 crop_fraction: float = 0.875, indices: Sequence[int] | None = None, subset: str | None = None,
                 holdout: float | str = 0.2, holdout_seed: int = 0) -> None:
        from rs_transfer.tasks import get_task

        suite = SUITES.get(task) or _suite_of(get_task(task))
        self.sources = open_split(suite, Path(data_root), split)
        self.items = [(j, int(i)) for j, s in enumerate(self.sources) for i in s.indices]
        self.labels = split_labels(self.sources)
        self.creators_val = creators_val(self.sources)
        if subset is not None:   # the fine-tuning sweep's split of the training set (rs_transfer/studies/sweep.py)
            from .classification import selection_split

            if subset not in ("fit", "holdout"):
                raise UserError(f"TvClassDataset subset must be 'fit', 'holdout' or None, got {subset!r}")
            fit, held = selection_split(len(self.labels), holdout, holdout_seed, self.creators_val)
            indices = np.sort(fit if subset == "fit" else held) if indices is None else indices
        if indices is not None:
            keep = np.asarray(indices, dtype=np.int64)
            self.items, self.labels = [self.items[i] for i in keep], self.labels[keep]
        self.augment, self.size, self.crop_fraction = augment, int(size), float(crop_fraction)
        self.multilabel = suite.multilabel
        self._transform = self._build_transform()

    def _build_transform(self) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        if self.augment:
            ops = [T.RandomResizedCrop(self.size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
                   T.RandomHorizontalFlip()]
        else:
            ops = [T.Resize(max(self.size, int(round(self.size / self.crop_fraction))), antialias=True),
                   T.CenterCrop(self.size)]
        return T.Compose([*ops, T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> str:
        """The split's items and labels (:func:`identity`), for the feature cache's key."""
        return identity(self.sources) + ("" if len(self.items) == sum(len(s.indices) for s in self.sources)
                                         else hashlib.sha256(str(self.items).encode()).hexdigest())

    def __getitem__(self, i: int) -> dict[str, Any]:
        j, k = self.items[i]
        image, _ = self.sources[j].dataset[k]        # torchvision's reader: its paths, its decoder
        out = self._transform(image.convert("RGB"))
        label = self.labels[i]
        target = torch.from_numpy(label.astype(np.float32)) if self.multilabel else int(label)
        return {"inputs": out.contiguous(), "data_samples": target}


# ---- data check ---------------------------------------------------------------------------------------------
def check_data(suite: Suite, root: Path) -> DataReport:
    """Open both splits through torchvision (its layout is the check), then counts and labels; the standard sizes
    are compared for real data (warnings: a run still uses what is there)."""
    report = DataReport(suite.name, Path(root), suite.layout, suite.source, preparation=suite.split_note)
    if not Path(root).is_dir():
        report.problems.append(f"folder {root} does not exist")
        return report
    mini = (Path(root) / MINI_MARKER).is_file()
    for split in ("train", "test"):
        try:
            sources = open_split(suite, Path(root), split)
        except UserError as err:
            report.problems.append(str(err).split(". Expected layout")[0])
            continue
        labels = split_labels(sources)
        report.counts[split] = int(len(labels))
        if not len(labels):
            report.problems.append(f"the {split} split is empty")
            continue
        flat = labels if labels.ndim == 1 else np.argwhere(labels != -1)[:, 1]
        if flat.min() < 0 or flat.max() >= suite.num_classes:
            report.problems.append(f"{split}: labels outside 0..{suite.num_classes - 1}")
        if not mini and split in suite.sizes and len(labels) != suite.sizes[split]:
            report.warnings.append(f"{split} holds {len(labels)} images, the standard split {suite.sizes[split]}")
    if not mini and not report.problems and suite.release_check is not None:
        report.warnings.extend(suite.release_check(Path(root)))
    return report


def data_files(suite: Suite, root: Path) -> list[Path]:
    """Every image file a run decodes (``data check --deep``): the paths torchvision's class would open."""
    out: list[Path] = []
    for split in ("train", "test"):
        for s in open_split(suite, Path(root), split):
            out.extend(Path(p) for p in image_paths(s.dataset, s.indices))
    return out


def image_paths(ds: Any, indices: np.ndarray) -> list[str]:
    """Image paths of a torchvision dataset's items (the attribute name differs per class)."""
    for attr in ("_image_files", "_images", "images"):
        if hasattr(ds, attr):
            files = getattr(ds, attr)
            return [str(files[i]) for i in indices]
    if hasattr(ds, "_samples"):
        return [str(ds._samples[i][0]) for i in indices]
    if hasattr(ds, "categories"):                    # Caltech101: category folder + running number
        return [str(Path(ds.root) / "101_ObjectCategories" / ds.categories[ds.y[i]] / f"image_{ds.index[i]:04d}.jpg")
                for i in indices]
    raise UserError(f"torchvision {type(ds).__name__}: no image path attribute known to this suite")


# ---- mini writers -------------------------------------------------------------------------------------------
def class_image(rng: np.random.Generator, c: int, size: int = MINI_SIZE) -> np.ndarray:
    """A learnable generated image of class ``c``: the class's colour and stripe orientation/frequency plus noise
    (HWC uint8 RGB). Colours come from ``c`` alone, so every split agrees on what a class looks like."""
    colour = np.random.default_rng(1000 + c).integers(40, 216, size=3)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx if c % 2 else yy) * (0.5 + 0.35 * c)) * 35.0
    img = colour[None, None, :] + stripes[..., None] + rng.normal(0, 20, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, image: np.ndarray) -> None:
    """A JPEG (the releases' format) through PIL, the decoder torchvision's loaders use."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def mark_mini(root: Path, name: str) -> None:
    (Path(root) / MINI_MARKER).write_text(f"{name} mini set (tasks/_tvclass.py writers)\n")


# ---- the Task ---------------------------------------------------------------------------------------------------
SUITES: dict[str, Suite] = {}


def _suite_of(task: Task) -> Suite:
    suite = SUITES.get(task.name)
    if suite is None:
        raise UserError(f"task {task.name!r} is not a classification-suite task")
    return suite


def configure(cfg: Any, ctx: RunContext) -> None:
    """Point every dataset at ``ctx.data_root``. Frozen protocols drop the fine-tuning keys (so that the run's
    config hash covers only what the protocol uses). Mini preset: 16 px, no workers, a small penalty grid and a
    30-step fine-tune at a global batch of 16."""
    from rs_transfer.runner.schedule import set_iterations

    frozen = ctx.protocol != "finetune"
    _bn_momentum(cfg, ctx)
    if frozen:
        for key in ("train_dataloader", "val_dataloader", "val_evaluator", "train_cfg", "val_cfg",
                    "optim_wrapper", "param_scheduler", "amp", "checkpoint_interval", "log_interval",
                    "global_batch_size", "max_per_process_batch", "max_iters", "warmup_iters"):
            cfg.pop(key, None)
        cfg.model = dict(backbone=dict(cfg.model.backbone))
        cfg.model.backbone.num_classes = 0          # pooled features, no classifier
    for key in ("train_dataloader", "val_dataloader", "feature_loader"):
        if cfg.get(key) is not None and "dataset" in cfg[key]:
            cfg[key].dataset.data_root = str(ctx.data_root)
    if frozen:   # the held-out split and the few-shot draws are functions of the seed: part of the config hash
        cfg.probe.seed = int(ctx.seed)
    if frozen and cfg.get("resolution") is None:   # "the weights' resolution": the published one
        from rs_transfer.backbones import get_spec

        cfg.resolution = int(get_spec(ctx.backbone).resolution)
    if not ctx.mini:
        return
    cfg.resolution = 16
    for key in ("train_dataloader", "val_dataloader", "feature_loader"):
        if cfg.get(key) is not None:
            cfg[key].num_workers = 0
            cfg[key].persistent_workers = False
            if "size" in cfg[key].get("dataset", {}):
                cfg[key].dataset.size = 16
    if frozen:
        cfg.probe.l2_grid = [1e-1, 1e-2, 1e-3, 1e-4]
        cfg.probe.max_iter = 300
        cfg.probe.vtab_train, cfg.probe.vtab_val = 16, 4     # VTAB-1k's 800 / 200 at the mini sets' size
        cfg.probe.shots = [1, 2, 5]
        cfg.probe.episodes = 3
        return
    cfg.global_batch_size = 16
    cfg.optim_wrapper.optimizer.lr = 0.05 * 16 / 256
    set_iterations(cfg, 30)
    cfg.log_interval = 10
    cfg.model.bn_momentum = 0.1    # min(10 x 16 / n, 0.1): every mini training set holds fewer than 160 images


def _bn_momentum(cfg: Any, ctx: RunContext) -> None:
    """Fine-tuning's BN statistics momentum, Kornblith et al.'s max(1 - 10/s, 0.9) in TF terms (s = steps per epoch
    of the standard training split at the global batch; tasks/classification.py ``simclr_bn_momentum``)."""
    from .classification import simclr_bn_momentum

    if ctx.protocol == "finetune" and not ctx.mini and "bn_momentum" in cfg.model:
        cfg.model.bn_momentum = simclr_bn_momentum(SUITES[ctx.task].sizes["train"], int(cfg.global_batch_size))


def make_task(suite: Suite, description: str) -> Task:
    """The :class:`Task` of a suite dataset, registered so that ``TvClassDataset(task=...)`` finds its reader."""
    SUITES[suite.name] = suite

    def run_protocol(cfg: Any, ctx: RunContext) -> dict[str, float]:
        from ._frozen import run_protocol as run_frozen

        def dataset(split: str, size: int, crop: float) -> TvClassDataset:
            return TvClassDataset(suite.name, str(ctx.data_root), split, augment=False, size=size,
                                  crop_fraction=crop)

        return run_frozen(cfg, ctx, suite.metric, dataset)

    def make_mini(root: Path) -> Path:
        return suite.write_mini(Path(root), np.random.default_rng(sum(map(ord, suite.name))))

    return Task(
        name=suite.name, title=suite.title, metric=suite.metric, higher_is_better=True,
        config=f"{suite.name.replace('-', '_')}.py", protocols=suite.protocols,
        data_layout=suite.layout, data_source=suite.source, data_dirname=suite.data_dirname or suite.name,
        make_mini=make_mini, check_data=lambda root: check_data(suite, root), configure=configure,
        run_protocol=run_protocol, data_files=lambda root: data_files(suite, root), description=description)
