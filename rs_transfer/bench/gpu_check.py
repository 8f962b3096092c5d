"""The one prepared GPU check (``tools/gpu_check.sh``): every CUDA path of the suite, run once, ONE table.

Why one script: a GPU machine is lent for minutes, so everything that has never run on CUDA (bf16 AMP, channels_last,
``torch.compile``, nvJPEG ``decode=device``, NCCL, preemption on CUDA, the benchmarks' MFU) must run in one command
and say everything in one go. Each check is a subprocess of the real CLI (a crash or a CUDA error in one cannot take
the others down) with its full log in ``OUT/logs/``; a failure is printed loudly the moment it happens, the remaining
checks still run, and the exit status is non-zero at the end if any failed.

Every check reads its figures from what the CLI writes (``results.json``, ``benchmark ... --json``), never from
console text, and checks that the CUDA path really was taken (device, AMP, compile, world size, NCCL): a run that
silently fell back to fp32 or gloo would otherwise pass. :mod:`rs_transfer.bench.harness` runs them under a time
budget (a check that would start after it is spent is ``skipped: time budget``), prints the table with issue 26's
target figures (information, not failures: by how much each falls short) and this module writes
``OUT/gpu_check.json`` and ``OUT/table.txt`` atomically.

Order: correctness runs first (they share the GPU, ``parallel``), then the timings alone: resnetrs152's three
variants (the figures issue 26 section 3 names), ImageNet and Kinetics input, resnetrs50, and resnetrs50's compile
last, the first line a slower GPU drops when the budget runs out.

Without CUDA every CUDA-only line is ``skipped: no CUDA``; ``--cpu-smoke`` instead runs the checks that have a CPU
form with tiny models (the machinery: subprocesses, signals, JSON figures), so the script is tested before a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rs_transfer.bench.harness import (Check, Context, Outcome, failed, format_table, run_all, stop_group,
                                      targets)

# Tasks of `rs-transfer list tasks` and the backbone each mini run uses (kinetics400 takes a 3D model).
RUN_TASKS = {"cifar100": "resnetrs50", "voc-det": "resnetrs50", "voc-seg": "resnetrs50", "ade20k": "resnetrs50",
             "nyu-depth": "resnetrs50", "imagenet": "resnetrs50", "kinetics400": "resnetrs3d50"}
TINY = ["--backbone-options", "layers=[1,1,1,1]", "width=0.25"]     # --cpu-smoke: seconds per run on a CPU
BENCH_BATCH, BENCH_RES, BENCH_ROUNDS = 128, 224, 3                   # the 224 px train step


def _results(wd: Path) -> dict[str, Any] | None:
    path = wd / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _cuda_problems(ctx: Context, res: dict[str, Any], *, amp: bool = True) -> list[str]:
    """What shows a run did NOT take the CUDA path it was asked for (on CUDA only; --cpu-smoke runs fp32 on CPU)."""
    if not ctx.cuda:
        return []
    out = []
    if not str(res.get("device", "")).startswith("cuda"):
        out.append(f"ran on {res.get('device')}")
    if amp and res.get("amp") != "bf16":
        out.append(f"amp is {res.get('amp')!r}, not bf16")
    return out


def _nonfinite_weights(path: str | None) -> list[str]:
    """The trained weights hold no NaN/inf: a bf16 step that produced NaN still ends with a (chance) top-1."""
    if not path or not Path(path).is_file():
        return []
    from safetensors.torch import load_file

    bad = [k for k, t in load_file(path).items() if t.is_floating_point() and not bool(t.isfinite().all())]
    return [f"non-finite trained weights: {', '.join(bad[:3])}" + (f" (+{len(bad) - 3})" if len(bad) > 3 else "")
            ] if bad else []


def _run_outcome(ctx: Context, res: dict[str, Any] | None, proc: Any, extra: list[str] | None = None) -> Outcome:
    if proc.rc != 0 or res is None:
        return failed(proc, "no results.json; " if proc.rc == 0 else "")
    problems = _cuda_problems(ctx, res) + (extra or [])
    if not math.isfinite(float(res.get("value", float("nan")))):
        problems.append(f"{res.get('metric')} is {res.get('value')}")
    problems += _nonfinite_weights(res.get("final_weights"))
    ips = res.get("train_images_per_s") or res.get("throughput_samples_per_s")
    figs = {k: res.get(k) for k in ("metric", "value", "amp", "compile", "world_size", "device", "wall_time_s",
                                    "train_time_s", "resumed_from")} | {"train_samples_per_s": ips}
    fig = (f"{res['metric']} {res['value']:.3g}, " + (f"{ips:.0f} samples/s, " if ips else "")
           + f"{res.get('wall_time_s', 0):.0f} s wall")
    if problems:
        return Outcome("fail", fig, figs, note="; ".join(problems) + f" ({fig})", log=str(proc.log))
    return Outcome("pass", fig, figs, log=str(proc.log))


def mini_run(task: str, *, opts: tuple[str, ...] = (), tag: str = "bf16", cap: float = 300,
             expect: Any = None) -> Any:
    """``rs-transfer run --task TASK --preset mini --cfg-options amp=bf16 OPTS``; ``expect(res)`` lists problems."""
    def run(ctx: Context) -> Outcome:
        wd = ctx.out / "runs" / f"{task}-{tag}"
        argv = ctx.cli("run", "--task", task, "--backbone", RUN_TASKS[task], "--preset", "mini",
                       *(TINY if ctx.smoke else []), "--cfg-options", "amp=bf16", *opts, "--work-dir", str(wd))
        proc = ctx.command(f"run-{task}-{tag}", argv, cap=cap)
        res = _results(wd)
        return _run_outcome(ctx, res, proc, expect(ctx, res) if expect and res else None)
    return run


def _compiled(ctx: Context, res: dict[str, Any]) -> list[str]:
    return [] if res.get("compile") else [f"compile recorded as {res.get('compile')!r}"]


def _device_decode(ctx: Context, res: dict[str, Any]) -> list[str]:
    pre = json.dumps(res.get("config", {}).get("model", {}).get("data_preprocessor", {}))
    return [] if "device_transform" in pre and '"resolution"' in pre else ["the preprocessor got no device_transform"]


def nccl(ctx: Context) -> Outcome:
    """A 2-process NCCL run of the cifar100 mini task with 2+ GPUs, else a 1-process NCCL group (torchrun)."""
    n = 2 if ctx.gpus >= 2 else 1
    wd = ctx.out / "runs" / f"cifar100-nccl{n}"
    argv = [ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m",
            "rs_transfer.cli", "run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
            "--cfg-options", "amp=bf16", "--launcher", "pytorch", "--work-dir", str(wd)]
    proc = ctx.command(f"nccl-{n}proc", argv, cap=300)
    res = _results(wd)
    extra = []
    if res is not None:
        backend = res.get("config", {}).get("env_cfg", {}).get("dist_cfg", {}).get("backend")
        extra = ([] if res.get("world_size") == n else [f"world_size {res.get('world_size')}, expected {n}"]) + \
                ([] if backend == "nccl" else [f"backend {backend!r}, not nccl"])
    out = _run_outcome(ctx, res, proc, extra)
    out.figure = f"{n} process(es): {out.figure}"
    return out


def preempt(ctx: Context) -> Outcome:
    """SIGTERM to a training run (as slurm's preemption notice), then the printed ``--resume`` command: the first
    stops at an iteration boundary with a checkpoint, the second resumes from that iteration and finishes."""
    iters = 150 if ctx.smoke else 400
    wd = ctx.out / "runs" / "cifar100-preempt"
    args = ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--seed", "1",
            *(TINY if ctx.smoke else []), "--cfg-options", "amp=bf16", "log_interval=1",
            f"train_cfg.max_iters={iters}", "--work-dir", str(wd)]
    proc, log = ctx.start("preempt-1-sigterm", ctx.cli(*args))
    seen = re.compile(rf"Iter\(train\) \[\s*\d+/{iters}\]")
    deadline = time.monotonic() + min(240.0, max(5.0, ctx.remaining()))
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(wd.glob("*/*.log"))
        if logs and seen.search(logs[0].read_text(errors="replace")):
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return Outcome("fail", note=f"the run ended (exit {proc.returncode}) before the signal could be sent",
                       log=str(log))
    if time.monotonic() >= deadline:
        stop_group(proc)
        return Outcome("fail", note="no training iteration within 240 s", log=str(log))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return Outcome("fail", note="still running 180 s after SIGTERM", log=str(log))
    text = log.read_text(errors="replace")
    stopped = re.search(rf"stopped by SIGTERM after iteration (\d+)/{iters}; checkpoint (\S+)", text)
    resume = re.search(r"resume with: (.+)", text)
    if proc.returncode != 128 + signal.SIGTERM or not stopped or not resume:
        return Outcome("fail", note=f"exit {proc.returncode}, expected {128 + signal.SIGTERM} with 'stopped by "
                       "SIGTERM after iteration N' and a 'resume with:' line", log=str(log))
    at = int(stopped.group(1))
    words = shlex.split(resume.group(1).strip())
    if words[:2] != ["rs-transfer", "run"] or words[-1] != "--resume":
        return Outcome("fail", note=f"unexpected resume command {resume.group(1)!r}", log=str(log))
    done = ctx.command("preempt-2-resume", ctx.cli(*words[1:]), cap=300)
    res = _results(wd)
    extra = [] if res is None or res.get("resumed_from") == at else \
        [f"resumed_from {res.get('resumed_from')}, expected {at}"]
    out = _run_outcome(ctx, res, done, extra)
    out.figure = f"SIGTERM after iteration {at}/{iters}, resumed: {out.figure}"
    return out


def backbone(model: str, variant: str) -> Any:
    """``rs-transfer benchmark backbone MODEL --mode train --variants VARIANT`` (224 px, batch 128) vs timm."""
    def run(ctx: Context) -> Outcome:
        js = ctx.out / "bench" / f"backbone-{model}-{variant}.json"
        size = ["--batch", "2", "--resolution", "32", "--rounds", "1", "--device", "cpu"] if ctx.smoke else \
            ["--batch", str(BENCH_BATCH), "--resolution", str(BENCH_RES), "--rounds", str(BENCH_ROUNDS)]
        proc = ctx.command(f"bench-{model}-{variant}", ctx.cli("benchmark", "backbone", model, "--mode", "train",
                                                               "--variants", variant, *size, "--json", str(js)),
                           cap=420 if variant == "compile" else 180)
        if proc.rc != 0 or not js.is_file():
            return failed(proc)
        r = json.loads(js.read_text())["results"][0]
        if ctx.peak_tflops and r.get("ours_tflops") is not None and r.get("peak_tflops") is None:
            r["peak_tflops"] = ctx.peak_tflops              # a peak given on the command line (unlisted GPU)
            r["ours_mfu"], r["ref_mfu"] = (r["ours_tflops"] / ctx.peak_tflops, r["ref_tflops"] / ctx.peak_tflops)
        mfu = f", MFU {r['ours_mfu']:.1%} (timm {r['ref_mfu']:.1%})" if r.get("ours_mfu") is not None else ""
        tf = f", {r['ours_tflops']:.1f} TFLOP/s" if r.get("ours_tflops") is not None else ""
        fig = f"ours {r['ours_per_s']:.1f} img/s, ref {r['ref_per_s']:.1f}, {r['ratio']:.2f}x{tf}{mfu}"
        return Outcome("pass", fig, r, log=str(proc.log))
    return run


def make_synthetic_imagenet(root: Path, *, images: int = 512, classes: int = 8, size: tuple[int, int] = (500, 375),
                            seed: int = 0) -> Path:
    """ILSVRC2012-layout JPEGs at ImageNet's typical 500x375 (quality 90): smooth colour fields with grain, ~97 KB
    each (ImageNet's train JPEGs average ~110 KB), so decoding costs about what a photograph's does. Written once (a
    marker file says complete); 512 take ~17 s on one core, part of the check's time."""
    import numpy as np
    from PIL import Image

    marker = root / "SYNTHETIC.json"
    if marker.is_file():
        return root
    rng = np.random.default_rng(seed)
    w, h = size
    # train/ is what is timed; a small val/ in class folders makes it a valid ImageNet root for the data check
    for split, n in (("train", images), ("val", 2 * classes)):
        for i in range(n):
            folder = root / split / f"n{1000000 + i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
            arr = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 20, (h, w, 3)).astype(np.int16)
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.JPEG", quality=90)
    marker.write_text(json.dumps({"images": images, "classes": classes, "size": list(size)}))
    return root


def train_input(ctx: Context) -> Outcome:
    """``benchmark train-input`` with its decode=device row (nvJPEG on CUDA); synthetic 500x375 JPEGs unless
    ``--imagenet-root`` names a real ImageNet."""
    js = ctx.out / "bench" / "train-input.json"
    if ctx.imagenet_root:
        root, what = ctx.imagenet_root, "ImageNet"
    else:
        n, size = (32, (64, 48)) if ctx.smoke else (512, (500, 375))
        root, what = make_synthetic_imagenet(ctx.out / "imagenet-synthetic", images=n, size=size), "synthetic JPEGs"
    size = ["--images", "32", "--resolution", "32", "--batch", "8", "--rounds", "1", "--workers", "1"] if ctx.smoke \
        else ["--images", "512", "--resolution", "224", "--batch", "128", "--rounds", "2"]
    proc = ctx.command("train-input", ctx.cli("benchmark", "train-input", "--data-root", str(root), *size,
                                              "--json", str(js)), cap=300)
    if proc.rc != 0 or not js.is_file():
        return failed(proc)
    r = json.loads(js.read_text())
    per = r["images_per_s"]
    dev = next(k for k in per if k.startswith("decode=device"))
    fig = f"{dev} {per[dev]:.0f} img/s, torchvision.io {per['torchvision.io']:.0f}, PIL " \
          f"{per['ImageFolder+PIL']:.0f} ({r['workers']} workers, {what})"
    if ctx.cuda and r.get("device") != "cuda":
        return Outcome("fail", fig, r, note=f"the device row ran on {r.get('device')}", log=str(proc.log))
    return Outcome("pass", fig, r, log=str(proc.log))


def video_input(ctx: Context) -> Outcome:
    """``benchmark video-input``: ours vs pytorchvideo on the generated 640x272 h264 clips, 32x2 frames, 224 px."""
    js = ctx.out / "bench" / "video-input.json"
    workers = str(max(1, min(8, (os.cpu_count() or 2) // 2)))
    proc = ctx.command("video-input", ctx.cli("benchmark", "video-input", "--workers", workers, "--rounds", "3",
                                              "--json", str(js)), cap=300)
    if proc.rc != 0 or not js.is_file():
        return failed(proc)
    r = json.loads(js.read_text())
    c = r["clips_per_s"]
    fig = f"ours {c['ours']:.1f} clips/s" + (f", pytorchvideo {c['pytorchvideo']:.1f}, {c['ratio']:.2f}x"
                                              if "ratio" in c else " (pytorchvideo missing)") + f", {workers} workers"
    return Outcome("pass", fig, r, log=str(proc.log))


def all_checks() -> list[Check]:
    runs = [Check(f"run-{t}", f"run {t} mini, bf16 AMP", mini_run(t), parallel=True, cpu_smoke=t == "cifar100")
            for t in ("kinetics400", "voc-det", "voc-seg", "ade20k", "nyu-depth", "imagenet", "cifar100")]
    return [
        Check("run-compile", "run cifar100 mini, bf16 AMP + compile=True",
              mini_run("cifar100", opts=("compile=True",), tag="compile", cap=420, expect=_compiled), parallel=True),
        Check("preempt", "SIGTERM preemption + --resume, cifar100", preempt, parallel=True, cpu_smoke=True),
        *runs,
        Check("run-decode-device", "run imagenet mini, bf16 AMP + decode=device",
              mini_run("imagenet", opts=("decode=device",), tag="decode-device", expect=_device_decode),
              parallel=True),
        Check("nccl", "NCCL run (torchrun --launcher pytorch), cifar100", nccl, parallel=True),
        Check("bench-resnetrs152-fp32", "backbone resnetrs152 train, fp32 eager", backbone("resnetrs152", "fp32")),
        Check("bench-resnetrs152-bf16-cl", "backbone resnetrs152 train, channels_last+bf16",
              backbone("resnetrs152", "bf16-cl")),
        Check("bench-resnetrs152-compile", "backbone resnetrs152 train, compile (cl+bf16)",
              backbone("resnetrs152", "compile")),
        Check("train-input", "benchmark train-input (+ decode=device row)", train_input, cpu_smoke=True),
        Check("video-input", "benchmark video-input (ours vs pytorchvideo)", video_input),
        Check("bench-resnetrs50-fp32", "backbone resnetrs50 train, fp32 eager", backbone("resnetrs50", "fp32"),
              cpu_smoke=True),
        Check("bench-resnetrs50-bf16-cl", "backbone resnetrs50 train, channels_last+bf16",
              backbone("resnetrs50", "bf16-cl")),
        Check("bench-resnetrs50-compile", "backbone resnetrs50 train, compile (cl+bf16)",
              backbone("resnetrs50", "compile")),
    ]


def machine(peak: float | None) -> tuple[bool, int, str | None, str, float | None, str]:
    """(cuda, gpus, device name, header line, peak dense bf16 TFLOP/s, where the peak comes from)."""
    import torch

    from rs_transfer.bench.backbone import PEAK_SOURCE, peak_bf16_tflops

    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    name = torch.cuda.get_device_name(0) if cuda else None
    source = "--peak-tflops" if peak else PEAK_SOURCE
    peak = peak or peak_bf16_tflops(name)
    where = (f"{gpus}x {name}" if cuda else f"no CUDA (cpu, {os.cpu_count()} cores)")
    peak_text = (f"peak dense bf16 {peak:g} TFLOP/s ({source})" if peak else
                 "peak dense bf16: unknown for this device (pass --peak-tflops; MFU not computed)" if cuda else "")
    header = (f"GPU check: {where}, torch {torch.__version__}, CUDA {torch.version.cuda}"
              + (f", {peak_text}" if peak_text else ""))
    return cuda, gpus, name, header, peak, source


def main(argv: list[str] | None = None) -> int:
    from rs_transfer.atomic import write_json_atomic, write_text_atomic

    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="folder for logs, runs, JSON and table (default gpu-check-<time>)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all checks (default 480 = 8 min)")
    p.add_argument("--jobs", type=int, default=4, help="correctness runs sharing the GPU at once (default 4)")
    p.add_argument("--only", nargs="+", default=None, help="check keys to run (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="without CUDA: run the checks that have a CPU form, with tiny models (tests the script)")
    p.add_argument("--imagenet-root", default=None, help="ILSVRC2012 folder for train-input (default: synthetic)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for a GPU not in the table")
    p.add_argument("--python", default=sys.executable, help="interpreter with rs_transfer installed")
    args = p.parse_args(argv)
    checks = all_checks()
    if args.list:
        print("\n".join(f"{c.key:<28} {c.what}" for c in checks))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {c.key for c in checks})
        if unknown:
            p.error(f"unknown check(s) {', '.join(unknown)}; --list shows them")
        checks = [c for c in checks if c.key in args.only]
    out = Path(args.out or f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    cuda, gpus, name, header, peak, source = machine(args.peak_tflops)
    print(header, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RS_TRANSFER_HOME": str(out / "home"),
           "TORCHINDUCTOR_CACHE_DIR": str(out / "inductor-cache")}
    ctx = Context(out=out, python=args.python, env=env, deadline=t_start + args.budget, cuda=cuda, gpus=gpus,
                  device_name=name, smoke=args.cpu_smoke and not cuda,
                  imagenet_root=Path(args.imagenet_root).expanduser() if args.imagenet_root else None,
                  peak_tflops=peak)
    outcomes = run_all(checks, ctx, args.jobs)
    tgts = targets(outcomes)
    table = format_table(checks, outcomes, tgts, header)
    print("\n" + table, flush=True)
    write_text_atomic(out / "table.txt", table + "\n")
    n_fail = sum(o.status == "fail" for o in outcomes.values())
    write_json_atomic(out / "gpu_check.json", {
        "header": header, "cuda": cuda, "gpus": gpus, "device_name": name, "peak_bf16_tflops": peak,
        "peak_source": source if peak else None, "budget_s": args.budget, "cpu_smoke": ctx.smoke,
        "seconds": round(time.monotonic() - t_start, 1), "failed": n_fail,
        "checks": [{"key": c.key, "what": c.what, **asdict(outcomes[c.key])} for c in checks],
        "targets": [{**asdict(t), "figure": t.figure()} for t in tgts]})
    print(f"logs, runs and gpu_check.json in {out}", flush=True)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
