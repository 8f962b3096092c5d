"""``study table1``: the additive ImageNet study end to end on the mini set; finished rows are reused by config
hash, a changed option runs again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_transfer.pretrain_study import PAPER_TOP1, run_study
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
    from rs_transfer.scaling_study import run_study as scaling

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
    assert res["backbone_kwargs"]["drop_path_rate"] == 0.1 and res["config"]["recipe"]["randaugment_magnitude"] == 15
    assert res["extra"]["resolution"] == 32 and res["config"]["recipe"]["epochs"] == 10
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    calls.clear()
    assert [r["reused"] for r in scaling(**kw)["rows"]] == [True, True] and calls == []
