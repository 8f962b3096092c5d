"""The one recipe-toggle table: Table 1 toggles are independent and explicit, size-dependent values follow the
paper, named recipes are what the paper says, one ingredient is one object in both tables, and ``--recipe`` on
the ImageNet config resolves to the documented optimizer/schedule/EMA/augmentation (built, not run)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rs_transfer.errors import UserError
from rs_transfer.recipes import TABLE1, TABLE5, Arch, arch_of, randaugment_magnitude, recipe_for_task


def test_table1_toggles_are_independent_and_explicit() -> None:
    assert TABLE1.order == ("cosine", "epochs", "ema", "label_smoothing", "stochastic_depth", "randaugment",
                            "dropout", "weight_decay", "se", "resnet_d")
    arch = Arch(depth=200, resolution=256)
    off_cfg, off_model = TABLE1.edits((), arch)
    assert off_cfg == {"recipe.cosine": False, "recipe.epochs": 90, "recipe.ema": False,
                       "recipe.label_smoothing": 0.0, "recipe.randaugment": False, "recipe.weight_decay": 1e-4}
    assert off_model == dict(drop_path_rate=0.0, drop_path_schedule="stage", drop_rate=0.0, se_ratio=0.0,
                             stem="classic", stem_pool="max", shortcut="conv")
    for name in TABLE1.order:        # one toggle on changes only its own keys
        cfg, model = TABLE1.edits([name], arch)
        changed = {k for k in cfg if cfg[k] != off_cfg.get(k)} | {k for k in model if model[k] != off_model[k]}
        own_cfg, own_model = TABLE1.by_name[name].edits(True, arch)
        assert changed and changed <= set(own_cfg) | set(own_model), name
    with pytest.raises(UserError, match="mixup"):
        TABLE1.edits(["mixup"])
    rows = TABLE1.additive_rows()
    assert len(rows) == 11 and rows[0][:2] == ("00_baseline", "ResNet-200") and rows[-1][2] == TABLE1.order


def test_values_by_model_size() -> None:
    rs50, rs200, rs420 = arch_of("resnetrs50"), arch_of("resnetrs200"), arch_of("resnetrs420")
    assert (rs50.depth, rs50.resolution, rs200.resolution, rs420.resolution) == (50, 160, 256, 320)
    on = {a: TABLE1.edits(TABLE1.order, a) for a in (rs50, rs200, rs420)}
    assert on[rs50][1]["drop_path_rate"] == 0.0 and on[rs200][1]["drop_path_rate"] == 0.1   # 0 below RS-200
    assert on[rs50][0]["recipe.randaugment_magnitude"] == 10 and on[rs200][0]["recipe.randaugment_magnitude"] == 15
    assert on[rs200][1]["drop_rate"] == 0.25 and on[rs420][1]["drop_rate"] == 0.4          # 0.4 at 320 px
    assert on[rs200][0]["recipe.randaugment_layers"] == 2
    # randaug_magnitude of the released configs: resnetrs50_i160 10, resnetrs101_i160 10, resnetrs101_i192 15,
    # resnetrs152_i192 15, resnetrs200_i256 15, resnetrs420_i320 15
    released = {(50, 160): 10, (101, 160): 10, (101, 192): 15, (152, 192): 15, (200, 256): 15, (420, 320): 15}
    assert {k: randaugment_magnitude(*k) for k in released} == released


def test_named_recipes_and_shared_ingredients() -> None:
    van_cfg, van_model = recipe_for_task("imagenet", "vanilla", "resnet152")
    assert (van_cfg["recipe.epochs"], van_cfg["recipe.cosine"], van_cfg["recipe.weight_decay"]) == (90, False, 1e-4)
    assert van_cfg["recipe.name"] == "vanilla" and van_model["drop_rate"] == 0.0
    rs_cfg, rs_model = recipe_for_task("imagenet", "rs", "resnetrs200")
    assert rs_cfg["recipe.epochs"] == 350 and rs_cfg["recipe.ema"] and rs_model["se_ratio"] == 0.25
    assert rs_model["stem"] == "deep" and rs_model["drop_path_rate"] == 0.1
    # Table 4's RS row: 400 epochs, cosine, RA, LS, dropout, lower WD; no SD, no EMA, vanilla architecture.
    t_cfg, t_model = recipe_for_task("imagenet", "rs-transfer", "resnet200")
    assert (t_cfg["recipe.epochs"], t_cfg["recipe.cosine"], t_cfg["recipe.ema"]) == (400, True, False)
    assert t_cfg["recipe.randaugment"] and t_cfg["recipe.label_smoothing"] == 0.1
    assert t_cfg["recipe.weight_decay"] == 4e-5
    assert (t_model["drop_path_rate"], t_model["drop_rate"], t_model["se_ratio"]) == (0.0, 0.25, 0.0)
    assert t_model["stem"] == "classic"
    for name in ("label_smoothing", "ema", "weight_decay", "se"):   # one ingredient, one object
        assert TABLE1.by_name[name] is TABLE5.by_name[name]
    k_cfg, _ = recipe_for_task("kinetics400", "rs", "resnet3d50")
    assert k_cfg["recipe.epochs"] == 350 and k_cfg["recipe.scale_jitter"] is True
    with pytest.raises(UserError, match="pre-training tasks"):
        recipe_for_task("cifar100", "rs", "resnet50")
    with pytest.raises(UserError, match="vanilla, rs"):
        recipe_for_task("kinetics400", "rs-transfer", "resnet3d50")


def _build(tmp_path: Path, backbone: str, recipe: str, root: Path, extra: dict | None = None):
    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext, get_task

    opts, model = recipe_for_task("imagenet", recipe, backbone)
    opts.update(extra or {})
    ctx = RunContext(task="imagenet", backbone=backbone, backbone_kwargs={}, weights=None,
                     normalization={"name": "imagenet", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]},
                     preset="paper", protocol="finetune", data_root=root, work_dir=tmp_path)
    cfg, _, facts = build_config(get_task("imagenet"), ctx, cfg_options=opts, model_overrides=model)
    return cfg, ctx, facts


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_transfer.tasks._imagenet_mini import make_mini

    return make_mini(tmp_path_factory.mktemp("imagenet"))


def test_paper_config_of_each_recipe(tmp_path: Path, mini_root: Path) -> None:
    import json

    cfg, ctx, _ = _build(tmp_path, "resnetrs200", "rs", mini_root)
    tr, va = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert (tr.resolution, va.resolution, va.crop_padding) == (256, 256, 32)      # Table 1: ResNet-200 at 256
    # TF's RandAugment constants (tasks/_randaugment.py), and they reach the built transform
    assert tr.randaugment == dict(num_ops=2, magnitude=15, translate_const=100, cutout_const=40,
                                  policy="tpu") and tr.augment
    from rs_transfer.tasks._imagenet_data import train_transform

    ra = train_transform(tr.resolution, tr.randaugment).transforms[-1]
    assert (ra.num_ops, ra.magnitude, ra.translate_const, ra.cutout_const) == (2, 15, 100, 40)
    assert cfg.model.label_smoothing == 0.1 and cfg.model.backbone.num_classes == 8
    assert cfg.model.backbone.drop_path_rate == 0.1 and cfg.model.backbone.se_ratio == 0.25
    assert cfg.optim_wrapper.optimizer.weight_decay == 4e-5 and cfg.optim_wrapper.optimizer.nesterov
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0                 # no weight decay on BN
    assert cfg.train_cfg.max_epochs == 350
    assert [(s["begin"], s["end"]) for s in cfg.param_scheduler] == [(0, 5), (5, 350)]
    assert "CosineAnnealingLR" in str(cfg.param_scheduler[1]["type"])
    # Global batch 4096 on one process: 64 per step x 64 accumulated micro-batches, LR 0.1 x 4096 / 256.
    assert (cfg.train_dataloader.batch_size, cfg.optim_wrapper.accumulative_counts) == (64, 64)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.6)
    ema = [h for h in cfg.custom_hooks if "EMAHook" in str(h["type"])]
    # decay 0.9999 per step at batch 4096 = this run's global batch, applied once per optimizer step (after the
    # last of the 64 micro-batches)
    assert len(ema) == 1 and ema[0]["momentum"] == pytest.approx(1 - 0.9999, rel=1e-6)
    assert ema[0]["accumulation"] == 64
    assert ema[0]["update_buffers"] and ctx.extra["recipe"] == "rs"

    cfg, ctx, _ = _build(tmp_path, "resnet152", "vanilla", mini_root)
    assert cfg.train_dataloader.dataset.resolution == 224 and cfg.train_dataloader.dataset.randaugment is None
    assert cfg.train_cfg.max_epochs == 90 and cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    step = cfg.param_scheduler[-1]
    assert "MultiStepLR" in str(step["type"]) and step["milestones"] == [30, 60, 80] and step["gamma"] == 0.1
    assert not [h for h in cfg.custom_hooks if "EMAHook" in str(h["type"])]
    assert cfg.model.label_smoothing == 0.0 and cfg.model.backbone.drop_rate == 0.0

    cfg, _, _ = _build(tmp_path, "resnet152", "rs-transfer", mini_root)
    assert cfg.train_cfg.max_epochs == 400 and cfg.model.backbone.drop_rate == 0.25
    assert cfg.model.backbone.drop_path_rate == 0.0 and "EMAHook" not in json.dumps(str(cfg.custom_hooks))


def test_tf_pipeline_details_reach_the_run(tmp_path: Path, mini_root: Path) -> None:
    """The RS recipes resize with TF1's bicubic, choose RandAugment ops as tensorflow/tpu, initialise as TF; the
    anti-aliased resize, Model Garden's policy and TF's BN momentum 0 (with EMA) are one key away."""
    from rs_transfer.tasks._imagenet_data import ImageNetDataset

    for recipe in ("vanilla", "rs", "rs-transfer"):
        cfg, ctx, facts = _build(tmp_path, "resnetrs50", recipe, mini_root)
        assert cfg.train_dataloader.dataset.resize == cfg.val_dataloader.dataset.resize == "tf1-bicubic"
        assert ctx.extra["resize"] == "tf1-bicubic" and cfg.model.backbone.init == "tf"
        assert "bn_momentum" not in cfg.model and "bn_momentum" not in facts    # PyTorch's default unless asked
    ds = ImageNetDataset(str(mini_root), "train", augment=True, resolution=32, crop_padding=8,
                         randaugment=cfg.train_dataloader.dataset.randaugment)
    assert ds.transform.transforms[0].resize == "tf1-bicubic" and ds.transform.transforms[-1].policy == "tpu"
    cfg, ctx, facts = _build(tmp_path, "resnetrs50", "rs", mini_root, {
        "recipe.resize": "bicubic-antialias", "recipe.randaugment_policy": "model-garden", "recipe.bn_momentum": 0})
    assert cfg.train_dataloader.dataset.resize == "bicubic-antialias"
    assert cfg.train_dataloader.dataset.randaugment["policy"] == "model-garden"
    # TF's 0 (old statistics' weight) is PyTorch's 1.0 (batch statistics' weight), per micro-batch too
    assert cfg.model.bn_momentum == 1.0 and facts["bn_momentum"] == 1.0 and ctx.extra["bn_momentum_tf"] == 0
    with pytest.raises(UserError, match="pairs it with the EMA"):
        _build(tmp_path, "resnetrs50", "rs-transfer", mini_root, {"recipe.bn_momentum": 0})
    for key, bad in (("recipe.resize", "bicubic"), ("recipe.randaugment_policy", "garden")):
        with pytest.raises(UserError, match=key):
            _build(tmp_path, "resnetrs50", "rs", mini_root, {key: bad})
    with pytest.raises(UserError, match="in \\[0, 1\\)"):
        _build(tmp_path, "resnetrs50", "rs", mini_root, {"recipe.bn_momentum": 1.5})
