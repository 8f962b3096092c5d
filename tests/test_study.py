"""Studies: the grid, skipping finished cells, resuming after an interruption, missing tasks, the report, and the
table5 dispatch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import rs_transfer.runner as runner_mod
from conftest import TINY
from rs_transfer import tasks as tasks_mod
from rs_transfer.atomic import write_json_atomic
from rs_transfer.studies.table4 import run_table4


class FakeRunner:
    """Stands in for run_experiment: writes a results.json like the real one, can fail at call number ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def __call__(self, task, backbone, *, weights=None, preset="paper", protocol="finetune", work_dir=None,
                 seed=0, resume=False, **kw):
        self.calls.append((task, weights, seed, resume))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt  # the study process is killed mid-grid
        value = 50.0 + 10 * (weights is not None) + seed
        # the resolved config the real runner would record (a study reuses a cell only when its hash matches)
        from rs_transfer.runner import prepare_run

        prep = prepare_run(task, backbone, weights=weights, preset=preset, protocol=protocol, work_dir=work_dir,
                           seed=seed, cfg_options=kw.get("cfg_options"), model_overrides=kw.get("model_overrides"),
                           data_root=kw.get("data_root"), check_data=False)
        res = {"task": task, "metric": "top1", "value": value, "backbone": backbone, "preset": preset,
               "protocol": protocol, "seed": seed, "weights": prep.weights, "metrics": {"top1": value},
               "higher_is_better": True, "config": prep.resolved, "work_dir": str(prep.work_dir),
               "data_root": str(prep.data_root)}
        write_json_atomic(Path(work_dir) / "results.json", res)
        return res


def test_interrupted_study_resumes_and_reports_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(tasks_mod.TASK_MODULES, "future-task", "rs_transfer.tasks.future_task_not_written")
    from rs_transfer import create_model, save_weights

    wfile = str(save_weights(create_model("resnet50", num_classes=10, **TINY), tmp_path / "w.pth"))
    kw = dict(backbone="resnet152", weights=[None, wfile], out_dir=tmp_path, tasks=["cifar100", "future-task"],
              seeds=2, preset="mini", paper=False, log=lambda *_: None)
    first = FakeRunner(stop_at=3)
    monkeypatch.setattr(runner_mod, "run_experiment", first)
    with pytest.raises(KeyboardInterrupt):
        run_table4(**kw)
    assert len(first.calls) == 3
    # A run that left a checkpoint but no results.json must be resumed, not restarted.
    ckpt_dir = tmp_path / "cifar100" / "resnet152-w-finetune-seed0"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "last_checkpoint").write_text("iter_10.pth")

    second = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_experiment", second)
    study = run_table4(**kw)
    # 4 cifar100 cells in all; 2 finished before the interruption, so 2 run now; the future task never runs.
    assert [(c[0], c[1], c[2]) for c in second.calls] == [("cifar100", wfile, 0), ("cifar100", wfile, 1)]
    assert second.calls[0][3] is True and second.calls[1][3] is False
    states = {(c["task"], c["weights"], c["seed"]): c["state"] for c in study["cells"]}
    assert states[("future-task", None, 0)] == "missing" and states[("cifar100", None, 1)] == "done"
    md = Path(study["report"]["md"]).read_text()
    assert "future-task" in md and "—" in md
    rows = json.loads(Path(study["report"]["json"]).read_text())["rows"]
    cell = rows["resnet152 / w [mini]"]["cifar100"]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(60.5) and cell["delta"] == pytest.approx(10.0)

    third = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_experiment", third)
    run_table4(**kw)
    assert third.calls == []  # everything done with the same configuration: nothing re-runs

    # Another --cfg-options is another configuration: the finished cells are stale and run again.
    fourth = FakeRunner()
    monkeypatch.setattr(runner_mod, "run_experiment", fourth)
    run_table4(**kw, cfg_options={"train_cfg.val_interval": 1})
    assert sorted((c[1] or "", c[2]) for c in fourth.calls) == [("", 0), ("", 1), (wfile, 0), (wfile, 1)]


def test_real_mini_study_through_cli(tmp_path: Path) -> None:
    from rs_transfer.cli import main

    out = tmp_path / "study"
    assert main(["study", "table4", "--preset", "mini", "--backbone", "resnetrs50", "--weights", "none",
                 "--tasks", "cifar100", "--protocols", "finetune", "knn", "--out", str(out),
                 "--backbone-options", *[f"{k}={v}".replace(" ", "") for k, v in TINY.items()]]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["rows"]) == {"resnetrs50 / scratch [mini]", "resnetrs50 / scratch / knn [mini]"}
    # The same command again: the recorded config hashes equal the expected ones, so nothing runs.
    assert main(["study", "table4", "--preset", "mini", "--backbone", "resnetrs50", "--weights", "none",
                 "--tasks", "cifar100", "--protocols", "finetune", "knn", "--out", str(out),
                 "--backbone-options", *[f"{k}={v}".replace(" ", "") for k, v in TINY.items()]]) == 0
    study = json.loads((out / "study.json").read_text())
    assert [c.get("skipped") for c in study["cells"]] == [True, True]
    assert rep["paper"] == {}  # mini studies leave the paper's rows out unless asked
    assert all(r["cifar100"]["n"] == 1 for r in rep["rows"].values())


def test_every_study_in_the_table_has_its_cli(capsys) -> None:
    """One STUDIES table: each CLI name is a module of that name with add_arguments/run, and its --help works."""
    import importlib

    from rs_transfer.cli import main
    from rs_transfer.studies import STUDIES

    assert set(STUDIES) == {"table4", "table5", "table1", "scaling", "sweep", "transfer12"}
    for name, study in STUDIES.items():
        assert study.module == f"rs_transfer.studies.{name}"
        mod = importlib.import_module(study.module)
        assert callable(mod.add_arguments) and callable(mod.run)
        with pytest.raises(SystemExit) as err:
            main(["study", name, "--help"])
        assert err.value.code == 0
        assert "usage: rs-transfer study " + name in capsys.readouterr().out


def test_a_row_reused_from_another_commit_warns(monkeypatch) -> None:
    """The config hash does not cover the code: reusing a row that other code computed warns, naming both commits;
    the same commit (or an unknown one) reuses silently."""
    import warnings

    from rs_transfer.studies import reuse

    monkeypatch.setattr(reuse, "_current_commit", lambda: "b" * 40)
    row = {"config_hash": "h", "git": {"commit": "a" * 40}}
    monkeypatch.setattr(reuse, "recorded_hash", lambda res: res["config_hash"])
    with pytest.warns(UserWarning, match=r"cell-1: reusing results.json computed by commit aaaaaaaaaa; the code is "
                                         r"now bbbbbbbbbb"):
        assert reuse.reusable(row, "h", "cell-1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reuse.reusable({**row, "git": {"commit": "b" * 40}}, "h")
        assert reuse.reusable({**row, "git": {"commit": None}}, "h")
        assert not reuse.reusable(row, "other")
        assert not reuse.reusable(row, None)       # a cell that cannot be prepared is never reused


def test_mini_study_two_sources_two_seeds_reports_intervals_and_adjusted_p(tmp_path: Path) -> None:
    """Issue 22's end-to-end check: two weight sources x two seeds, real (4-iteration) mini runs; the report has
    every cell's interval over seeds then samples, the paired difference to the baseline with its interval, p and
    BH-adjusted p, says which test and correction, and warns that mini intervals mean nothing."""
    import csv

    from rs_transfer import create_model, save_weights
    from rs_transfer.cli import main

    wfile = save_weights(create_model("resnetrs50", **TINY), tmp_path / "other.pth")
    out = tmp_path / "study"
    assert main(["study", "table4", "--preset", "mini", "--backbone", "resnetrs50", "--weights", "none", str(wfile),
                 "--tasks", "cifar100", "--seeds", "2", "--alpha", "0.1", "--out", str(out),
                 "--cfg-options", "train_cfg.max_iters=4",
                 "--backbone-options", *[f"{k}={v}".replace(" ", "") for k, v in TINY.items()]]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["statistics"]["alpha"] == 0.1 and "Benjamini-Hochberg" in rep["statistics"]["correction"]
    rows = rep["rows"]
    base, other = rows["resnetrs50 / scratch [mini]"]["cifar100"], rows["resnetrs50 / other [mini]"]["cifar100"]
    for cell in (base, other):
        assert cell["n"] == 2 and cell["low"] <= cell["mean"] <= cell["high"] and "2 seeds" in cell["interval_method"]
    assert other["diff"] == pytest.approx(other["mean"] - base["mean"])
    assert other["diff_low"] <= other["diff"] <= other["diff_high"]
    assert 0 < other["p_value"] <= 1 and other["p_adjusted"] >= other["p_value"] and "significant" in other
    md = (out / "report.md").read_text()
    assert "mean nothing" in md and "permutation" in md and "[" in md.split("| resnetrs50 / other [mini] |")[1]
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert {"low", "high", "p_value", "p_adjusted", "significant"} <= set(rows[0])
