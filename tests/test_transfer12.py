"""``study transfer12``: the report's arithmetic on given cells, and a mini study through the CLI (few-shot cells,
the study's feature cache, cells reused when run again)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from conftest import TINY, TINY_CLI


def test_report_means_log_odds_and_rank_correlation() -> None:
    from rs_transfer.studies.transfer12 import build_report, log_odds, to_csv, to_markdown

    vals = {"A": (80.0, 50.0), "B": (90.0, 60.0), "C": (70.0, 99.95)}
    cells = [{"source": s, "task": t, "shots": None, "state": "done", "value": v}
             for s, pair in vals.items() for t, v in zip(("dtd", "food101"), pair)]
    cells.append({"source": "C", "task": "sun397", "shots": None, "state": "failed"})
    top1 = {"A": 76.0, "B": 78.0, "C": 80.0}
    rep = build_report(cells, ["dtd", "food101", "sun397"], ["A", "B", "C"], "linear", [None], top1, "mini")
    tab = rep["tables"][0]
    assert tab["common_tasks"] == ["dtd", "food101"]           # sun397: no source has it
    rows = {r["source"]: r for r in tab["rows"]}
    assert rows["A"]["mean"] == pytest.approx(65.0)
    # log-odds: log(p / (1 - p)); 99.95 % is clipped to 0.999
    assert rows["C"]["mean_log_odds"] == pytest.approx((math.log(0.7 / 0.3) + math.log(0.999 / 0.001)) / 2)
    assert log_odds(50.0) == 0.0
    expect = stats.spearmanr([76, 78, 80], [rows[s]["mean_log_odds"] for s in "ABC"]).statistic
    assert tab["spearman_vs_imagenet"] == pytest.approx(expect)
    md = to_markdown(rep)
    assert "| A | 76.00 | 80.00 | 50.00 | — | 65.00 |" in md and "MINI" in md
    assert to_csv(rep).splitlines()[0] == "shots,source,imagenet_top1,dtd,food101,sun397,mean,mean_log_odds"


def test_mini_fewshot_study_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from rs_transfer.backbones import create_model
    from rs_transfer.cli import main
    from rs_transfer.weights import save_weights

    srcs = []
    for i in range(2):
        torch.manual_seed(i)
        srcs.append(str(save_weights(create_model("resnetrs50", **TINY), tmp_path / f"src{i}.pth",
                                     normalization="imagenet")))
    out = tmp_path / "study"
    argv = ["study", "transfer12", "--preset", "mini", "--backbone", "resnetrs50", "--weights", *srcs,
            "--protocol", "fewshot", "--shots", "1", "2", "--episodes", "2", "--tasks", "dtd", "--out", str(out),
            "--imagenet-top1", "src0=70", *TINY_CLI]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert [t["shots"] for t in rep["tables"]] == [1, 2]
    assert all(r["values"]["dtd"] is not None for t in rep["tables"] for r in t["rows"])
    assert rep["tables"][0]["rows"][0]["imagenet_top1"] == 70.0
    assert (out / "report.png").stat().st_size > 1000 and "## 2-shot" in (out / "report.md").read_text()
    # one feature extraction per source and split, in the study's cache, whatever k
    assert len(list((out / "features" / "dtd").glob("*.npz"))) == 4
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("[skip]") == 4
