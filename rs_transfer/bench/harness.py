"""The harness of ``tools/gpu_check.sh`` (checks in :mod:`rs_transfer.bench.gpu_check`): run each check as a
subprocess under a time budget, never letting one crash stop the others; print a failure loudly the moment it
happens; derive issue 26's target figures (information, not failures: by how much each falls short); print ONE
table. Kept apart from the checks so that the table, the budget and the target arithmetic are tested on their own.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("pass", "fail", "skipped")


@dataclass
class Outcome:
    """What one check found: ``status`` (pass/fail/skipped), a one-line ``figure``, its numbers in ``figures``."""

    status: str
    figure: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    note: str = ""            # why it failed or was skipped
    seconds: float = 0.0
    log: str | None = None


@dataclass
class Check:
    """One line of the table. ``parallel`` checks (correctness runs) may share the GPU with each other; timings
    (``parallel=False``) run alone afterwards. ``cpu_smoke``: the check has a tiny CPU form for ``--cpu-smoke``."""

    key: str
    what: str
    run: Callable[["Context"], Outcome]
    parallel: bool = False
    cpu_smoke: bool = False


@dataclass
class Proc:
    rc: int
    text: str
    log: Path
    seconds: float
    timed_out: bool = False
    budget_out: bool = False


@dataclass
class Context:
    """Where the check writes, how it starts the CLI, and what the machine has."""

    out: Path
    python: str
    env: dict[str, str]
    deadline: float                      # time.monotonic() at which the budget is spent
    cuda: bool
    gpus: int
    device_name: str | None
    smoke: bool = False
    imagenet_root: Path | None = None
    peak_tflops: float | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cli(self, *args: str) -> list[str]:
        return [self.python, "-m", "rs_transfer.cli", *args]

    def start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        """Start ``argv`` in its own process group, stdout + stderr to ``OUT/logs/NAME.log``."""
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=self.out,
                                    start_new_session=True)
        return proc, log

    def command(self, name: str, argv: list[str], *, cap: float) -> Proc:
        """Run ``argv`` to the end, at most ``cap`` seconds and never past the budget (then its group is ended)."""
        limit = min(cap, self.remaining())
        t0 = time.monotonic()
        proc, log = self.start(name, argv)
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_group(proc)
        return Proc(proc.returncode, log.read_text(errors="replace"), log, time.monotonic() - t0, timed_out,
                    timed_out and limit < cap)


def stop_group(proc: subprocess.Popen) -> None:
    """End a process this script started and its children (its own session): SIGTERM, then SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def failed(p: Proc, what: str = "") -> Outcome:
    """A failed command: exit status and its last error-looking line (the log has the rest)."""
    if p.budget_out:
        return Outcome("skipped", note=f"time budget ran out after {p.seconds:.0f} s (stopped)", log=str(p.log))
    lines = [ln.strip() for ln in p.text.splitlines() if ln.strip()]
    err = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln or "FAIL" in ln), lines[-1] if lines
               else "")
    how = f"timed out after {p.seconds:.0f} s" if p.timed_out else f"exit {p.rc}"
    return Outcome("fail", note=f"{what}{how}: {err[:200]}", log=str(p.log))


# ---- targets (issue 26 section 3): information, never a failure --------------------------------------------------
@dataclass
class Target:
    what: str
    value: float | None
    goal: float
    unit: str          # "x" (ratio) or "%" (fraction shown in percent)
    note: str = ""

    def figure(self) -> str:
        if self.value is None:
            return f"no figure ({self.note or 'its check did not run'})"
        fmt = (lambda v: f"{v:.1%}") if self.unit == "%" else (lambda v: f"{v:.2f}x")
        head = f"{fmt(self.value)} vs >= {fmt(self.goal)}"
        if self.value >= self.goal:
            verdict = "met"
        elif self.unit == "%":
            verdict = f"short by {100 * (self.goal - self.value):.1f} points ({self.value / self.goal:.0%} of it)"
        else:
            verdict = f"short by {self.goal - self.value:.2f}x ({self.value / self.goal:.0%} of it)"
        return f"{head}: {verdict}" + (f"; {self.note}" if self.note else "")


def targets(outcomes: dict[str, Outcome]) -> list[Target]:
    """The figures section 3 of issue 26 names, from the checks' figures: resnetrs152's train step with
    channels_last + bf16 + compile (bf16-cl when compile gave none) against timm and as MFU, ImageNet device-decode
    input against that step rate, Kinetics input against pytorchvideo."""
    def figs(key: str) -> dict[str, Any]:
        o = outcomes.get(key)
        return o.figures if o is not None and o.status == "pass" else {}

    rs152, variant = figs("bench-resnetrs152-compile"), "compile"
    if not rs152:
        rs152, variant = figs("bench-resnetrs152-bf16-cl"), "bf16-cl"
    label = f"resnetrs152 224 px train step, {variant}" if rs152 else "resnetrs152 224 px train step"
    mfu_note = "" if not rs152 or rs152.get("ours_mfu") is not None else "no bf16 peak known for this GPU"
    best = max((figs(f"bench-resnetrs152-{v}").get("ours_per_s") or 0.0) for v in ("bf16-cl", "compile")) or None
    tin = figs("train-input").get("images_per_s", {})
    dev = next((v for k, v in tin.items() if k.startswith("decode=device")), None)
    vin = figs("video-input").get("clips_per_s", {})
    return [
        Target(f"{label}: ours / timm", rs152.get("ratio"), 1.15, "x"),
        Target(f"{label}: MFU (dense bf16 peak)", rs152.get("ours_mfu"), 0.45, "%", mfu_note),
        Target("ImageNet input decode=device / resnetrs152 train img/s", dev / best if dev and best else None, 1.0,
               "x", "input from the train-input check's data" if dev and best else ""),
        Target("Kinetics input ours / pytorchvideo", vin.get("ratio"), 3.0, "x"),
    ]


# ---- running and reporting ----------------------------------------------------------------------------------------
def run_one(check: Check, ctx: Context) -> Outcome:
    """One check, never raising: no CUDA / no budget -> skipped; an exception in our own code -> fail."""
    if not ctx.cuda and not (ctx.smoke and check.cpu_smoke):
        return Outcome("skipped", note="no CUDA")
    if ctx.remaining() < 5:
        return Outcome("skipped", note="time budget")
    t0 = time.monotonic()
    try:
        out = check.run(ctx)
    except Exception as err:  # noqa: BLE001  (the table must still come out)
        out = Outcome("fail", note=f"{type(err).__name__}: {err}")
    out.seconds = round(time.monotonic() - t0, 1)
    if out.status not in STATUSES:
        raise ValueError(f"{check.key}: status {out.status!r}")
    if out.status == "fail":
        tail = ""
        if out.log and Path(out.log).is_file():
            tail = "\n".join("    " + ln for ln in Path(out.log).read_text(errors="replace").splitlines()[-25:])
        print(f"\n{'!' * 100}\nFAIL: {check.what}: {out.note}\n  log: {out.log}\n{tail}\n{'!' * 100}\n",
              file=sys.stderr, flush=True)
    else:
        print(f"[gpu-check] {check.what}: {out.status} {out.figure or out.note} ({out.seconds:.0f} s)", flush=True)
    return out


def run_all(checks: list[Check], ctx: Context, jobs: int = 4) -> dict[str, Outcome]:
    """Parallel checks first (``jobs`` at a time), then the timings one by one, in the list's order."""
    results: dict[str, Outcome] = {}
    par = [c for c in checks if c.parallel]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for c, o in zip(par, pool.map(lambda c: run_one(c, ctx), par)):
            results[c.key] = o
    for c in checks:
        if not c.parallel:
            results[c.key] = run_one(c, ctx)
    return {c.key: results[c.key] for c in checks}


def status_text(o: Outcome) -> str:
    return o.status if o.status != "skipped" else f"skipped: {o.note}"


def format_table(checks: list[Check], outcomes: dict[str, Outcome], tgts: list[Target], header: str) -> str:
    width = max(len(c.what) for c in checks + [Check("", t.what, lambda c: Outcome("pass")) for t in tgts])
    lines = [header, f"{'what':<{width}}  {'result':<28} figure"]
    for c in checks:
        o = outcomes[c.key]
        fig = o.figure if o.status == "pass" else (o.note if o.status == "fail" else o.figure)
        lines.append(f"{c.what:<{width}}  {status_text(o):<28} {fig}".rstrip())
    for t in tgts:
        lines.append(f"{t.what:<{width}}  {'info (issue 26 target)':<28} {t.figure()}")
    n_fail = sum(o.status == "fail" for o in outcomes.values())
    lines.append(f"{sum(o.status == 'pass' for o in outcomes.values())} passed, {n_fail} failed, "
                 f"{sum(o.status == 'skipped' for o in outcomes.values())} skipped; targets are information, "
                 "not failures")
    return "\n".join(lines)
