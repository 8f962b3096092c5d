"""Everything about ONE run (ARCHITECTURE.md): arguments -> resolved mmengine config -> train/evaluate ->
results.json.

- :mod:`.experiment`: :func:`prepare_run` and :func:`run_experiment`;
- :mod:`.config`: the resolved config (task file + backbone + weights' normalisation + ``--cfg-options`` + generic
  wiring); :mod:`.batch` (global batch -> per-process batch, accumulation, LR), :mod:`.schedule` (every
  iteration/milestone rescale), :mod:`.ema` (EMA momentum and TF's warm-up), :mod:`.distributed` (launchers);
- the hooks a run installs: :mod:`.hooks`, :mod:`.checkpoints` (atomic, preemptible), :mod:`.normcheck`,
  :mod:`.console` (what the terminal shows), :mod:`.cfgcheck` (``--cfg-options`` typos).

Names are imported on first use (PEP 562): ``from rs_transfer.runner import run_experiment`` works without this
package importing torch up front. Code inside rs_transfer imports the defining submodule directly.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_LAZY = {
    "run_experiment": "experiment", "prepare_run": "experiment", "PreparedRun": "experiment",
    "weights_info": "experiment", "build_config": "config", "config_dir": "config", "lazy": "config",
    "parse_cfg_options": "config", "RUNNER_SWITCHES": "config", "set_iterations": "schedule",
    "check_normalization": "normcheck", "LAUNCHERS": "distributed",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .config import RUNNER_SWITCHES, build_config, config_dir, lazy, parse_cfg_options
    from .distributed import LAUNCHERS
    from .experiment import PreparedRun, prepare_run, run_experiment, weights_info
    from .normcheck import check_normalization
    from .schedule import set_iterations


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
