"""The dense tasks' configs as the runner resolves them: backbone options (frozen stages, norm eval) and the weight
source's normalisation reach the built model, heads fit the chosen backbone's widths, BN becomes SyncBN under DDP,
and the paper preset keeps the documented protocol values."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from conftest import TINY
from rs_transfer.backbones import ResNetRS
from rs_transfer.runner import build_config
from rs_transfer.tasks import RunContext, get_task

UNIT = {"name": "unit-range", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
PAPER = {  # task -> (max_iters, a protocol fact from the config docstring)
    "voc-det": (12414, lambda c: c.train_dataloader.dataset.datasets[0].pipeline[2]["scale"] == (1000, 600)),
    "voc-seg": (40000, lambda c: c.crop_size == (512, 512) and c.model.decode_head.num_classes == 21),
    "ade20k": (160000, lambda c: c.crop_size == (512, 512) and c.model.decode_head.num_classes == 150),
    "nyu-depth": (4000, lambda c: c.crop_size == (416, 544) and c.val_evaluator.max_depth_eval == 10.0),
}


def _config(name: str, tmp_path: Path, preset: str, **overrides):
    task = get_task(name)
    ctx = RunContext(task=name, backbone="resnet50", backbone_kwargs={}, weights=None, normalization=UNIT,
                     preset=preset, protocol="finetune", data_root=tmp_path, work_dir=tmp_path / "wd")
    cfg, _, _ = build_config(task, ctx, model_overrides={**TINY, **overrides})
    return cfg


@pytest.mark.parametrize("name", list(PAPER))
def test_backbone_options_and_normalisation_reach_the_model(name: str, tmp_path: Path) -> None:
    cfg = _config(name, tmp_path, "mini", frozen_stages=2, norm_eval=True)
    init_default_scope(cfg.get("default_scope") or "mmseg")
    model = MODELS.build(cfg.model)
    model.train()
    bb = model.backbone
    assert isinstance(bb, ResNetRS) and bb.frozen_stages == 2 and bb.norm_eval
    assert not any(p.requires_grad for p in bb.layer2.parameters())
    assert all(p.requires_grad for p in bb.layer3.parameters())
    assert not any(m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(model.data_preprocessor.mean.flatten(), torch.zeros(3))
    assert torch.equal(model.data_preprocessor.std.flatten(), torch.full((3,), 255.0))
    # Under DDP the runner converts every BN (backbone and heads) because the config sets sync_bn.
    from mmengine.model import convert_sync_batchnorm

    assert cfg.sync_bn == "torch"
    synced = convert_sync_batchnorm(model)
    assert isinstance(synced.backbone.bn1, nn.SyncBatchNorm)
    n_head = sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) - sum(
        isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.modules())
    assert n_head == 0 if name == "voc-det" else n_head > 0     # Faster R-CNN's FPN/RoI heads have no BN
    # Heads were sized for the quarter-width backbone: a tensor-mode forward runs.
    with torch.no_grad():
        feats = model.eval().extract_feat(torch.randn(1, 3, 64, 64))
        out = model.decode_head(feats) if hasattr(model, "decode_head") else feats[0]
    assert out.shape[0] == 1


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_preset_keeps_the_protocol(name: str, tmp_path: Path) -> None:
    cfg = _config(name, tmp_path, "paper")
    iters, fact = PAPER[name]
    accum = cfg.optim_wrapper.accumulative_counts   # 1 process: the global batch 16 by gradient accumulation
    assert cfg.train_cfg.max_iters == iters * accum and cfg.train_cfg.val_interval == iters * accum
    assert fact(cfg)
    assert cfg.train_dataloader.batch_size in (2, 4) and cfg.global_batch_size == 16
    assert cfg.train_dataloader.batch_size * accum == 16 and "auto_scale_lr" not in cfg
    for key in ("train_dataloader", "val_dataloader"):
        ds = cfg[key].dataset
        roots = [d.data_root for d in ds.datasets] if "datasets" in ds else [ds.data_root]
        assert all(str(tmp_path) in r for r in roots), roots


@pytest.mark.parametrize("name", ["voc-det", "voc-seg", "nyu-depth"])
def test_weights_and_their_normalisation_reach_the_backbone(name: str, tmp_path: Path, randomize) -> None:
    """A checkpoint given as --weights is loaded by ResNetRS.init_weights inside the mmdet/mmseg model (the runner
    calls model.init_weights), and its recorded input normalisation lands in the data preprocessor."""
    from rs_transfer import create_model, save_weights
    from rs_transfer.runner import weights_info

    src = randomize(create_model("resnet50", num_classes=10, **TINY))
    ckpt = save_weights(src, tmp_path / "src.pth", normalization="unit-range")
    info = weights_info(str(ckpt))
    task = get_task(name)
    ctx = RunContext(task=name, backbone="resnet50", backbone_kwargs={}, weights=str(ckpt),
                     normalization=info["normalization"], preset="mini", protocol="finetune", data_root=tmp_path,
                     work_dir=tmp_path / "wd")
    cfg, _, _ = build_config(task, ctx, model_overrides=TINY)
    init_default_scope(cfg.get("default_scope") or "mmseg")
    model = MODELS.build(cfg.model)
    model.init_weights()
    expected = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    got = model.backbone.state_dict()
    assert expected.keys() <= got.keys()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert torch.equal(model.data_preprocessor.std.flatten(), torch.full((3,), 255.0))
