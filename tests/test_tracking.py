"""--tracking: a mini study logged to a local MLflow folder and read back with MLflow's own client (one run per
cell, tags and final metric equal to results.json, the report as an artifact); tracking leaves the config hash
alone, so the same study without --tracking reuses every cell; one-line errors for a missing package, an unknown
backend and W&B without a login."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import TINY
from rs_transfer.errors import UserError
from rs_transfer.runner import tracking


def _study(out: Path, *extra: str) -> int:
    from rs_transfer.cli import main

    return main(["study", "table4", "--preset", "mini", "--backbone", "resnetrs50", "--weights", "none",
                 "--tasks", "cifar100", "--seeds", "2", "--out", str(out),
                 "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                 "--backbone-options", *[f"{k}={v}".replace(" ", "") for k, v in TINY.items()], *extra])


def test_mini_study_tracked_in_mlflow(tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="mlflow-skinny is pinned in requirements/lock.txt")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "study"
    store = out / "mlruns"     # inside the study folder: its results.json copies must not count as runs
    assert _study(out, "--tracking", f"mlflow={store}") == 0
    client = MlflowClient(tracking_uri=tracking.allow_folder_store(store.resolve().as_uri()))
    exp = client.get_experiment_by_name("table4: study")               # one experiment per study
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    cells = {r.data.tags["seed"]: r for r in runs if r.data.tags.get("rs_transfer.kind") == "cell"}
    study = json.loads((out / "study.json").read_text())
    assert len(cells) == len(study["cells"]) == 2                      # one run per cell
    for cell in study["cells"]:
        res = json.loads((Path(cell["work_dir"]) / "results.json").read_text())
        run = cells[str(res["seed"])]
        tags = run.data.tags
        assert {k: tags[k] for k in ("study", "task", "backbone", "weights", "protocol", "seed", "preset",
                                     "config_hash", "code_commit", "world_size", "device")} == {
            "study": "table4", "task": res["task"], "backbone": res["backbone"], "weights": "none",
            "protocol": res["protocol"], "seed": str(res["seed"]), "preset": "mini",
            "config_hash": res["config_hash"], "code_commit": str(res["git"]["commit"]),
            "world_size": str(res["world_size"]), "device": res["device"]}
        assert run.data.metrics[f"final/{res['metric']}"] == pytest.approx(res["value"])
        assert run.info.status == "FINISHED" and run.info.run_name == f"cifar100/{Path(cell['work_dir']).name}"
        assert "results.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    trained = cells["0"]
    assert trained.data.params["global_batch_size"] == "16" and trained.data.params["train_cfg.max_iters"] == "2"
    rep = json.loads((out / "report.json").read_text())
    assert rep["duplicates"] == [] and rep["rows"]["resnetrs50 / scratch [mini]"]["cifar100"]["n"] == 2
    report = [r for r in runs if r.data.tags.get("rs_transfer.kind") == "report"]
    assert len(report) == 1
    assert {"report.md", "report.html"} <= {a.path for a in client.list_artifacts(report[0].info.run_id)}

    # Tracking is not part of the identity: the same study untracked reuses both cells (nothing runs again).
    assert _study(out) == 0
    assert [c.get("skipped") for c in json.loads((out / "study.json").read_text())["cells"]] == [True, True]


def test_a_run_without_mmengine_runner_gets_its_mlflow_run(tmp_path: Path) -> None:
    """Linear / kNN protocols train nothing (no visualizer): finish() makes the cell's run from results.json."""
    pytest.importorskip("mlflow", reason="mlflow-skinny is pinned in requirements/lock.txt")
    from mlflow.tracking import MlflowClient

    res = {"task": "cifar100", "backbone": "resnetrs50", "protocol": "knn", "seed": 3, "preset": "mini",
           "metric": "top1", "value": 42.5, "metrics": {"top1": 42.5, "top5": 80.0}, "config_hash": "h" * 8,
           "git": {"commit": "abc"}, "world_size": 1, "device": "cpu", "weights": {"source": None},
           "config": {"experiment_name": "knn-run-1"}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    track = tracking.Tracking("mlflow", (tmp_path / "ml").as_uri(), "table4: s", {"study": "table4"})
    tracking.finish(track, res, path)
    client = MlflowClient(tracking_uri=track.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("table4: s").experiment_id])
    assert run.data.metrics["final/top1"] == 42.5 and run.data.metrics["final/top5"] == 80.0
    assert {run.data.tags[k] for k in ("study", "protocol", "seed", "config_hash")} == {"table4", "knn", "3",
                                                                                         "h" * 8}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["results.json"]


def test_tracking_backend_leaves_the_config_hash_alone(tmp_path: Path) -> None:
    from rs_transfer.runner import prepare_run

    prep = prepare_run("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path / "r")
    before = prep.config_hash
    backends = len(prep.cfg.visualizer["vis_backends"])
    tracking.attach(prep, tracking.Tracking("mlflow", (tmp_path / "ml").as_uri(), "e", {"study": "s"}), "cpu")
    added = prep.cfg.visualizer["vis_backends"][-1]
    assert len(prep.cfg.visualizer["vis_backends"]) == backends + 1    # TensorBoard stays, MLflow is added
    assert added["type"] == "MLflowVisBackend" and added["tags"]["config_hash"] == before
    assert added["save_dir"] == str(tmp_path / "ml") and added["tracking_uri"] is None   # a folder, no server
    assert prep.config_hash == before


def test_tracking_errors_are_one_line(monkeypatch) -> None:
    assert tracking.parse(None) is None and tracking.parse("tensorboard") is None
    with pytest.raises(UserError, match="choose mlflow, mlflow=URI or wandb"):
        tracking.parse("neptune")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'rs-transfer\[mlflow\]'"):
        tracking.parse("mlflow")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())   # wandb "installed"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(UserError, match="wandb login"):
        tracking.parse("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.parse("wandb") == tracking.Tracking("wandb")
    uri = tracking.parse("mlflow=relative/folder").uri
    assert uri.startswith("file:///") and uri.endswith("/relative/folder")
