"""ONE identity for a run's configuration and ONE rule for reusing a finished run, for every study and for the
``config_hash`` that ``results.json`` records.

The identity (:func:`portable_hash`) is the sha256 of the resolved config with this machine's folders replaced by
placeholders, the per-run keys (:data:`VOLATILE_KEYS`) left out, classes named by their registry/class name rather
than their module path (moving a file, or mmengine reorganising its internals, must not make finished runs stale),
plus the sha256 of the weights file's CONTENT (re-training into the same path must not keep the old number).
Results recorded before this rule existed are re-hashed from what they recorded (their ``config`` and
``weights.sha256``), so rows finished by earlier code with the same configuration stay reusable.

The rule (:func:`reusable`): a finished run is reused only when its recorded identity equals the one the cell would
run now; when another commit computed it, a warning names both commits (the hash covers the configuration, not
the code).
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any

from rs_transfer.results import config_hash, git_revision

# Keys of a resolved config that differ between runs of the same configuration: a fresh name per run, where a
# resumed run starts from, how the processes were launched (the world size itself shows in the batch keys) and
# where the logs go (``visualizer``: TensorBoard, and MLflow / W&B with ``--tracking``; logging never changes a
# number, so a tracked re-run reuses an untracked row and vice versa).
VOLATILE_KEYS = ("experiment_name", "resume", "load_from", "launcher", "visualizer")


def _class_name(value: str) -> str:
    """``mmengine.hooks.logger_hook.LoggerHook`` / ``rs_transfer.RunStatsHook`` / ``<LazyObject 'a.b.C'>`` -> the
    last dotted component (``LoggerHook``)."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):    # a LazyObject's repr in older results
        text = text.strip("<>").split()[-1].strip("'\"")
    return text.rsplit(".", 1)[-1]


def _names_not_paths(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (_class_name(v) if isinstance(v, str) and (k == "type" or k.endswith("_type"))
                    else _names_not_paths(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_names_not_paths(v) for v in obj]
    return obj


def portable(resolved: dict[str, Any], work_dir: str | Path, data_root: str | Path) -> dict[str, Any]:
    """The resolved config as the identity sees it (folders as placeholders, no per-run keys, class names)."""
    text = json.dumps(resolved)
    for folder, mark in ((work_dir, "<work_dir>"), (data_root, "<data_root>")):
        if str(folder) not in ("", "."):
            text = text.replace(str(folder), mark)
    out = json.loads(text)
    for key in VOLATILE_KEYS:
        out.pop(key, None)
    return _names_not_paths(out)


def portable_hash(resolved: dict[str, Any], work_dir: str | Path, data_root: str | Path,
                  weights_sha256: str | None = None) -> str:
    """The identity of a run: equal for two runs of the same configuration on the same weights content, wherever
    and however (fresh or resumed, from any module layout) they ran."""
    return config_hash({"config": portable(resolved, work_dir, data_root), "weights_sha256": weights_sha256})


def recorded_hash(res: dict[str, Any]) -> str | None:
    """:func:`portable_hash` of what a results.json recorded (None for results without a config)."""
    if not isinstance(res.get("config"), dict):
        return None
    sha = (res.get("weights") or {}).get("sha256") if isinstance(res.get("weights"), dict) else None
    return portable_hash(res["config"], res.get("work_dir", ""), res.get("data_root", ""), sha)


@functools.cache
def _current_commit() -> str | None:
    return git_revision()["commit"]


def warn_if_other_code(res: dict[str, Any], where: str) -> None:
    """The hash covers the configuration, not the code: a row reused from another commit may have run another
    pipeline (a changed crop or schedule does not change the config). Warn, naming both commits."""
    then, now = (res.get("git") or {}).get("commit"), _current_commit()
    if then and now and then != now:
        warnings.warn(f"{where}: reusing results.json computed by commit {then[:10]}; the code is now {now[:10]}. "
                      "The configuration is the same, the code may not be: if the change touched this pipeline, "
                      "run the study again in a new --work-dir", stacklevel=2)


def reusable(res: dict[str, Any] | None, expected: str | None, where: str = "a study row") -> bool:
    """THE reuse rule: a finished run may be reused only if it ran exactly the expected configuration (warning
    when another commit ran it)."""
    ok = res is not None and expected is not None and recorded_hash(res) == expected
    if ok:
        warn_if_other_code(res, where)  # type: ignore[arg-type]
    return ok


def finished_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """Recorded identity -> results of every finished run directly under ``folder`` (``folder/*/results.json``):
    for studies whose rows may have been renamed or reordered (Table 1, the scaling study)."""
    from rs_transfer.results import read_results

    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.glob("*/results.json")) if folder.is_dir() else []:
        res = read_results(p.parent)
        h = recorded_hash(res) if res else None
        if h:
            out[h] = res  # type: ignore[assignment]
    return out
