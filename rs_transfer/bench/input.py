"""``rs-transfer benchmark train-input``: images/s of the ImageNet training input pipeline against a plain
torchvision ``ImageFolder`` + PIL pipeline, on the same files, cores and loader settings, as a ratio.

Ours (``tasks/_imagenet_data.py``): ``torchvision.io.decode_image`` (libjpeg-turbo via ``decode_jpeg``) on the raw
bytes, then TF's distorted crop (``tasks/_tf_crop.py``) resized bicubic + flip (+ TF's RandAugment,
``tasks/_randaugment.py``, if asked) on uint8 tensors. Reference: ``torchvision.datasets.ImageFolder`` (PIL decode,
RGB convert), torchvision's random-resized crop with the same ranges, bicubic, and flip (+ torchvision's
RandAugment, if asked) on PIL images, then ``PILToTensor``. Both end as uint8 CHW batches
(normalisation happens on the device in both set-ups), through the same ``DataLoader`` (workers, batch, pinned
memory). Rounds alternate between the pipelines and the median of each is reported, so a noisy neighbour on shared
cores hits all alike.

A third row times ``decode="device"`` (``tasks/_imagenet_device.py``): the workers only read file bytes, and the
batch is decoded (``decode_jpeg(list, device)``: nvJPEG on CUDA) and cropped on the device, as the training
preprocessor does; the clock stops after the device has finished (``torch.cuda.synchronize``). Without CUDA the same
code decodes on the CPU in the main process, one image after another, so that row is labelled ``(cpu)`` and says
nothing about a GPU; the ratio stays the worker pipeline's.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def _reference_dataset(root: Path, resolution: int, randaugment: bool) -> Any:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    ops = [T.RandomResizedCrop(resolution, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                               interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip()]
    ops += [T.RandAugment(num_ops=2, magnitude=10)] if randaugment else []
    return ImageFolder(str(root / "train"), transform=T.Compose([*ops, T.PILToTensor()]))


class _Indexed:
    """The same first ``n`` samples of a dataset, in the same order for both pipelines."""

    def __init__(self, ds: Any, n: int) -> None:
        self.ds, self.n = ds, min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        item = self.ds[i]
        return item["inputs"] if isinstance(item, dict) else item[0]


def time_pipeline(ds: Any, *, images: int, batch: int, workers: int) -> float:
    """Images per second to iterate ``images`` samples through a DataLoader (worker start-up included once)."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(_Indexed(ds, images), batch_size=batch, num_workers=workers, shuffle=False,
                        pin_memory=torch.cuda.is_available(), drop_last=False)
    t0 = time.perf_counter()
    n = 0
    for x in loader:
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0)


class _Raw:
    """The same first ``n`` samples as whole dicts (bytes, label, path): what ``decode="device"`` workers ship."""

    def __init__(self, ds: Any, n: int) -> None:
        self.ds, self.n = ds, min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.ds[i]


def time_device_pipeline(ds: Any, transform: Any, device: Any, *, images: int, batch: int, workers: int) -> float:
    """Images per second through byte-reading workers plus ``transform`` (a ``DeviceTransform``) on ``device``."""
    import torch
    from torch.utils.data import DataLoader

    from rs_transfer.tasks._imagenet_device import collate

    loader = DataLoader(_Raw(ds, images), batch_size=batch, num_workers=workers, shuffle=False,
                        collate_fn=collate, pin_memory=False, drop_last=False)
    t0 = time.perf_counter()
    n = 0
    for data in loader:
        n += int(transform(data, device, training=True)["inputs"].shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def run_benchmark(root: Path, *, resolution: int, images: int, batch: int, workers: int, rounds: int,
                  randaugment: bool = False) -> dict[str, Any]:
    import torch

    from rs_transfer.tasks._imagenet_data import ImageNetDataset, make_device_transform

    ra = dict(num_ops=2, magnitude=10) if randaugment else None
    ours = ImageNetDataset(str(root), "train", augment=True, resolution=resolution, randaugment=ra)
    raw = ImageNetDataset(str(root), "train", augment=True, resolution=resolution, randaugment=ra, decode="device")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_device = make_device_transform(resolution, randaugment=ra)
    device_row = f"decode=device ({device.type})"
    ref = _reference_dataset(root, resolution, randaugment)
    if [Path(p).name for p, _, _ in ours.samples[:images]] != [Path(p).name for p, _ in ref.samples[:images]]:
        raise RuntimeError("the two pipelines would read different files")   # both sort class folders and files
    times: dict[str, list[float]] = {"torchvision.io": [], "ImageFolder+PIL": [], device_row: []}
    for _ in range(rounds):
        times["torchvision.io"].append(time_pipeline(ours, images=images, batch=batch, workers=workers))
        times["ImageFolder+PIL"].append(time_pipeline(ref, images=images, batch=batch, workers=workers))
        times[device_row].append(time_device_pipeline(raw, on_device, device, images=images, batch=batch,
                                                      workers=workers))
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(images=min(images, len(ours)), resolution=resolution, batch=batch, workers=workers, rounds=rounds,
                randaugment=randaugment, images_per_s=med, ratio=med["torchvision.io"] / med["ImageFolder+PIL"],
                device_ratio=med[device_row] / med["ImageFolder+PIL"], device=device.type)


def format_result(r: dict[str, Any]) -> str:
    lines = [f"train-input: {r['images']} images per round, {r['resolution']} px crops, batch {r['batch']}, "
             f"{r['workers']} workers, median of {r['rounds']} interleaved rounds"
             + (", RandAugment 2x10 (ours: TF's, reference: torchvision's)" if r["randaugment"] else ""),
             f"{'pipeline':<22} {'images/s':>10}"]
    lines += [f"{k:<22} {v:>10.1f}" for k, v in r["images_per_s"].items()]
    lines.append(f"ratio torchvision.io / ImageFolder+PIL: {r['ratio']:.2f}x")
    note = "" if r["device"] == "cuda" else " (no CUDA: serial CPU decode in the main process, not a GPU figure)"
    lines.append(f"ratio decode=device / ImageFolder+PIL: {r['device_ratio']:.2f}x{note}")
    return "\n".join(lines)
