"""Table 5: recipe toggles, the additive study end to end on the mini set (with resume), and that mini learns."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rs_transfer.video import mini
from rs_transfer.video.recipes import TABLE5_ORDER, TOGGLES, additive_rows, recipe_edits
from rs_transfer.studies.table5 import PAPER_TOP1, add_arguments, paper_table, run, run_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: tiny models on 2 shared cores ran ~3x faster than with 2 (the mini data set is generated
    once per session in conftest's ``RS_TRANSFER_HOME``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_toggles_are_independent_and_explicit() -> None:
    assert len(additive_rows()) == 10 and additive_rows()[-1][2] == TABLE5_ORDER
    off_cfg, off_model = recipe_edits(())
    on_cfg, on_model = recipe_edits(TABLE5_ORDER)
    assert set(off_cfg) == set(on_cfg) and set(off_model) == set(on_model)   # every toggle always written
    assert off_model == dict(drop_rate=0.0, drop_path_rate=0.0, drop_path_schedule="stage", se_ratio=0.0,
                             stem="classic", stem_pool_temporal_stride=2, temporal_kernels="cvrl")
    assert on_cfg == {"recipe.label_smoothing": 0.1, "recipe.ema": True, "recipe.weight_decay": 4e-5,
                      "recipe.epochs": 350, "recipe.scale_jitter": True}
    for t in TOGGLES:                 # turning one toggle on changes only that toggle's keys
        cfg, model = recipe_edits([t.name])
        assert {k for k in cfg if cfg[k] != off_cfg[k]} | {k for k in model if model[k] != off_model[k]} \
            == set(t.config_on) | (set(t.model_on) - {"drop_path_schedule"})


def test_row_09_is_the_registered_3d_resnet_rs_50() -> None:
    """The last row (all toggles on the resnet3d50 baseline) builds exactly TF's 3D ResNet-RS-50 (resnetrs3d50):
    same arguments, same modules, same parameter shapes; every earlier row differs from it."""
    from rs_transfer import create_model
    from rs_transfer.backbones import get_spec

    base, rs = get_spec("resnet3d50").kwargs, get_spec("resnetrs3d50").kwargs
    _, model = recipe_edits(TABLE5_ORDER)
    assert {**base, **model} == rs
    row09, registered = create_model("resnet3d50", num_classes=400, **model), create_model("resnetrs3d50",
                                                                                          num_classes=400)
    assert repr(row09) == repr(registered) and row09.describe() == registered.describe()
    assert {k: v.shape for k, v in row09.state_dict().items()} == \
        {k: v.shape for k, v in registered.state_dict().items()}
    for _, _, enabled in additive_rows()[:-1]:
        assert {**base, **recipe_edits(enabled)[1]} != rs


def test_ema_decay_follows_the_global_batch() -> None:
    """TF's 0.9999 is per step at batch 1024: the recipe hands the runner's switch that reference, and the switch
    makes it decay ** (B / 1024) per step at batch B (else '+EMA' is a no-op at small batches, or averages over far
    too many samples at large ones)."""
    from mmengine.config import Config

    from rs_transfer.runner.ema import ema_momentum
    from rs_transfer.video.recipes import apply_recipe

    cfg = Config.fromfile(str(REPO / "configs" / "kinetics400.py"))
    cfg.recipe.ema = True
    apply_recipe(cfg)
    assert cfg.ema == dict(decay=0.9999, reference_batch=1024) and "ema_momentum" not in cfg

    def m(batch: int, accumulation: int = 1) -> float:
        return ema_momentum(cfg.ema, None, batch, accumulation)["momentum_per_iteration"]

    assert m(1024) == pytest.approx(1e-4)
    assert m(256) == pytest.approx(1 - 0.9999 ** 0.25)
    assert 1 - m(4096) == pytest.approx(0.9999 ** 4)
    # 16 micro-batches of 64 per step: 16 EMA updates compose to one step's decay
    assert (1 - m(1024, accumulation=16)) ** 16 == pytest.approx(0.9999)


def test_paper_numbers_file_matches_the_code() -> None:
    data = json.loads((REPO / "results" / "paper_table5.json").read_text())
    assert data["rows"] == paper_table()
    assert [r["top1"] for r in data["rows"]] == [73.4, 74.4, 74.9, 76.1, 76.1, 76.3, 76.4, 77.4, 77.9, 78.2]
    assert list(PAPER_TOP1) == [r[0] for r in additive_rows()]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return mini.make_mini(tmp_path_factory.mktemp("k400") / "mini", counts={"train": 2, "val": 1})


@pytest.mark.slow
def test_mini_study_end_to_end_and_resume(small_root, tmp_path) -> None:
    """All ten rows build and run (1 short epoch each); the report has every row; a rerun reuses finished rows and
    redoes only the one whose results.json is gone."""
    from rs_transfer.runner import run_experiment

    calls: list[str] = []

    def counting(*args, **kwargs):
        calls.append(Path(kwargs["work_dir"]).name)
        return run_experiment(*args, **kwargs)

    kw = dict(preset="mini", work_dir=tmp_path / "runs", out=tmp_path / "report" / "table5-mini",
              data_root=str(small_root), cfg_options={"train_cfg.max_epochs": 1, "train_cfg.val_interval": 1,
                                                      "log_interval": 100}, runner=counting)
    report = run_study(**kw)
    assert calls == [r[0] for r in additive_rows()]
    assert [r["label"] for r in report["rows"]][0] == "3D ResNet-50" and len(report["rows"]) == 10
    # denominators: 4 val videos, none missing or corrupt; the truncated training file is known from data check
    # and never opened, so nothing lands in the skip log
    assert all(0 <= r["top1"] <= 100 and (r["eval_videos"], r["missing"], r["corrupt"]) == (4, 0, 0)
               for r in report["rows"])
    assert report["rows"][0]["architecture"].startswith("layout tf: stem classic + max pool (temporal stride 2)")
    assert report["rows"][-1]["architecture"].startswith("layout tf: stem deep + max pool (temporal stride 1)")
    last = json.loads((tmp_path / "runs" / "09_resnet_d" / "results.json").read_text())
    assert last["backbone_kwargs"]["stem"] == "deep" and last["backbone_kwargs"]["se_ratio"] == 0.25
    assert last["config"]["recipe"]["ema"] is True and "EMAHook" in json.dumps(last["config"]["custom_hooks"])
    md = (tmp_path / "report" / "table5-mini.md").read_text()
    assert "| + ResNet-D | 78.2 | +0.3 |" in md and "| eval videos | missing | corrupt |" in md
    assert (tmp_path / "report" / "table5-mini.csv").read_text().count("\n") == 11
    saved = json.loads((tmp_path / "report" / "table5-mini.json").read_text())
    assert saved["rows"][3]["paper_delta"] == 1.2

    calls.clear()
    (tmp_path / "runs" / "04_ema" / "results.json").unlink()
    again = run_study(**kw)
    assert calls == ["04_ema"]         # the others' recorded config hash equals what they would run now
    assert [r["reused"] for r in again["rows"]] == [r[0] != "04_ema" for r in additive_rows()]

    # Another --cfg-options (or seed) is another configuration: those rows run again, never a stale number.
    calls.clear()
    kw["cfg_options"] = {**kw["cfg_options"], "model.view_batch": 32}
    third = run_study(**kw, max_rows=1)
    assert calls == ["00_baseline"] and not third["rows"][0]["reused"]


@pytest.mark.slow
def test_cli_arguments_and_mini_learns(tmp_path, capsys) -> None:
    """``study table5 --preset mini --rows 1``: the baseline row at the full mini schedule beats chance (25%)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--preset", "mini", "--rows", "1", "--work-dir", str(tmp_path / "runs"),
                              "--out", str(tmp_path / "t5"), "--cfg-options", "log_interval=100"])
    assert run(args) == 0
    row = json.loads((tmp_path / "t5.json").read_text())["rows"][0]
    assert row["top1"] > 50.0, row
    assert "| 3D ResNet-50 | 73.4 |" in capsys.readouterr().out


def test_paper_preset_config(small_root, tmp_path) -> None:
    """The resolved paper config: 32x2 clips at 224 with scale jitter, 10x3 test views at 256, RS recipe wired into
    optimizer/schedule/EMA/loss, class count from the data, skip log in the work dir (built, not run)."""
    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext, get_task

    task = get_task("kinetics400")
    task.check(small_root)   # as run_experiment does first: probes every file once (cached)
    ctx = RunContext(task="kinetics400", backbone="resnetrs3d50", backbone_kwargs={}, weights=None,
                     normalization={"name": "imagenet", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]},
                     preset="paper", protocol="finetune", data_root=small_root, work_dir=tmp_path)
    cfg, _, facts = build_config(task, ctx)
    tr, va = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert (tr.num_frames, tr.frame_stride, tr.crop_size, tr.scale_jitter, tr.flip) == (32, 2, 224, True, True)
    assert (va.num_clips, va.num_crops, va.test_size, va.mode) == (10, 3, 256, "test")
    assert cfg.model.backbone.num_classes == 4 and cfg.model.label_smoothing == 0.1
    assert cfg.model.data_preprocessor.mean == [1.0, 2.0, 3.0]
    assert cfg.train_cfg.max_epochs == cfg.train_cfg.val_interval == 350
    assert cfg.optim_wrapper.optimizer.weight_decay == 4e-5 and cfg.optim_wrapper.optimizer.lr == 0.8
    assert [s["end"] for s in cfg.param_scheduler] == [5, 350]
    ema = [h for h in cfg.custom_hooks if "EMAHook" in str(h["type"])]
    batch, accum = facts["global_batch_size"], facts["accumulation"]
    assert len(ema) == 1 and ema[0]["update_buffers"] and "WarmupEMA" in str(ema[0]["ema_type"])
    # 0.9999 per step at 1024 clips, for this run's global batch and accumulation (after TF's warm-up)
    assert (1 - ema[0]["momentum"]) ** accum == pytest.approx(0.9999 ** (batch / 1024))
    assert ema[0]["batch_ratio"] == batch / 1024 and ema[0]["accumulation"] == accum
    assert tr.skip_log == str(tmp_path / "skipped_files.tsv") == cfg.val_evaluator.skip_log
    assert ctx.extra["views"] == "10x3" and ctx.extra["frames"] == "32x2"
    assert ctx.extra["architecture"] == ("layout tf: stem deep + max pool (temporal stride 1), conv shortcuts, "
                                         "self-gating, SE 0.25, temporal kernels 111/1111/333333/333")
    assert ctx.extra["inflate"] == "center" and ctx.backbone_kwargs["se_ratio"] == 0.25
    assert "ResumableSampler" in str(cfg.train_dataloader.sampler.type)
    assert any("ResumeSamplerHook" in str(h["type"]) for h in cfg.custom_hooks)
    assert (cfg.val_evaluator.known_corrupt, cfg.val_evaluator.missing) == (0, 0)     # val of the small set
    assert cfg.train_dataloader.dataset.exclude == [str(small_root / mini.CORRUPT)]   # known from data check
