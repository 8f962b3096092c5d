"""results.json: atomic writing, provenance (git revision, config hash) and reading back.

One results.json per run directory is the unit everything downstream (reports, studies) consumes, so it must never
be half-written: it is written to a temporary file in the same folder and renamed into place (``os.replace`` is
atomic on POSIX), and only on rank 0.

Keys written by :func:`rs_transfer.runner.run_experiment` (schema 1):
``task``, ``task_title``, ``metric`` (headline key), ``value`` (its value), ``higher_is_better``, ``backbone``,
``backbone_kwargs`` (merged ResNetRS arguments, incl. ``weights``), ``protocol``, ``preset`` (``note`` says MINI for
mini runs), ``weights`` (``source``, ``path``, ``sha256``, ``named``, ``normalization``), ``seed``, ``metrics`` (all
evaluator keys), ``config_file``, ``config`` (resolved, JSON-friendly), ``config_hash`` (sha256 with local folders
replaced by placeholders), ``git`` (``commit``, ``dirty``), ``wall_time_s``, ``device``, ``world_size``,
``launcher``, ``throughput_samples_per_s`` (training, global; this segment), the training time of
:class:`rs_transfer.runner.hooks.TrainTimeHook` (rank 0's clock; null for protocols that do not train): ``train_time_s``
(train-loop iterations including data-loading waits, without validation and checkpoint writes, summed over every
segment of a resumed run), ``eval_time_s`` (validation passes, summed likewise), ``train_images`` and
``train_images_per_s`` (training images over all processes / ``train_time_s``), ``train_segments`` (1 + resumes)
and ``startup_s`` (the rest of this segment's ``wall_time_s``: set-up, data check, model build, weight loading,
resume replay, checkpoint writes; ``wall_time_s`` itself covers only the last segment), the protocol's batch and
length
(rs_transfer/runner/batch.py: ``global_batch_size``, ``per_process_batch_size``, ``accumulation``,
``reference_batch_size``, ``optimizer_steps``, ``train_samples`` = samples consumed, ``lr`` = the optimizer's base LR
as built, ``lr_scale`` = its factor from the reference batch, ``bn_momentum`` where a config sets one), ``amp``,
``ema`` (decay, reference batch, momentum per step, applied once per optimizer step) and ``ema_momentum``, ``resumed_from`` (the
checkpoint iteration a resumed run started from; null for a run from scratch), ``final_weights`` (``WORK_DIR/weights.safetensors``),
``data_root``, ``work_dir``,
``extra`` (task notes, e.g. the linear probe's penalty sweep), ``eval_outputs`` (``eval_outputs.npz`` when the last
evaluation kept its per-sample outputs, rs_transfer/eval_outputs.py; None otherwise).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rs_transfer.paths import RESULTS_NAME

SCHEMA_VERSION = 1


def to_jsonable(obj: Any) -> Any:
    """A JSON-friendly copy of a (resolved) mmengine config: classes/functions become ``module.qualname``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    return str(obj)


def config_hash(resolved: Any) -> str:
    """sha256 of the canonical JSON of the resolved config (sorted keys): equal hash = equal configuration."""
    blob = json.dumps(to_jsonable(resolved), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """Commit of the checkout the package runs from, and whether it had uncommitted changes (None outside git)."""
    where = str(path or Path(__file__).resolve().parents[1])
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


class UnreadableResults(Exception):
    """A results.json that cannot be used; the message says why (reports list these files, never drop them)."""


# What a report needs from a results.json; anything without these keys is not one of ours (or a torn write).
REQUIRED_KEYS = ("task", "metric", "value", "backbone", "metrics")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results.json as a dict; :class:`UnreadableResults` with the reason when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise UnreadableResults(f"cannot read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableResults(f"not valid JSON ({err}); an interrupted copy or write?") from None
    if not isinstance(data, dict):
        raise UnreadableResults(f"not a results object (a JSON {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise UnreadableResults(f"missing key(s) {', '.join(missing)}")
    if isinstance(data["value"], bool) or not isinstance(data["value"], (int, float)):
        raise UnreadableResults(f"value is {data['value']!r}, not a number")
    if not math.isfinite(data["value"]):  # written before the writer refused NaN: an evaluation without valid data
        raise UnreadableResults(f"value is {data['value']!r}, not a finite number (an evaluation without valid "
                                "ground truth; re-run it)")
    return data


def read_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """A results.json as a dict, or None when it is absent or unreadable (an interrupted write leaves nothing).
    For reports use :func:`load_results`, which says why a file is unusable."""
    try:
        return load_results(path)
    except UnreadableResults:
        return None


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every results.json under the given files/folders, once each (absolute paths: ``DIR`` and ``DIR/x/results.json``
    given together are the same file, not a duplicate run), sorted for stable reports. Files inside an ``mlruns``
    folder are MLflow's artifact copies of runs (``--tracking mlflow``), not runs: left out."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p.resolve())
        elif p.is_dir():   # an MLflow store's artifact copies (``--tracking``) are copies, not runs
            found.update(f.resolve() for f in p.rglob(RESULTS_NAME) if "mlruns" not in f.relative_to(p).parts)
    return sorted(found)


def reference_file(name: str) -> Path:
    """A shipped reference table (``paper_table4.json``, ``paper_table5.json``): ``results/`` of the source tree
    (editable installs, checkouts), else the copy installed as package data (``rs_transfer/paper/``, mapped from
    ``results/`` in pyproject.toml), so ``report --paper`` works from a wheel too."""
    for folder in (Path(__file__).resolve().parents[1] / "results", Path(__file__).resolve().parent / "paper"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"reference table {name} is neither in results/ of the source tree nor installed with "
                            "the package (reinstall rs-transfer)")
