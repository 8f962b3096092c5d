"""ade20k end to end through the shared runner (mmseg ADE20KDataset with reduce_zero_label, UPerNet, IoU metric);
the mini model must beat the trivial "everything is wall" prediction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from rs_transfer.runner import run_experiment
from rs_transfer.tasks import get_task


pytestmark = pytest.mark.usefixtures("one_thread")


def _all_wall_miou(ade: Path) -> float:
    """mIoU (%) of predicting class 1 ("wall") everywhere, labels 0 ("other") ignored as reduce_zero_label does."""
    anns = [np.array(Image.open(p)) for p in sorted((ade / "annotations" / "validation").glob("*.png"))]
    valid = np.concatenate([a[a != 0] for a in anns])
    return 100.0 * float((valid == 1).mean()) / len(np.unique(valid))


def test_mini_run_learns(tmp_path: Path, outputs_reproduce) -> None:
    res = run_experiment("ade20k", "resnetrs50", preset="mini", model_overrides=dict(TINY, frozen_stages=0),
                         work_dir=tmp_path / "run")
    assert res["metric"] == "mIoU" and res["task_title"] == "ADE seg"
    assert res["backbone_kwargs"]["frozen_stages"] == 0 and res["backbone_kwargs"]["depth"] == 50
    assert res["config"]["model"]["decode_head"]["num_classes"] == 150
    assert res["config"]["model"]["decode_head"]["in_channels"] == [64, 128, 256, 512]   # width 0.25 backbone
    baseline = _all_wall_miou(get_task("ade20k").mini_root() / "ADEChallengeData2016")
    assert res["value"] > baseline + 10.0, (res["metrics"], baseline)
    outputs_reproduce(res)   # 150 classes, most absent from the mini set: nanmean over classes with a union
