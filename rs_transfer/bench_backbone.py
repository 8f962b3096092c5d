"""Backbone speed: our ResNetRS against the reference implementation, measured side by side in one run.

The reference is timm's ``resnetrs*`` / torchvision's ``resnet*`` with the SAME weights (loaded through
``load_weights``), so any ratio away from 1.0 is implementation overhead, not architecture. Interleaved rounds
(ours, reference, ours, ...) keep slow drifts of a shared machine from favouring either side; the median of the
rounds is reported. Used by ``rs-transfer benchmark backbone``.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BenchResult:
    name: str
    mode: str                 # "infer" | "train"
    ours_per_s: float         # images (or clips) per second
    ref_per_s: float
    ours_peak_mib: float | None
    ref_peak_mib: float | None

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.ref_per_s


def reference_model(name: str) -> nn.Module:
    """The published implementation our model must match: timm for ResNet-RS, torchvision for vanilla ResNet."""
    if name.startswith("resnetrs"):
        import timm

        return timm.create_model(name, pretrained=False)
    import torchvision

    return getattr(torchvision.models, name)()


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
            model(x).float().logsumexp(1).mean().backward()
            opt.step()
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(name: str, *, batch: int = 8, resolution: int | None = None, mode: str = "infer",
              rounds: int = 5, iters: int = 3, device: str = "cpu", amp: bool = False) -> BenchResult:
    import tempfile
    from pathlib import Path

    from rs_transfer.backbones import create_model, get_spec
    from rs_transfer.weights import load_weights

    dev = torch.device(device)
    res = resolution or get_spec(name).resolution
    ref = reference_model(name)
    ours = create_model(name)
    with tempfile.TemporaryDirectory() as tmp:  # same weights in both
        torch.save(ref.state_dict(), Path(tmp) / "ref.pth")
        load_weights(ours, Path(tmp) / "ref.pth")
    x = torch.randn(batch, 3, res, res, device=dev)
    models = {"ours": ours.to(dev), "ref": ref.to(dev)}
    steps = {k: _step_fn(m, x, mode) for k, m in models.items()}
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    peaks: dict[str, float | None] = {"ours": None, "ref": None}
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)
    with autocast:
        for key in steps:  # warm-up (allocator, cudnn autotune)
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
    per_s = {k: batch / statistics.median(v) for k, v in times.items()}
    return BenchResult(name, mode, per_s["ours"], per_s["ref"], peaks["ours"], peaks["ref"])


def format_results(results: list[BenchResult]) -> str:
    lines = [f"{'model':<14} {'mode':<6} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>6} {'ours MiB':>9} "
             f"{'ref MiB':>8}"]
    for r in results:
        mem = (f"{r.ours_peak_mib:>9.0f} {r.ref_peak_mib:>8.0f}" if r.ours_peak_mib is not None
               else f"{'-':>9} {'-':>8}")
        lines.append(f"{r.name:<14} {r.mode:<6} {r.ours_per_s:>11.2f} {r.ref_per_s:>10.2f} {r.ratio:>6.2f} {mem}")
    return "\n".join(lines)
