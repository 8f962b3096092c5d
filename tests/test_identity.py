"""One run reads its checkpoint once; results.json's config_hash IS the identity studies compare; the identity
names classes, not module paths, and covers the weights file's content."""
from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest

from conftest import TINY


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    from rs_transfer import create_model, save_weights

    return save_weights(create_model("resnetrs50", num_classes=100, **TINY), tmp_path / "w.safetensors",
                        normalization="imagenet")


def test_a_run_opens_its_checkpoint_once_and_records_the_study_hash(tmp_path: Path, tiny_weights: Path,
                                                                    monkeypatch) -> None:
    from rs_transfer.runner import prepare_run, run_experiment
    from rs_transfer.studies.plan import expected_hash
    from rs_transfer.studies.reuse import recorded_hash

    target = str(tiny_weights.resolve())
    opened: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def counting(real):
        def wrapper(file, *a, **k):
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) == target:
                opened.append(real.__name__)
            return real(file, *a, **k)
        return wrapper

    monkeypatch.setattr(builtins, "open", counting(real_open))
    monkeypatch.setattr(io, "open", counting(real_io_open))
    monkeypatch.setattr(os, "open", counting(real_os_open))
    kw = dict(weights=str(tiny_weights), preset="mini", model_overrides=TINY, work_dir=tmp_path / "run",
              cfg_options={"train_cfg.max_iters": 2})
    res = run_experiment("cifar100", "resnetrs50", **kw)
    assert len(opened) == 1, f"the checkpoint was opened {len(opened)} times: {opened}"
    assert "sha256" in res["weights"] and len(res["weights"]["sha256"]) == 64
    monkeypatch.undo()
    # the hash results.json records is the one a study computes for the same cell, and the one re-derived from it
    assert res["config_hash"] == expected_hash("cifar100", "resnetrs50", **kw) == recorded_hash(res)
    assert prepare_run("cifar100", "resnetrs50", **kw).config_hash == res["config_hash"]


def test_identity_names_classes_not_module_paths() -> None:
    from rs_transfer.studies.reuse import portable_hash

    moved = {"model": {"type": "rs_transfer.backbones.resnet.ResNetRS", "depth": 50},
             "custom_hooks": [{"type": "rs_transfer.checkpoints.AtomicCheckpointHook"},
                              {"type": "EMAHook", "ema_type": "rs_transfer.ema.WarmupEMA"}]}
    now = {"model": {"type": "ResNetRS", "depth": 50},
           "custom_hooks": [{"type": "rs_transfer.AtomicCheckpointHook"},
                            {"type": "mmengine.hooks.ema_hook.EMAHook", "ema_type": "rs_transfer.WarmupEMA"}]}
    assert portable_hash(moved, "/w", "/d") == portable_hash(now, "/w", "/d")
    assert portable_hash(now, "/w", "/d") != portable_hash({**now, "model": {"type": "ResNetRS", "depth": 101}},
                                                           "/w", "/d")


def test_identity_covers_the_weights_content(tmp_path: Path, tiny_weights: Path) -> None:
    """Re-training into the same path must not keep the old row: the same path with other bytes is another cell."""
    from rs_transfer import create_model, save_weights
    from rs_transfer.studies.plan import expected_hash

    kw = dict(weights=str(tiny_weights), preset="mini", model_overrides=TINY, work_dir=tmp_path / "cell")
    before = expected_hash("cifar100", "resnetrs50", **kw)
    assert expected_hash("cifar100", "resnetrs50", **kw) == before       # deterministic
    import torch

    torch.manual_seed(1)
    save_weights(create_model("resnetrs50", num_classes=100, **TINY), tiny_weights, normalization="imagenet")
    assert expected_hash("cifar100", "resnetrs50", **kw) != before
