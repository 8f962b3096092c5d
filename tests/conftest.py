"""Shared fixtures.

- ``randomize``: non-trivial weights and BN statistics for parity checks.
- ``fake_slurm``: SLURM's commands (sbatch, srun, sacct, squeue, scancel, scontrol) on PATH, running jobs here
  (tests/fake_slurm.py).
- ``rs_home`` (session, autouse): every test session gets its own empty ``RS_TRANSFER_HOME`` (no downloads, no user
  cache); mini datasets are generated once per session in it.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

# A tiny ResNetRS (1 block per stage, quarter width) for tests that exercise the runner rather than the model.
TINY = {"layers": [1, 1, 1, 1], "width": 0.25}
TINY_CLI = ["--backbone-options", "layers=[1,1,1,1]", "width=0.25"]


@pytest.fixture
def randomize():
    """Give a model non-trivial weights AND BN statistics, so that parity checks compare real numbers
    (zero-initialised last-BN gammas would otherwise make every residual branch vanish)."""

    def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if not t.is_floating_point():
                    continue
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("running_mean"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        return model

    return _randomize


@pytest.fixture(scope="session", autouse=True)
def rs_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide ``$RS_TRANSFER_HOME``: mini datasets are generated once per session, in here."""
    home = tmp_path_factory.mktemp("rs_home")
    old = os.environ.get("RS_TRANSFER_HOME")
    os.environ["RS_TRANSFER_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("RS_TRANSFER_HOME", None)
    else:
        os.environ["RS_TRANSFER_HOME"] = old


@pytest.fixture
def one_thread():
    """2 shared CPU cores: one intra-op thread avoids OpenMP oversubscription (10-40x slower when contended).
    Used by the dense end-to-end runs (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def outputs_reproduce():
    """Check a finished run's per-sample outputs: ``check(results, *keys)`` recomputes each metric key (default:
    the headline) from WORK_DIR/eval_outputs.npz and requires EXACTLY the number results.json reports."""
    def check(res: dict, *keys: str) -> None:
        from rs_transfer import eval_outputs
        from rs_transfer.studies import intervals

        assert res["eval_outputs"] == eval_outputs.FILENAME
        out = eval_outputs.load(Path(res["work_dir"]))
        for key in keys or (res["metric"],):
            assert intervals.metric(out, key) == res["metrics"][key], (key, res["metrics"])
        count = res["metrics"].get("eval_images", res["metrics"].get("eval_videos"))
        if count is not None:
            assert len(out) == count
    return check


_FAKE_SLURM = Path(__file__).with_name("fake_slurm.py")


def slurm_settled(state: Path, timeout: float = 60) -> dict[str, dict]:
    """The fake SLURM's task records (by task id) once none is PENDING or RUNNING, or as they are at ``timeout``.
    submitit hands back a job's result as soon as the job wrote it; the job's process, and so SLURM's state, ends a
    moment later."""
    deadline = time.time() + timeout
    while True:
        tasks = {p.stem: json.loads(p.read_text()) for p in (state / "jobs").glob("*.json")}
        if time.time() > deadline or all(t["state"] not in ("PENDING", "RUNNING") for t in tasks.values()):
            return tasks
        time.sleep(0.1)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """SLURM's commands on PATH, backed by tests/fake_slurm.py; returns its state folder."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for cmd in ("sbatch", "srun", "sacct", "squeue", "scancel", "scontrol"):
        wrapper = bin_dir / cmd
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {_FAKE_SLURM} {cmd} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return state
