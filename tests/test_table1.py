"""``study table1``: the additive ImageNet study end to end on the mini set; finished rows are reused by config
hash, a changed option runs again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_transfer.studies.table1 import PAPER_TOP1, run_study
from rs_transfer.recipes import TABLE1

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_numbers_and_rows() -> None:
    assert list(PAPER_TOP1) == [r[0] for r in TABLE1.additive_rows()]
    assert [PAPER_TOP1[r[0]] for r in TABLE1.additive_rows()] == [79.0, 79.3, 78.8, 79.1, 80.4, 80.6, 81.0, 80.7,
                                                                  82.2, 82.9, 83.4]


@pytest.mark.slow
def test_mini_study_all_rows_then_reuse(tmp_path: Path) -> None:
    from rs_transfer.runner import run_experiment

    calls: list[str] = []

    def counting(*args, **kwargs):
        calls.append(Path(kwargs["work_dir"]).name)
        return run_experiment(*args, **kwargs)

    # One short epoch per row (the rows' own mini lengths are 3-12 epochs): the machinery, not the numbers.
    kw = dict(preset="mini", work_dir=tmp_path / "runs", out=tmp_path / "report" / "table1-mini",
              cfg_options={"train_cfg.max_epochs": 1, "train_cfg.val_interval": 1, "log_interval": 100},
              runner=counting)
    report = run_study(**kw)
    ids = [r[0] for r in TABLE1.additive_rows()]
    assert calls == ids and [r["id"] for r in report["rows"]] == ids
    assert all(0 <= r["top1"] <= 100 and r["top5"] is not None for r in report["rows"])
    last = json.loads((tmp_path / "runs" / "10_resnet_d" / "results.json").read_text())
    kw_last = last["backbone_kwargs"]
    assert kw_last["stem"] == "deep" and kw_last["se_ratio"] == 0.25 and kw_last["drop_path_rate"] == 0.1
    assert last["config"]["recipe"]["ema"] is True and last["config"]["recipe"]["randaugment_magnitude"] == 15
    assert last["config"]["recipe"]["name"] == "table1:10_resnet_d"
    base = json.loads((tmp_path / "runs" / "00_baseline" / "results.json").read_text())
    assert base["backbone_kwargs"]["stem"] == "classic" and base["config"]["recipe"]["cosine"] is False
    md = (tmp_path / "report" / "table1-mini.md").read_text()
    assert "| + ResNet-D | 83.4 | +0.5 |" in md and "| ResNet-200 | 79.0 | - |" in md
    assert (tmp_path / "report" / "table1-mini.csv").read_text().count("\n") == 12

    # The plan of the finished study: every row done, and its train samples (epochs x the listed training set,
    # counted before any run) are the samples each run recorded.
    run_study(**kw, dry_run=True, log=lambda *a: None)
    plan = json.loads((tmp_path / "runs" / "plan.json").read_text())
    assert [c["state"] for c in plan["cells"]] == ["done"] * len(ids)
    for cell in plan["cells"]:
        ran = json.loads((tmp_path / "runs" / cell["name"] / "results.json").read_text())
        assert cell["train_samples"] == ran["train_samples"] > 0, cell["name"]

    calls.clear()
    (tmp_path / "runs" / "03_ema" / "results.json").unlink()
    again = run_study(**kw)
    assert calls == ["03_ema"]
    assert [r["reused"] for r in again["rows"]] == [i != "03_ema" for i in ids]

    calls.clear()   # another option = another configuration: nothing is reused
    run_study(**{**kw, "cfg_options": {**kw["cfg_options"], "recipe.warmup_epochs": 2}}, max_rows=1)
    assert calls == ["00_baseline"]


@pytest.mark.slow
def test_mini_scaling_study_report(tmp_path: Path) -> None:
    """Two depths x one width/resolution/length (1 mini epoch each): every cell has top-1, FLOPs growing with
    depth, training and inference times; the report has its plot; a rerun reuses both cells."""
    from rs_transfer.studies.scaling import run_study as scaling

    calls: list[str] = []

    def counting(*args, **kwargs):
        from rs_transfer.runner import run_experiment

        calls.append(Path(kwargs["work_dir"]).name)
        return run_experiment(*args, **kwargs)

    kw = dict(depths=[50, 200], widths=[1.0], resolutions=[160], epochs=[10], preset="mini",
              work_dir=tmp_path / "runs", out=tmp_path / "scaling", cfg_options={"log_interval": 100},
              latency_batch=2, runner=counting)
    report = scaling(**kw)
    assert calls == ["d50-w1-r160-e10", "d200-w1-r160-e10"]
    small, big = report["rows"]
    assert small["gflops"] < big["gflops"] and all(r["infer_ms_per_image"] > 0 for r in report["rows"])
    assert all(0 <= r["top1"] <= 100 and r["train_time_s"] > 0 for r in report["rows"])
    res = json.loads((tmp_path / "runs" / "d200-w1-r160-e10" / "results.json").read_text())
    # Training time is the train loop's (results' train_time_s), never the run's wall time.
    assert big["train_time_s"] == res["train_time_s"] < res["wall_time_s"] and not big["train_time_missing"]
    assert big["train_images_per_s"] == res["train_images_per_s"] and big["eval_time_s"] == res["eval_time_s"] > 0
    assert res["backbone_kwargs"]["drop_path_rate"] == 0.1 and res["config"]["recipe"]["randaugment_magnitude"] == 15
    assert res["extra"]["resolution"] == 32 and res["config"]["recipe"]["epochs"] == 10
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    calls.clear()
    assert [r["reused"] for r in scaling(**kw)["rows"]] == [True, True] and calls == []


def test_scaling_report_marks_cells_without_train_time() -> None:
    """A reused results.json from before training time was measured: its cell says so (table, footnote, CSV, plot),
    and wall time never stands in for training time."""
    from rs_transfer.studies.scaling import COLS, to_markdown, to_png, training_time
    from rs_transfer.studies.tables import to_csv

    old = {"wall_time_s": 500.0, "throughput_samples_per_s": 9.0}
    new = {"wall_time_s": 500.0, "train_time_s": 321.5, "eval_time_s": 40.0, "train_images_per_s": 12.25}
    assert training_time(old) == dict(train_time_s=None, train_images_per_s=None, eval_time_s=None,
                                      train_time_missing=True)
    assert training_time(new) == dict(train_time_s=321.5, train_images_per_s=12.25, eval_time_s=40.0,
                                      train_time_missing=False)
    rows = [dict(id=f"d{d}-w1-r160-e10", depth=d, width=1.0, resolution=160, epochs=10, top1=70.0 + d / 100,
                 top5=None, minival_top1=None, gflops=d / 10, infer_ms_per_image=1.5, **training_time(res))
            for d, res in ((50, old), (101, new))]
    report = dict(study="scaling", preset="mini", rows=rows, note="")
    md = to_markdown(report)
    assert "| 50 | 1 | 160 | 10 | 70.5 | - | 5.000 | n/a† | n/a† | 1.50 |" in md
    assert "| 101 | 1 | 160 | 10 | 71.0 | - | 10.100 | 321.5 | 12.2 | 1.50 |" in md
    assert "† d50-w1-r160-e10: no train_time_s in results.json (written before training time was measured" in md
    assert "500" not in md
    csv = to_csv(rows, COLS).splitlines()
    assert csv[1].split(",")[COLS.index("train_time_s")] == "" and csv[1].split(",")[COLS.index(
        "train_time_missing")] == "True"
    assert to_png(report)[:4] == b"\x89PNG"


def test_row_studies_share_their_common_options() -> None:
    """table1, table5 and scaling take the same common options (one definition, rs_transfer/studies/args.py), each
    with its own folders in the help; the additive studies also share --config/--rows/--backbone-options."""
    import argparse

    from rs_transfer.studies import scaling as scaling_study
    from rs_transfer.studies import table1 as pretrain_study
    from rs_transfer.studies import table5
    common = dict(preset="paper", data_root=None, work_dir=None, out=None, seed=0, seeds=1, cfg_options=None,
                  launcher="none")
    for mod, name, extra in ((pretrain_study, "table1", {"rows": None, "config": None, "backbone_options": None}),
                             (table5, "table5", {"rows": None, "config": None, "backbone_options": None}),
                             (scaling_study, "scaling", {"latency_batch": 8})):
        parser = argparse.ArgumentParser()
        mod.add_arguments(parser)
        args = vars(parser.parse_args([]))
        assert {k: args[k] for k in {**common, **extra}} == {**common, **extra}, name
        text = parser.format_help()
        assert f"work_dirs/{name}[-mini]" in text and f"results/{name}[-mini]" in text, name
        seeded = parser.parse_args(["--preset", "mini", "--seed", "3", "--launcher", "pytorch", "--cfg-options",
                                    "a=1", "b=2"])
        assert (seeded.preset, seeded.seed, seeded.launcher, seeded.cfg_options) == ("mini", 3, "pytorch",
                                                                                     ["a=1", "b=2"])


def test_seeds_run_apart_are_reused_per_seed_and_reported_with_intervals(tmp_path: Path) -> None:
    """``--seeds 2``: each seed of a row is its own run (row folder, then ``<row>-seed1``), reused by its own config
    hash; a row reports the mean, its interval from the kept outputs, the paired step to the previous row, and says
    how many runs it averages. A stand-in runner writes what run_experiment writes (results.json with the resolved
    config, eval_outputs.npz), with accuracy rising by row."""
    import numpy as np

    from rs_transfer import eval_outputs
    from rs_transfer.atomic import write_json_atomic
    from rs_transfer.runner import prepare_run

    calls: list[str] = []

    def fake(task, backbone, *, work_dir, launcher="none", resume=False, **kw):
        calls.append(Path(work_dir).name)
        prep = prepare_run(task, backbone, work_dir=work_dir, check_data=False, **kw)
        wd = prep.work_dir
        rng = np.random.default_rng(kw["seed"] + 10 * len(calls))
        p = 0.5 if "baseline" in wd.name else 0.8
        label = rng.integers(10, size=300)
        top = np.where((rng.random(300) < p)[:, None], label[:, None], (label[:, None] + 1) % 10)
        wd.mkdir(parents=True, exist_ok=True)
        with eval_outputs.collect_to(wd):
            eval_outputs.save("classification", range(300), {"metric": "top1"}, top5=top, label=label)
        top1 = float(100.0 * (top[:, 0] == label).mean())
        res = {"task": task, "backbone": backbone, "metric": "top1", "value": top1,
               "metrics": {"top1": top1, "top5": top1}, "config": prep.resolved, "weights": prep.weights,
               "work_dir": str(wd), "data_root": str(prep.data_root), "seed": kw["seed"]}
        write_json_atomic(wd / "results.json", res)
        return res

    kw = dict(preset="mini", work_dir=tmp_path / "runs", out=tmp_path / "t1", max_rows=2, seeds=2, runner=fake)
    report = run_study(**kw)
    assert calls == ["00_baseline", "00_baseline-seed1", "01_cosine", "01_cosine-seed1"]
    base, cos = report["rows"]
    assert base["seeds"] == 2 and base["top1"] == pytest.approx(np.mean(base["top1_values"]))
    assert base["top1_low"] < base["top1"] < base["top1_high"] and "2 seeds" in base["interval_method"]
    assert cos["delta_low"] > 0 and cos["delta_p"] < 0.01       # 50 % -> 80 %: a real step, with its interval
    md = (tmp_path / "t1.md").read_text()
    assert "mean of 2 run(s) per row" in md and f"[{cos['delta_low']:+.1f}," in md
    calls.clear()
    (tmp_path / "runs" / "01_cosine-seed1" / "results.json").unlink()
    again = run_study(**kw)
    assert calls == ["01_cosine-seed1"] and [r["reused"] for r in again["rows"]] == [True, False]
