"""PASCAL VOC 2007 classification, from the VOCdevkit the detection task reads, through torchvision's
``VOCDetection`` (year 2007; trainval 5,011 for training, test 4,952); multi-label: an image is positive for a
class with a non-difficult object of it, ignored for a class with only difficult ones (the devkit's
classification ground truth); metric 11-point mAP (VOC2007's, as Kornblith et al. 2019). Fine-tuning trains one
binary cross-entropy per class (``ImageClassifier(multilabel=True)``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import _synthetic, _voc
from ._tvclass import Source, Suite, make_task, mark_mini

MINI_CLASSES, MINI_COUNTS, MINI_HW = 3, {"train": 15, "val": 15, "test": 12}, (32, 32)


def targets(ds: object) -> np.ndarray:
    """N x 20 int8 of 1 / 0 (difficult only) / -1 from each annotation, parsed by ``VOCDetection.parse_voc_xml``."""
    out = -np.ones((len(ds.targets), len(_voc.CLASSES)), dtype=np.int8)
    for i, path in enumerate(ds.targets):
        objects = ds.parse_voc_xml(ET.parse(path).getroot())["annotation"].get("object", [])
        for obj in objects if isinstance(objects, list) else [objects]:
            c = _voc.CLASSES.index(obj["name"])
            out[i, c] = 1 if int(obj.get("difficult", 0)) == 0 else max(out[i, c], 0)
    return out


def load(root: Path, split: str) -> list[Source]:
    from torchvision.datasets import VOCDetection

    root = _voc.devkit(root).parent          # torchvision's root is the folder holding VOCdevkit
    out = []
    for s in ("train", "val") if split == "train" else ("test",):   # trainval = train + val, the val part marked
        ds = VOCDetection(str(root), year="2007", image_set=s, download=False)
        labels = targets(ds)
        out.append(Source(ds, np.arange(len(labels)), labels, s if s == "val" else ""))
    return out


def write_mini(root: Path, rng: np.random.Generator) -> Path:
    """``VOCdevkit/VOC2007/{JPEGImages, Annotations, ImageSets/Main/{train,val,trainval,test}.txt}`` (trainval =
    train + val, as released): scenes of 1-3 coloured objects of the first three classes, some marked difficult."""
    dk = root / "VOCdevkit" / "VOC2007"
    h, w = MINI_HW
    for split, n in MINI_COUNTS.items():
        ids = []
        for i in range(n):
            img_id = f"{split[:2]}{i:04d}"
            scene = _synthetic.make_scene(rng, h, w, MINI_CLASSES, min_frac=0.3, max_frac=0.6)
            objects = [(_voc.CLASSES[c - 1], x1 + 1, y1 + 1, x2 + 1, y2 + 1, bool(j == 2))
                       for j, (c, x1, y1, x2, y2) in enumerate(scene.boxes)]
            _synthetic.write_jpeg(dk / "JPEGImages" / f"{img_id}.jpg", scene.image)
            _voc.write_annotation(dk / "Annotations" / f"{img_id}.xml", f"{img_id}.jpg", w, h, objects, "VOC2007")
            ids.append(img_id)
        _synthetic.write_lines(dk / "ImageSets" / "Main" / f"{split}.txt", ids)
    main = dk / "ImageSets" / "Main"
    _synthetic.write_lines(main / "trainval.txt", [i for s in ("train", "val")
                                                   for i in (main / f"{s}.txt").read_text().split()])
    mark_mini(root, "voc07-cls")
    return root


SUITE = Suite(
    name="voc07-cls", title="VOC2007 mAP", metric="mAP11", num_classes=20, load=load, multilabel=True,
    layout="<root>/VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val,test}.txt} "
           "(torchvision VOCDetection, year 2007; the voc-det data root)",
    source="host.robots.ox.ac.uk/pascal/VOC: VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar, unpacked "
           "side by side (the same folder as voc-det)",
    sizes={"train": 5011, "test": 4952}, write_mini=write_mini, torchvision_class="VOCDetection",
    split_note="VOC2007 trainval / test, multi-label from the annotations", data_dirname="voc")
TASK = make_task(SUITE, "PASCAL VOC 2007 classification (multi-label, 11-point mAP): linear probe, few-shot and "
                        "fine-tuning")
