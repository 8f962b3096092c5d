"""``study transfer12``: the report's arithmetic on given cells, and a mini study through the CLI (few-shot cells,
the study's feature cache, cells reused when run again)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from conftest import TINY, TINY_CLI, slurm_settled


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


def test_cited_reference_rows_sit_apart_and_average_the_studys_datasets() -> None:
    """SimCLR's Table B.5 / Table 8 rows for the study's protocol: mapped to our task names column by column, their
    mean and log-odds over the STUDY's common datasets, italic in the markdown with the citation, in the CSV, and
    none for few-shot (no paper reports it)."""
    from rs_transfer.studies.transfer12 import build_report, log_odds, to_csv, to_markdown

    cells = [{"source": "A", "task": t, "shots": None, "state": "done", "value": 70.0}
             for t in ("fgvc-aircraft", "voc07-cls", "caltech101")]
    tasks = ["fgvc-aircraft", "voc07-cls", "caltech101", "dtd"]          # dtd: no run has it, so not averaged
    rep = build_report(cells, tasks, ["A"], "linear", [None], {"A": None}, "paper")
    (tab,) = rep["tables"]
    paper = {r["source"]: r for r in tab["paper_rows"]}
    assert len(paper) == 4                                       # SimCLR + supervised, two tables, linear only
    sup = paper["paper: Supervised (ResNet-50; SimCLR Table B.5)"]
    # Table B.5, linear, supervised ResNet-50: Aircraft 61.0, VOC2007 82.8, DTD 74.9, Caltech-101 94.5
    assert sup["values"] == {"fgvc-aircraft": 61.0, "voc07-cls": 82.8, "caltech101": 94.5, "dtd": 74.9}
    assert sup["imagenet_top1"] == 76.3
    assert sup["mean"] == pytest.approx((61.0 + 82.8 + 94.5) / 3)
    assert sup["mean_log_odds"] == pytest.approx((log_odds(61.0) + log_odds(82.8) + log_odds(94.5)) / 3)
    assert tab["spearman_vs_imagenet"] is None and tab["n_with_imagenet"] == 0    # paper rows are not counted
    md = to_markdown(rep)
    assert "| *paper: Supervised (ResNet-50; SimCLR Table B.5)* | *76.30* | *61.00* | *82.80* | *94.50* |" in md
    assert "Table B.5" in md and "arXiv:2002.05709" in md and "1000 epochs" in md
    assert "paper: SimCLR (ResNet-50 (4x); SimCLR Table 8)" in to_csv(rep)
    ft = build_report(cells, tasks, ["A"], "finetune", [None], {"A": None}, "paper")["tables"][0]["paper_rows"]
    rand = {r["source"]: r for r in ft}["paper: Random init (ResNet-50 (4x); SimCLR Table 8)"]
    assert len(ft) == 6 and rand["imagenet_top1"] is None and rand["values"]["voc07-cls"] == 69.4
    few = build_report(cells, tasks, ["A"], "fewshot", [5], {"A": None}, "paper")
    assert few["tables"][0]["paper_rows"] == [] and "*paper:" not in to_markdown(few)


def test_the_reference_file_names_every_suite_dataset_and_twelve_values_per_row() -> None:
    from rs_transfer.results import reference_file
    from rs_transfer.tasks import TRANSFER12_TASKS

    data = json.loads(reference_file("paper_transfer12.json").read_text())
    assert set(TRANSFER12_TASKS) <= set(data["columns"]) and len(data["columns"]) == 12
    assert all(len(r["values"]) == 12 for t in data["tables"] for r in t["rows"])


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


def _sources(tmp_path: Path) -> list[str]:
    """Two tiny weight files (distinct weights: distinct features and identities)."""
    import torch

    from rs_transfer.backbones import create_model
    from rs_transfer.weights import save_weights

    out = []
    for i in range(2):
        torch.manual_seed(i)
        out.append(str(save_weights(create_model("resnetrs50", **TINY), tmp_path / f"src{i}.pth",
                                    normalization="imagenet")))
    return out


def test_dry_run_plans_sources_tasks_and_shots_with_the_runs_own_hash(tmp_path: Path, monkeypatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """Cells = sources x tasks x k (x seeds); a task without the protocol (cifar100: no fewshot) is no cell; each
    cell's hash is what its own `rs-transfer run` (its plan entry) records, wherever its features are cached."""
    from rs_transfer.cli import main

    monkeypatch.delenv("RS_TRANSFER_FEATURE_CACHE", raising=False)
    out = tmp_path / "study"
    argv = ["study", "transfer12", "--preset", "mini", "--backbone", "resnetrs50", "--weights", *_sources(tmp_path),
            "--protocol", "fewshot", "--shots", "1", "2", "--episodes", "2", "--tasks", "dtd", "cifar100",
            "--out", str(out), *TINY_CLI]
    assert main([*argv, "--dry-run"]) == 0
    assert "4 cells: 0 done, 4 to run" in capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    assert plan["study"] == "transfer12" and plan["protocol"] == "fewshot" and plan["executor"] == "local"
    assert [c["name"] for c in plan["cells"]] == [f"dtd/resnetrs50-src{i}-fewshot-k{k}-seed0"
                                                  for i in range(2) for k in (1, 2)]
    assert all(c["state"] == "to run" and c["world_size"] == 1 for c in plan["cells"])
    assert len({c["config_hash"] for c in plan["cells"]}) == 4               # sources and k differ
    assert all(c["env"] == {"RS_TRANSFER_FEATURE_CACHE": str(out.absolute() / "features")} for c in plan["cells"])
    assert "probe.shots=[2]" in plan["cells"][1]["run_args"] and "probe.episodes=2" in plan["cells"][1]["run_args"]
    assert not any(out.rglob("results.json")) and not (out / "report.md").exists()    # nothing ran

    for cell in plan["cells"][:3]:          # three cells run from their plan entries (features: the default cache)
        assert main(["run", *cell["run_args"], "--work-dir", cell["work_dir"]]) == 0
        assert json.loads((Path(cell["work_dir"]) / "results.json").read_text())["config_hash"] == cell["config_hash"]
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    assert "4 cells: 3 done, 1 to run" in capsys.readouterr().out
    assert [c["state"] for c in json.loads((out / "plan.json").read_text())["cells"]] == ["done"] * 3 + ["to run"]
    assert main([*argv, "--dry-run", "--cfg-options", "probe.one_shot_l2=0.5"]) == 0    # another config: stale
    assert [c["state"] for c in json.loads((out / "plan.json").read_text())["cells"]] == ["stale"] * 3 + ["to run"]


@pytest.mark.slow
def test_slurm_executor_submits_one_array_with_the_study_feature_cache_then_collects(
        tmp_path: Path, fake_slurm: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """--executor slurm: one array over the cells; the same command while they run submits nothing; the cell
    jobs' runs extract their features into OUT/features (the cell's env); once every cell is done the same
    command reuses them all and writes the report."""
    import time

    from rs_transfer.cli import main

    monkeypatch.delenv("RS_TRANSFER_FEATURE_CACHE", raising=False)   # only the cell's env can point the job there
    out = tmp_path / "study"
    argv = ["study", "transfer12", "--preset", "mini", "--backbone", "resnetrs50", "--weights", *_sources(tmp_path),
            "--protocol", "linear", "--tasks", "dtd", "--out", str(out), *TINY_CLI, "--executor", "slurm",
            "--timeout-min", "20", "--max-parallel", "1"]
    assert main(argv) == 0
    assert "submitted 2 cell(s) as SLURM job array" in capsys.readouterr().out
    assert main(argv) == 0                  # queued, running or done: nothing submitted twice
    scripts = list((fake_slurm / "submitted").glob("*.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1%1" in scripts[0].read_text()
    assert not (out / "report.md").exists()
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("dtd/*/results.json"))) < 2:
        time.sleep(0.5)
    slurm_settled(fake_slurm, timeout=max(0.0, deadline - time.time()))
    assert len(list((out / "features" / "dtd").glob("*.npz"))) == 4    # 2 sources x (train, test), the study's cache
    capsys.readouterr()
    assert main(argv) == 0                  # every cell done: nothing submitted, the report written
    text = capsys.readouterr().out
    assert text.count("[skip]") == 2 and "# Transfer suite (linear, MINI preset" in text
    assert len(list((fake_slurm / "submitted").glob("*.sh"))) == 1
    rep = json.loads((out / "report.json").read_text())
    assert all(r["values"]["dtd"] is not None for r in rep["tables"][0]["rows"])
