"""What a run prints: a short header, a live progress bar (loss, ETA), validation results and the final summary.

mmengine prints everything at INFO to stdout: the environment, the whole config, the hook order, one line per
parameter group (``paramwise_options``) and progress every ``log_interval`` iterations; a 30-iteration mini run is
~400 lines. The same log is written to the work dir (``<work_dir>/<timestamp>/<timestamp>.log``), so by default the
console only shows WARNING and above from mmengine, and this module adds what a person reads:

- :func:`header_lines`: task, backbone, weights and their normalisation, protocol, global batch, device, where the
  full log goes;
- :class:`ProgressHook`: a tqdm bar with the current (smoothed) loss and ETA when stdout is a terminal; otherwise
  (a pipe, a batch job's log file) one compact line every ``every_percent`` percent, since a bar redrawn with
  carriage returns turns into garbage in a file. Rank 0 only: other DDP ranks print nothing.

``--verbose`` (``run``/``study``; or ``RS_TRANSFER_VERBOSE=1``, which DDP child processes inherit) restores
mmengine's full console log and drops the bar.

How mmengine 0.10.7 prints (mmengine/logging/logger.py, runner/runner.py): ``Runner.__init__`` calls
``build_logger`` -> ``MMLogger.get_instance(name=experiment_name, log_file=..., log_level=cfg.log_level)``, which
creates a ``StreamHandler(sys.stdout)`` (level ``log_level`` on rank 0, ERROR elsewhere, a colour formatter) and a
``FileHandler`` (level ``log_level``); then ``_log_env`` logs the environment and config. The routing must therefore
happen inside ``build_logger``: :func:`build_runner` uses a Runner subclass that lowers only the stream handler.
Nothing here changes the config, so ``config_hash`` does not depend on the console mode.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from mmengine.hooks import Hook  # this module is imported by training code only (the CLI sets --verbose lazily)

VERBOSE_ENV = "RS_TRANSFER_VERBOSE"
_verbose = False


def set_verbose(on: bool) -> None:
    """``--verbose``: mmengine's full log on the console (exported too, so that subprocesses agree)."""
    global _verbose
    _verbose = bool(on)
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def verbose_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with the console verbose, restored afterwards (the CLI's ``--verbose``; in-process callers such as
    tests and studies must not inherit it)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        before = verbose()
        set_verbose(True)
        try:
            return fn(*args, **kwargs)
        finally:
            set_verbose(before)
    return call


def verbose() -> bool:
    return _verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def is_main_process() -> bool:
    """Rank 0, or not distributed. Read from the launcher's environment when torch.distributed is not initialised."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def is_tty(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


# ---- header -------------------------------------------------------------------------------------------------------
def _global_batch(facts: Mapping[str, Any], world_size: int) -> str:
    """``global_batch_size`` from the batch facts (rs_transfer/runner/batch.py); older facts named it
    ``effective_batch_size``. Shown with how it is made up: per-process batch x processes x accumulation."""
    g = facts.get("global_batch_size", facts.get("effective_batch_size"))
    per = facts.get("per_process_batch_size", facts.get("batch_size_per_process"))
    acc = facts.get("accumulation", facts.get("accumulative_counts", 1)) or 1
    if g is None and per is not None:
        g = int(per) * int(acc) * world_size
    if g is None:
        return "n/a (this protocol does not train with a batch)"
    parts = f" = {per} per process x {world_size} process(es)" + (f" x {acc} accumulation" if int(acc) > 1 else "")
    return f"{g}" + (parts if per is not None else "")


def header_lines(ctx: Any, facts: Mapping[str, Any]) -> list[str]:
    """The run in a few lines. ``ctx`` is the :class:`rs_transfer.tasks.RunContext`; ``facts`` the config facts
    (batch, AMP, EMA). :func:`build_runner` adds where mmengine's full log goes once the Runner has named it."""
    norm = ctx.normalization or {}
    mean = ", ".join(f"{v:g}" for v in norm.get("mean", []))
    std = ", ".join(f"{v:g}" for v in norm.get("std", []))
    weights = ctx.weights or "none (random initialisation)"
    extras = [f"amp {facts['amp']}"] if facts.get("amp") else []
    ema = facts.get("ema") or {}
    if "decay" in ema:      # rs_transfer/runner/ema.py: TF's warm-up, then this momentum per step
        extras.append(f"EMA decay {ema['decay']:g}/step at batch {ema['reference_batch']} = "
                      f"{1 - ema['momentum_per_step']:.8g}/step here, after TF's warm-up")
    elif facts.get("ema_momentum"):
        extras.append(f"ema_momentum {facts['ema_momentum']:g}")
    if facts.get("compile"):
        extras.append("torch.compile")
    lines = [
        f"rs-transfer run: {ctx.task} | {ctx.backbone} | protocol {ctx.protocol} | preset {ctx.preset} | "
        f"seed {ctx.seed}",
        f"  weights:       {weights}",
        f"  normalisation: {norm.get('name', '?')} (mean {mean}; std {std}, 0-255 pixel units)",
        f"  global batch:  {_global_batch(facts, int(getattr(ctx, 'world_size', 1) or 1))}"
        + "".join(f"; {e}" for e in extras),
        f"  work dir:      {ctx.work_dir}",
    ]
    if ctx.preset == "mini":
        lines.append("  MINI preset: tiny generated data, a smoke test, not a benchmark number")
    return lines


def print_header(lines: Sequence[str], stream: IO[str] | None = None) -> None:
    if is_main_process():
        print("\n".join(lines), file=stream or sys.stdout, flush=True)


# ---- mmengine logger routing --------------------------------------------------------------------------------------
class _BarSafeStream:
    """A stream for the logger's console handler that writes through ``tqdm.write``: a warning printed while the
    bar is shown appears above it instead of being cut into it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from tqdm import tqdm

        tqdm.write(text, file=self._stream, end="")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return is_tty(self._stream)


# mmengine warnings that every run of this suite triggers and that ask nothing of the user (still in the log file):
NOISE = (
    "has no metainfo",                          # our datasets carry classes in the task, not in dataset_meta
    "The prefix is not set in metric class",    # plain metric keys (top1, mIoU) on purpose: Task.metric names them
    '"FileClient" will be deprecated',          # mmengine's own checkpoint hook still uses it
    '"HardDiskBackend" is the alias of',        # same
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def _console_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def route_logger(logger: logging.Logger, *, quiet: bool | None = None) -> None:
    """Console handler of an MMLogger: WARNING and above unless verbose (the file handler keeps everything), and
    no colour codes when stdout is not a terminal (mmengine's formatter colours unconditionally)."""
    from mmengine.logging.logger import MMFormatter

    quiet = (not verbose()) if quiet is None else quiet
    for h in _console_handlers(logger):
        if quiet:
            h.setLevel(max(h.level, logging.WARNING))
            h.addFilter(_DropNoise())
        if not is_tty(getattr(h, "stream", None)):
            h.setFormatter(MMFormatter(color=False, datefmt="%m/%d %H:%M:%S"))
        elif quiet:
            h.setStream(_BarSafeStream(h.stream))  # type: ignore[arg-type]


def build_runner(cfg: Any, header: Sequence[str] | None = None) -> Any:
    """``Runner.from_cfg(cfg)`` with the console routed (see the module docstring), the header printed once the
    log file is known, and (unless verbose) the progress hook registered."""
    from mmengine.runner import Runner

    class ConsoleRunner(Runner):
        def build_logger(self, log_level: int | str = "INFO", log_file: str | None = None, **kwargs: Any) -> Any:
            logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
            route_logger(logger)
            return logger

    # mmengine renders the config 6 times a run (log, work-dir dump, visualizer, every checkpoint's meta) and has
    # yapf format it each time: 0.12 s apiece here, a fifth of a mini run. Unformatted it is the same Python (one
    # key per line) in 1 ms.
    object.__setattr__(cfg, "_format_python_code", False)
    runner = ConsoleRunner.from_cfg(cfg)
    if header is not None:
        log_file = getattr(runner.logger, "log_file", None)
        print_header([*header, *([_log_line(log_file)] if log_file else [])])
    if not verbose():
        runner.register_hook(ProgressHook(), priority="VERY_LOW")
    return runner


def _log_line(log_file: str) -> str:
    return f"  full log:      {log_file}" + ("" if verbose() else "   (--verbose shows it here)")


def start_log(work_dir: str | os.PathLike) -> list[str]:
    """For protocols that run without an mmengine Runner (linear probe, kNN): an MMLogger with the same file layout
    (``<work_dir>/<timestamp>/<timestamp>.log``), made the current one (what ``print_log(logger="current")``
    writes to) and routed like a Runner's. Returns the header line naming the file."""
    import uuid
    from pathlib import Path

    from mmengine.logging import MMLogger

    stamp = time.strftime("%Y%m%d_%H%M%S")
    log_dir = Path(work_dir) / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = MMLogger.get_instance(f"rs-transfer-{stamp}-{uuid.uuid4().hex[:8]}",
                                   log_file=str(log_dir / f"{stamp}.log"), log_level="INFO", file_mode="a")
    route_logger(logger)
    return [_log_line(logger.log_file)]


# ---- progress ---------------------------------------------------------------------------------------------------
def _width(stream: IO[str]) -> dict[str, Any]:
    """tqdm follows the terminal's size, except where the terminal reports 0 x 0 (a pty without a size, e.g.
    ``script`` or some CI runners): tqdm then hides every bar (position >= 0 rows), so use a fixed 100 x 24."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, OSError, ValueError):
        pass
    return {"ncols": 100, "nrows": 24}


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _scalar(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


class ProgressHook(Hook):
    """Training progress for a person: a live bar on a terminal, a compact line every ``every_percent`` % in a
    file or pipe; validation results as one line each. Rank 0 only.

    The loss shown is the mean of the last ``window`` iterations' ``loss`` (mmengine's ``train/loss`` history,
    the value its LoggerHook prints); the ETA is the mean time per iteration since this process started training
    (a resumed run counts only its own iterations) times the iterations left.
    """

    priority = "VERY_LOW"

    def __init__(self, stream: IO[str] | None = None, *, every_percent: int = 10, window: int = 10,
                 tty: bool | None = None) -> None:
        self.stream = stream
        self.every_percent = max(1, int(every_percent))
        self.window = window
        self.tty = tty
        self._bar: Any = None
        self._val_bar: Any = None
        self._start = 0
        self._t0 = 0.0
        self._last_bucket = -1
        self._active = False

    # helpers
    def _out(self) -> IO[str]:
        return self.stream or sys.stdout

    def _use_bar(self) -> bool:
        return is_tty(self._out()) if self.tty is None else self.tty

    def _loss(self, runner: Any, outputs: Any) -> float | None:
        try:
            return float(runner.message_hub.get_scalar("train/loss").mean(self.window))
        except (KeyError, AttributeError, TypeError, ValueError):
            return _scalar(outputs.get("loss")) if isinstance(outputs, Mapping) else None

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._out())
        else:
            print(line, file=self._out(), flush=True)

    # training
    def before_train(self, runner: Any) -> None:
        self._active = runner.rank == 0
        if not self._active:
            return
        self._start, self._t0 = int(runner.iter), time.perf_counter()
        total = int(runner.max_iters)
        self._last_bucket = self._start * 100 // max(1, total) // self.every_percent
        if self._start:
            self._write(f"resuming at iteration {self._start}/{total}")
        if self._use_bar():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=self._start, file=self._out(), desc="train", unit="it",
                             mininterval=0.5, leave=True, **_width(self._out()))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not self._active:
            return
        done, total = int(runner.iter) + 1, int(runner.max_iters)
        loss = self._loss(runner, outputs)
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if loss is not None:
                self._bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            return
        bucket = done * 100 // max(1, total) // self.every_percent
        if bucket > self._last_bucket or done == total:
            self._last_bucket = bucket
            per_it = (time.perf_counter() - self._t0) / max(1, done - self._start)
            self._write(f"train {done * 100 // max(1, total):3d}%  iter {done}/{total}"
                        + (f"  loss {loss:.4g}" if loss is not None else "")
                        + f"  {per_it:.3g} s/it  eta {_fmt_seconds(per_it * (total - done))}")

    def after_train(self, runner: Any) -> None:
        if not self._active:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        n = int(runner.iter) - self._start
        if n > 0:
            dt = time.perf_counter() - self._t0
            self._write(f"trained {n} iteration(s) in {_fmt_seconds(dt)} ({dt / n:.3g} s/it, validation included)")

    # validation
    def before_val_epoch(self, runner: Any) -> None:
        if self._active and self._use_bar():
            try:
                total = len(runner.val_dataloader)
            except (TypeError, AttributeError):
                total = None
            from tqdm import tqdm

            self._val_bar = tqdm(total=total, file=self._out(), desc="val", unit="batch", leave=False,
                                 mininterval=0.5, **_width(self._out()))

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self._val_bar is not None:
            self._val_bar.update(1)

    def after_val_epoch(self, runner: Any, metrics: Mapping[str, Any] | None = None) -> None:
        if self._val_bar is not None:
            self._val_bar.close()
            self._val_bar = None
        if not self._active or not metrics:
            return
        values = {k.split("/")[-1]: _scalar(v) for k, v in metrics.items()}
        shown = [f"{k} {v:.4g}" for k, v in values.items() if v is not None][:6]
        self._write(f"val @ iter {int(runner.iter)}: " + ", ".join(shown))
