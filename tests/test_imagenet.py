"""ImageNet task: the three val layouts give the same labels (devkit IDs mapped through meta.mat as torchvision
does), data check names corrupt files and missing classes, the RS transforms at real resolution, and mini runs
through the CLI that learn; their exported weights feed a transfer run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CLI
from rs_transfer.cli import main
from rs_transfer.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_transfer.tasks._imagenet_mini import make_mini

    return make_mini(tmp_path_factory.mktemp("imagenet"))


def _torchvision_val_wnids(root: Path) -> list[str]:
    """The devkit parsing exactly as torchvision's ``parse_devkit_archive`` states it: leaves of meta.mat by
    position (field 4 = num_children), ILSVRC2012_ID -> wnid, one ground-truth line per sorted val file."""
    import scipy.io

    data = root / "ILSVRC2012_devkit_t12" / "data"
    meta = scipy.io.loadmat(str(data / "meta.mat"), squeeze_me=True)["synsets"]
    leaves = [meta[i] for i, n in enumerate(list(zip(*meta))[4]) if n == 0]
    idx_to_wnid = dict(zip(*list(zip(*leaves))[:2]))
    ids = [int(x) for x in (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()]
    return [idx_to_wnid[i] for i in ids]


def _labels(listing) -> dict[str, int]:
    return {Path(p).name: y for p, y in listing.val}


def test_val_layouts_agree_with_the_devkit(mini_root: Path, tmp_path: Path) -> None:
    from rs_transfer.tasks.imagenet import scan

    flat = scan(mini_root)
    assert not flat.problems and len(flat.train) == 320 and len(flat.val) == 80
    wnids = _torchvision_val_wnids(mini_root)
    files = sorted((mini_root / "val").iterdir())
    expected = {f.name: flat.classes.index(w) for f, w in zip(files, wnids)}
    assert _labels(flat) == expected
    # The devkit's IDs are not the label order: using them directly would be wrong here.
    ids = [int(x) for x in (mini_root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
           .read_text().split()]
    assert sum(i - 1 != expected[f.name] for i, f in zip(ids, files)) > 40

    folders = tmp_path / "folders"       # val/<wnid>/*.JPEG (valprep.sh)
    shutil.copytree(mini_root / "train", folders / "train")
    for f, w in zip(files, wnids):
        (folders / "val" / w).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folders / "val" / w / f.name)
    assert _labels(scan(folders)) == expected

    kaggle = tmp_path / "kaggle"         # <kaggle>/LOC_val_solution.csv, root = <kaggle>/ILSVRC/Data/CLS-LOC
    root = kaggle / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(mini_root / "train", root / "train")
    shutil.copytree(mini_root / "val", root / "val")
    rows = [f"{f.stem},{w} 1 2 30 30 {w} 3 4 20 20" for f, w in zip(files, wnids)][::-1]
    (kaggle / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    assert _labels(scan(root)) == expected


def test_data_check_counts_corrupt_and_missing(mini_root: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from rs_transfer.tasks.imagenet import check_data

    root = tmp_path / "in"
    shutil.copytree(mini_root, root)
    victim = sorted((root / "train" / "n01440764").iterdir())[0]
    victim.write_bytes(b"<html>not an image</html>")
    truncated = sorted((root / "train" / "n02102040").iterdir())[0]   # valid header: only --deep sees it
    truncated.write_bytes(truncated.read_bytes()[:300])
    (sorted((root / "val").iterdir())[0]).write_bytes(b"")
    report = check_data(root)
    assert report.ok and report.counts == {"classes": 8, "train": 320, "val": 80}
    assert len(report.unreadable) == 2 and victim.name in report.unreadable[0]
    assert "not a JPEG or PNG" in report.unreadable[0] and "empty file" in report.unreadable[1]
    monkeypatch.setenv("LOCAL_RANK", "1")      # another process of the same machine: layout only
    assert check_data(root).unreadable == [] and check_data(root).counts == report.counts
    monkeypatch.delenv("LOCAL_RANK")
    assert main(["data", "check", "--task", "imagenet", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 unreadable file(s)" in out and "meta.mat" in out and "ILSVRC2012: 1,281,167" in out
    assert main(["data", "check", "--task", "imagenet", "--data-root", str(root), "--deep", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"damaged: {truncated}" in out and "decoded 400 files, 3 damaged" in out

    (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()       # ground truth without its mapping
    with pytest.raises(UserError, match="meta.mat"):
        check_data(root).raise_if_bad()
    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(UserError) as err:
        check_data(root).raise_if_bad()
    msg = str(err.value)
    assert "LOC_val_solution.csv" in msg and "image-net.org" in msg and "\n" not in msg

    junk = tmp_path / "junk"             # nothing in train is an image: a problem, not a warning
    (junk / "train" / "n01440764").mkdir(parents=True)
    (junk / "val" / "n01440764").mkdir(parents=True)
    (junk / "train" / "n01440764" / "a.JPEG").write_bytes(b"GIF89a")
    (junk / "val" / "n01440764" / "b.JPEG").write_bytes(b"GIF89a")
    assert "no train image has a JPEG/PNG header" in check_data(junk).problems

    folders = tmp_path / "folders"       # a val class that train does not have; a class without val images
    shutil.copytree(mini_root / "train", folders / "train")
    (folders / "val" / "n09999999").mkdir(parents=True)
    shutil.copy(victim.parent / sorted(p.name for p in victim.parent.iterdir())[1], folders / "val" / "n09999999")
    (folders / "val" / "n01440764").mkdir()
    shutil.copy(sorted((mini_root / "train" / "n01440764").iterdir())[0], folders / "val" / "n01440764")
    report = check_data(folders)
    assert any("n09999999" in p for p in report.problems)
    missing = next(w for w in report.warnings if w.startswith("classes without val images"))
    assert "n02102040" in missing and "n01440764" not in missing


def test_header_check_is_cached_between_runs(mini_root: Path, tmp_path: Path, monkeypatch) -> None:
    """The header pass before every run reads each file once: the next check of an unchanged dataset reads none,
    a touched, rewritten or added file is read again, and the unreadable files reported (and their counts) are the
    same as a cold pass's. Reads are counted by wrapping the real header check."""
    import os

    import rs_transfer.tasks.imagenet as imagenet
    from rs_transfer.tasks._header_cache import cache_file

    root = tmp_path / "in"
    shutil.copytree(mini_root, root)
    corrupt = sorted((root / "train" / "n01440764").iterdir())[0]
    corrupt.write_bytes(b"<html>not an image</html>")
    read: list[str] = []
    real = imagenet.header_problem
    monkeypatch.setattr(imagenet, "header_problem", lambda p: read.append(p) or real(p))

    def check() -> list[str]:
        read.clear()
        report = imagenet.check_data(root)
        assert report.ok
        return report.unreadable

    first = check()
    assert len(read) == 400 and len(first) == 1 and corrupt.name in first[0] and cache_file(root).is_file()
    assert check() == first and read == []                  # run 2: nothing read, the corrupt file still reported
    monkeypatch.setenv("LOCAL_RANK", "1")                   # a layout-only process leaves the cache alone
    assert imagenet.check_data(root).unreadable == []
    monkeypatch.delenv("LOCAL_RANK")
    assert check() == first and read == []

    good = sorted((root / "val").iterdir())[0]
    st = good.stat()
    os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))   # touched: read again, still fine
    assert check() == first and read == [str(good)]
    good.write_bytes(b"\0" * st.st_size)                   # same size, new content and mtime: now unreadable
    second = check()
    assert read == [str(good)] and len(second) == 2 and "not a JPEG or PNG" in second[1]
    added = corrupt.with_name("added.JPEG")
    shutil.copy(sorted(corrupt.parent.iterdir())[-1], added)
    assert check() == second and read == [str(added)]
    assert imagenet.check_data(root).counts["train"] == 321

    cache_file(root).unlink()                               # without the cache: the same report, every file read
    assert check() == second and len(read) == 401
    cache_file(root).write_text("{not json")                # an unreadable cache is a cold pass, not an error
    assert check() == second and len(read) == 401
    assert check() == second and read == []


def test_transforms_at_paper_resolution_and_minival(mini_root: Path) -> None:
    """One image at 224 px through the train and eval pipelines; the 2% minival hold-out is deterministic and
    disjoint from what training then reads."""
    import torch

    from rs_transfer.tasks._imagenet_data import ImageNetDataset, eval_transform, in_minival

    ds = ImageNetDataset(str(mini_root), "train", augment=True, resolution=224,
                         randaugment=dict(num_ops=2, magnitude=15))
    item = ds[0]
    assert item["inputs"].shape == (3, 224, 224) and item["inputs"].dtype == torch.uint8
    img = torch.arange(3 * 256 * 320, dtype=torch.float32).reshape(3, 256, 320).remainder(251).to(torch.uint8)
    out = eval_transform(img, 224, 32)   # TF: centre 224/256 of the short side, then 224 x 224
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, img[:, 16:240, 48:272])  # 224/256 x 256 = 224: the crop is already the output size
    names = [f"n01440764_{i}.JPEG" for i in range(20000)]
    held = [n for n in names if in_minival(n, 0.02)]
    assert 340 < len(held) < 460 and held == [n for n in names if in_minival(n, 0.02)]
    train = ImageNetDataset(str(mini_root), "train", exclude_minival=True, minival_fraction=0.1)
    mini = ImageNetDataset(str(mini_root), "minival", minival_fraction=0.1)
    assert len(train) + len(mini) == 320 and not {s[0] for s in train.samples} & {s[0] for s in mini.samples}


def test_mini_vanilla_run_learns_and_weights_flow_on(mini_root: Path, tmp_path: Path) -> None:
    """``--recipe vanilla`` on the mini set with minival: above chance (12.5%), step decay; a corrupt train file
    is skipped and logged, a corrupt val file left out and counted. Then its exported weights (started from a
    unit-range checkpoint, so the normalisation is not the default) feed a mini CIFAR-100 run as a work dir: same
    file, same normalisation."""
    import torch

    from rs_transfer.backbones import create_model
    from rs_transfer.tasks._imagenet_data import in_minival
    from rs_transfer.weights import save_weights

    root = tmp_path / "data"
    shutil.copytree(mini_root, root)
    bad_train = sorted((root / "train" / "n03000684").iterdir())[3]
    bad_train.write_bytes(bad_train.read_bytes()[:200])          # valid header, truncated body
    (root / "val" / "ILSVRC2012_val_00000005.JPEG").write_bytes(b"\xff\xd8\xff broken")
    torch.manual_seed(0)
    start = save_weights(create_model("resnet50", layers=[1, 1, 1, 1], width=0.25), tmp_path / "start.pth",
                         normalization="unit-range")
    pre = tmp_path / "pre"
    assert main(["run", "--task", "imagenet", "--backbone", "resnet50", "--preset", "mini", "--recipe", "vanilla",
                 "--weights", str(start), "--work-dir", str(pre), "--data-root", str(root), *TINY_CLI,
                 "--cfg-options", "recipe.minival=True", "val_evaluator.max_skipped_fraction=0.05"]) == 0
    res = json.loads((pre / "results.json").read_text())
    m = res["metrics"]
    assert res["value"] > 40.0 and m["top5"] >= res["value"] and 0 <= m["minival_top1"] <= 100, m
    held = sum(in_minival(f.name, 0.1) for f in (root / "train").rglob("*.JPEG"))   # mini: 10% hold-out
    assert 10 < held < 60 and m["eval_skipped"] == 1 and m["eval_images"] == 79 + held
    log = (pre / "skipped_files.tsv").read_text()
    assert "ILSVRC2012_val_00000005" in log and ("train\t" + str(bad_train)) in log
    assert res["config"]["recipe"]["name"] == "vanilla"
    assert res["config"]["recipe"]["cosine"] is False and res["config"]["recipe"]["weight_decay"] == 1e-4
    assert "MultiStepLR" in json.dumps(res["config"]["param_scheduler"])
    assert res["backbone_kwargs"]["se_ratio"] == 0.0 and res["backbone_kwargs"]["drop_rate"] == 0.0
    exported = pre / "weights.safetensors"
    from safetensors import safe_open

    with safe_open(str(exported), "pt") as f:   # normalisation and recipe travel with the weights
        meta = f.metadata()
    assert meta["normalization"] == "unit-range" and json.loads(meta["recipe"])["name"] == "vanilla"
    assert json.loads(meta["recipe"])["epochs"] == 90 and meta["task"] == "imagenet"

    down = tmp_path / "down"
    assert main(["run", "--task", "cifar100", "--backbone", "resnet50", "--preset", "mini", "--weights", str(pre),
                 "--work-dir", str(down), *TINY_CLI, "--cfg-options", "train_cfg.max_iters=4"]) == 0
    d = json.loads((down / "results.json").read_text())
    assert d["weights"]["path"] == str(exported) and d["weights"]["normalization"]["name"] == "unit-range"
    from rs_transfer.studies.report import weights_label   # study table4 rows: exported files are named by their run

    assert weights_label(str(exported)) == weights_label(str(pre)) == "pre"
    assert d["config"]["model"]["data_preprocessor"]["mean"] == [0.0, 0.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["rs", "rs-transfer"])
def test_mini_named_recipes_learn(recipe: str, tmp_path: Path) -> None:
    """The two long recipes at their mini length (12-13 epochs): above chance with RandAugment, label smoothing,
    dropout; ``rs`` evaluates (and exports) the EMA weights."""
    wd = tmp_path / recipe
    assert main(["run", "--task", "imagenet", "--backbone", "resnet50", "--preset", "mini", "--recipe", recipe,
                 "--work-dir", str(wd), *TINY_CLI]) == 0
    res = json.loads((wd / "results.json").read_text())
    assert res["value"] > 30.0, res["metrics"]
    r = res["config"]["recipe"]
    assert r["randaugment"] and r["label_smoothing"] == 0.1 and r["weight_decay"] == 4e-5 and r["cosine"]
    # TF's pixel constants (100 px translate, 40 px cutout at level 10, for ~224 px) scaled to the 32 px mini crops
    ra = res["config"]["train_dataloader"]["dataset"]["randaugment"]
    assert (ra["translate_const"], ra["cutout_const"]) == (round(100 * 32 / 224, 3), round(40 * 32 / 224, 3))
    assert r["ema"] is (recipe == "rs") and r["epochs"] == (350 if recipe == "rs" else 400)
    assert res["backbone_kwargs"]["se_ratio"] == (0.25 if recipe == "rs" else 0.0)
    assert res["backbone_kwargs"]["drop_rate"] == 0.25
    assert ("EMAHook" in json.dumps(res["config"]["custom_hooks"])) is (recipe == "rs")
    if recipe == "rs":   # the exported file is what was evaluated: re-evaluating it gives the same top-1
        assert _evaluate(wd / "weights.safetensors", res) == pytest.approx(res["value"])


def _evaluate(weights: Path, res: dict) -> float:
    import torch

    from rs_transfer.backbones import create_model
    from rs_transfer.tasks._imagenet_data import ImageNetDataset
    from rs_transfer.weights import load_weights

    kw = {k: v for k, v in res["backbone_kwargs"].items() if k not in ("num_classes", "weights")}
    model = create_model(res["backbone"], num_classes=8, **kw)
    load_weights(model, weights)
    model.eval()
    ds = ImageNetDataset(res["data_root"], "val", resolution=32, crop_padding=8)
    mean = torch.tensor(res["weights"]["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(res["weights"]["normalization"]["std"]).view(1, 3, 1, 1)
    x = torch.stack([ds[i]["inputs"] for i in range(len(ds))]).float()
    y = np.array([ds[i]["data_samples"] for i in range(len(ds))])
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(1).numpy()
    return float(100.0 * (pred == y).mean())


def test_train_input_benchmark_prints_a_ratio(mini_root: Path) -> None:
    from rs_transfer.bench.input import format_result, run_benchmark

    r = run_benchmark(mini_root, resolution=32, images=16, batch=8, workers=0, rounds=1)
    ours, ref = r["images_per_s"]["torchvision.io"], r["images_per_s"]["ImageFolder+PIL"]
    assert ours > 0 and ref > 0 and r["ratio"] == pytest.approx(ours / ref) and r["images"] == 16
    text = format_result(r)
    assert "ratio torchvision.io / ImageFolder+PIL" in text and "ratio decode=device / ImageFolder+PIL" in text
    rows = [ln.split()[0] for ln in text.splitlines()[2:5]]
    assert rows == ["torchvision.io", "ImageFolder+PIL", "decode=device"] and r["images_per_s"]["decode=device (cpu)"] > 0


def test_preprocessor_drops_tags_and_can_hand_over_channels_last() -> None:
    import torch

    from rs_transfer.tasks._imagenet_data import ImageNetDataPreprocessor

    batch = {"inputs": torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8), "data_samples": torch.tensor([1, 2]),
             "split": torch.tensor([0, 1]), "unreadable": torch.tensor([0, 0])}
    plain = ImageNetDataPreprocessor(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0])(dict(batch))
    nhwc = ImageNetDataPreprocessor(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], channels_last=True)(dict(batch))
    assert set(plain) == {"inputs", "data_samples"} and plain["inputs"].is_contiguous()   # "cuda": not on a CPU
    assert nhwc["inputs"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain["inputs"], nhwc["inputs"])
    ref = (batch["inputs"].float() - torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)) / torch.tensor(
        [4.0, 5.0, 6.0]).view(1, 3, 1, 1)
    assert torch.allclose(plain["inputs"], ref)


@pytest.mark.slow
def test_pretrained_weights_run_table4(tmp_path: Path, capsys) -> None:
    """Issue 10 §3 end to end: two mini pre-trainings (vanilla and rs-transfer recipes, both vanilla architecture)
    feed ``study table4`` by their work dirs; the report has one row per pre-training, named after it."""
    for recipe in ("vanilla", "rs-transfer"):
        assert main(["run", "--task", "imagenet", "--backbone", "resnet50", "--preset", "mini", "--recipe", recipe,
                     "--work-dir", str(tmp_path / recipe), *TINY_CLI, "--cfg-options", "recipe.epochs=60"]) == 0
    out = tmp_path / "t4"
    assert main(["study", "table4", "--preset", "mini", "--backbone", "resnet50", "--tasks", "cifar100",
                 "--weights", str(tmp_path / "vanilla"), str(tmp_path / "rs-transfer"), "--out", str(out),
                 "--backbone-options", "layers=[1,1,1,1]", "width=0.25",
                 "--cfg-options", "train_cfg.max_iters=6"]) == 0
    md = next(out.glob("*.md")).read_text()
    assert "resnet50 / vanilla" in md and "resnet50 / rs-transfer" in md
    runs = sorted(out.glob("cifar100/*/results.json"))
    assert len(runs) == 2
    for r in runs:
        res = json.loads(r.read_text())
        assert res["weights"]["path"].endswith("weights.safetensors") and res["value"] >= 0
