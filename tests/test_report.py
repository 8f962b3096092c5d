"""Reports from hand-made results.json files: statistics, missing cells, baseline differences, paper rows, files."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import statistics
from pathlib import Path

import pytest

from rs_transfer.cli import main
from rs_transfer.studies.report import MISSING, build_report, chart, load_paper, to_markdown, write_report
from rs_transfer.atomic import write_json_atomic

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


def test_the_baseline_row_comes_first(results_dir: Path) -> None:
    """Rows follow the results found (folder order), except the baseline, which leads, as in the paper's tables."""
    ssl, base = "resnet152 / simclrv2-r152-1x-sk0", "resnet152 / resnet152.tv_in1k"
    assert list(build_report([results_dir], tasks=["cifar100"], baseline="simclrv2-r152-1x-sk0").rows)[0] == ssl
    rows = list(build_report([results_dir], tasks=["cifar100"], baseline="resnet152.tv_in1k").rows)
    assert rows[0] == base and ssl in rows[1:]
    md = to_markdown(build_report([results_dir], tasks=["cifar100"], baseline="simclrv2-r152-1x-sk0"))
    table = [line for line in md.splitlines() if line.startswith("| resnet152 /")]
    assert table[0].startswith(f"| {ssl} |")


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


# ---- nothing dropped silently, files people can read, a chart that says what it draws, shipped paper tables ----
def test_duplicates_and_unreadable_files_are_listed(results_dir: Path, tmp_path: Path, capsys) -> None:
    copy = results_dir / "copied" / "cifar100-resnet152.tv_in1k-paper-s0" / "results.json"
    copy.parent.mkdir(parents=True)
    data = json.loads((results_dir / "cifar100-resnet152.tv_in1k-paper-s0" / "results.json").read_text())
    write_json_atomic(copy, {**data, "value": 99.0})          # same row, task and seed; another value
    write_json_atomic(results_dir / "nokeys" / "results.json", {"metrics": {}})
    # the same file reached twice (a folder and a file inside it) is one run, not a duplicate
    rep = build_report([results_dir, copy, results_dir / "copied" / ".." / "copied"], tasks=["cifar100", "voc-seg"])
    assert sorted(Path(u["path"]).parent.name for u in rep.unreadable) == ["broken", "nokeys"]
    assert "not valid JSON" in next(u["reason"] for u in rep.unreadable if "broken" in u["path"])
    (dup,) = rep.duplicates
    assert dup["path"] == str(copy) and dup["value"] == 99.0 and dup["kept_value"] == 85.0 and dup["seed"] == 0
    assert rep.rows["resnet152 / resnet152.tv_in1k"]["cifar100"].n == 3  # counted once
    assert str(copy) not in rep.sources
    md = to_markdown(rep)
    assert "## Not counted (2 unreadable, 1 duplicate)" in md and f"- {copy}: duplicate of" in md
    assert "value 99.0 differs from 85.0" in md
    out = tmp_path / "o"
    assert main(["report", str(results_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 unreadable and 1 duplicate results.json not counted" in err and str(copy) in err
    saved = json.loads((out / "report.json").read_text())
    assert len(saved["unreadable"]) == 2 and saved["duplicates"][0]["path"] == str(copy)


def test_output_files_have_normal_permissions(results_dir: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files = write_report(build_report([results_dir]), tmp_path / "new")
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files.values()} == {
            p.name: 0o644 for p in files.values()}                      # mkstemp alone would give 0600
        files["md"].chmod(0o640)
        write_report(build_report([results_dir]), tmp_path / "new")
        assert stat.S_IMODE(files["md"].stat().st_mode) == 0o640         # a replaced file keeps its mode
    finally:
        os.umask(old)


def _no_overlap(a, b) -> bool:
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


@pytest.mark.parametrize("paper", [True, False])
def test_chart_legend_matches_bars_and_overlaps_nothing(results_dir: Path, paper: bool) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    rep = build_report([results_dir], tasks=["cifar100", "voc-det", "voc-seg"], paper=paper)
    fig = chart(rep)
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    series = list(rep.rows) + list(rep.paper_rows)
    assert [lab.removesuffix(" (no result)") for lab in labels[:len(series)]] == series
    # old runs (no eval_outputs.npz): the std bar, labelled as such
    assert labels[len(series):] == ["x = no result", "error bar = ± sample std over seeds (no outputs kept)"]
    # each legend patch has the face colour and hatch of the bars drawn for its row, in order
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    drawn = [s for s in series if any((rep.rows.get(s) or {}).get(t, None) is not None
                                      for t in rep.tasks) or s in rep.paper_rows]
    assert len(bars) == len(drawn)
    handles = dict(zip(labels, legend.legend_handles))
    for label, bar in zip(drawn, bars):
        patch = bar.patches[0]
        assert to_rgba(handles[label].get_facecolor()) == to_rgba(patch.get_facecolor())
        assert handles[label].get_hatch() == patch.get_hatch() == ("//" if label in rep.paper_rows else None)
    assert ("hatched" in ax.get_title()) == paper
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = legend.get_window_extent(r)
    for other in [ax.get_window_extent(r), ax.title.get_window_extent(r),
                  *(t.get_window_extent(r) for t in ax.get_xticklabels())]:
        assert _no_overlap(box, other)
    ticks = [t.get_window_extent(r) for t in ax.get_xticklabels()]
    assert all(_no_overlap(a, b) for i, a in enumerate(ticks) for b in ticks[i + 1:])
    plt.close(fig)


def test_paper_tables_ship_in_the_wheel(tmp_path: Path) -> None:
    """A non-editable install (the wheel, unpacked) finds the paper tables without the source tree."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    for name in ("rs_transfer", "tasks", "video", "configs", "results"):
        shutil.copytree(repo / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.png", "*.md"))
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        assert {"rs_transfer/paper/paper_table4.json", "rs_transfer/paper/paper_table5.json",
                "rs_transfer/paper/paper_transfer12.json"} <= set(z.namelist())
        z.extractall(site)
    _write(tmp_path / "runs", "resnet152.tv_in1k", "cifar100", 0, 85.0)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import sys, rs_transfer.studies.report as r; assert r.__file__.startswith(sys.argv[1]), r.__file__; "
            "from rs_transfer.cli import main; sys.exit(main(['report', sys.argv[2], '--paper', '--tasks', "
            "'cifar100']))")
    proc = subprocess.run([sys.executable, "-c", code, str(site), str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "*88.1*" in proc.stdout  # the paper's RS row, read from the installed package data


def _run_with_outputs(root: Path, weights: str, seed: int, p_hit: float, rng, keep: bool = True) -> None:
    """A finished cifar100 run whose eval_outputs.npz holds 400 test samples with accuracy ~p_hit (the same labels
    for every run: one test set)."""
    import numpy as np

    from rs_transfer import eval_outputs

    label = np.arange(400) % 100
    top = np.where((rng.random(400) < p_hit)[:, None], label[:, None], (label[:, None] + 1) % 100)
    wd = root / f"{weights}-s{seed}"
    wd.mkdir(parents=True)
    if keep:
        with eval_outputs.collect_to(wd):
            eval_outputs.save("classification", range(400), {"metric": "top1"}, top5=top, label=label)
    value = float(100.0 * (top[:, 0] == label).mean())
    write_json_atomic(wd / "results.json", {
        "task": "cifar100", "metric": "top1", "value": value, "backbone": "resnet50", "preset": "paper",
        "protocol": "finetune", "seed": seed, "weights": {"source": weights}, "metrics": {"top1": value},
        "higher_is_better": True})


def test_report_cli_intervals_paired_differences_and_protection(tmp_path: Path) -> None:
    """``rs-transfer report DIR --baseline W --alpha``: cells carry intervals, differences carry interval, p and
    BH-adjusted p; a large gain is bold, a difference within its interval's half-width never is, and a run made
    before outputs were kept says so instead of showing an interval."""
    import numpy as np

    rng = np.random.default_rng(0)
    for seed in (0, 1):
        _run_with_outputs(tmp_path, "base", seed, 0.5, rng)
        _run_with_outputs(tmp_path, "better", seed, 0.8, rng)
        _run_with_outputs(tmp_path, "same", seed, 0.5, rng)
    _run_with_outputs(tmp_path, "old", 0, 0.5, rng, keep=False)
    assert main(["report", str(tmp_path), "--tasks", "cifar100", "--baseline", "base", "--alpha", "0.05",
                 "--resamples", "300"]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    rows = rep["rows"]
    better, same = rows["resnet50 / better"]["cifar100"], rows["resnet50 / same"]["cifar100"]
    assert better["low"] < better["mean"] < better["high"] and better["p_adjusted"] < 0.05 and better["significant"]
    assert same["diff_low"] < 0 < same["diff_high"] and not same["significant"]
    assert "interval_note" in rows["resnet50 / old"]["cifar100"] and "low" not in rows["resnet50 / old"]["cifar100"]
    md = (tmp_path / "report.md").read_text()
    diffs = md.split("## Difference to baseline")[1]
    same_line = next(line for line in diffs.splitlines() if "/ same |" in line)
    assert "| resnet50 / better | **+" in diffs and "**" not in same_line
    assert "no interval (run before outputs were kept)" in md and "Benjamini-Hochberg" in md
    assert "mean nothing" not in md          # paper-preset runs: no mini warning
