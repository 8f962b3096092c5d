"""CIFAR-100 task: the mini dataset, data checks, a mini fine-tune through the CLI that learns, and the frozen-feature
protocols against direct scikit-learn / numpy computations on the same features."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, TINY_CLI
from rs_transfer.cli import main
from rs_transfer.errors import UserError


def test_mini_dataset_is_real_format_and_deterministic(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import MINI_CLASSES, check_data, make_mini

    a, b = make_mini(tmp_path / "a"), make_mini(tmp_path / "b")
    for name in ("train", "test", "meta"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    with open(a / "train", "rb") as f:  # the way torchvision's CIFAR100 reads it
        entry = pickle.load(f, encoding="latin1")
    assert entry[b"data"].shape == (MINI_CLASSES * 32, 3072) and entry[b"data"].dtype == np.uint8
    assert sorted(set(entry[b"fine_labels"])) == list(range(MINI_CLASSES))
    report = check_data(a)
    assert report.ok and report.counts == {"train": 320, "test": 100}


def test_missing_data_names_file_and_source(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import check_data, make_mini

    root = make_mini(tmp_path)
    (root / "test").unlink()
    with pytest.raises(UserError) as err:
        check_data(root).raise_if_bad()
    msg = str(err.value)
    assert "test" in msg and "cifar-100-python.tar.gz" in msg and "\n" not in msg


def test_mini_finetune_through_cli_learns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's main job: real ResNet-RS-50, mini preset. Chance on the mini set is 10%."""
    wd = tmp_path / "run"
    assert main(["run", "--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini",
                 "--work-dir", str(wd)]) == 0
    assert "MINI" in capsys.readouterr().out
    res = json.loads((wd / "results.json").read_text())
    assert res["preset"] == "mini" and "MINI" in res["note"]
    assert res["metric"] == "top1" and res["value"] == res["metrics"]["top1"]
    assert res["value"] > 40.0, res["metrics"]
    assert res["backbone_kwargs"]["depth"] == 50 and res["config"]["train_dataloader"]["dataset"]["size"] == 16
    assert res["global_batch_size"] == 16 and res["train_samples"] == 16 * 30
    assert len(res["config_hash"]) == 64 and res["world_size"] == 1 and res["throughput_samples_per_s"] > 0
    assert res["config"]["train_cfg"]["max_iters"] == 30
    # Training time is the train loop's only (rs_transfer/runner/hooks.py TrainTimeHook); the rest of the wall time is
    # validation and start-up.
    assert 0 < res["train_time_s"] < res["wall_time_s"] and res["eval_time_s"] > 0 and res["startup_s"] > 0
    assert res["train_time_s"] + res["eval_time_s"] + res["startup_s"] == pytest.approx(res["wall_time_s"], abs=0.01)
    assert res["train_images"] == res["train_samples"] and res["train_segments"] == 1
    assert res["train_images_per_s"] == pytest.approx(res["train_images"] / res["train_time_s"], rel=1e-3)
    assert list(wd.rglob("events.out.tfevents*")), "TensorBoard logs missing"
    # A complete run keeps the evaluated weights, not the training state (optimizer, last_checkpoint).
    assert (wd / "weights.safetensors").is_file() and not list(wd.glob("iter_*.pth"))
    assert res["final_weights"] == str(wd / "weights.safetensors") and res["resumed_from"] is None


def _direct_linear_probe(f: dict, l2_grid: list[float], seed: int, holdout: float = 0.2) -> tuple[float, float]:
    """Kornblith et al. protocol written out directly with scikit-learn (split as documented in
    rs_transfer.tasks.classification.holdout_split: last 20% of a default_rng(seed) permutation)."""
    from sklearn.linear_model import LogisticRegression

    x, y = f["train_x"], f["train_y"]
    perm = np.random.default_rng(seed).permutation(len(x))
    n_hold = int(round(holdout * len(x)))
    fit, hold = perm[:-n_hold], perm[-n_hold:]
    scores = []
    for lam in l2_grid:
        clf = LogisticRegression(C=1.0 / (lam * len(fit)), max_iter=300).fit(x[fit], y[fit])
        scores.append(clf.score(x[hold], y[hold]))
    lam = l2_grid[int(np.argmax(scores))]
    clf = LogisticRegression(C=1.0 / (lam * len(x)), max_iter=300).fit(x, y)
    return 100.0 * clf.score(f["test_x"], f["test_y"]), lam


def test_linear_probe_and_knn_match_direct_computation(tmp_path: Path) -> None:
    import torch

    from rs_transfer.backbones import create_model
    from rs_transfer.weights import save_weights

    # Weights with their own input normalisation (SimCLR-style [0, 1] inputs): must reach the feature extractor.
    torch.manual_seed(0)
    ckpt = save_weights(create_model("resnetrs50", **TINY), tmp_path / "tiny.pth", normalization="unit-range")
    lin, knn = tmp_path / "lin", tmp_path / "knn"
    common = ["--task", "cifar100", "--backbone", "resnetrs50", "--preset", "mini", "--weights", str(ckpt),
              *TINY_CLI]
    assert main(["run", *common, "--protocol", "linear", "--work-dir", str(lin), "--seed", "3"]) == 0
    assert main(["run", *common, "--protocol", "knn", "--work-dir", str(knn)]) == 0
    res = json.loads((lin / "results.json").read_text())
    assert res["weights"]["normalization"]["name"] == "unit-range"
    assert res["weights"]["sha256"] and len(res["weights"]["sha256"]) == 64
    f = dict(np.load(lin / "features.npz"))
    grid = res["config"]["probe"]["l2_grid"]
    top1, lam = _direct_linear_probe(f, grid, seed=3)
    assert res["metrics"]["l2"] == pytest.approx(lam)
    assert res["metrics"]["top1"] == pytest.approx(top1, abs=1e-6)
    assert res["value"] > 20.0  # chance is 10%: frozen (here: tiny) features still carry the colour signal

    # kNN, brute force: cosine similarity, k nearest vote with weight exp(sim / T).
    kres = json.loads((knn / "results.json").read_text())
    g = dict(np.load(knn / "features.npz"))
    k, temp = kres["config"]["probe"]["knn_k"], kres["config"]["probe"]["knn_temperature"]
    tr = g["train_x"] / np.linalg.norm(g["train_x"], axis=1, keepdims=True)
    te = g["test_x"] / np.linalg.norm(g["test_x"], axis=1, keepdims=True)
    correct = 0
    for row, label in zip(te @ tr.T, g["test_y"]):
        nn_idx = np.argsort(-row)[:k]
        votes = np.zeros(100)
        np.add.at(votes, g["train_y"][nn_idx], np.exp(row[nn_idx] / temp))
        correct += int(votes.argmax() == label)
    assert kres["metrics"]["top1"] == pytest.approx(100.0 * correct / len(te), abs=1.01)  # ties may differ by 1
