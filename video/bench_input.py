"""``rs-transfer benchmark video-input``: clips/s of the full Kinetics TRAINING input pipeline (decode, sample,
augment, collate, through a DataLoader with worker processes), ours against pytorchvideo's Kinetics pipeline, on
the same files, cores and workers.

Both sides do the same work per clip: one random clip of ``frames`` frames at ``stride`` (pytorchvideo: a random
clip of ``frames * stride / fps`` seconds, then ``UniformTemporalSubsample(frames)``), a random-resized crop
(area 0.08-1, aspect 0.5-2) to ``crop`` px and a horizontal flip, batched by the DataLoader. Each side keeps its
own output format (ours: uint8, normalised on the device; pytorchvideo: float32 as its decoders return). Rounds
alternate the order (ours, pytorchvideo, pytorchvideo, ours, ...) so that neither always runs on a cooler machine,
the page cache is warmed by reading every file before the first round, and the clock starts at the first batch
(worker start-up is not counted for either side). The result is the median over rounds and the ratio.

pytorchvideo 0.1.5 imports ``torchvision.transforms.functional_tensor``, which torchvision >= 0.17 renamed to
``_functional_tensor`` (STACK.md); the benchmark aliases the module for pytorchvideo's sake, in its own process.
"""
from __future__ import annotations

import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = ("pytorchvideo is not installed in this environment: `pip install pytorchvideo==0.1.5` (it is in "
                "requirements/lock.txt, so `bash tools/setup.sh` installs it); timing ours only")


def pytorchvideo_available() -> bool:
    try:
        importlib.import_module("pytorchvideo.data")
    except ImportError:
        return False
    return True


def _pytorchvideo_transforms() -> Any:
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:  # torchvision >= 0.17: the module went private; pytorchvideo 0.1.5 still imports it
        import torchvision.transforms._functional_tensor as ft

        sys.modules["torchvision.transforms.functional_tensor"] = ft
    return importlib.import_module("pytorchvideo.transforms")


def warm_page_cache(paths: list[Path]) -> int:
    """Read every file once (both pipelines then decode from memory, not from disk); returns the bytes read."""
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    return total


def ours_loader(root: str, *, frames: int, stride: int, crop: int, batch: int, workers: int, seed: int) -> Any:
    import torch
    from mmengine.dataset import default_collate

    from .kinetics import KineticsDataset
    from .sampler import ResumableSampler

    ds = KineticsDataset(root, "train", mode="train", num_frames=frames, frame_stride=stride, crop_size=crop,
                         train_short_side=max(crop, round(crop * 8 / 7)), scale_jitter=True, flip=True)
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers,
                                       sampler=ResumableSampler(ds, shuffle=True, seed=seed),
                                       collate_fn=default_collate)


def pytorchvideo_loader(root: str, *, frames: int, stride: int, crop: int, batch: int, workers: int,
                        fps: float, decoder: str) -> Any:
    import torch
    from pytorchvideo.data import Kinetics, make_clip_sampler
    from torchvision.transforms import Compose, RandomHorizontalFlip

    T = _pytorchvideo_transforms()
    transform = T.ApplyTransformToKey(key="video", transform=Compose([
        T.UniformTemporalSubsample(frames),
        T.RandomResizedCrop(crop, crop, scale=(0.08, 1.0), aspect_ratio=(0.5, 2.0)),
        RandomHorizontalFlip(p=0.5),
    ]))
    ds = Kinetics(data_path=str(Path(root) / "train"), clip_sampler=make_clip_sampler("random", frames * stride / fps),
                  decode_audio=False, decoder=decoder, transform=transform)

    def collate(items: list[dict]) -> dict:
        return {"video": torch.stack([i["video"] for i in items]), "label": torch.tensor([i["label"] for i in items])}

    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate)


def time_loader(loader: Any) -> dict[str, float]:
    """Clips/s from the first batch to the last (start-up excluded)."""
    it = iter(loader)
    first = next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += len(b["label"] if "label" in b else b["data_samples"]["label"])
    dt = time.perf_counter() - t0
    first_n = len(first["label"] if "label" in first else first["data_samples"]["label"])
    return {"clips": n, "seconds": dt, "clips_per_s": n / dt if dt > 0 and n else float("nan"),
            "first_batch": first_n}


def run_benchmark(root: str, *, frames: int, stride: int, crop: int, batch: int, workers: int, rounds: int,
                  fps: float, decoder: str, log=print) -> dict[str, Any]:
    from .kinetics import scan_split

    records = scan_split(root, "train").records
    if len(records) < 2 * batch:
        from rs_transfer.errors import UserError

        raise UserError(f"{root}: {len(records)} training videos; the benchmark needs at least 2 batches "
                        f"({2 * batch}); lower --batch or add videos")
    nbytes = warm_page_cache([r.path for r in records])
    log(f"video-input: {len(records)} videos ({nbytes / 1e6:.1f} MB, page cache warmed), {frames}x{stride} frames, "
        f"{crop}px random-resized crop + flip, batch {batch}, {workers} workers, {rounds} rounds")
    have_pv = pytorchvideo_available()
    if not have_pv:
        log(INSTALL_HINT)
    times: dict[str, list[float]] = {"ours": [], "pytorchvideo": []}
    for r in range(rounds):
        order = ["ours", "pytorchvideo"] if r % 2 == 0 else ["pytorchvideo", "ours"]
        for side in order:
            if side == "pytorchvideo" and not have_pv:
                continue
            loader = (ours_loader(root, frames=frames, stride=stride, crop=crop, batch=batch, workers=workers,
                                  seed=r) if side == "ours" else
                      pytorchvideo_loader(root, frames=frames, stride=stride, crop=crop, batch=batch,
                                          workers=workers, fps=fps, decoder=decoder))
            res = time_loader(loader)
            times[side].append(res["clips_per_s"])
            log(f"  round {r + 1} {side:<12} {res['clips_per_s']:8.2f} clips/s ({res['clips']} clips, "
                f"{res['seconds']:.2f} s)")
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items() if v}
    if "pytorchvideo" in out:
        out["ratio"] = out["ours"] / out["pytorchvideo"]
        log(f"median clips/s: ours {out['ours']:.2f}, pytorchvideo ({decoder}) {out['pytorchvideo']:.2f}; "
            f"ratio ours/pytorchvideo = {out['ratio']:.2f}x")
    else:
        log(f"median clips/s: ours {out['ours']:.2f} (no ratio: pytorchvideo missing)")
    return out


def make_bench_videos(root: str | Path, *, videos: int = 32, frames: int = 150, height: int = 272,
                      width: int = 640, fps: int = 25, seed: int = 0) -> Path:
    """A Kinetics-layout folder of real h264 files at a typical Kinetics size (640x272, 6 s at 25 fps), for when no
    Kinetics copy is at hand; the content is the mini set's moving textures, so it compresses like video."""
    import numpy as np

    from . import mini

    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(videos):
        label = mini.CLASSES[i % len(mini.CLASSES)]
        path = root / "train" / label / f"{label}_{i:03d}.mp4"
        if not path.exists():
            mini.write_mp4(path, mini.draw_video(rng, label, frames, height, width), fps=fps)
    return root
