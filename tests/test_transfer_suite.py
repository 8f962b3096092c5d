"""The classification transfer suite (tasks/_tvclass.py, tasks/_frozen.py and the ten dataset modules): each mini
copy is read by torchvision's own class in the release layout; metrics against hand-worked values; few-shot draws;
the feature cache (forward passes counted); the three protocols through the runner/CLI on mini data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, TINY_CLI
from rs_transfer.errors import UserError

SUITE_TASKS = ["food101", "cifar10", "sun397", "stanford-cars", "fgvc-aircraft", "voc07-cls", "dtd", "oxford-pets",
               "caltech101", "flowers102"]
# What each torchvision class needs in place: deleting it must make the data check name the layout.
KEY_FILE = {"food101": "food-101/meta/test.json", "cifar10": "cifar-10-batches-py/test_batch",
            "sun397": "Partitions/Testing_01.txt", "stanford-cars": "stanford_cars/cars_test_annos_withlabels.mat",
            "fgvc-aircraft": "fgvc-aircraft-2013b/data/images_variant_test.txt", "voc07-cls":
            "VOCdevkit/VOC2007/ImageSets/Main/test.txt", "dtd": "dtd/dtd/labels/test1.txt",
            "oxford-pets": "oxford-iiit-pet/annotations/test.txt", "caltech101": "caltech101/101_ObjectCategories",
            "flowers102": "flowers-102/setid.mat"}


@pytest.mark.parametrize("name", SUITE_TASKS)
def test_mini_copy_is_read_by_torchvision(name: str, tmp_path: Path) -> None:
    """Every class of the mini set is present in both splits with the writer's counts, read through the torchvision
    class; the first image decodes to the class's colour (the labels are the images' own); a missing file is a
    one-line error naming the layout and the source."""
    from rs_transfer.tasks import get_task
    from rs_transfer.tasks._tvclass import SUITES, TvClassDataset, class_image, split_labels

    task = get_task(name)
    root = task.make_mini(tmp_path / "d")
    report = task.check(root)
    assert report.ok and not report.warnings, (report.problems, report.warnings)
    suite = SUITES[name]
    for split in ("train", "test"):
        labels = split_labels(suite.load(root, split))
        assert report.counts[split] == len(labels) > 0
        if labels.ndim == 1:
            counts = np.bincount(labels)
            assert len(counts) == 3 and counts.min() == counts.max(), counts
    if name != "voc07-cls":
        ds = TvClassDataset(name, str(root), "test", size=8, crop_fraction=1.0)
        rgb = ds[0]["inputs"].float().mean(dim=(1, 2)).numpy()
        expect = class_image(np.random.default_rng(0), ds[0]["data_samples"], 8).mean(axis=(0, 1))
        assert np.abs(rgb - expect).max() < 25, (rgb, expect)
    key = Path(root) / KEY_FILE[name]
    if key.is_dir():
        import shutil

        shutil.rmtree(key)
    else:
        key.unlink()
    with pytest.raises(UserError) as err:
        task.check(root).raise_if_bad()
    msg = str(err.value)
    assert "\n" not in msg and "Expected layout" in msg and task.data_source.split()[0] in msg


def test_each_config_has_its_datasets_class_count() -> None:
    """The class count is stated twice (the task module checks labels against it, the config sizes the classifier):
    they must agree, e.g. Caltech-101's 102 with the background class."""
    from mmengine.config import Config

    from rs_transfer.tasks._tvclass import SUITES

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in SUITE_TASKS:
        cfg = Config.fromfile(str(configs / f"{name.replace('-', '_')}.py"))
        assert cfg.model.backbone.num_classes == SUITES[name].num_classes, name
    assert SUITES["caltech101"].num_classes == 102


def test_finetune_bn_momentum_follows_the_steps_per_epoch(tmp_path: Path) -> None:
    """SimCLR B.8.1 / Kornblith et al.: BN decay max(1 - 10/s, 0.9), s = steps per epoch at batch 256; as PyTorch
    momentum min(10 x 256 / n, 0.1). Food-101 (75,750 training images): 0.0338; Flowers (2,040): capped at 0.1.
    The built model carries it (per micro-batch: 256 = 8 accumulated batches of 32 on one process, so
    1 - (1 - m)^(1/8), runner/batch.py); the frozen protocols have no classifier model to carry it."""
    import torch

    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext, get_task
    from rs_transfer.tasks.classification import ImageClassifier

    def cfg(name: str, protocol: str, preset: str = "paper"):
        ctx = RunContext(task=name, backbone="resnet50", backbone_kwargs={}, weights=None,
                         normalization={"name": "x", "mean": [0.0] * 3, "std": [1.0] * 3}, preset=preset,
                         protocol=protocol, data_root=tmp_path, work_dir=tmp_path / "wd")
        return build_config(get_task(name), ctx, model_overrides=dict(TINY))[0]

    def per_micro(m: float, a: int) -> float:
        return 1.0 - (1.0 - m) ** (1.0 / a)

    food = cfg("food101", "finetune")
    assert food.model.bn_momentum == pytest.approx(per_micro(10 * 256 / 75750, 8))
    assert cfg("flowers102", "finetune").model.bn_momentum == pytest.approx(per_micro(0.1, 8))
    assert cfg("food101", "finetune", "mini").model.bn_momentum == pytest.approx(0.1)   # batch 16: no accumulation
    assert "bn_momentum" not in cfg("food101", "linear").model
    from mmengine.registry import MODELS

    assert MODELS.get("ImageClassifier") is ImageClassifier      # a config naming it as a string still builds it
    model = ImageClassifier(dict(food.model.backbone), bn_momentum=food.model.bn_momentum)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(per_micro(0.033795, 8), abs=1e-6) for m in bns)


def test_creators_validation_set_selects_where_kornblith_et_al_use_it(tmp_path: Path, monkeypatch) -> None:
    """Aircraft, VOC2007, DTD, Flowers: the training split is train + val with the val part marked, and the linear
    probe selects its penalty on exactly those images (``probe.holdout = "creators-val"``); Food-101 holds out a
    seeded 20 %; a split without a val part is an error, not a silent random split."""
    from rs_transfer.cli import main
    from rs_transfer.tasks import get_task
    from rs_transfer.tasks._tvclass import SUITES, TvClassDataset
    from rs_transfer.tasks.classification import CREATORS_VAL, selection_split

    for name, n_val in (("fgvc-aircraft", 15), ("voc07-cls", 15), ("dtd", 15), ("flowers102", 15)):
        root = get_task(name).make_mini(tmp_path / name)
        parts = SUITES[name].load(root, "train")
        assert [s.part for s in parts] == ["", "val"], name
        ds = TvClassDataset(name, str(root), "train")
        assert ds.creators_val.tolist() == list(range(len(ds) - n_val, len(ds))), name
        held = TvClassDataset(name, str(root), "train", subset="holdout", holdout=CREATORS_VAL)
        assert held.items == [ds.items[i] for i in ds.creators_val], name
    with pytest.raises(UserError, match="no creators' validation part"):
        selection_split(10, CREATORS_VAL, 0, np.zeros(0, np.int64))
    monkeypatch.setenv("RS_TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    base = ["run", "--backbone", "resnetrs50", "--preset", "mini", "--protocol", "linear", *TINY_CLI]
    assert main([*base, "--task", "dtd", "--work-dir", str(tmp_path / "a")]) == 0
    sel = json.loads((tmp_path / "a/results.json").read_text())["extra"]["selection"]
    assert sel == {"holdout": "creators-val", "fit": 15, "held_out": 15}
    assert main([*base, "--task", "food101", "--work-dir", str(tmp_path / "b")]) == 0
    sel = json.loads((tmp_path / "b/results.json").read_text())["extra"]["selection"]
    assert sel["holdout"] == 0.2 and sel["held_out"] == round(0.2 * (sel["fit"] + sel["held_out"]))


def test_a_stale_mini_copy_is_written_again(tmp_path: Path, monkeypatch) -> None:
    """A mini copy from an older generator (here: without the Aircraft train list, and MINI.json naming other
    code) fails the task's data check; ensure_mini writes it again instead of failing every mini run. A copy this
    code wrote is reused as it is."""
    from rs_transfer.tasks import get_task
    from rs_transfer.tasks.mini import ensure_mini

    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))
    task = get_task("fgvc-aircraft")
    root = ensure_mini(task)
    (root / "kept").write_text("")
    assert ensure_mini(task) == root and (root / "kept").is_file()       # same code: reused, not rewritten
    listing = root / "fgvc-aircraft-2013b/data/images_variant_train.txt"
    listing.unlink()
    marker = task.mini_root() / "MINI.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "generator": "older"}))
    assert not task.check(root).ok
    assert ensure_mini(task) == root and listing.is_file() and task.check(root).ok


def test_caltech_background_is_the_102nd_class(tmp_path: Path) -> None:
    """torchvision drops BACKGROUND_Google; we put it back as the last label with torchvision's own numbering,
    so the image behind each item is the file torchvision would open; without the folder: a clear error."""
    import shutil

    from torchvision.datasets import Caltech101

    from rs_transfer.tasks.caltech101 import BACKGROUND, load, with_background, write_mini

    root = write_mini(tmp_path, np.random.default_rng(0))
    plain = Caltech101(str(root), download=False)
    ds = with_background(Caltech101(str(root), download=False))
    n_bg = len(list((root / "caltech101/101_ObjectCategories" / BACKGROUND).iterdir()))
    assert len(ds) == len(plain) + n_bg and ds.categories[-1] == BACKGROUND
    assert ds.y[-1] == len(plain.categories) and ds.y[: len(plain)] == plain.y
    img, label = ds[len(ds) - 1]
    assert label == len(plain.categories) and img.size == (16, 16)
    train = load(root, "train")[0]
    assert set(np.bincount(train.labels)) == {30}                 # 30 per class, the background included
    shutil.rmtree(root / "caltech101/101_ObjectCategories" / BACKGROUND)
    with pytest.raises(FileNotFoundError, match=BACKGROUND):
        load(root, "train")


def test_flowers_release_check_warns_on_other_mat_files(tmp_path: Path) -> None:
    from rs_transfer.tasks._tvclass import check_data
    from rs_transfer.tasks.flowers102 import SUITE, write_mini

    root = write_mini(tmp_path, np.random.default_rng(0))
    assert len(SUITE.release_check(root)) == 2                 # generated .mat files are not the release's
    (root / "RS_TRANSFER_MINI").unlink()                       # as if it were real data: a warning, not a problem
    report = check_data(SUITE, root)
    assert report.ok and any("imagelabels.mat differs" in w for w in report.warnings)


def test_cifar10_pickles_match_torchvision(tmp_path: Path) -> None:
    """The safe reader returns what torchvision's CIFAR10 reads from the same files (its md5 check aside)."""
    from torchvision.datasets import CIFAR10

    from rs_transfer.tasks.cifar10 import Cifar10Pickles, write_mini

    root = write_mini(tmp_path, np.random.default_rng(0))

    class NoMd5(CIFAR10):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = []

    for train in (True, False):
        tv, ours = NoMd5(str(root), train=train, download=False), Cifar10Pickles(str(root), train)
        assert np.array_equal(tv.data, ours.data) and tv.targets == ours.targets


def test_voc07_labels_follow_the_devkit_rule(tmp_path: Path) -> None:
    """1 = a non-difficult object, 0 = difficult only (ignored), -1 = absent; read through VOCDetection."""
    from rs_transfer.tasks import _voc
    from rs_transfer.tasks.voc07_cls import load, write_mini

    root = write_mini(tmp_path, np.random.default_rng(0))
    img = root / "VOCdevkit/VOC2007/Annotations/te0000.xml"
    _voc.write_annotation(img, "te0000.jpg", 32, 32, [("cat", 1, 1, 9, 9, False), ("dog", 2, 2, 8, 8, True),
                                                      ("cat", 3, 3, 9, 9, True), ("bird", 1, 1, 5, 5, True),
                                                      ("bird", 2, 2, 7, 7, False)], "VOC2007")
    y = load(root, "test")[0].labels[0]
    c = _voc.CLASSES.index
    assert (y[c("cat")], y[c("dog")], y[c("bird")], y[c("car")]) == (1, 0, 1, -1)


def test_metrics_against_hand_worked_values() -> None:
    from rs_transfer.tasks.classification import mean_per_class_accuracy, voc11_ap, voc11_map

    # class 0: 3/4 right, class 1: 0/1, class 2: 1/1 -> (75 + 0 + 100) / 3; top-1 would be 4/6
    assert mean_per_class_accuracy(np.array([0, 0, 0, 0, 1, 2]), np.array([0, 0, 0, 1, 0, 2])) == pytest.approx(175 / 3)
    # ranked: +, -, +, (difficult, ignored), -; two positives. recall 0.5 at precision 1, recall 1 at precision 2/3.
    scores, gt = np.array([0.9, 0.8, 0.7, 0.75, 0.1]), np.array([1, -1, 1, 0, -1])
    assert voc11_ap(scores, gt) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    both = voc11_map(np.stack([scores, -scores], 1), np.stack([gt, gt], 1))
    # reversed ranking: -, -, +, + (ignoring the difficult one): precision 1/3 at recall .5, 1/2 at recall 1
    assert both == pytest.approx(100 * ((6 * 1.0 + 5 * 2 / 3) / 11 + (11 * 0.5) / 11) / 2)


def test_fewshot_draws_are_balanced_seeded_and_disjoint() -> None:
    from mmengine.config import ConfigDict

    from rs_transfer.tasks._frozen import draw, shots_option, t_interval

    labels = np.repeat(np.arange(4), 30)
    p = ConfigDict(vtab_train=80, vtab_val=20)
    fit, hold = draw(labels, 5, seed=0, episode=0, p=p)
    assert np.bincount(labels[fit]).tolist() == [4] * 4 and np.bincount(labels[hold]).tolist() == [1] * 4
    assert not set(fit) & set(hold)
    again, other = draw(labels, 5, 0, 0, p), draw(labels, 5, 0, 1, p)
    assert np.array_equal(again[0], fit) and not np.array_equal(other[0], fit)
    assert len(draw(labels, 1, 0, 0, p)[1]) == 0                      # 1-shot: nothing held out
    vfit, vval = draw(labels, "vtab1k", 0, 0, p)
    assert len(vfit) == 80 and len(vval) == 20 and not set(vfit) & set(vval)
    with pytest.raises(UserError, match="only 30"):
        draw(labels, 31, 0, 0, p)
    with pytest.raises(UserError, match="--shots"):
        shots_option(["0"], None)
    assert shots_option(["1", "vtab1k"], 4) == {"probe.shots": [1, "vtab1k"], "probe.episodes": 4}
    multi = -np.ones((40, 4), np.int8)                               # class 3 absent, images 0-9 of class 0 ...
    for c in range(3):
        multi[10 * c:10 * c + 10, c] = 1
    multi[0:10, 1] = 1                                                # images 0-9 are positive for 0 and 1
    mfit, mhold = draw(multi, 3, 0, 0, p)
    chosen = np.concatenate([mfit, mhold])
    assert len(chosen) == len(set(chosen)) == 9 and all((multi[chosen, c] > 0).sum() >= 3 for c in range(3))
    lo, hi = t_interval([50.0, 60.0, 70.0])
    assert (lo + hi) / 2 == pytest.approx(60.0) and hi - lo == pytest.approx(2 * 4.302653 * 10 / 3 ** 0.5, rel=1e-5)


def test_features_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward passes counted: linear fills the cache, a few-shot run and a second seed reuse it, a changed crop
    (input pipeline) extracts again; the draws go into results.json and into the config hash."""
    import torch

    from rs_transfer.backbones import ResNetRS, create_model
    from rs_transfer.runner import run_experiment
    from rs_transfer.weights import save_weights

    monkeypatch.setenv("RS_TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    torch.manual_seed(0)
    ckpt = save_weights(create_model("resnetrs50", **TINY), tmp_path / "tiny.pth", normalization="imagenet")
    calls = []
    original = ResNetRS.forward

    def counting(self, x):  # type: ignore[no-untyped-def]
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(ResNetRS, "forward", counting)

    def run(protocol: str, seed: int = 0, **opts: object) -> dict:
        return run_experiment("dtd", "resnetrs50", preset="mini", protocol=protocol, seed=seed, model_overrides=TINY,
                              weights=str(ckpt), work_dir=tmp_path / f"{protocol}-{seed}-{len(calls)}",
                              cfg_options=dict(opts))

    lin = run("linear")
    assert sum(calls) == 42 and lin["extra"]["feature_cache"]["train"]["reused"] is False
    few = run("fewshot", **{"probe.shots": [1, 5], "probe.episodes": 2})
    few2 = run("fewshot", seed=1, **{"probe.shots": [1, 5], "probe.episodes": 2})
    assert sum(calls) == 42 and few["extra"]["feature_cache"]["test"]["reused"] is True
    assert few["extra"]["draws"]["5shot"] != few2["extra"]["draws"]["5shot"]
    assert few["config_hash"] != few2["config_hash"] != lin["config_hash"]
    assert set(few["metrics"]) >= {"1shot_mean", "5shot_ci95_low", "5shot_ci95_high"}
    assert few["value"] == few["metrics"]["5shot_mean"]
    run("linear", **{"feature_loader.dataset.crop_fraction": 1.0})
    assert sum(calls) == 84


def test_protocols_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """linear (multi-label VOC07), fewshot (--shots/--episodes) and a short fine-tune, on mini data."""
    from rs_transfer.cli import main

    monkeypatch.setenv("RS_TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    base = ["run", "--backbone", "resnetrs50", "--preset", "mini", *TINY_CLI]
    assert main([*base, "--task", "voc07-cls", "--protocol", "linear", "--work-dir", str(tmp_path / "a")]) == 0
    voc = json.loads((tmp_path / "a/results.json").read_text())
    assert voc["metric"] == "mAP11" and 0 < voc["value"] <= 100
    assert main([*base, "--task", "flowers102", "--protocol", "fewshot", "--shots", "2", "vtab1k", "--episodes",
                 "2", "--work-dir", str(tmp_path / "b")]) == 0
    few = json.loads((tmp_path / "b/results.json").read_text())
    assert few["config"]["probe"]["shots"] == [2, "vtab1k"] and len(few["extra"]["episodes"]["2shot"]) == 2
    assert main([*base, "--task", "caltech101", "--work-dir", str(tmp_path / "c"), "--cfg-options",
                 "train_cfg.max_iters=4", "train_cfg.val_interval=4"]) == 0
    ft = json.loads((tmp_path / "c/results.json").read_text())
    assert ft["metric"] == "mean_per_class" and set(ft["metrics"]) == {"top1", "top5", "mean_per_class"}


def test_sweep_subsets_partition_the_training_split(tmp_path: Path) -> None:
    """``run --sweep`` on a suite task: fit and held-out parts of train, disjoint, together the whole split."""
    from rs_transfer.studies.sweep import SWEEP_TASKS
    from rs_transfer.tasks import get_task
    from rs_transfer.tasks._tvclass import TvClassDataset

    assert "dtd" in SWEEP_TASKS and "voc07-cls" not in SWEEP_TASKS
    root = str(get_task("dtd").make_mini(tmp_path / "d"))
    fit, held = (TvClassDataset("dtd", root, "train", subset=s, holdout=0.2, holdout_seed=3)
                 for s in ("fit", "holdout"))
    whole = TvClassDataset("dtd", root, "train")
    assert len(held) == 6 and len(fit) == 24
    assert sorted(fit.items + held.items) == sorted(whole.items)
    with pytest.raises(UserError, match="subset"):
        TvClassDataset("dtd", root, "train", subset="val")


def test_multilabel_finetune_loss_ignores_difficult_and_map_metric() -> None:
    """VOC2007 fine-tuning: BCE over the non-ignored entries only; the evaluator's mAP is voc11_map of the logits."""
    import torch
    import torch.nn.functional as F

    from rs_transfer.tasks.classification import ImageClassifier, MultiLabelMAP, voc11_map

    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, 3.0]])
    targets = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0]])
    loss = ImageClassifier._multilabel(None, logits, targets, "loss")["loss"]
    keep = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    manual = torch.stack([F.binary_cross_entropy_with_logits(logits[i, j], (targets[i, j] > 0).float())
                          for i, j in keep]).mean()
    assert loss.item() == pytest.approx(manual.item())
    metric = MultiLabelMAP()
    metric.process({}, ImageClassifier._multilabel(None, logits, targets, "predict"))
    assert metric.compute_metrics(metric.results)["mAP11"] == pytest.approx(voc11_map(logits.numpy(),
                                                                                      targets.numpy().astype(int)))
