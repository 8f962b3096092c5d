"""Data layouts users have (issue 23, section 4), each built tiny in its real release format: the SBD release read
directly (the same training set and masks as mmseg's voc_aug.py), TF DeepLab's ``train_aug.txt``, mmaction2's
Kinetics lists, a 2D backbone name for Kinetics, the ImageNet devkit above the data root, and one split-size rule
(a warning saying what the run uses) for every task."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from rs_transfer.errors import UserError
from rs_transfer.tasks import _sbd, get_task


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))


def _write_gtcls(path: Path, seg: np.ndarray) -> None:
    """One SBD ``cls/*.mat`` as the release has it: a ``GTcls`` struct with ``Segmentation`` (uint8 class ids),
    ``Boundaries`` (a 20x1 cell of sparse logical maps) and ``CategoriesPresent``."""
    bounds = np.empty((20, 1), dtype=object)
    for k in range(20):
        bounds[k, 0] = scipy.sparse.csc_matrix(seg == k + 1)
    cats = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Boundaries": bounds, "Segmentation": seg, "CategoriesPresent": cats}})


def _sbd_release(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    """The voc-seg mini set turned into VOC2012 + the SBD release: no aug.txt/trainaug.txt/SegmentationClassAug;
    ``benchmark_RELEASE/dataset/{cls,train.txt,val.txt}`` whose lists also hold VOC2012 train and val images (which
    the aug rule must drop). Returns the data root and the VOC/SBD id lists."""
    root = get_task("voc-seg").make_mini(tmp_path / "voc")
    voc = root / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    ids = {k: sets.joinpath(f"{k}.txt").read_text().split() for k in ("train", "val", "aug")}
    ds = root / "benchmark_RELEASE" / "dataset"
    (ds / "cls").mkdir(parents=True)
    ids["sbd_train"] = ids["aug"][:3] + ids["train"][:2] + ids["val"][:1]
    ids["sbd_val"] = ids["aug"][3:] + ids["train"][2:3] + ids["aug"][:1]      # an id in both SBD lists, too
    for i in dict.fromkeys(ids["sbd_train"] + ids["sbd_val"]):
        seg = np.array(Image.open(voc / "SegmentationClassAug" / f"{i}.png"))
        seg[seg == 255] = 0                                                   # SBD has no ignore border
        _write_gtcls(ds / "cls" / f"{i}.mat", seg)
    (ds / "train.txt").write_text("\n".join(ids["sbd_train"]) + "\n")
    (ds / "val.txt").write_text("\n".join(ids["sbd_val"]) + "\n")
    for name in ("aug.txt", "trainaug.txt"):
        (sets / name).unlink()
    shutil.rmtree(voc / "SegmentationClassAug")
    return root, ids


def _mmseg_converter():
    """mmseg's own ``tools/dataset_converters/voc_aug.py`` as installed with mmsegmentation (``.mim/tools``)."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "tools" / "dataset_converters" / "voc_aug.py"
    if not path.is_file():
        pytest.skip("mmseg's voc_aug.py is not installed with this mmsegmentation")
    spec = importlib.util.spec_from_file_location("mmseg_voc_aug", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sbd_release_is_read_directly_as_voc_aug_converts_it(tmp_path: Path) -> None:
    root, ids = _sbd_release(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    report = get_task("voc-seg").check(root)
    assert report.ok, report.problems
    assert report.counts == {"train": 20, "val": 8, "aug": 4} and "SBD release read directly" in report.preparation
    assert "voc_aug.py" in report.preparation and str(root / "benchmark_RELEASE") in report.preparation

    # The set rule and the masks are mmseg's converter's, checked against its own functions.
    conv = _mmseg_converter()
    expected = conv.generate_aug_list(ids["sbd_train"] + ids["sbd_val"], ids["train"] + ids["val"])
    assert _sbd.aug_ids(voc, root / "benchmark_RELEASE") == sorted(expected) == sorted(ids["aug"])
    out = tmp_path / "converted"
    out.mkdir()
    cls = root / "benchmark_RELEASE" / "dataset" / "cls"
    from rs_transfer.tasks._datasets import LoadSBDAnnotations, SBDAugDataset

    ds = SBDAugDataset(data_root=str(voc), sbd_root=str(root / "benchmark_RELEASE"), pipeline=[],
                       lazy_init=False)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [Path(d["img_path"]).name for d in infos] == [f"{i}.jpg" for i in sorted(ids["aug"])]
    load = LoadSBDAnnotations()
    for info in infos:
        conv.convert_mat(Path(info["seg_map_path"]).name, str(cls), str(out))
        reference = np.array(Image.open(out / Path(info["seg_map_path"]).with_suffix(".png").name))
        got = load(dict(info, seg_fields=[]))["gt_seg_map"]
        assert got.dtype == np.uint8 and np.array_equal(got, reference) and got.max() > 0

    # The run's config: train.txt with the official masks + the SBD-only images from the .mat files.
    from rs_transfer.runner.experiment import prepare_run

    prep = prepare_run("voc-seg", "resnet50", preset="mini", data_root=root, work_dir=tmp_path / "wd")
    train = prep.cfg.train_dataloader.dataset
    assert [d["type"].__name__ if hasattr(d["type"], "__name__") else str(d["type"]) for d in train.datasets] \
        == ["VOCSegDataset", "SBDAugDataset"]
    assert prep.ctx.extra["data_preparation"] == "sbd"


def test_sbd_problems_name_the_folder_and_the_converter(tmp_path: Path) -> None:
    root, ids = _sbd_release(tmp_path)
    sbd = root / "benchmark_RELEASE"
    mat = sbd / "dataset" / "cls" / f"{ids['aug'][0]}.mat"
    mat.write_bytes(b"<html>404</html>")                 # a damaged download: skipped and counted, not fatal
    report = get_task("voc-seg").check(root)
    assert report.ok and report.unreadable == [f"{mat}: unreadable (not a MATLAB 5.0 MAT-file)"]
    from rs_transfer.tasks._corrupt import unreadable
    from rs_transfer.tasks.datacheck import decode_problem

    good = sbd / "dataset" / "cls" / f"{ids['aug'][1]}.mat"
    assert unreadable(mat) and decode_problem(mat) and unreadable(good) is None and decode_problem(good) is None
    (sbd / "dataset" / "val.txt").unlink()
    with pytest.raises(UserError) as err:
        get_task("voc-seg").check(root).raise_if_bad()
    msg = str(err.value)
    assert f"SBD release at {sbd} lacks {sbd / 'dataset' / 'val.txt'}" in msg
    assert f"python tools/dataset_converters/voc_aug.py {root / 'VOCdevkit'} {sbd}" in msg and "\n" not in msg
    shutil.rmtree(sbd)                                   # nothing at all: every accepted preparation is named
    msg = "; ".join(get_task("voc-seg").check(root).problems)
    assert "aug.txt" in msg and "train_aug.txt" in msg and "benchmark_RELEASE" in msg
    with pytest.raises(UserError) as err:                # data check's expected-layout text names them too
        get_task("voc-seg").check(root).raise_if_bad()
    layout = str(err.value).split("Expected layout: ", 1)[1]
    assert "benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}" in layout and "train_aug.txt" in layout


def test_tf_deeplab_train_aug_list(tmp_path: Path) -> None:
    root = get_task("voc-seg").make_mini(tmp_path / "voc")
    sets = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    (sets / "aug.txt").unlink()
    (sets / "trainaug.txt").rename(sets / "train_aug.txt")
    report = get_task("voc-seg").check(root)
    assert report.ok, report.problems
    assert report.counts == {"train_aug": 24, "val": 8} and "train_aug.txt" in report.preparation
    from rs_transfer.runner.experiment import prepare_run

    prep = prepare_run("voc-seg", "resnet50", preset="mini", data_root=root, work_dir=tmp_path / "wd")
    assert prep.cfg.train_dataloader.dataset.ann_file.endswith("ImageSets/Segmentation/train_aug.txt")


def _mmaction2_layout(mini_root: Path, dest: Path, label_map: bool) -> Path:
    """mmaction2's Kinetics layout from the mini set: ``videos_{train,val}/<class>/*.mp4`` and
    ``kinetics400_{split}_list_videos.txt`` (``path label_index``), one listed file absent."""
    from rs_transfer.video import mini

    for split in ("train", "val"):
        lines = []
        for label, cls in enumerate(mini.CLASSES):
            for f in sorted((mini_root / split / cls).glob("*.mp4")):
                if "corrupt" in f.name:
                    continue
                (dest / f"videos_{split}" / cls).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest / f"videos_{split}" / cls / f.name)
                lines.append(f"{cls}/{f.name} {label}")
        if split == "val":
            lines.append("up/gone_000000_000010.mp4 3")
        (dest / f"kinetics400_{split}_list_videos.txt").write_text("\n".join(lines) + "\n")
    if label_map:
        (dest / "label_map_k400.txt").write_text("moving down\nmoving left\nmoving right\nmoving up\n")
    return dest


def test_kinetics_mmaction2_layout(tmp_path: Path) -> None:
    from rs_transfer.video import mini
    from rs_transfer.video.kinetics import scan_split

    mini_root = mini.make_mini(tmp_path / "mini", counts={"train": 1, "val": 1})
    root = _mmaction2_layout(mini_root, tmp_path / "k400", label_map=False)
    val = scan_split(root, "val")
    assert val.layout == "mmaction2" and val.classes == list(mini.CLASSES)
    assert [(r.path.parent.name, r.label) for r in val.records] == [(c, i) for i, c in enumerate(mini.CLASSES)]
    assert val.missing == ["up/gone_000000_000010.mp4"]
    report = get_task("kinetics400").check(root)
    assert report.ok, report.problems
    assert report.counts["train"] == 4 and report.counts["val"] == 4 and report.counts["val_missing"] == 1
    assert report.warnings == ["val: 4 readable videos, the standard Kinetics-400 (kinetics400_val_list_videos.txt) "
                               "split has 5; the run evaluates on these 4; its metrics are not comparable with "
                               "published ones"]
    assert "WARNING: val: 4 readable videos" in report.details()
    from rs_transfer.runner.experiment import prepare_run

    prep = prepare_run("kinetics400", "resnet3d50", preset="mini", data_root=root, work_dir=tmp_path / "wd")
    assert prep.cfg.model.backbone.num_classes == 4 and prep.cfg.val_dataloader.dataset.data_root == str(root)
    (root / "label_map_k400.txt").write_text("moving down\nmoving left\nmoving right\nmoving up\n")
    assert scan_split(root, "train").classes[0] == "moving down"
    (root / "kinetics400_val_list_videos.txt").write_text("up/x.mp4 three\n")
    with pytest.raises(UserError, match=r"kinetics400_val_list_videos.txt:1: expected '<video path> <label index>'"):
        scan_split(root, "val")
    assert "kinetics400_{train,val}_list_videos.txt" in get_task("kinetics400").data_layout   # data check's text


@pytest.mark.parametrize("task,backbone,needs,use", [("kinetics400", "resnet50", "3D (video) backbone", "resnet3d50"),
                                                     ("kinetics400", "resnetrs101", "3D", "resnetrs3d101"),
                                                     ("voc-seg", "resnetrs3d50", "2D backbone", "resnetrs50")])
def test_backbone_of_the_other_kind_is_named(task: str, backbone: str, needs: str, use: str) -> None:
    from rs_transfer.runner.experiment import prepare_run

    with pytest.raises(UserError) as err:
        prepare_run(task, backbone, preset="mini")
    msg = str(err.value)
    assert needs in msg and f"Use --backbone {use}" in msg and "unknown option" not in msg and "\n" not in msg
    if task == "kinetics400":
        assert "resnetrs3d200" in msg and "layout=2d" in msg


def test_imagenet_devkit_is_searched_like_the_kaggle_csv(tmp_path: Path) -> None:
    from rs_transfer.tasks.imagenet import find_ground_truth, scan

    mini_root = get_task("imagenet").make_mini(tmp_path / "mini")
    root = tmp_path / "dl" / "ILSVRC2012" / "extracted"          # devkit unpacked two folders above the root
    shutil.copytree(mini_root / "train", root / "train")
    shutil.copytree(mini_root / "val", root / "val")
    shutil.copytree(mini_root / "ILSVRC2012_devkit_t12", tmp_path / "dl" / "ILSVRC2012_devkit_t12")
    listing = scan(root)
    assert not listing.problems and len(listing.val) == 80
    assert listing.val_source.startswith(str(tmp_path / "dl" / "ILSVRC2012_devkit_t12"))
    assert sorted(y for _, y in listing.val) == sorted(y for _, y in scan(mini_root).val)
    # the Kaggle CSV is also found inside a devkit-style data folder: one rule for every file
    csv = tmp_path / "dl" / "ILSVRC2012_devkit_t12" / "data" / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n")
    assert find_ground_truth(root, "LOC_val_solution.csv").parent.name == "data"
    too_far = tmp_path / "a" / "b" / "c" / "d" / "root"                      # 4 folders below: not searched
    shutil.copytree(root, too_far)
    shutil.copytree(mini_root / "ILSVRC2012_devkit_t12", tmp_path / "a" / "ILSVRC2012_devkit_t12")
    assert any("up to 3 folders above" in p for p in scan(too_far).problems)


def _drop_marker(root: Path) -> None:
    for p in [root, *root.parents][:2]:
        (p / "RS_TRANSFER_MINI").unlink(missing_ok=True)


@pytest.mark.parametrize("name,split,got,standard", [
    ("voc-seg", "aug", 4, 9118), ("voc-det", "VOC2007/test", 8, 4952), ("ade20k", "validation", 8, 2000),
    ("nyu-depth", "train", 24, 795)])
def test_one_split_size_rule_warns_and_says_what_the_run_uses(tmp_path: Path, name: str, split: str, got: int,
                                                              standard: int) -> None:
    task = get_task(name)
    root = task.make_mini(tmp_path / name)
    assert task.check(root).warnings == []                     # generated mini sets are exempt
    _drop_marker(root)
    report = task.check(root)
    assert report.ok, report.problems                          # another size is never a refusal
    line = next(w for w in report.warnings if w.startswith(f"{split}: "))
    assert f"{split}: {got:,} " in line and f"split has {standard:,}" in line
    assert "the run" in line.split(";", 1)[1] and (f"these {got}" in line or "all of them" in line)


def test_split_size_rule_for_imagenet_and_cifar(tmp_path: Path) -> None:
    for name, split in (("imagenet", "train"), ("cifar100", "test")):
        task = get_task(name)
        root = task.make_mini(tmp_path / name)
        assert task.check(root).warnings == [], name
        _drop_marker(root)
        report = task.check(root)
        assert report.ok and any(w.startswith(f"{split}: ") and "the run" in w and "standard" in w
                                 for w in report.warnings), report.warnings
