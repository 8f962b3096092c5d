"""voc-det end to end through the CLI and the shared runner (mmdet VOCDataset over VOC07+12, Faster R-CNN + FPN,
VOC AP50 in both versions); an untrained detector scores ~0 AP50, the mini one must clearly detect."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_transfer.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mini_run_learns(tmp_path: Path, outputs_reproduce) -> None:
    wd = tmp_path / "run"
    assert main(["run", "--task", "voc-det", "--backbone", "resnet50", "--preset", "mini",
                 "--backbone-options", "layers=[1,1,1,1]", "width=0.25", "frozen_stages=2",
                 "--work-dir", str(wd)]) == 0
    res = json.loads((wd / "results.json").read_text())
    m = res["metrics"]
    assert res["metric"] == "AP50" and set(m) == {"AP50", "AP50_area", "eval_images", "eval_skipped"}
    assert m["eval_images"] == 8 and m["eval_skipped"] == 0           # the denominator: all 8 test images
    assert res["backbone_kwargs"]["frozen_stages"] == 2 and res["backbone_kwargs"]["norm_eval"] is True
    assert res["config"]["model"]["neck"]["in_channels"] == [64, 128, 256, 512]
    assert len(res["config"]["train_dataloader"]["dataset"]["datasets"]) == 2       # VOC2007 + VOC2012
    assert m["AP50"] > 30.0 and m["AP50_area"] > 30.0, m
    outputs_reproduce(res, "AP50", "AP50_area")   # both VOC versions, from the kept detections
