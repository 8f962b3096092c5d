"""Backbone speed: our ResNetRS against the reference implementation, measured side by side in one run.

The reference is timm's ``resnetrs*`` (and timm's ``resnet200``: torchvision has no ResNet-200) or torchvision's
``resnet50/101/152``, with the SAME weights (loaded through ``load_weights``) and the SAME work: in train mode our
models apply the registered dropout before the classifier and stochastic depth, so the timm reference is built with
the same ``drop_rate`` / ``drop_path_rate`` and ours with timm's per-block ``linear`` drop-path schedule (identical
per-block rates; both implementations multiply by a per-sample mask). A torchvision reference has neither, so ours
is then built without them. Any ratio away from 1.0 is implementation overhead, not architecture or regularisation.

Interleaved rounds (ours, reference, ours, ...) keep slow drifts of a shared machine from favouring either side;
the median of the rounds is reported. Variants: ``fp32`` (eager, contiguous), ``bf16-cl`` (channels_last + bf16
autocast) and ``compile`` (``torch.compile`` of the ``bf16-cl`` model; compilation happens in the untimed warm-up).

Achieved TFLOP/s = FLOPs per image x images/s, FLOPs counted by torch's ``FlopCounterMode`` (multiply-add = 2, the
paper's Table 2 convention; convolutions and matmuls, as MFU counts) for one forward (infer) or forward + backward
(train) step. MFU = achieved / the device's peak dense bf16 tensor TFLOP/s (:data:`PEAK_BF16_TFLOPS`), printed only
for a known CUDA device. Used by ``rs-transfer benchmark backbone``.
"""
from __future__ import annotations

import re
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

VARIANTS: dict[str, dict[str, bool]] = {
    "fp32": dict(channels_last=False, bf16=False, compile=False),
    "bf16-cl": dict(channels_last=True, bf16=True, compile=False),
    "compile": dict(channels_last=True, bf16=True, compile=True),
}

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name() in this order (specific names first: "H100 PCIe" before "H100", "L40S" before "L4").
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bGH200\b", 989.0),
    (r"\bH200\b", 989.0),                 # H200 SXM
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH100\b", 989.0),                 # H100 SXM ("NVIDIA H100 80GB HBM3")
    (r"\bB200\b", 2250.0),
    (r"\bA100\b", 312.0),                 # SXM and PCIe
    (r"\bL40S\b", 362.0),
    (r"\bL40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),                  # not A10G (no published figure)
)


def peak_bf16_tflops(device_name: str | None) -> float | None:
    """The table's peak for a CUDA device name; None (MFU not printed) for unknown devices and CPUs."""
    for pattern, peak in PEAK_BF16_TFLOPS:
        if device_name and re.search(pattern, device_name):
            return peak
    return None


@dataclass
class BenchResult:
    name: str
    mode: str                 # "infer" | "train"
    variant: str              # a key of VARIANTS
    ours_per_s: float         # images per second
    ref_per_s: float
    ours_peak_mib: float | None
    ref_peak_mib: float | None
    reference: str = ""       # e.g. "timm resnetrs200 (drop_rate 0.25, drop_path_rate 0.1, as ours)"
    flops_per_image: float | None = None   # of one step of this mode (forward, or forward + backward)
    peak_tflops: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.ref_per_s

    def tflops(self, per_s: float) -> float | None:
        return None if self.flops_per_image is None else self.flops_per_image * per_s / 1e12

    def mfu(self, per_s: float) -> float | None:
        t = self.tflops(per_s)
        return None if t is None or not self.peak_tflops else t / self.peak_tflops


def _rates(name: str) -> tuple[float, float]:
    from rs_transfer.backbones import get_spec

    kw = get_spec(name).kwargs
    return float(kw.get("drop_rate", 0.0) or 0.0), float(kw.get("drop_path_rate", 0.0) or 0.0)


def reference_name(name: str) -> tuple[str, str]:
    """(library, model name) of the reference for a registered 2D model: timm ``resnetrs<depth>`` for ResNet-RS
    (``resnetrs350_i320`` is timm's ``resnetrs350`` architecture), torchvision ``resnet<depth>`` where it exists,
    else timm's (``resnet200``: torchvision has none; timm's has torchvision's layout and key names)."""
    import torchvision

    from rs_transfer.backbones import get_spec

    spec = get_spec(name)
    depth = spec.kwargs.get("depth")
    if spec.family not in ("resnet", "resnetrs") or not depth or spec.kwargs.get("layers"):
        raise ValueError(f"{name}: no reference implementation to compare with (benchmark backbone takes the "
                         "registered 2D ResNet / ResNet-RS depths)")
    if spec.family == "resnetrs":
        return "timm", f"resnetrs{depth}"
    return ("torchvision", f"resnet{depth}") if hasattr(torchvision.models, f"resnet{depth}") else \
        ("timm", f"resnet{depth}")


def reference_model(name: str, *, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> tuple[nn.Module, str]:
    """The published implementation our model must match, and a label saying which (:func:`reference_name`).
    timm references get the given regularisation; torchvision has none (callers then build ours without it)."""
    lib, ref = reference_name(name)
    if lib == "timm":
        import timm

        if ref not in timm.list_models(ref):
            raise ValueError(f"{name}: timm {timm.__version__} has no {ref} to compare with")
        reg = f"drop_rate {drop_rate:g}, drop_path_rate {drop_path_rate:g}, as ours" if drop_rate or drop_path_rate \
            else "no dropout/drop-path, as ours"
        return (timm.create_model(ref, pretrained=False, drop_rate=drop_rate, drop_path_rate=drop_path_rate),
                f"timm {ref} ({reg})")
    import torchvision

    return getattr(torchvision.models, ref)(), f"torchvision {ref} (ours without dropout/drop-path, like it)"


def build_pair(name: str) -> tuple[nn.Module, nn.Module, str]:
    """(ours, reference, label) doing the same work, with the reference's weights copied into ours."""
    import tempfile
    from pathlib import Path

    from rs_transfer.backbones import create_model
    from rs_transfer.weights import load_weights

    drop, drop_path = _rates(name)
    if reference_name(name)[0] == "timm":
        ref, label = reference_model(name, drop_rate=drop, drop_path_rate=drop_path)
        ours = create_model(name, **({"drop_path_schedule": "linear"} if drop_path else {}))  # timm's rates
    else:
        ref, label = reference_model(name)
        ours = create_model(name, drop_rate=0.0, drop_path_rate=0.0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():  # same weights in both
        # random weights only timed, never evaluated: the loader's "which input normalisation?" warning is moot
        warnings.simplefilter("ignore")
        torch.save(ref.state_dict(), Path(tmp) / "ref.pth")
        load_weights(ours, Path(tmp) / "ref.pth")
    return ours, ref, label


def _loss_step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).float().logsumexp(1).mean().backward()


def step_flops(model: nn.Module, resolution: int, mode: str, device: torch.device) -> float:
    """FLOPs per image of one step (forward; train: forward + backward), counted at batch 2 (BatchNorm in train
    mode needs more than one value per channel) and divided by 2."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train(mode == "train")
    x = torch.randn(2, 3, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter:
        if mode == "train":
            _loss_step(model, x)
        else:
            with torch.no_grad():
                model(x)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def _step_fn(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(x)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            _loss_step(model, x)
            opt.step()
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(name: str, *, batch: int = 8, resolution: int | None = None, mode: str = "infer",
              rounds: int = 5, iters: int = 3, device: str = "cpu", variant: str = "fp32",
              warmup: int | None = None) -> BenchResult:
    from rs_transfer.backbones import get_spec

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    dev = torch.device(device)
    res = resolution or get_spec(name).resolution
    ours, ref, label = build_pair(name)
    models = {"ours": ours.to(dev), "ref": ref.to(dev)}
    flops = step_flops(models["ours"], res, mode, dev)   # same architecture: one count serves both
    x = torch.randn(batch, 3, res, res, device=dev)
    if v["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    if v["compile"]:
        models = {k: torch.compile(m) for k, m in models.items()}  # type: ignore[misc]
    steps = {k: _step_fn(m, x, mode) for k, m in models.items()}
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    peaks: dict[str, float | None] = {"ours": None, "ref": None}
    # compile: the first calls compile forward (and backward); later ones may still specialise, so warm up twice
    warmup = warmup if warmup is not None else (3 if v["compile"] else 1)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=v["bf16"]):
        for key in steps:  # warm-up (allocator, cudnn autotune, compilation)
            for _ in range(warmup):
                steps[key]()
        for _ in range(rounds):
            for key, step in steps.items():
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(iters):
                    step()
                _sync(dev)
                times[key].append((time.perf_counter() - t0) / iters)
                if dev.type == "cuda":
                    peaks[key] = torch.cuda.max_memory_allocated(dev) / 2**20
    per_s = {k: batch / statistics.median(t) for k, t in times.items()}
    peak = peak_bf16_tflops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    return BenchResult(name, mode, variant, per_s["ours"], per_s["ref"], peaks["ours"], peaks["ref"], label, flops,
                       peak)


def format_results(results: list[BenchResult]) -> str:
    with_mfu = any(r.peak_tflops for r in results)
    head = (f"{'model':<14} {'mode':<6} {'variant':<8} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>6} "
            f"{'ours TF/s':>10} {'ref TF/s':>9}" + (f" {'ours MFU':>9} {'ref MFU':>8}" if with_mfu else "")
            + f" {'ours MiB':>9} {'ref MiB':>8}")
    lines = [head]
    for r in results:
        tf = [r.tflops(r.ours_per_s), r.tflops(r.ref_per_s)]
        row = (f"{r.name:<14} {r.mode:<6} {r.variant:<8} {r.ours_per_s:>11.2f} {r.ref_per_s:>10.2f} {r.ratio:>6.2f} "
               + " ".join(f"{t:>{w}.3f}" if t is not None else f"{'-':>{w}}" for t, w in zip(tf, (10, 9))))
        if with_mfu:
            mfu = [r.mfu(r.ours_per_s), r.mfu(r.ref_per_s)]
            row += " " + " ".join(f"{m:>{w}.1%}" if m is not None else f"{'-':>{w}}" for m, w in zip(mfu, (9, 8)))
        row += (f" {r.ours_peak_mib:>9.0f} {r.ref_peak_mib:>8.0f}" if r.ours_peak_mib is not None
                else f" {'-':>9} {'-':>8}")
        lines.append(row)
    refs = dict.fromkeys(f"  {r.name}: reference = {r.reference}" for r in results if r.reference)
    lines += list(refs)
    lines.append("  TF/s = FLOPs per image (multiply-add = 2; train = forward + backward) x img/s"
                 + (f"; MFU against {results[0].peak_tflops:g} TFLOP/s, the device's peak dense bf16"
                    if with_mfu else "; MFU: only for a known CUDA device"))
    return "\n".join(lines)
