"""CIFAR-100 (Table 4's first column): full fine-tuning, frozen-feature linear probe and kNN.

Data: the standard ``cifar-100-python`` folder (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz), i.e. the
pickled ``train`` (50,000 images), ``test`` (10,000) and ``meta`` files that torchvision's ``CIFAR100`` also reads.
Each split pickle holds ``data`` (N x 3072 uint8, R then G then B planes of 32x32), ``fine_labels`` (0..99),
``coarse_labels``, ``filenames``; ``meta`` holds ``fine_label_names`` and ``coarse_label_names``. Keys are bytes in the
original (Python 2) pickles and str in re-pickled copies: both are accepted. The pickles are read with
:func:`rs_transfer.tasks.safe_pickle.load_data`, which admits only plain data (a crafted file cannot run code).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rs_transfer.errors import UserError
from rs_transfer.tasks.safe_pickle import UnsafePickleError, load_data

from ._tf_crop import sample_crop
from .base import MINI_MARKER, DataReport, RunContext, Task, single_class_warning

NUM_CLASSES = 100
SPLIT_SIZES = {"train": 50000, "test": 10000}
LAYOUT = ("cifar-100-python/{train,test,meta}: pickles with data (N x 3072 uint8), fine_labels, coarse_labels, "
          "filenames; meta with fine_label_names (100)")
SOURCE = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (unpack; point --data-root at cifar-100-python "
          "or at its parent, torchvision's CIFAR100 root)")
# Mini set: 10 of the 100 classes (chance 10%), 32 train + 10 test images per class.
MINI_CLASSES, MINI_TRAIN, MINI_TEST = 10, 32, 10


def _get(d: dict, key: str) -> Any:
    return d[key] if key in d else d[key.encode()]


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as N x 3 x 32 x 32 uint8 and fine labels as int64.

    ``data`` must be what the release holds, N x 3072 uint8: a cast would turn float images in [0, 1] into black
    ones and a reshape would scramble N x 32 x 32 x 3 (HWC) arrays, both without a word, so anything else is a
    ``UserError`` naming the file, what it holds and how to convert it."""
    path = Path(root) / split
    entry = load_data(path)
    data = np.asarray(_get(entry, "data"))
    if data.dtype != np.uint8:
        hint = (" (values look like floats in [0, 1]: multiply by 255 and round)"
                if data.dtype.kind == "f" and data.size and 0.0 <= float(data.min()) and float(data.max()) <= 1.0
                else "")
        raise UserError(f"{path}: data is {data.dtype}, expected uint8 pixel values 0..255 as in the "
                        f"release{hint}; convert it explicitly (np.uint8) or re-extract cifar-100-python.tar.gz")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: data has shape {tuple(data.shape)}, expected N x 3072 (each row the R, "
                        "G and B planes of a 32x32 image, as in the release)")
    return data.reshape(-1, 3, 32, 32), np.asarray(_get(entry, "fine_labels"), dtype=np.int64)


def resolve_root(root: Path | str) -> Path:
    """The ``cifar-100-python`` folder itself, or torchvision's root, its parent (``CIFAR100(root=R, download=True)``
    unpacks the archive into ``R/cifar-100-python``): both are accepted wherever a CIFAR data root is."""
    root = Path(root)
    if not (root / "train").is_file() and (root / "cifar-100-python").is_dir():
        return root / "cifar-100-python"
    return root


def inception_crop(height: int, width: int, area: tuple[float, float] = (0.08, 1.0),
                   aspect: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 100) -> tuple[int, int, int, int]:
    """(top, left, h, w) of SimCLR's ``crop_and_resize`` crop: TF's ``sample_distorted_bounding_box`` with area
    0.08-1, aspect 3/4-4/3, ``min_object_covered`` 0.1 and 100 attempts, else the whole image
    (``tasks/_tf_crop.py``). Drawn from numpy's global RNG (see :class:`Cifar100Dataset`)."""
    box = sample_crop(height, width, area=area, aspect=aspect, min_object_covered=0.1, attempts=attempts,
                      rand=np.random.random_sample)
    return box if box is not None else (0, 0, height, width)


def center_crop(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the central ``fraction`` of each side (SimCLR's eval ``center_crop``, 0.875 = the 224
    centre of an image resized to 256)."""
    h, w = max(1, int(round(height * fraction))), max(1, int(round(width * fraction)))
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(img: np.ndarray, box: tuple[int, int, int, int], size: int | None) -> torch.Tensor:
    """Crop ``box`` of a CHW uint8 image and resize it to ``size`` x ``size`` (bicubic, as SimCLR's data_util;
    anti-aliased when shrinking), back to uint8 (0-255, rounded)."""
    import torch.nn.functional as F

    top, left, h, w = box
    crop = torch.from_numpy(np.ascontiguousarray(img[:, top:top + h, left:left + w]))
    if size is None or (h, w) == (size, size):
        return crop
    out = F.interpolate(crop[None].float(), size=(size, size), mode="bicubic", align_corners=False,
                        antialias=size < max(h, w))[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


class Cifar100Dataset(Dataset):
    """One split; items are ``{"inputs": uint8 CHW tensor, "data_samples": label}``.

    ``augment`` (training): SimCLR B.8 / Kornblith et al.'s fine-tuning augmentation, "random crops with resize and
    flips": an inception crop (:func:`inception_crop`) of the 32 px image resized to ``size`` (224 for the paper
    protocol: the crop is taken at native resolution and upsampled once), then a horizontal flip with p = 0.5.
    Without ``augment`` (evaluation): the central ``eval_crop`` of each side resized to ``size`` (SimCLR: 0.875;
    1.0 = the whole image). ``size=None`` keeps 32 px (the frozen-feature protocols resize on the device).
    ``subset`` ("fit" / "holdout", of the ``train`` split): the training images minus / only a held-out
    ``holdout`` fraction (:func:`rs_transfer.tasks.classification.holdout_split`, the linear probe's split rule), for the
    fine-tuning hyper-parameter sweep. Random numbers come from numpy's global RNG (mmengine seeds it per
    worker), which the model never draws from, so mmengine's data-loader replay on resume reproduces them.
    """

    def __init__(self, data_root: str, split: str = "train", augment: bool = False, size: int | None = None,
                 eval_crop: float = 1.0, crop_area: tuple[float, float] = (0.08, 1.0),
                 crop_aspect: tuple[float, float] = (3 / 4, 4 / 3), subset: str | None = None,
                 holdout: float = 0.2, holdout_seed: int = 0) -> None:
        self.images, self.labels = read_split(resolve_root(data_root), split)
        if subset is not None:  # the hyper-parameter sweep's split of the training set (rs_transfer/studies/sweep.py)
            from rs_transfer.tasks.classification import holdout_split

            if subset not in ("fit", "holdout"):
                raise UserError(f"Cifar100Dataset subset must be 'fit', 'holdout' or None, got {subset!r}")
            fit, held = holdout_split(len(self.labels), holdout, holdout_seed)
            keep = np.sort(fit if subset == "fit" else held)
            self.images, self.labels = self.images[keep], self.labels[keep]
        self.augment, self.size, self.eval_crop = augment, size, float(eval_crop)
        self.crop_area, self.crop_aspect = tuple(crop_area), tuple(crop_aspect)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.images[i]
        _, h, w = img.shape
        if self.augment:
            out = crop_resize(img, inception_crop(h, w, self.crop_area, self.crop_aspect), self.size)
            if np.random.rand() < 0.5:
                out = out.flip(-1)
        else:
            out = crop_resize(img, center_crop(h, w, self.eval_crop), self.size)
        return {"inputs": out.contiguous(), "data_samples": int(self.labels[i])}


def check_data(root: Path) -> DataReport:
    root = resolve_root(root)
    report = DataReport("cifar100", Path(root), LAYOUT, SOURCE)
    if not Path(root).is_dir():
        report.problems.append(f"folder {root} does not exist")
        return report
    for name in ("train", "test", "meta"):
        if not (Path(root) / name).is_file():
            report.problems.append(f"missing file {Path(root) / name}")
    if report.problems:
        return report
    try:
        n_names = len(_get(load_data(Path(root) / "meta"), "fine_label_names"))
        if n_names != NUM_CLASSES:
            report.problems.append(f"meta lists {n_names} fine_label_names, expected {NUM_CLASSES}")
        for split in ("train", "test"):
            x, y = read_split(Path(root), split)
            report.counts[split] = len(y)
            if len(x) != len(y):
                report.problems.append(f"{split}: {len(x)} images but {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
                report.problems.append(f"{split}: fine_labels outside 0..{NUM_CLASSES - 1}")
            elif split == "train":
                report.warnings.extend(filter(None, [single_class_warning(split, y.tolist())]))
        report.compare_sizes(SPLIT_SIZES, name="CIFAR-100", evaluated={"test"})
    except UnsafePickleError as err:      # a UserError too: this clause first
        report.problems.append(f"not a genuine CIFAR pickle, refused without running it ({err})")
    except UserError as err:              # data that is not N x 3072 uint8 (read_split)
        report.problems.append(str(err))
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err:
        report.problems.append(f"unreadable pickle ({type(err).__name__}: {err})")
    return report


def make_mini(root: Path) -> Path:
    """A tiny CIFAR-100 in the real format with a learnable signal: each class has its own colour and stripe
    orientation/frequency, plus noise. Deterministic (fixed seed), so every machine generates the same files."""
    rng = np.random.default_rng(20210301)  # ResNet-RS arXiv date; any fixed seed works
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True)
    colours = rng.integers(40, 216, size=(MINI_CLASSES, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    for split, per_class in (("train", MINI_TRAIN), ("test", MINI_TEST)):
        images, labels = [], []
        for c in range(MINI_CLASSES):
            stripes = np.sin((xx if c % 2 else yy) * (0.4 + 0.15 * c)) * 30.0   # class-dependent pattern
            for _ in range(per_class):
                img = colours[c][:, None, None] + stripes[None] + rng.normal(0, 25, size=(3, 32, 32))
                images.append(np.clip(img, 0, 255).astype(np.uint8).reshape(-1))
                labels.append(c)
        order = rng.permutation(len(labels))
        entry = {b"batch_label": f"mini {split}".encode(), b"fine_labels": [labels[i] for i in order],
                 b"coarse_labels": [labels[i] // 5 for i in order],
                 b"filenames": [f"mini_{split}_{i:05d}.png".encode() for i in range(len(order))],
                 b"data": np.stack([images[i] for i in order])}
        with open(out / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {b"fine_label_names": [f"class_{i:02d}".encode() for i in range(NUM_CLASSES)],
            b"coarse_label_names": [f"super_{i:02d}".encode() for i in range(20)]}
    with open(out / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    (out / MINI_MARKER).write_text("cifar100 mini set, tasks/cifar100.py\n")
    return out


def _dataloaders(cfg: Any) -> list[Any]:
    return [cfg[k] for k in ("train_dataloader", "val_dataloader", "test_dataloader", "feature_loader")
            if k in cfg and cfg[k] is not None]


def configure(cfg: Any, ctx: RunContext) -> None:
    """Point every dataset at ``ctx.data_root`` (or torchvision's root above it); the BN momentum for the run's
    global batch; for the mini preset, 16 px, a global batch of 16, no worker processes, a few dozen steps."""
    from rs_transfer.runner.schedule import set_iterations

    for loader in _dataloaders(cfg):
        if "dataset" in loader:
            loader.dataset.data_root = str(ctx.data_root)
    if ctx.mini:
        # 16 px (the crops are resized to it, as the paper preset resizes them to 224): a quarter of the 32 px
        # compute; the mini classes differ by colour and stripes, which survive it.
        cfg.resolution = 16
        for loader in _dataloaders(cfg):
            loader.num_workers = 0
            loader.persistent_workers = False
            if "size" in loader.get("dataset", {}):
                loader.dataset.size = 16
            if loader is not cfg.get("train_dataloader"):
                loader.batch_size = min(int(loader.batch_size), 64)
        if "probe" in cfg:
            cfg.probe.l2_grid = [1e-1, 1e-2, 1e-3, 1e-4]
            cfg.probe.max_iter = 300
            cfg.probe.knn_k = 5
    if "train_cfg" not in cfg:
        return
    if ctx.mini:
        # A global batch of 16 (the runner splits it over the processes) and its LR by the linear rule from the
        # paper's 0.05 at 256; 320 mini images / 16 = 20 steps per epoch, 30 steps = 1.5 epochs.
        cfg.global_batch_size = 16
        cfg.optim_wrapper.optimizer.lr = 0.05 * 16 / 256
        set_iterations(cfg, 30)
        cfg.log_interval = 10
    if cfg.model.get("bn_momentum") is not None and cfg.get("global_batch_size"):
        from rs_transfer.tasks.classification import simclr_bn_momentum

        n_train = MINI_CLASSES * MINI_TRAIN if ctx.mini else SPLIT_SIZES["train"]
        cfg.model.bn_momentum = simclr_bn_momentum(n_train, int(cfg.global_batch_size))


def run_protocol(cfg: Any, ctx: RunContext) -> dict[str, float]:
    """Frozen features -> linear probe or kNN. Features are saved to ``work_dir/features.npz`` (reuse, audits)."""
    from mmengine.dataset import default_collate
    from mmengine.registry import MODELS
    from torch.utils.data import DataLoader

    from rs_transfer.tasks.classification import extract_features, knn_classify, linear_probe

    device = "cuda" if torch.cuda.is_available() else "cpu"
    from rs_transfer.runner import check_normalization

    backbone = MODELS.build(dict(cfg.model.backbone))
    backbone.init_weights()
    check_normalization(backbone, ctx.normalization)
    loader_cfg = cfg.feature_loader

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = Cifar100Dataset(str(ctx.data_root), split, augment=False)
        dl = DataLoader(ds, batch_size=int(loader_cfg.batch_size), num_workers=int(loader_cfg.num_workers),
                        shuffle=False, collate_fn=default_collate)
        return extract_features(backbone, dl, mean=ctx.normalization["mean"], std=ctx.normalization["std"],
                                resolution=cfg.get("resolution"), device=device)

    train_x, train_y = features("train")
    test_x, test_y = features("test")
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    np.savez(ctx.work_dir / "features.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    probe = cfg.probe
    if ctx.protocol == "linear":
        out = linear_probe(train_x, train_y, test_x, test_y, l2_grid=list(probe.l2_grid), holdout=probe.holdout,
                           seed=ctx.seed, max_iter=int(probe.max_iter))
        ctx.extra["l2_sweep"] = out.pop("sweep")
        return out
    return knn_classify(train_x, train_y, test_x, test_y, k=int(probe.knn_k), temperature=probe.knn_temperature)


TASK = Task(
    name="cifar100", title="CIFAR-100 top-1", metric="top1", higher_is_better=True,
    config="cifar100_finetune.py", protocols=("finetune", "linear", "knn"),
    protocol_configs={"linear": "cifar100_frozen.py", "knn": "cifar100_frozen.py"},
    data_layout=LAYOUT, data_source=SOURCE, data_dirname="cifar-100-python",
    make_mini=make_mini, check_data=check_data, configure=configure, run_protocol=run_protocol,
    description="CIFAR-100: fine-tuning (Table 4), linear probe and kNN on frozen features",
)
