"""ImageNet samples for the one runner: JPEG decoding with ``torchvision.io``, the ResNet-RS train/eval transforms,
the minival hold-out, and top-1/top-5 over ``val`` (+ ``minival``) with unreadable files skipped and counted.

Transforms (tensorflow/tpu ``resnet_preprocessing.py``, the RS training code's input pipeline):

- train: TF's distorted crop (``tasks/_tf_crop.py``: ``sample_distorted_bounding_box`` with area 0.08-1,
  aspect 3/4-4/3, ``min_object_covered`` 0.1, 10 attempts; when none succeeds, or the crop is the whole image, TF
  takes the eval centre crop instead), resized bicubic to ``resolution``, horizontal flip, then RandAugment when the
  recipe turns it on (``tasks/_randaugment.py``: TF Model Garden's ``RandAugment`` re-implemented on uint8 tensors,
  ``num_ops`` layers; the magnitude is on TF's scale, level / 10, so the recipe's 10 and 15 mean what they mean in
  the TF configs: e.g. Rotate 30 and 45 degrees);
- eval: TF's ``_decode_and_center_crop``: a square of side ``int(resolution / (resolution + crop_padding) * short
  side)`` (``CROP_PADDING = 32``: 224 px sees 87.5 % of the short side), offset ``(side - crop + 1) // 2``,
  resized bicubic to ``resolution`` x ``resolution``.

Resizing is bicubic (TF's ``resize_bicubic``; timm's ResNet-RS configs also evaluate bicubic), anti-aliased when
shrinking as PIL is (TF's v1 kernel is not). Images stay uint8 CHW; mean/std normalisation happens on the device in
the model's data preprocessor with the weight source's values (0-255 units).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.model import ImgDataPreprocessor
from torch.utils.data import Dataset

from rs_transfer.tasks.classification import Accuracy

from ._corrupt import SKIP_LOG, SkipLog  # noqa: F401  (SKIP_LOG: the run's log name, set by configure)
from ._tf_crop import sample_crop

MAX_REDRAWS = 10   # a training sample whose file fails is replaced by another; this many failures in a row is a bug


def in_minival(name: str, fraction: float) -> bool:
    """Whether a training file belongs to the minival hold-out (paper sec. 4: 2% of the training set).

    The paper holds out 20 of TF's 1024 training shards, which a folder layout does not have; we hold out the files
    whose SHA-1 of the file name falls in the first ``fraction`` of the hash range. That is deterministic on every
    machine, independent of listing order, and stable when files are added or removed."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return h < fraction * 2 ** 64


def decode(path: str) -> torch.Tensor:
    """uint8 RGB CHW. ``decode_image`` dispatches JPEG to ``decode_jpeg`` (ILSVRC2012 also holds a PNG and CMYK
    JPEGs named .JPEG; grayscale images become 3 channels)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(path), mode=ImageReadMode.RGB)


def centre_box(height: int, width: int, resolution: int, crop_padding: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of TF's eval crop: ``tf.cast`` truncates the side, the offset rounds up."""
    side = max(1, int(resolution / (resolution + crop_padding) * min(height, width)))
    return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def resize_box(img: torch.Tensor, box: tuple[int, int, int, int], resolution: int) -> torch.Tensor:
    """Crop ``box`` of a uint8 CHW image and resize it bicubic to ``resolution`` x ``resolution``."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    top, left, h, w = box
    crop = img[..., top:top + h, left:left + w]
    if (h, w) == (resolution, resolution):
        return crop
    return TF.resize(crop, [resolution, resolution], interpolation=InterpolationMode.BICUBIC, antialias=True)


def eval_transform(img: torch.Tensor, resolution: int, crop_padding: int) -> torch.Tensor:
    return resize_box(img, centre_box(*img.shape[-2:], resolution, crop_padding), resolution)


class TFTrainCrop(torch.nn.Module):
    """The RS training crop: TF's distorted crop (10 attempts) resized bicubic; when TF's crop is the whole image
    (every attempt failed, or it drew the whole image) the eval centre crop, as ``_decode_and_random_crop``."""

    def __init__(self, resolution: int, crop_padding: int = 32) -> None:
        super().__init__()
        self.resolution, self.crop_padding = int(resolution), int(crop_padding)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        box = sample_crop(h, w, attempts=10)
        if box is None or box[2:] == (h, w):
            box = centre_box(h, w, self.resolution, self.crop_padding)
        return resize_box(img, box, self.resolution)


def train_transform(resolution: int, randaugment: dict | None, crop_padding: int = 32) -> Any:
    """Crop, flip, then TF's RandAugment (``randaugment``: ``num_ops``, ``magnitude`` on TF's scale, optionally
    ``translate_const``/``cutout_const``/``prob_to_apply``; TF's defaults otherwise). Works on CPU and CUDA tensors
    (``tasks/_imagenet_device.py`` calls it on the device)."""
    import torchvision.transforms.v2 as T

    from ._randaugment import TFRandAugment

    ops: list[Any] = [TFTrainCrop(resolution, crop_padding), T.RandomHorizontalFlip()]
    if randaugment:
        ra = dict(randaugment)
        unknown = set(ra) - {"num_ops", "magnitude", "translate_const", "cutout_const", "prob_to_apply"}
        if unknown:
            raise ValueError(f"randaugment: unknown keys {sorted(unknown)}")
        ops.append(TFRandAugment(num_ops=int(ra.pop("num_ops", 2)), magnitude=float(ra.pop("magnitude", 10)), **ra))
    return T.Compose(ops)


def make_device_transform(resolution: int, crop_padding: int = 32, randaugment: dict | None = None,
                          skip_log: str | None = None) -> Any:
    """A :class:`~._imagenet_device.DeviceTransform` with this module's train and eval transforms (the same ones the
    workers run with ``decode="worker"``)."""
    from ._imagenet_device import DeviceTransform

    return DeviceTransform(resolution, train_transform(resolution, randaugment, crop_padding),
                           lambda img: eval_transform(img, resolution, crop_padding), skip_log)


class ImageNetDataset(Dataset):
    """One or more splits of an ILSVRC2012 folder (layouts: ``tasks/imagenet.py``).

    ``splits``: ``"train"``, ``"val"`` or ``"minival"`` (the hold-out of ``train``), or a list of them for one
    evaluation pass over several (each sample carries its split index for :class:`ImageNetAccuracy`).
    ``exclude_minival``: leave the minival files out of ``train`` (when minival is evaluated).
    Items: ``{"inputs": uint8 CHW, "data_samples": label, "split": index, "unreadable": 0/1}``.
    ``decode="device"``: ``inputs`` is the file's bytes (or the CPU-decoded full image when nvJPEG cannot read it)
    plus ``path``; the data preprocessor decodes and crops on the device (``tasks/_imagenet_device.py``).
    """

    def __init__(self, data_root: str, splits: str | Sequence[str] = "train", *, augment: bool = False,
                 resolution: int = 224, crop_padding: int = 32, randaugment: dict | None = None,
                 minival_fraction: float = 0.02, exclude_minival: bool = False,
                 skip_log: str | None = None, decode: str = "worker") -> None:
        from .imagenet import scan

        listing = scan(Path(data_root))
        listing.raise_if_bad()
        self.splits = [splits] if isinstance(splits, str) else list(splits)
        self.samples: list[tuple[str, int, int]] = []
        for k, split in enumerate(self.splits):
            if split == "val":
                items = listing.val
            elif split in ("train", "minival"):
                want = split == "minival"
                items = [(p, y) for p, y in listing.train
                         if (split == "train" and not exclude_minival) or in_minival(Path(p).name,
                                                                                    minival_fraction) == want]
            else:
                raise ValueError(f"unknown ImageNet split {split!r}; use train, val or minival")
            self.samples += [(p, y, k) for p, y in items]
        self.classes = listing.classes
        self.augment, self.resolution, self.crop_padding = augment, int(resolution), int(crop_padding)
        self.transform = train_transform(self.resolution, randaugment, self.crop_padding) if augment else None
        self.skip_log = SkipLog(skip_log)
        if decode not in ("worker", "device"):
            raise ValueError(f"decode={decode!r}: use 'worker' (CPU, in the data loader) or 'device' (batched, "
                             "on the model's device)")
        self.decode = decode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        for _ in range(MAX_REDRAWS):
            path, label, split = self.samples[i]
            try:
                if self.decode == "device":
                    from ._imagenet_device import read_item

                    return {"inputs": read_item(path), "data_samples": label, "split": split, "unreadable": 0,
                            "path": path}
                img = decode(path)
            except RuntimeError as err:  # torchvision.io raises RuntimeError for unreadable/undecodable files
                self.skip_log.add("train" if self.augment else "eval", path, str(err).splitlines()[-1])
                if not self.augment:   # evaluation: a placeholder that the metric leaves out and counts
                    blank = torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8)
                    item = {"inputs": blank, "data_samples": label, "split": split, "unreadable": 1}
                    return item | ({"path": path} if self.decode == "device" else {})
                i = int(np.random.randint(len(self.samples)))   # training: another sample (numpy RNG: seeded)
                continue
            # Transforms run outside the try: an error there is a bug, never a "corrupt file".
            img = self.transform(img) if self.transform is not None else eval_transform(img, self.resolution,
                                                                                        self.crop_padding)
            return {"inputs": img.contiguous(), "data_samples": label, "split": split, "unreadable": 0}
        raise RuntimeError(f"{MAX_REDRAWS} ImageNet files in a row failed to decode (last: {path}); see the skip "
                           "log in the work dir")


class ImageNetDataPreprocessor(ImgDataPreprocessor):
    """mmengine's image preprocessor (uint8 -> float, mean/std) that passes on only ``inputs`` and ``data_samples``:
    the per-sample tags (``split``, ``unreadable``) are for the metric, which reads them from the raw batch.

    ``channels_last``: hand the batch to the model in NHWC memory layout (``"cuda"``: only on a GPU, where cuDNN then
    picks its NHWC kernels, the fast ones for bf16 tensor cores; ``True``/``False``: always/never). The values are
    the same either way.

    ``device_transform``: :class:`~._imagenet_device.DeviceTransform` arguments for batches of encoded images
    (``decode="device"``: ``PackedImages`` in ``inputs``), decoded and cropped here on the model's device."""

    def __init__(self, *args: Any, channels_last: bool | str = "cuda", device_transform: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last
        self.device_transform = None
        if device_transform is not None:
            self.device_transform = make_device_transform(**device_transform)

    def forward(self, data: dict, training: bool = False) -> dict:
        from ._imagenet_device import PackedImages

        if isinstance(data.get("inputs"), PackedImages):   # a tasks/_imagenet_device.collate batch
            if self.device_transform is None:
                raise RuntimeError("a batch of encoded images reached a preprocessor without device_transform "
                                   "(set decode='device' through the imagenet task's configure)")
            decoded = self.device_transform(data, self._device, training)
            # The metric reads the per-sample flags from the raw batch, the dict the loop handed to val_step (this
            # one): its ``unreadable`` entry is replaced (a new tensor), so files that failed here are counted.
            data["unreadable"] = decoded["unreadable"]
            data = decoded
        out = super().forward({k: data[k] for k in ("inputs", "data_samples") if k in data}, training)
        x = out["inputs"]
        if self.channels_last is True or (self.channels_last == "cuda" and x.is_cuda):
            out["inputs"] = x.contiguous(memory_format=torch.channels_last)
        return out


class ImageNetAccuracy(Accuracy):
    """Top-1/top-5 in percent per split: ``top1``/``top5`` for the first split (``val``), ``<split>_top1`` ... for
    the others (``minival_top1``). Unreadable samples are left out and counted (``eval_images``, ``eval_skipped``,
    the keys the dense tasks use); more than ``max_skipped_fraction`` of them is an error, not a number."""

    def __init__(self, topk: Sequence[int] = (1, 5), split_names: Sequence[str] = ("val",),
                 max_skipped_fraction: float = 0.001, **kwargs: Any) -> None:
        super().__init__(topk=topk, **kwargs)
        self.split_names = tuple(split_names)
        self.max_skipped_fraction = float(max_skipped_fraction)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        n = len(data_samples)
        splits = torch.as_tensor(data_batch.get("split", [0] * n)).tolist()
        bad = torch.as_tensor(data_batch.get("unreadable", [0] * n)).tolist()
        for s, split, b in zip(data_samples, splits, bad):
            scores = s["scores"].tolist()
            self.results.append((int(split), int(b), [int(s["label"] in scores[:k]) for k in self.topk]))

    def compute_metrics(self, results: list) -> dict[str, float]:
        from rs_transfer.errors import UserError

        skipped = sum(b for _, b, _ in results)
        if skipped and (skipped == len(results) or skipped > self.max_skipped_fraction * len(results)):
            raise UserError(f"{skipped} of {len(results)} ImageNet evaluation images are unreadable (allowed: "
                            f"{self.max_skipped_fraction:.1%}); no top-1 is reported over the rest. See the skip "
                            "log in the work dir; re-extract those files or raise max_skipped_fraction.")
        out: dict[str, float] = {"eval_images": float(len(results) - skipped), "eval_skipped": float(skipped)}
        for k, name in enumerate(self.split_names):
            hits = np.asarray([h for s, b, h in results if s == k and not b], dtype=np.float64)
            if not len(hits):
                raise UserError(f"ImageNet split {name!r} has no readable images to evaluate")
            prefix = "" if k == 0 else f"{name}_"
            for i, t in enumerate(self.topk):
                out[f"{prefix}top{t}"] = float(100.0 * hits.reshape(-1, len(self.topk))[:, i].mean())
        return out
