"""Exact resume of the Kinetics pipeline: a mini run killed inside an epoch and resumed from its mid-epoch checkpoint
ends with the same losses and metrics as an uninterrupted run (sampler state, per-sample seeds, model RNG)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_transfer.video import mini

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands in for the process being killed (SIGKILL: no chance to save anything)."""


def _train_losses(work_dir: Path) -> dict[int, float]:
    """{iteration: loss} from every mmengine scalars.json under ``work_dir`` (log_interval=1), last write wins."""
    out: dict[int, float] = {}
    for f in sorted(work_dir.rglob("scalars.json")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if "loss" in rec:
                out[int(rec["step"])] = float(rec["loss"])
    return out


@pytest.mark.slow
def test_mid_epoch_resume_is_exact(tmp_path, monkeypatch, outputs_reproduce) -> None:
    from rs_transfer.runner import run_experiment
    from rs_transfer.video.sampler import ResumeSamplerHook

    # 16 readable training videos (+1 corrupt, excluded by data check) at batch 8: 2 iterations per epoch;
    # recipe.epochs 60 -> 3 mini epochs = 6 iterations; a checkpoint every 3 = in the middle of epoch 2.
    root = mini.make_mini(tmp_path / "data", counts={"train": 4, "val": 1})
    kw = dict(preset="mini", data_root=str(root), seed=3,
              cfg_options={"recipe.epochs": 60, "checkpoint_interval": 3, "log_interval": 1},
              # dropout + stochastic depth: the model draws random numbers too (restored by RngStateHook)
              model_overrides=dict(layers=(1, 1, 1, 1), width=0.25, drop_rate=0.5, drop_path_rate=0.2))
    full = run_experiment("kinetics400", "resnet3d50", work_dir=tmp_path / "full", **kw)
    outputs_reproduce(full, "top1", "top5")   # kinetics400's kept outputs (after the multi-view average)

    real = getattr(ResumeSamplerHook, "after_train_iter")
    a = _train_losses(tmp_path / "full")
    assert sorted(a) == [1, 2, 3, 4, 5, 6]
    keys = ("top1", "top5", "eval_videos", "eval_corrupt")
    # (checkpoint interval, killed while running iteration k+1): inside epoch 2 (checkpoint 3 = 1 of its 2 batches
    # done), and at an epoch boundary (checkpoint 4 = end of epoch 2, which mmengine would train again).
    for interval, killed_at in ((3, 3), (2, 4)):
        def kill(self, runner, batch_idx, data_batch=None, outputs=None, _at=killed_at):
            if runner.iter == _at:          # this iteration finished; the last checkpoint is from before it
                raise Killed()
            return real(self, runner, batch_idx, data_batch, outputs)

        wd = tmp_path / f"cut{interval}"
        opts = dict(kw, cfg_options={**kw["cfg_options"], "checkpoint_interval": interval})
        monkeypatch.setattr(ResumeSamplerHook, "after_train_iter", kill)
        with pytest.raises(Killed):
            run_experiment("kinetics400", "resnet3d50", work_dir=wd, **opts)
        monkeypatch.setattr(ResumeSamplerHook, "after_train_iter", real)
        assert not (wd / "results.json").exists()
        resumed = run_experiment("kinetics400", "resnet3d50", work_dir=wd, resume=True, **opts)
        assert resumed["resumed_from"] == killed_at
        b = _train_losses(wd)
        assert sorted(b) == [1, 2, 3, 4, 5, 6], (interval, b)
        for step in range(killed_at + 1, 7):   # trained after the resume: same batches, draws and weights
            assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), (interval, step, a, b)
        assert {k: resumed["metrics"][k] for k in keys} == {k: full["metrics"][k] for k in keys}
        outputs_reproduce(resumed, "top1", "top5")   # a resumed run keeps its final evaluation's outputs too
