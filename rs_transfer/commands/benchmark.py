"""``rs-transfer benchmark {video-decode,video-input,train-input,backbone}``: speed, measured side by side."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

HELP = ("measure speed: video decode (decord vs PyAV), video input pipeline (ours vs pytorchvideo), ImageNet "
        "train input (torchvision.io vs ImageFolder+PIL), backbone throughput (ours vs timm/torchvision)")
DESCRIPTION = """\
Benchmarks.

  video-decode   clips/s of the Kinetics training pipeline (open, sample a clip of FRAMES at STRIDE, decode,
                 scale-jitter crop, flip) for each decoder on the same videos, one process, printed side by
                 side. Default data: the generated mini set (8x2 frames, 32 px crops); with --data-root the
                 paper's settings (32x2 frames, 224 px crops).

  video-input    clips/s of the full Kinetics training input pipeline (decode, sample, random-resized crop,
                 flip, collate) through a DataLoader with --workers processes, ours vs pytorchvideo's Kinetics
                 pipeline on the same files; alternating rounds, page cache warmed, median and ratio.

  train-input    images/s of the ImageNet training input pipeline (torchvision.io decode_jpeg + v2 random-resized
                 crop and flip on uint8 tensors) against torchvision ImageFolder + PIL with the same crop/flip,
                 same files, DataLoader workers and batch; interleaved rounds, median, ratio ours/reference.
                 Default data: the generated mini set (tiny images; use --data-root for meaningful numbers).

  backbone       images/s of our ResNetRS against timm's resnetrs* (and resnet200) / torchvision's resnet*
                 with the same weights and the same dropout/drop-path (inference and a training step),
                 interleaved rounds, median, ratio ours/reference, achieved TFLOP/s; on CUDA also
                 channels_last + bf16 autocast and torch.compile, peak memory, and MFU against the GPU's
                 peak dense bf16 TFLOP/s (known GPUs only).

example:
  rs-transfer benchmark video-decode
  rs-transfer benchmark backbone resnetrs50 resnet50 --batch 8 --mode infer train
  rs-transfer benchmark video-decode --data-root ~/data/kinetics400 --videos 64
  rs-transfer benchmark video-input --data-root ~/data/kinetics400 --workers 8 --batch 8
  rs-transfer benchmark train-input --data-root ~/data/imagenet --workers 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = sub.add_parser("video-decode", help="decord vs PyAV clips/s of the Kinetics training pipeline")
    p.add_argument("--data-root", default=None, help="Kinetics-layout folder (default: the generated mini set)")
    p.add_argument("--split", default="train", choices=("train", "val"),
                   help="which split's videos to decode (default train)")
    p.add_argument("--videos", type=int, default=32, help="clips per backend (the first N videos; default 32)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default 32, mini 8)")
    p.add_argument("--stride", type=int, default=2, help="temporal stride (default 2)")
    p.add_argument("--crop", type=int, default=None, help="crop size (default 224, mini 32)")
    p.add_argument("--no-scale-jitter", action="store_true", help="random crop of the short side instead")
    p.add_argument("--backends", nargs="+", default=["decord", "pyav"], choices=("decord", "pyav", "auto"),
                   help="decoders to time, in this order (auto: decord, PyAV where decord fails; default decord pyav)")
    p.add_argument("--warmup", type=int, default=2, help="untimed clips per backend first (default 2)")
    v = sub.add_parser("video-input", help="full Kinetics training input pipeline, ours vs pytorchvideo, clips/s")
    v.add_argument("--data-root", default=None,
                   help="Kinetics-layout folder (train/<class>/*.mp4); default: generated 640x272 h264 clips")
    v.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    v.add_argument("--stride", type=int, default=2, help="temporal stride (default 2)")
    v.add_argument("--crop", type=int, default=224, help="crop size (default 224)")
    v.add_argument("--batch", type=int, default=4, help="clips per batch (default 4)")
    v.add_argument("--workers", type=int, default=2, help="DataLoader worker processes, both sides (default 2)")
    v.add_argument("--rounds", type=int, default=4, help="alternating timing rounds, median reported (default 4)")
    v.add_argument("--fps", type=float, default=25.0,
                   help="frame rate for pytorchvideo's clip duration = frames x stride / fps (default 25)")
    v.add_argument("--pv-decoder", default="pyav", choices=("pyav", "decord"),
                   help="pytorchvideo's decoder (default pyav, its default)")
    t = sub.add_parser("train-input", help="ImageNet training input: torchvision.io pipeline vs ImageFolder+PIL")
    t.add_argument("--data-root", default=None, help="ILSVRC2012 folder (default: the generated mini set)")
    t.add_argument("--images", type=int, default=None, help="images per round (default 512; mini: all 320)")
    t.add_argument("--resolution", type=int, default=None, help="crop size (default 224; mini 32)")
    t.add_argument("--batch", type=int, default=64, help="images per batch, both pipelines (default 64)")
    t.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: one per core)")
    t.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    t.add_argument("--randaugment", action="store_true", help="add RandAugment (2 ops, magnitude 10) to both")
    b = sub.add_parser("backbone", help="our ResNetRS vs the reference implementation, images/s and ratio")
    b.add_argument("models", nargs="+", help="registered 2D model names, e.g. resnetrs50 resnet152")
    b.add_argument("--batch", type=int, default=8, help="images per step, ours and the reference (default 8)")
    b.add_argument("--resolution", type=int, default=None, help="default: each model's published resolution")
    b.add_argument("--mode", nargs="+", default=["infer", "train"], choices=("infer", "train"),
                   help="infer: forward only, no autograd; train: forward + backward + SGD step (default both)")
    b.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    b.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    b.add_argument("--variants", nargs="+", default=None, choices=("fp32", "bf16-cl", "compile"),
                   help="fp32 (eager), bf16-cl (channels_last + bf16 autocast), compile (torch.compile of bf16-cl); "
                        "default: all three on CUDA, fp32 on CPU")
    b.add_argument("--amp", action="store_true", help="same as --variants bf16-cl")


def run_backbone(args: argparse.Namespace) -> int:
    import torch

    from rs_transfer.bench.backbone import benchmark, format_results, reference_name

    from rs_transfer.errors import UserError

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    variants = args.variants or (["bf16-cl"] if args.amp else ["fp32", "bf16-cl", "compile"] if cuda else ["fp32"])
    for m in args.models:  # every name has a reference before anything is timed
        try:
            reference_name(m)
        except ValueError as err:
            raise UserError(str(err)) from None
    results = [benchmark(m, batch=args.batch, resolution=args.resolution, mode=mode, rounds=args.rounds,
                         device=args.device, variant=v) for m in args.models for mode in args.mode for v in variants]
    name = torch.cuda.get_device_name(torch.device(args.device)) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"backbone benchmark on {args.device} ({name}), batch {args.batch}")
    print(format_results(results))
    return 0


def time_backend(root: str, backend: str, *, split: str, videos: int, frames: int, stride: int, crop: int,
                 scale_jitter: bool, warmup: int, seed: int = 0) -> dict[str, float]:
    """Seconds for ``videos`` training samples (same indices and seed for every backend) and the skip count."""
    import torch

    from rs_transfer.tasks._corrupt import SkipLog
    from rs_transfer.video.kinetics import KineticsDataset

    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "skipped.txt")
        ds = KineticsDataset(root, split, mode="train", num_frames=frames, frame_stride=stride, crop_size=crop,
                             train_short_side=max(crop, round(crop * 8 / 7)), scale_jitter=scale_jitter,
                             backend=backend, skip_log=log)
        n = min(videos, len(ds))
        for i in range(min(warmup, n)):
            ds[i]
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        dt = time.perf_counter() - t0
        return {"clips": n, "seconds": dt, "clips_per_s": n / dt, "ms_per_clip": 1000 * dt / n,
                "skipped": len(SkipLog(log).files())}


def run_video_input(args: argparse.Namespace) -> int:
    from rs_transfer.tasks.base import home
    from rs_transfer.video.bench_input import make_bench_videos, run_benchmark

    if args.data_root is None:
        root = make_bench_videos(home() / "cache" / "bench-video-input")   # written once, then reused
    else:
        root = Path(args.data_root).expanduser()
        if not root.is_dir():
            from rs_transfer.errors import UserError

            raise UserError(f"--data-root {root} is not a folder")
    run_benchmark(str(root), frames=args.frames, stride=args.stride, crop=args.crop, batch=args.batch,
                  workers=args.workers, rounds=args.rounds, fps=args.fps, decoder=args.pv_decoder)
    return 0


def run_train_input(args: argparse.Namespace) -> int:
    import os

    from rs_transfer.bench.input import format_result, run_benchmark
    from rs_transfer.errors import UserError

    if args.data_root is None:
        from rs_transfer.tasks.mini import ensure_mini
        from rs_transfer.tasks import get_task

        root, images, res = ensure_mini(get_task("imagenet")), 320, 32
    else:
        root, images, res = Path(args.data_root).expanduser(), 512, 224
        if not (root / "train").is_dir():
            raise UserError(f"--data-root {root} has no train/ folder (ILSVRC2012 layout: train/<wnid>/*.JPEG)")
    print(format_result(run_benchmark(root, resolution=args.resolution or res, images=args.images or images,
                                      batch=args.batch, workers=os.cpu_count() if args.workers is None
                                      else args.workers, rounds=args.rounds, randaugment=args.randaugment)))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "backbone":
        return run_backbone(args)
    if args.benchmark == "train-input":
        return run_train_input(args)
    if args.benchmark == "video-input":
        return run_video_input(args)
    from rs_transfer.errors import UserError
    from rs_transfer.video.decode import decord_available

    if args.data_root is None:
        from rs_transfer.tasks.mini import ensure_mini
        from rs_transfer.tasks import get_task
        from rs_transfer.video.task import MINI

        root, frames, crop = ensure_mini(get_task("kinetics400")), MINI["num_frames"], MINI["crop_size"]
    else:
        root, frames, crop = Path(args.data_root).expanduser(), 32, 224
        if not root.is_dir():
            raise UserError(f"--data-root {root} is not a folder")
    frames, crop = args.frames or frames, args.crop or crop
    backends = [b for b in args.backends if b != "decord" or decord_available()]
    if len(backends) < len(args.backends):
        print("decord is not installed: timing the others only")
    print(f"video-decode: {args.videos} training clips of {frames}x{args.stride} frames, {crop}px "
          f"{'random crop' if args.no_scale_jitter else 'scale-jitter'} crops, {args.split} split of {root}")
    rows = {}
    for b in backends:
        rows[b] = time_backend(str(root), b, split=args.split, videos=args.videos, frames=frames,
                               stride=args.stride, crop=crop, scale_jitter=not args.no_scale_jitter,
                               warmup=args.warmup)
    print(f"{'backend':<8} {'clips/s':>9} {'ms/clip':>9} {'clips':>6} {'skipped':>8}")
    for b, r in rows.items():
        print(f"{b:<8} {r['clips_per_s']:>9.1f} {r['ms_per_clip']:>9.1f} {r['clips']:>6d} {r['skipped']:>8d}")
    if "decord" in rows and "pyav" in rows:
        print(f"decord is {rows['decord']['clips_per_s'] / rows['pyav']['clips_per_s']:.2f}x PyAV's clips/s "
              f"(one process; data-loader workers scale both)")
    return 0
