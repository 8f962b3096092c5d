"""The shared runner: resume after an interruption reproduces the uninterrupted run, 2-process DDP (gloo, CPU),
LR scaling with batch size and accumulation, and one-line errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from conftest import TINY
from rs_transfer.errors import UserError
from rs_transfer.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]


class Interrupt(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class InterruptAt(Hook):
    """Simulates a killed job: raises after training iteration ``at`` (checkpoints before it are on disk)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 >= self.at:
            raise Interrupt(f"interrupted after iteration {runner.iter + 1}")


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    # Dropout stays on (resnetrs50 registers drop_rate=0.25): the RNG state must be restored for equality.
    kw = dict(preset="mini", model_overrides=TINY, seed=1)
    full = run_experiment("cifar100", "resnetrs50", work_dir=tmp_path / "full", **kw)
    broken = tmp_path / "broken"
    with pytest.raises(Interrupt):
        run_experiment("cifar100", "resnetrs50", work_dir=broken, cfg_options={
            "custom_hooks": [dict(type="InterruptAt", at=20)]}, **kw)
    assert (broken / "iter_15.pth").is_file() and not (broken / "results.json").exists()
    resumed = run_experiment("cifar100", "resnetrs50", work_dir=broken, resume=True, **kw)
    assert resumed["resumed_from"] == 15 and full["resumed_from"] is None
    assert resumed["metrics"] == full["metrics"]
    a, b = load_file(full["final_weights"]), load_file(resumed["final_weights"])  # the evaluated models
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """torchrun, 2 processes, gloo: same global batch semantics (LR scaled x2 vs. 1 process)."""
    wd = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "rs_transfer.cli", "run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
           "--backbone-options", "layers=[1,1,1,1]", "width=0.25", "--launcher", "pytorch", "--work-dir", str(wd)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((wd / "results.json").read_text())
    assert res["world_size"] == 2 and res["launcher"] == "pytorch"
    assert res["effective_batch_size"] == 2 * res["batch_size_per_process"]
    assert res["lr_scale"] == pytest.approx(2 * res["batch_size_per_process"] / 256)
    assert res["config"]["env_cfg"]["dist_cfg"]["backend"] == "gloo"
    assert res["value"] > 10.0  # above chance (10%) after 30 iterations at a global batch of 32


def test_lr_scaling_counts_accumulation() -> None:
    from rs_transfer.runconfig import _batch_facts
    from mmengine.config import Config

    cfg = Config(dict(optim_wrapper=dict(accumulative_counts=4), train_dataloader=dict(batch_size=16),
                      auto_scale_lr=dict(enable=True, base_batch_size=256)))
    facts = _batch_facts(cfg, world_size=2)
    # 2 processes x 16 x 4 accumulation = 128 = half of 256; mmengine will compute 2*16 / (256/4) = 0.5 too.
    assert facts["effective_batch_size"] == 128 and facts["lr_scale"] == 0.5
    assert cfg.auto_scale_lr.base_batch_size == 64


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(task="cifar10", backbone="resnetrs50"), "Closest: cifar100"),
    (dict(task="cifar100", backbone="resnetrs5"), "Closest: resnetrs50"),
    (dict(task="cifar100", backbone="resnetrs50", protocol="lin"), "finetune, linear, knn"),
    (dict(task="cifar100", backbone="resnetrs50", preset="tiny"), "mini"),
    (dict(task="cifar100", backbone="resnetrs50", model_overrides={"sr_ratio": 0}), "se_ratio"),
    (dict(task="cifar100", backbone="resnetrs50", weights="no/such/file.pth"), "not found"),
    (dict(task="cifar100", backbone="resnetrs50", cfg_options={"train_cfg.max_iter": 5}), "train_cfg.max_iters"),
    (dict(task="cifar100", backbone="resnetrs50", cfg_options={"ema_momentun": 0.1}), "ema_momentum"),
])
def test_bad_input_is_a_user_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        run_experiment(preset=kwargs.pop("preset", "mini"), **kwargs)


def test_malformed_config_and_options_are_one_line_errors(tmp_path: Path, capsys) -> None:
    from rs_transfer.cli import main

    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(\n")
    assert main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
                 "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rs-transfer run: error: cannot read config") and "\n" not in err
    assert main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--cfg-options", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    missing = tmp_path / "nodata"
    assert main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--data-root", str(missing)]) == 2
    assert "cifar-100-python.tar.gz" in capsys.readouterr().err


def test_paper_preset_config_resolves_the_protocol(tmp_path: Path) -> None:
    from mmengine.hooks import EMAHook
    from mmengine.optim import OptimWrapper

    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext, get_task

    task = get_task("cifar100")
    ctx = RunContext(task="cifar100", backbone="resnetrs152", backbone_kwargs={}, weights=None,
                     normalization={"name": "unit-range", "mean": [0, 0, 0], "std": [255, 255, 255]},
                     preset="paper", protocol="finetune", data_root=tmp_path, work_dir=tmp_path / "wd", seed=5)
    cfg, _, facts = build_config(task, ctx, cfg_options={"ema_momentum": 1e-4}, model_overrides={"se_ratio": 0})
    bb = cfg.model.backbone
    assert (bb.depth, bb.se_ratio, bb.num_classes, bb.drop_rate) == (152, 0, 100, 0.25)
    assert cfg.model.data_preprocessor.mean == [0, 0, 0] and cfg.model.data_preprocessor.std == [255] * 3
    assert cfg.model.resolution == 224 and cfg.train_cfg.max_iters == 20000
    warm, cos = cfg.param_scheduler
    assert (warm.end, cos.begin, cos.end, cos.T_max) == (500, 500, 20000, 19500)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0 and cfg.optim_wrapper.optimizer.nesterov
    ema = [h for h in cfg.custom_hooks if h["type"] is EMAHook]
    assert len(ema) == 1 and ema[0]["momentum"] == 1e-4 and ema[0]["update_buffers"]
    assert cfg.default_hooks.checkpoint.interval == 2000 and cfg.randomness.seed == 5
    assert "TensorboardVisBackend" in str(cfg.visualizer)
    if not torch.cuda.is_available():  # AMP only where it exists
        assert cfg.optim_wrapper.type is OptimWrapper and facts["amp"] is None
    assert facts["lr_scale"] == 32 / 256 and facts["effective_batch_size"] == 32


def test_ema_run_keeps_averaged_weights(tmp_path: Path) -> None:
    # Interrupted after the mid-run checkpoint: a complete run keeps only weights.safetensors (no training state).
    with pytest.raises(Interrupt):
        run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path,
                       cfg_options={"ema_momentum": 0.01, "custom_hooks": [dict(type="InterruptAt", at=16)]})
    ckpt = torch.load(tmp_path / "iter_15.pth", map_location="cpu", weights_only=False)
    assert "ema_state_dict" in ckpt and "EMAHook" in ckpt["meta"]["cfg"]


def test_finetune_from_checkpoint_uses_its_normalisation(tmp_path: Path) -> None:
    from rs_transfer.backbones import create_model
    from rs_transfer.runner import check_normalization
    from rs_transfer.weights import IMAGENET, save_weights

    ckpt = save_weights(create_model("resnetrs50", **TINY), tmp_path / "ssl.pth", normalization="unit-range")
    res = run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, weights=str(ckpt),
                         work_dir=tmp_path / "wd")
    assert res["config"]["model"]["data_preprocessor"]["std"] == [255.0] * 3
    assert res["weights"]["normalization"]["name"] == "unit-range"
    assert res["backbone_kwargs"]["weights"] == str(ckpt.resolve())
    model = create_model("resnetrs50", **TINY)
    model.input_normalization = IMAGENET
    with pytest.raises(RuntimeError, match="mismatch"):
        check_normalization(model, res["weights"]["normalization"])


def test_config_hash_ignores_local_folders(tmp_path: Path) -> None:
    a = run_experiment("cifar100", "resnetrs50", preset="mini", protocol="knn", model_overrides=TINY,
                       work_dir=tmp_path / "a")
    b = run_experiment("cifar100", "resnetrs50", preset="mini", protocol="knn", model_overrides=TINY,
                       work_dir=tmp_path / "b")
    c = run_experiment("cifar100", "resnetrs50", preset="mini", protocol="knn", model_overrides=TINY,
                       work_dir=tmp_path / "c", cfg_options={"probe.knn_k": 3})
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]
    assert a["metrics"] == b["metrics"]
    ft = [run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path / f"f{i}",
                         cfg_options={"train_cfg.max_iters": 2}) for i in range(2)]
    assert ft[0]["config_hash"] == ft[1]["config_hash"]
    # --cfg-options train_cfg.max_iters alone stretches the LR schedule to the new length
    assert [p["end"] for p in ft[0]["config"]["param_scheduler"]] == [1, 2]
