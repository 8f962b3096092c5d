"""Reports from hand-made results.json files: statistics, missing cells, baseline differences, paper rows, files."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from rs_transfer.cli import main
from rs_transfer.report import MISSING, build_report, load_paper, to_markdown, write_report
from rs_transfer.results import write_json_atomic

VALUES = {  # (weights, task) -> values over seeds 0..n-1
    ("resnet152.tv_in1k", "cifar100"): [85.0, 86.0, 85.6],
    ("resnet152.tv_in1k", "voc-seg"): [70.5],
    ("simclrv2-r152-1x-sk0", "cifar100"): [87.25, 86.75],
}


def _write(root: Path, weights: str, task: str, seed: int, value: float, preset: str = "paper",
           metric: str = "top1") -> Path:
    res = {"schema": 1, "task": task, "metric": metric, "value": value, "higher_is_better": True,
           "backbone": "resnet152", "protocol": "finetune", "preset": preset, "seed": seed,
           "weights": {"source": weights, "sha256": "0" * 64}, "metrics": {metric: value}}
    return write_json_atomic(root / f"{task}-{weights}-{preset}-s{seed}" / "results.json", res)


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    for (w, t), vals in VALUES.items():
        for seed, v in enumerate(vals):
            _write(tmp_path, w, t, seed, v, metric="top1" if t == "cifar100" else "mIoU")
    _write(tmp_path, "resnet152.tv_in1k", "cifar100", 0, 12.0, preset="mini")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"task": ')  # a torn write: ignored
    return tmp_path


def test_statistics_missing_and_delta(results_dir: Path) -> None:
    rep = build_report([results_dir], tasks=["cifar100", "voc-seg", "ade20k"], baseline="resnet152.tv_in1k")
    base, ssl = "resnet152 / resnet152.tv_in1k", "resnet152 / simclrv2-r152-1x-sk0"
    assert rep.baseline == base
    c = rep.rows[base]["cifar100"]
    assert c.mean == pytest.approx(statistics.mean(VALUES[("resnet152.tv_in1k", "cifar100")]))
    assert c.std == pytest.approx(statistics.stdev(VALUES[("resnet152.tv_in1k", "cifar100")]))
    assert c.n == 3 and sorted(c.seeds) == [0, 1, 2]
    assert rep.rows[base]["voc-seg"].std is None  # one seed: no spread claimed
    assert rep.delta(ssl, "cifar100") == pytest.approx(87.0 - c.mean)
    assert rep.delta(ssl, "voc-seg") is None and "ade20k" not in rep.rows[ssl]
    assert "resnet152 / resnet152.tv_in1k [mini]" in rep.rows  # mini never mixed into paper-preset rows
    md = to_markdown(rep)
    ssl_line = next(line for line in md.splitlines() if line.startswith(f"| {ssl} |"))
    assert ssl_line.count(MISSING) == 2 and "87.00 ± 0.35 (n=2)" in ssl_line


def test_files_written_with_paper_rows(results_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("out")
    assert main(["report", str(results_dir), "--out", str(out), "--paper", "--baseline", "resnet152.tv_in1k",
                 "--tasks", "cifar100", "voc-det", "voc-seg", "ade20k", "nyu-depth"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["report.csv", "report.json", "report.md", "report.png"]  # no temporary leftovers
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paper = json.loads((Path(__file__).resolve().parents[1] / "results" / "paper_table4.json").read_text())
    rs = next(r for r in paper["rows"] if r["method"] == "RS")
    data = json.loads((out / "report.json").read_text())
    rs_row = next(v for k, v in data["paper"].items() if "RS" in k)
    assert rs_row == rs["values"] and rs_row["cifar100"] == 88.1  # PROTOCOLS.md Table 4
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    cell = next(r for r in rows if r["row"] == "resnet152 / simclrv2-r152-1x-sk0" and r["task"] == "cifar100")
    assert float(cell["mean"]) == pytest.approx(87.0) and cell["n"] == "2"
    missing = next(r for r in rows if r["row"] == "resnet152 / simclrv2-r152-1x-sk0" and r["task"] == "nyu-depth")
    assert missing["mean"] == "" and missing["n"] == "0"
    assert "*88.1*" in (out / "report.md").read_text()


def test_paper_table_has_all_table4_cells() -> None:
    rows = load_paper()
    assert len(rows) == 4 and all(len(v) == 5 for v in rows.values())


def test_report_errors(tmp_path: Path, results_dir: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(results_dir), "--baseline", "no-such-weights", "--out", str(tmp_path / "o")]) == 2
    assert "matches no row" in capsys.readouterr().err


def test_write_report_replaces_atomically(results_dir: Path, tmp_path: Path) -> None:
    rep = build_report([results_dir])
    first = write_report(rep, tmp_path)["md"].read_text()
    _write(results_dir, "resnet152.tv_in1k", "voc-seg", 1, 71.5, metric="mIoU")
    second = write_report(build_report([results_dir]), tmp_path)["md"].read_text()
    assert first != second and "71.00 ± 0.71 (n=2)" in second


def test_baseline_by_weights_prefers_finetune_row_and_columns_name_metrics(tmp_path: Path) -> None:
    lin = _write(tmp_path, "resnet152.tv_in1k", "cifar100", 0, 70.0)
    data = json.loads(lin.read_text())
    data["protocol"] = "linear"
    write_json_atomic(tmp_path / "linear" / "results.json", data)
    lin.unlink()
    _write(tmp_path, "resnet152.tv_in1k", "cifar100", 0, 80.0)
    rep = build_report([tmp_path], baseline="resnet152.tv_in1k")
    assert rep.baseline == "resnet152 / resnet152.tv_in1k"
    assert rep.delta("resnet152 / resnet152.tv_in1k / linear", "cifar100") == pytest.approx(-10.0)
    assert rep.metrics["cifar100"] == "top1"
