"""Checkpoints that a killed or preempted run can always resume from, and nothing more than resume needs.

Why this module exists (mmengine 0.10's own ``CheckpointHook`` does not give these guarantees):

- **Atomic writes.** mmengine writes ``iter_N.pth`` in place and deletes the oldest checkpoint *before* writing the
  new one, so a ``kill -9`` (or a full disk) mid-write leaves a truncated file and, with ``max_keep_ckpts=1``, no
  complete one. :class:`AtomicCheckpointHook` writes ``.iter_N.pth.tmp-PID``, fsyncs it, renames it into place,
  then rewrites ``last_checkpoint`` the same way, and only then deletes older checkpoints.
- **Honest resume.** :func:`find_resume_point` picks the newest *complete* checkpoint in the work dir (a zip
  archive whose central directory and CRCs check out), says why it skipped any other, and returns ``None`` when
  there is nothing to resume from, so that ``results.json`` records ``resumed_from`` truthfully.
- **Preemption.** :func:`preemption_guard` turns SIGTERM (what slurm sends before preemption) and SIGINT into a
  request; the hook saves a checkpoint at the next iteration boundary (all ranks agree on the boundary) and raises
  :class:`rs_transfer.errors.RunInterrupted`, which the CLI prints with the command that resumes.
- **Small footprint.** Only the newest training checkpoint is kept while training; when the run is complete, the
  model weights (EMA weights when EMA is on: what was evaluated) go to ``weights.safetensors`` with their input
  normalisation in the metadata (readable by :func:`rs_transfer.load_weights`), and the training checkpoints
  (optimizer state included) are deleted.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.hooks import CheckpointHook

from rs_transfer.atomic import commit_file, write_text_atomic
from rs_transfer.errors import RunInterrupted
from rs_transfer.paths import EXPORT_NAME
from rs_transfer.registry import HOOKS

CKPT_PATTERN = re.compile(r"^iter_(\d+)\.pth$")
LAST_NAME = "last_checkpoint"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# ---- which checkpoint to resume from ---------------------------------------------------------------------------------
def incomplete_reason(path: Path) -> str | None:
    """Why ``path`` is not a complete torch checkpoint, or None. ``torch.save`` writes a zip archive: a truncated
    file has no central directory (read from the end), a damaged one fails the members' CRC-32."""
    try:
        with zipfile.ZipFile(path) as zf:
            if not any(n.endswith("data.pkl") for n in zf.namelist()):
                return "not a torch checkpoint (no data.pkl)"
            bad = zf.testzip()
            if bad is not None:
                return f"damaged (CRC mismatch in {bad})"
    except zipfile.BadZipFile:
        return "truncated or not a torch checkpoint (no zip central directory)"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    iteration: int


def _iteration(path: Path) -> int | None:
    m = CKPT_PATTERN.match(path.name)
    return int(m.group(1)) if m else None


def find_resume_point(work_dir: Path) -> tuple[ResumePoint | None, list[str]]:
    """The newest complete ``iter_N.pth`` in ``work_dir`` and notes on everything it passed over (a
    ``last_checkpoint`` naming a missing or incomplete file, incomplete newer checkpoints)."""
    work_dir = Path(work_dir)
    notes: list[str] = []
    found = sorted(((_iteration(p), p) for p in work_dir.glob("iter_*.pth") if _iteration(p) is not None),
                   reverse=True)
    pointed: Path | None = None
    if (work_dir / LAST_NAME).is_file():
        text = (work_dir / LAST_NAME).read_text().strip()
        pointed = Path(text) if text else None
        if pointed is not None and not pointed.is_absolute():
            pointed = work_dir / pointed
    point: ResumePoint | None = None
    for it, path in found:
        reason = incomplete_reason(path)
        if reason is None:
            point = ResumePoint(path, int(it))  # type: ignore[arg-type]
            break
        notes.append(f"{path.name} is {reason}")
    if pointed is not None and (point is None or pointed.resolve() != point.path.resolve()):
        ours = {p.resolve() for _, p in found}
        if not pointed.exists():
            notes.insert(0, f"{LAST_NAME} names {pointed}, which does not exist")
        elif pointed.resolve() not in ours:
            notes.insert(0, f"{LAST_NAME} names {pointed}, which is not one of this work dir's iter_N.pth "
                            "checkpoints: not used")
        elif point is not None and (_iteration(pointed) or 0) < point.iteration:
            notes.insert(0, f"{LAST_NAME} names {pointed.name}, but the newer {point.path.name} is complete")
    return point, notes


def _say(message: str) -> None:
    if _rank0():
        print(f"rs-transfer: {message}", file=sys.stderr, flush=True)


def _check_safe_to_resume(path: Path) -> None:
    """A resume checkpoint is unpickled with ``weights_only=True`` plus mmengine's allow-list, as every checkpoint
    here: one that needs full unpickling (it could run code when loaded) is refused, naming the file, before
    mmengine opens it. Memory-mapped, so the check costs no second copy of the tensors."""
    import pickle

    import torch

    from rs_transfer.errors import UserError
    from rs_transfer.weights.formats import mmengine_safe_globals

    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        detail = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line
                       or "GLOBAL" in line), str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise UserError(f"--resume: {path} was refused for safety: it is not a plain checkpoint and would need full "
                        f"unpickling, which can run arbitrary code ({detail}). Remove it (and last_checkpoint) to "
                        "resume from an older checkpoint, or start the run again") from None


def prepare_resume(cfg: Any, work_dir: Path) -> ResumePoint | None:
    """``--resume``: point mmengine at the newest complete checkpoint (``cfg.load_from`` + ``cfg.resume``), or turn
    resuming off when there is none; either way say so on the console."""
    point, notes = find_resume_point(work_dir)
    for note in notes:
        _say(f"--resume: {note}")
    if point is None:
        cfg.resume = False
        done = " (its results.json is from a complete run, which this repeats)" if (
            Path(work_dir) / "results.json").is_file() else ""
        _say(f"--resume: nothing to resume from in {work_dir} (no complete checkpoint){done}: training from scratch")
        return None
    _check_safe_to_resume(point.path)
    cfg.resume = True
    cfg.load_from = str(point.path)
    newest = ", the newest complete checkpoint" if notes else ""
    _say(f"--resume: resuming from {point.path} (iteration {point.iteration}{newest})")
    return point


# ---- preemption ------------------------------------------------------------------------------------------------------
class _StopRequest:
    signum: int | None = None
    pid: int | None = None   # the training process (data-loader workers forked from it inherit the handler)


_REQUEST = _StopRequest()


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _REQUEST.pid:  # a forked data-loader worker: the training process decides
        return
    name = signal.Signals(signum).name
    if _REQUEST.signum is not None:  # asked twice: stop now, without saving
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    _REQUEST.signum = signum
    if _rank0():
        print(f"\nrs-transfer: {name} received: saving a checkpoint at the end of this iteration, then stopping "
              f"(send {name} again to stop at once, without saving)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def preemption_guard() -> Iterator[None]:
    """SIGTERM/SIGINT during training become a stop request (see :class:`AtomicCheckpointHook`); the previous
    handlers come back afterwards. Outside the main thread (signals cannot be caught there) this does nothing."""
    _REQUEST.signum, _REQUEST.pid = None, os.getpid()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _REQUEST.signum = None


def _agreed_stop() -> int | None:
    """The stop signal, agreed by every rank (the largest signal number any rank got), so that all ranks stop after
    the same iteration; one scalar all-reduce per iteration when distributed."""
    import torch
    import torch.distributed as dist

    local = _REQUEST.signum or 0
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([local], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        local = int(t.item())
    return local or None


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---- the hook --------------------------------------------------------------------------------------------------------
@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook with atomic writes, delete-after-write rotation and preemption (see module doc).

    Local work dirs only (the runner's); same arguments as :class:`mmengine.hooks.CheckpointHook`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved_step: int | None = None

    def before_train(self, runner: Any) -> None:
        super().before_train(runner)
        from mmengine.dist import is_main_process

        if is_main_process():  # leftovers of a write that a kill interrupted
            for stale in [*Path(self.out_dir).glob(".iter_*.pth.tmp-*"),
                          *Path(runner.work_dir).glob(f".{LAST_NAME}.tmp-*")]:
                stale.unlink(missing_ok=True)
            old = sorted(p.name for p in Path(self.out_dir).glob("iter_*.pth") if _iteration(p) is not None)
            if old and not getattr(runner, "_resume", False):
                # A run from scratch in a used work dir: an interruption must never resume from the earlier run's
                # checkpoints (--resume would pick the newest).
                _say(f"{self.out_dir} held checkpoints of an earlier run ({', '.join(old[:3])}"
                     f"{' ...' if len(old) > 3 else ''}) that this run does not resume from: it starts from scratch, "
                     "so they are removed")
                remove_training_checkpoints(Path(self.out_dir))
        signum = _agreed_stop()
        if signum:
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name} before the first training iteration "
                                 "(nothing new to save)", signum=signum)

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        from mmengine.dist import is_main_process

        out = Path(self.out_dir)
        drop: list[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            keep = list(self.keep_ckpt_ids) + [step]
            drop, keep = keep[:-self.max_keep_ckpts], keep[-self.max_keep_ckpts:]
            self.keep_ckpt_ids = deque(keep, self.max_keep_ckpts)
            runner.message_hub.update_info("keep_ckpt_ids", list(keep))
        name = self.filename_tmpl.format(step)
        final = out / name
        tmp_name = f".{name}.tmp-{os.getpid()}"
        self.last_ckpt = str(final)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        try:
            runner.save_checkpoint(str(out), tmp_name, self.file_client_args, save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta,
                                   by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        except OSError as err:   # a full disk or quota: no half-written temporary is left behind
            (out / tmp_name).unlink(missing_ok=True)
            raise _save_error(err, out, runner) from None
        self._saved_step = step
        if not is_main_process():
            return
        commit_file(out / tmp_name, final)
        write_text_atomic(Path(runner.work_dir) / LAST_NAME, str(final))
        for old in drop:  # only now: until the rename above, the old checkpoint was the only complete one
            (out / self.filename_tmpl.format(old)).unlink(missing_ok=True)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        signum = _agreed_stop()
        if not signum:
            return
        step = runner.iter + 1
        name = signal.Signals(signum).name
        if self.by_epoch:
            # An epoch-based loop resumes at epoch boundaries: a mid-epoch checkpoint would skip the epoch's rest.
            _barrier()
            raise RunInterrupted(f"stopped by {name} after iteration {step} (epoch-based schedule: resume restarts "
                                 "from the last epoch checkpoint)", signum=signum)
        if self._saved_step != step:
            self._save_checkpoint(runner)
        _barrier()  # rank 0 must finish writing before any rank exits (torchrun then stops the others)
        raise RunInterrupted(f"stopped by {name} after iteration {step}/{runner.max_iters}; checkpoint "
                             f"{self.last_ckpt}", signum=signum)


def _state_bytes(runner: Any) -> int:
    """About how many bytes a checkpoint of this run holds: model (and EMA) state plus optimizer state."""
    import torch

    def size(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(size(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(size(v) for v in obj)
        return 0

    total = size(runner.model.state_dict())
    try:
        total += size(runner.optim_wrapper.optimizer.state_dict())
    except AttributeError:
        pass
    ema = next((h for h in runner.hooks if type(h).__name__ == "EMAHook"), None)
    if ema is not None and getattr(ema, "ema_model", None) is not None:
        total += size(ema.ema_model.state_dict())
    return total


def _save_error(err: OSError, out: Path, runner: Any) -> Exception:
    import errno

    from rs_transfer.errors import UserError

    need = _state_bytes(runner) / 2 ** 20
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"no space left in {out} to write a checkpoint (it needs about {need:.0f} MiB: model, EMA "
                         "and optimizer state); free space or choose another --work-dir, then resume")
    return UserError(f"cannot write a checkpoint in {out}: {err.strerror or err} (it needs about {need:.0f} MiB)")


# ---- after a complete run --------------------------------------------------------------------------------------------
def export_final_weights(work_dir: Path, normalization: dict[str, Any], **meta: Any) -> Path | None:
    """``work_dir/weights.safetensors`` from the final checkpoint's model state (mmengine's EMAHook swaps the EMA
    weights into ``state_dict`` when saving, so this is what the last validation evaluated), with the input
    normalisation in the metadata; no optimizer state. None when the run left no checkpoint."""
    from rs_transfer.weights import save_weights
    from rs_transfer.weights.formats import torch_load

    last = Path(work_dir) / LAST_NAME
    if not last.is_file():
        return None
    ckpt = torch_load(Path(last.read_text().strip()))
    state = {k: v for k, v in ckpt["state_dict"].items() if hasattr(v, "detach")}
    it = (ckpt.get("meta") or {}).get("iter")
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    out = save_weights(state, Path(work_dir) / EXPORT_NAME, normalization=normalization["name"],
                       normalization_mean=json.dumps(list(normalization["mean"])),
                       normalization_std=json.dumps(list(normalization["std"])), iteration=str(it), **text)
    return out


def remove_training_checkpoints(work_dir: Path) -> int:
    """Delete the resume state of a COMPLETE run (``iter_N.pth`` with optimizer state, ``last_checkpoint``);
    returns how many checkpoints went."""
    work_dir = Path(work_dir)
    gone = 0
    for p in work_dir.glob("iter_*.pth"):
        if _iteration(p) is not None:
            p.unlink(missing_ok=True)
            gone += 1
    (work_dir / LAST_NAME).unlink(missing_ok=True)
    # Temporaries of writes a killed process left behind (``.iter_N.pth.tmp-PID``, ``.weights.safetensors.*.tmp``):
    # the complete run has its real files, so these are garbage (0-byte, private-mode files otherwise stay).
    for p in list(work_dir.glob(".iter_*.pth.tmp-*")) + list(work_dir.glob(f".{EXPORT_NAME}.*.tmp")):
        p.unlink(missing_ok=True)
    return gone
