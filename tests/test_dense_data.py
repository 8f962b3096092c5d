"""Mini data sets of the dense tasks: real on-disk formats, deterministic, accepted by ``check_data``; and
``check_data`` naming exactly the file that is missing or malformed (also through ``rs-transfer data check``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_transfer.cli import main
from rs_transfer.errors import UserError
from rs_transfer.tasks import _voc, get_task

MINI_COUNTS = {
    "voc-det": {"VOC2007/trainval": 16, "VOC2007/test": 8, "VOC2012/trainval": 16},
    "voc-seg": {"train": 20, "aug": 4, "val": 8},
    "ade20k": {"training": 24, "validation": 8},
    "nyu-depth": {"train": 24, "test": 8},
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(MINI_COUNTS))
def test_mini_is_deterministic_and_passes_check(tmp_path: Path, name: str) -> None:
    task = get_task(name)
    a, b = task.make_mini(tmp_path / "a"), task.make_mini(tmp_path / "b")
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa), "mini data must be byte-identical"
    report = task.check(a)
    assert report.ok, report.problems
    assert report.counts == MINI_COUNTS[name]


def test_voc_formats_are_the_devkit_ones(tmp_path: Path) -> None:
    det = get_task("voc-det").make_mini(tmp_path / "det") / "VOCdevkit" / "VOC2007"
    xml = sorted((det / "Annotations").glob("*.xml"))[0]
    root = ET.parse(xml).getroot()
    assert root.findtext("filename") == xml.stem + ".jpg"
    obj = root.find("object")
    assert obj.findtext("name") in _voc.CLASSES
    x1, y1, x2, y2 = (int(obj.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
    assert 1 <= x1 < x2 <= int(root.find("size").findtext("width"))
    with Image.open(det / "JPEGImages" / f"{xml.stem}.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"

    seg = get_task("voc-seg").make_mini(tmp_path / "seg") / "VOCdevkit" / "VOC2012"
    some_id = (seg / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    with Image.open(seg / "SegmentationClass" / f"{some_id}.png") as im:
        assert im.mode == "P"                               # official masks are palette PNGs
        official = np.array(im)
    with Image.open(seg / "SegmentationClassAug" / f"{some_id}.png") as im:
        assert im.mode == "L"                               # SBD-converted masks are grey class ids
        assert np.array_equal(np.array(im), official)
    assert set(np.unique(official)) <= set(range(21)) | {255} and 255 in official


def test_ade_and_nyu_formats(tmp_path: Path) -> None:
    ade = get_task("ade20k").make_mini(tmp_path / "ade") / "ADEChallengeData2016"
    ann = np.array(Image.open(sorted((ade / "annotations" / "training").glob("*.png"))[0]))
    assert ann.dtype == np.uint8 and ann.min() == 0 and ann.max() <= 150    # 0 = "other", ignored
    nyu = get_task("nyu-depth").make_mini(tmp_path / "nyu")
    png = sorted((nyu / "annotations" / "test").glob("*.png"))[0]
    with Image.open(png) as im:
        assert im.mode in ("I;16", "I")
        depth_mm = np.array(im)
    assert 1000 < depth_mm.min() and depth_mm.max() <= 10000                  # millimetres within the 10 m cap


def _problems(name: str, root: Path) -> str:
    report = get_task(name).check(root)
    assert not report.ok
    with pytest.raises(UserError) as err:
        report.raise_if_bad()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_malformed_xml_and_missing_image_are_named(tmp_path: Path) -> None:
    root = get_task("voc-det").make_mini(tmp_path)
    main_dir = root / "VOCdevkit" / "VOC2012"
    bad = sorted((main_dir / "Annotations").glob("*.xml"))[0]
    bad.write_text("<annotation><size><width>10</width>")        # truncated
    gone = sorted((root / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg"))[-1]
    gone.unlink()
    report = get_task("voc-det").check(root)
    assert [u for u in report.unreadable if u.startswith(f"{bad}: unreadable annotation, malformed XML")]
    msg = _problems("voc-det", root)            # the missing image is the problem; the broken XML is counted
    assert f"missing image {gone}" in msg and "malformed XML" not in msg


def test_bad_box_and_unknown_class_are_named(tmp_path: Path) -> None:
    root = get_task("voc-det").make_mini(tmp_path)
    xml = sorted((root / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9").replace("aeroplane", "plane")
                   .replace("bicycle", "plane").replace("bird", "plane").replace("boat", "plane"))
    msg = _problems("voc-det", root)
    assert str(xml) in msg and ("unknown class 'plane'" in msg or "outside" in msg)


def test_segmentation_missing_mask_and_split_counts(tmp_path: Path) -> None:
    root = get_task("voc-seg").make_mini(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    some_id = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    (voc / "SegmentationClass" / f"{some_id}.png").unlink()
    msg = _problems("voc-seg", root)
    assert f"missing mask {voc / 'SegmentationClass' / some_id}.png" in msg
    # Without the mini marker the standard split sizes are enforced, naming the file and the expected count.
    (root / "RS_TRANSFER_MINI").unlink()
    msg = _problems("voc-seg", root)
    assert "aug.txt lists 4 images, the standard split has 9118" in msg
    # Without aug.txt it is the DeepLab bundle: trainaug.txt, every mask in SegmentationClassAug.
    (voc / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    msg = _problems("voc-seg", root)
    assert "trainaug.txt lists 24 images, the standard split has 10582" in msg


def test_ade_and_nyu_problems_are_named(tmp_path: Path) -> None:
    ade_root = get_task("ade20k").make_mini(tmp_path / "ade")
    ann = sorted((ade_root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))[0]
    ann.write_bytes(b"not a png")
    report = get_task("ade20k").check(ade_root)
    assert report.ok and report.unreadable == [f"{ann}: unreadable image (UnidentifiedImageError)"]

    nyu_root = get_task("nyu-depth").make_mini(tmp_path / "nyu")
    png = sorted((nyu_root / "annotations" / "train").glob("*.png"))[0]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)           # 8-bit: depth would be truncated
    img = sorted((nyu_root / "images" / "test").glob("*.jpg"))[0]
    img.unlink()
    msg = _problems("nyu-depth", nyu_root)
    assert f"{png}: depth must be a 16-bit PNG" in msg
    assert f"depth map {nyu_root / 'annotations' / 'test' / img.stem}.png has no image" in msg


def test_missing_root_and_cli_data_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    msg = _problems("voc-seg", tmp_path / "nowhere")
    assert "VOC2012" in msg and "host.robots.ox.ac.uk" in msg
    root = get_task("nyu-depth").make_mini(tmp_path / "nyu")
    assert main(["data", "check", "--task", "nyu-depth", "--data-root", str(root)]) == 0
    (root / "images" / "train").rename(root / "images" / "training")
    assert main(["data", "check", "--task", "nyu-depth", "--data-root", str(root)]) != 0
    assert f"missing folder {root / 'images' / 'train'}" in capsys.readouterr().err


# ---- NYU: the three preparations ----------------------------------------------------------------------------------
def _bts_from_mini(mini: Path, root: Path) -> Path:
    """BTS's folders from the mini frames: sync/<scene>_<id>/ for training, official_splits/test/<scene>/."""
    import shutil

    for split, dest in (("train", "sync"), ("test", "official_splits/test")):
        for i, img in enumerate(sorted((mini / "images" / split).glob("*.jpg"))):
            scene = img.stem.rsplit("_", 1)[0]
            folder = root / dest / (f"{scene}_{i // 4:04d}b" if split == "train" else scene)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(img, folder / f"rgb_{i:05d}.jpg")
            shutil.copy(mini / "annotations" / split / f"{img.stem}.png", folder / f"sync_depth_{i:05d}.png")
    return root


def test_nyu_preparations_are_recognised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rs_transfer.tasks import nyu_depth

    mini = get_task("nyu-depth").make_mini(tmp_path / "mini")
    bts = _bts_from_mini(mini, tmp_path / "bts")
    report = get_task("nyu-depth").check(bts)
    assert report.ok, report.problems
    assert "BTS" in report.preparation and report.counts == {"train": 24, "test": 8}
    # Not the Eigen sizes: a warning that says what the run uses, never a dead end.
    assert any("train: 24 frames, the Eigen split has 795" in w and "trains on all of them" in w
               for w in report.warnings), report.warnings
    assert any("test: 8 frames" in w and "NOT comparable" in w for w in report.warnings)
    assert main(["data", "check", "--task", "nyu-depth", "--data-root", str(bts)]) == 0
    out = capsys.readouterr().out
    assert "preparation: BTS folders" in out and "WARNING: train: 24 frames" in out
    # BTS's own file list, if present, decides what is read (here: a subset, with BTS's leading slashes).
    lines = [f"/{p.parent.name}/{p.name} /{p.parent.name}/sync_depth_{p.stem[4:]}.png 518.8579"
             for p in sorted((bts / "sync").rglob("rgb_*.jpg"))[:5]]
    (bts / nyu_depth.BTS_LISTS["train"]).write_text("\n".join(lines) + "\n")
    assert get_task("nyu-depth").check(bts).counts["train"] == 5

    (mini / "RS_TRANSFER_MINI").unlink()          # the mmseg layout, as real data: counts warn, still OK
    report = get_task("nyu-depth").check(mini)
    assert report.ok and "images|annotations" in report.preparation and len(report.warnings) == 3
    assert any("look in-painted" in w for w in report.warnings)      # the generated depth has no holes

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "nyu_depth_v2_labeled.mat").write_bytes(b"")
    msg = _problems("nyu-depth", raw)
    assert "convert it first with `python -m rs_transfer.tasks.nyu_depth" in msg


def test_nyu_bts_layout_reaches_the_dataset(tmp_path: Path) -> None:
    from mmengine.registry import DATASETS, init_default_scope

    from conftest import TINY
    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext

    bts = _bts_from_mini(get_task("nyu-depth").make_mini(tmp_path / "mini"), tmp_path / "bts")
    ctx = RunContext(task="nyu-depth", backbone="resnet50", backbone_kwargs={}, weights=None,
                     normalization={"name": "x", "mean": [0.0] * 3, "std": [1.0] * 3}, preset="mini",
                     protocol="finetune", data_root=bts, work_dir=tmp_path / "wd")
    cfg, _, _ = build_config(get_task("nyu-depth"), ctx, model_overrides=TINY)
    assert ctx.extra["data_preparation"] == "bts" and ctx.extra["data_frames"] == {"train": 24, "test": 8}
    init_default_scope("mmseg")
    train, test = DATASETS.build(cfg.train_dataloader.dataset), DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 24 and len(test) == 8
    info = test.get_data_info(0)
    assert Path(info["img_path"]).name.startswith("rgb_") and Path(info["depth_map_path"]).name.startswith("sync_")
    scene = Path(info["img_path"]).parent.name
    assert info["category_id"] == test.metainfo["classes"].index(scene)          # from the scene folder
    sample = test[0]
    assert sample["data_samples"].gt_depth_map.data.shape[-2:] == (64, 80)


# ---- unreadable files: skipped and counted, never fatal; a transform bug still raises -----------------------------
def _mini_copy(name: str, tmp_path: Path) -> Path:
    import shutil

    from rs_transfer.tasks.mini import ensure_mini

    src = ensure_mini(get_task(name))
    dst = tmp_path / name
    shutil.copytree(src.parent if name == "ade20k" else src, dst)
    return dst


def _datasets(name: str, root: Path, work: Path):
    from mmengine.registry import DATASETS, init_default_scope

    from conftest import TINY
    from rs_transfer.runner import build_config
    from rs_transfer.tasks import RunContext

    ctx = RunContext(task=name, backbone="resnet50", backbone_kwargs={}, weights=None,
                     normalization={"name": "x", "mean": [0.0] * 3, "std": [1.0] * 3}, preset="mini",
                     protocol="finetune", data_root=root, work_dir=work)
    cfg, _, _ = build_config(get_task(name), ctx, model_overrides=TINY)
    init_default_scope(cfg.get("default_scope") or "mmseg")
    return DATASETS.build(cfg.train_dataloader.dataset), DATASETS.build(cfg.val_dataloader.dataset)


def test_unreadable_segmentation_files_are_skipped_and_counted(tmp_path: Path) -> None:
    from rs_transfer.tasks import _corrupt

    root = _mini_copy("voc-seg", tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    train_id = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    val_id = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[1]
    (voc / "JPEGImages" / f"{train_id}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (voc / "SegmentationClass" / f"{val_id}.png").write_bytes(b"\x89PNG truncated")
    report = get_task("voc-seg").check(root)
    assert report.ok and len(report.unreadable) == 2, report.problems      # not a dead end: runs skip them
    assert any("2 unreadable file(s)" in w for w in report.all_warnings())

    train, val = _datasets("voc-seg", root, tmp_path / "wd")
    bad = next(i for i in range(len(train)) if train.get_data_info(i)["img_path"].endswith(f"{train_id}.jpg"))
    np.random.seed(0)
    got = train[bad]                                       # training draws another sample
    assert not got["data_samples"].img_path.endswith(f"{train_id}.jpg")
    j = next(i for i in range(len(val)) if val.get_data_info(i)["img_path"].endswith(f"{val_id}.jpg"))
    placeholder = val[j]                                   # evaluation: a flagged placeholder the metric counts
    assert "cannot decode" in placeholder["data_samples"].metainfo[_corrupt.META_KEY]
    assert _corrupt.META_KEY not in val[(j + 1) % len(val)]["data_samples"].metainfo
    s = _corrupt.summary(tmp_path / "wd")
    assert (s["train"], s["eval"]) == (1, 1) and any(train_id in e for e in s["examples"])

    # A bug in a transform is not a corrupt file: with readable files it must raise, not be skipped.
    def broken(results: dict) -> dict:
        raise KeyError("gt_seg_map")

    val.pipeline.transforms.insert(2, broken)
    with pytest.raises(KeyError):
        val[(j + 1) % len(val)]

    # Every training sample unreadable: one line naming the skip log, not mmengine's generic give-up.
    for img in (voc / "JPEGImages").glob("*.jpg"):
        img.write_bytes(b"")
    for ds in train.datasets:                               # train.txt + aug.txt
        ds.max_refetch = 5
    with pytest.raises(UserError, match=r"6 training samples in a row were unreadable.*skipped_files.tsv"):
        train[0]


def test_malformed_voc_xml_is_skipped_and_counted(tmp_path: Path) -> None:
    from rs_transfer.tasks import _corrupt

    root = _mini_copy("voc-det", tmp_path)
    dk = root / "VOCdevkit"
    bad_train = sorted((dk / "VOC2007" / "Annotations").glob("2007tr*.xml"))[0]
    bad_test = sorted((dk / "VOC2007" / "Annotations").glob("2007te*.xml"))[0]
    for xml in (bad_train, bad_test):
        xml.write_text("<annotation><size><width>10</width>")
    report = get_task("voc-det").check(root)
    assert report.ok and len(report.unreadable) == 2 and "malformed XML" in report.unreadable[0]
    train, test = _datasets("voc-det", root, tmp_path / "wd")
    assert len(train) == 16 + 16 - 1                        # dropped from training, and logged
    j = next(i for i in range(len(test)) if test.get_data_info(i)["xml_path"] == str(bad_test))
    assert "malformed XML" in test[j]["data_samples"].metainfo[_corrupt.META_KEY]
    s = _corrupt.summary(tmp_path / "wd")
    assert (s["train"], s["eval"]) == (1, 1)


def test_report_shows_skipped_files(tmp_path: Path) -> None:
    """results.json ``skipped_files`` (the runner's, from the run's skip log) reaches the report cell."""
    from rs_transfer.studies.report import build_report, to_markdown
    from rs_transfer.atomic import write_json_atomic

    for seed, skipped in ((0, {"train": 2, "eval": 1}), (1, {"train": 0, "eval": 0})):
        write_json_atomic(tmp_path / f"s{seed}" / "results.json", {
            "schema": 1, "task": "voc-seg", "metric": "mIoU", "value": 70.0 + seed, "higher_is_better": True,
            "backbone": "resnet152", "protocol": "finetune", "preset": "paper", "seed": seed,
            "weights": {"source": "w", "sha256": "0" * 64}, "metrics": {"mIoU": 70.0 + seed},
            "skipped_files": {**skipped, "log": None, "examples": []}})
    md = to_markdown(build_report([tmp_path], tasks=["voc-seg"]))
    assert "70.50 ± 0.71 (n=2) [3 unreadable files skipped]" in md


def test_bts_scene_names_and_train_fallback(tmp_path: Path) -> None:
    """Raw-sequence folders name the scene type as mmseg's NYUDataset classes do; without sync/ BTS's extracted
    official_splits/train (the 795 labeled frames) is the training split."""
    from rs_transfer.tasks.nyu_depth import find_preparation, scene_type

    assert [scene_type(s) for s in ("kitchen_0028b", "living_room_0019", "bathroom", "study_room_0004")] == \
        ["kitchen", "living_room", "bathroom", "study_room"]
    (tmp_path / "official_splits" / "test").mkdir(parents=True)
    (tmp_path / "official_splits" / "train").mkdir()
    prep = find_preparation(tmp_path)
    assert prep.name == "bts" and prep.splits["train"].img == "official_splits/train"
    (tmp_path / "sync").mkdir()
    assert find_preparation(tmp_path).splits["train"].img == "sync"
