"""ImageNet batches decoded and augmented on the model's device (``decode="device"``; issue 10, sec. 5).

With ``decode="worker"`` (the default) data-loader workers decode with libjpeg-turbo and crop on the CPU. With
``decode="device"`` the workers only read file bytes; the data preprocessor decodes the whole batch with one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG, batched, on CUDA) and applies the same crop / flip /
RandAugment (train) or centre crop (eval) per image on the device, so CPU cores stop bounding the input rate.

What nvJPEG cannot decode never reaches it: the worker decodes on the CPU every file that is not a JPEG with 1 or 3
colour components (ILSVRC2012 holds one PNG and CMYK JPEGs named .JPEG) and ships it decoded. ``decode_jpeg``
returns nothing for the batch when one image fails, so a failed batch is decoded again one image at a time (device,
then libjpeg-turbo); a file that fails both is unreadable and goes to the run's skip log, as in worker mode:
training replaces it by another image of the same batch (with its label), evaluation marks it ``unreadable`` in the
raw batch, which :class:`ImageNetAccuracy` leaves out and counts.

Not measured on a GPU yet (no device was lent while this was written); on the CPU the same code runs with
``decode_jpeg(device="cpu")``, which is what the tests exercise.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._corrupt import SkipLog


def jpeg_components(data: bytes) -> int | None:
    """Colour components of a baseline/progressive JPEG from its first SOF marker; None when not a JPEG."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:           # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        # SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision(1) height(2) width(2) components(1)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[i + 9] if i + 9 < len(data) else None
        i += 2 + length
    return None


def read_item(path: str) -> torch.Tensor:
    """What a worker ships: the file's bytes (1-D uint8) when nvJPEG can decode it, else the CPU-decoded CHW image.
    Raises RuntimeError (as ``torchvision.io`` does) for an unreadable or undecodable file."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    raw = read_file(path)
    if jpeg_components(raw[:65536].numpy().tobytes()) in (1, 3):
        return raw
    return decode_image(raw, mode=ImageReadMode.RGB)


class PackedImages:
    """A batch's images (encoded bytes or CPU-decoded CHW) in one flat uint8 tensor, with each item's shape.

    Why one tensor: a data-loader worker hands its batch to the main process through shared memory, one segment
    (and one file descriptor) per tensor storage. A list of ``batch`` small tensors per batch made that hand-over
    fail (``OSError: Bad file descriptor`` in the worker's queue feeder), after which the loader waited forever;
    one storage per batch is one segment. ``pin_memory`` is what the ``DataLoader`` calls with ``pin_memory=True``."""

    def __init__(self, flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> None:
        self.flat, self.shapes = flat, shapes

    @classmethod
    def pack(cls, items: list[torch.Tensor]) -> "PackedImages":
        flat = torch.cat([t.reshape(-1) for t in items]) if items else torch.empty(0, dtype=torch.uint8)
        return cls(flat, [tuple(t.shape) for t in items])

    def unpack(self) -> list[torch.Tensor]:
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        return [t.view(s) for t, s in zip(torch.split(self.flat, sizes), self.shapes)]

    def pin_memory(self) -> "PackedImages":
        return PackedImages(self.flat.pin_memory(), self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Images of different sizes and encodings packed into one tensor; labels and tags become tensors."""
    out: dict[str, Any] = {"inputs": PackedImages.pack([b["inputs"] for b in batch]),
                           "path": [b["path"] for b in batch]}
    for key in ("data_samples", "split", "unreadable"):
        out[key] = torch.as_tensor([b[key] for b in batch])
    return out


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)
    except RuntimeError:
        return None


def decode_batch(items: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decoded CHW uint8 images on ``device`` (None: unreadable); encoded items in one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [t.to(device, non_blocking=True) if t.ndim == 3 else None for t in items]
    encoded = [i for i, t in enumerate(items) if t.ndim == 1]
    if encoded:
        try:
            decoded = decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:     # no partial results: find the bad ones one by one
            decoded = [_decode_one(items[i], device) for i in encoded]
        for i, img in zip(encoded, decoded):
            out[i] = img
    return out


class DeviceTransform:
    """Decode + per-image transforms of a ``collate`` batch on ``device``.

    Returns a new batch dict: ``inputs`` (uint8 NCHW on ``device``), ``data_samples`` (labels; in training an
    unreadable image's slot holds another image of the batch and that image's label) and ``unreadable`` (0/1 per
    sample; evaluation placeholders are 1). The input batch is left as it was: the caller decides where the flags go
    (:class:`~._imagenet_data.ImageNetDataPreprocessor` hands them to the metric)."""

    def __init__(self, resolution: int, train: Callable[[torch.Tensor], torch.Tensor],
                 evaluate: Callable[[torch.Tensor], torch.Tensor], skip_log: str | None = None) -> None:
        # The per-image transforms are handed in (``_imagenet_data.device_transform`` builds them), so this module
        # depends on nothing above it: the worker and device paths share one set of transforms.
        self.resolution = int(resolution)
        self.train, self.evaluate = train, evaluate
        self.skip_log = SkipLog(skip_log)

    def __call__(self, data: dict[str, Any], device: torch.device, training: bool) -> dict[str, Any]:
        images = decode_batch(data["inputs"].unpack(), device)
        labels = torch.as_tensor(data["data_samples"]).clone()
        unreadable = torch.as_tensor(data.get("unreadable", [0] * len(images))).clone()
        bad = [i for i, img in enumerate(images) if img is None]
        for i in bad:
            self.skip_log.add("train" if training else "eval", data["path"][i], "decode failed on device and CPU")
        good = [i for i, img in enumerate(images) if img is not None]
        if training and bad:
            if not good:
                raise RuntimeError(f"every image of a training batch failed to decode (first: {data['path'][0]}); "
                                   "see the skip log in the work dir")
            for k, i in enumerate(bad):      # another image of the batch, with its label (counted in the log)
                j = good[k % len(good)]
                images[i], labels[i] = images[j], labels[j]
        res = self.resolution
        out = torch.empty(len(images), 3, res, res, dtype=torch.uint8, device=device)
        for i, img in enumerate(images):
            if img is None:                  # evaluation: a placeholder the metric leaves out and counts
                out[i].zero_()
                unreadable[i] = 1
            else:
                out[i] = self.train(img) if training else self.evaluate(img)
        return dict(data, inputs=out, data_samples=labels, unreadable=unreadable)
