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
    "voc-seg": {"trainaug": 24, "val": 8},
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
    msg = _problems("voc-det", root)
    assert f"{bad}: malformed XML" in msg and f"missing image {gone}" in msg


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
    assert "trainaug.txt lists 24 images, the standard split has 10582" in msg


def test_ade_and_nyu_problems_are_named(tmp_path: Path) -> None:
    ade_root = get_task("ade20k").make_mini(tmp_path / "ade")
    ann = sorted((ade_root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))[0]
    ann.write_bytes(b"not a png")
    assert f"{ann}: unreadable image" in _problems("ade20k", ade_root)

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
