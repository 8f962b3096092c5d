"""voc-seg end to end: ``rs-transfer run --task voc-seg --preset mini`` through the CLI and the shared runner, on the
real mmseg dataset class, UPerNet and IoU metric; the mini model must beat the trivial all-background prediction."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_transfer.cli import main
from rs_transfer.tasks import get_task


pytestmark = pytest.mark.usefixtures("one_thread")


def _all_background_miou(voc: Path) -> float:
    """mIoU (%) of predicting background everywhere: background IoU = its share of the valid pixels, 0 elsewhere."""
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    masks = [np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")) for i in ids]
    valid = np.concatenate([m[m != 255] for m in masks])
    return 100.0 * float((valid == 0).mean()) / len(np.unique(valid))


def test_mini_run_learns(tmp_path: Path, capsys: pytest.CaptureFixture, outputs_reproduce) -> None:
    wd = tmp_path / "run"
    assert main(["run", "--task", "voc-seg", "--backbone", "resnet50", "--preset", "mini",
                 "--backbone-options", "layers=[1,1,1,1]", "width=0.25", "frozen_stages=0",
                 "--work-dir", str(wd)]) == 0
    res = json.loads((wd / "results.json").read_text())
    assert res["metric"] == "mIoU" and res["value"] == res["metrics"]["mIoU"]
    assert res["backbone_kwargs"]["frozen_stages"] == 0            # backbone options reach the model
    assert res["config"]["sync_bn"] == "torch"
    voc = get_task("voc-seg").mini_root() / "VOCdevkit" / "VOC2012"
    baseline = _all_background_miou(voc)
    assert res["value"] > baseline + 10.0, (res["metrics"], baseline)
    outputs_reproduce(res)
