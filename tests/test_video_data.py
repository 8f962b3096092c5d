"""Kinetics data: decoders agree, both layouts, clip sampling, multi-view averaging, corrupt files skipped+counted."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rs_transfer.video import mini, transforms as T
from rs_transfer.video.decode import VideoDecodeError, open_video, read_frames
from rs_transfer.video.kinetics import KineticsDataset, SkipLog, scan_split
from rs_transfer.video.metrics import VideoAccuracy
from rs_transfer.video.recognizer import VideoRecognizer, average_views


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    return mini.make_mini(tmp_path_factory.mktemp("k400") / "mini", counts={"train": 2, "val": 1})


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))


def test_decord_and_pyav_decode_the_same_frames(mini_root) -> None:
    pytest.importorskip("decord")
    path = mini_root / "train" / "up" / "up_000.mp4"
    assert len(open_video(path, "decord")) == len(open_video(path, "pyav")) == mini.FRAMES
    idx = [0, 3, 7, 8, 23, 7]                      # unsorted and repeated indices too
    a, b = read_frames(path, idx, "decord"), read_frames(path, idx, "pyav")
    assert a.shape == (6, mini.HEIGHT, mini.WIDTH, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_auto_falls_back_to_pyav_where_decord_fails(tmp_path) -> None:
    pytest.importorskip("decord")
    path = mini.write_mp4(tmp_path / "narrow.mp4", mini.draw_video(np.random.default_rng(0), "up", 8, 40, 48))
    with pytest.raises(Exception):                 # decord 0.6.0 mis-sizes 48-pixel-wide frames
        open_video(path, "decord").get([0, 1])
    assert np.array_equal(read_frames(path, [0, 5], "auto"), read_frames(path, [0, 5], "pyav"))


def test_unreadable_files_raise_decode_error(mini_root, tmp_path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    for path in (mini_root / mini.CORRUPT, garbage, tmp_path / "absent.mp4"):
        for backend in ("auto", "pyav"):
            with pytest.raises(VideoDecodeError):
                read_frames(path, [0], backend)


def test_clip_sampling() -> None:
    assert T.clip_indices(100, 4, 2, 10) == [10, 12, 14, 16]
    assert T.clip_indices(5, 4, 2, 0) == [0, 2, 4, 1]                 # short videos loop
    clips = T.uniform_clips(100, 32, 2, 10)                            # span 63: starts 0..37 evenly
    assert [c[0] for c in clips] == [0, 4, 8, 12, 16, 21, 25, 29, 33, 37] and clips[-1][-1] == 99
    torch.manual_seed(0)
    assert all(0 <= T.random_clip(40, 8, 2)[0] <= 25 for _ in range(50))
    clip = torch.randint(0, 255, (3, 4, 48, 64), dtype=torch.uint8)
    assert T.random_resized_crop(clip, 32).shape == (3, 4, 32, 32)
    crops = T.three_crops(clip, 48)                                    # along the long (width) side
    assert [tuple(c.shape) for c in crops] == [(3, 4, 48, 48)] * 3
    assert torch.equal(crops[0], clip[..., :48]) and torch.equal(crops[2], clip[..., 16:])


def test_both_layouts_and_missing_files(mini_root, tmp_path) -> None:
    folders = scan_split(mini_root, "train")
    assert folders.layout == "folders" and folders.classes == list(mini.CLASSES)
    assert folders.per_class() == {"down": 2, "left": 3, "right": 2, "up": 2}    # + the truncated file
    root = tmp_path / "csv_layout"
    rows = []
    for i, rec in enumerate(scan_split(mini_root, "val").records):
        name = f"yt{i:08d}_{i * 10:06d}_{i * 10 + 10:06d}.mp4"
        (root / "val").mkdir(parents=True, exist_ok=True)
        shutil.copy(rec.path, root / "val" / name)
        rows.append(dict(label=mini.CLASSES[rec.label], youtube_id=f"yt{i:08d}", time_start=i * 10,
                         time_end=i * 10 + 10, split="val"))
    rows.append(dict(label="up", youtube_id="gone", time_start=0, time_end=10, split="val"))
    (root / "annotations").mkdir()
    for name, split_rows in (("train", rows[:0] + [dict(rows[0], split="train")] + rows[1:4]), ("validate", rows)):
        with open(root / "annotations" / f"{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["label", "youtube_id", "time_start", "time_end", "split"])
            w.writeheader()
            w.writerows(split_rows)
    val = scan_split(root, "val")
    assert val.layout == "csv" and val.classes == sorted(mini.CLASSES)
    assert len(val.records) == 4 and val.missing == ["gone_000000_000010"]
    assert [val.classes[r.label] for r in val.records] == [r["label"] for r in rows[:4]]


def test_dataset_views_and_recognizer_average(mini_root) -> None:
    ds = KineticsDataset(str(mini_root), "val", mode="test", num_frames=4, frame_stride=2, test_size=32,
                         num_clips=2, num_crops=3)
    s = ds[0]
    assert s["inputs"].shape == (6, 3, 4, 32, 32) and s["inputs"].dtype == torch.uint8
    from rs_transfer import ResNetRS

    model = VideoRecognizer(dict(type=ResNetRS, depth=None, layers=(1, 1, 1, 1), width=0.25, dims=3,
                                 num_classes=4)).eval()
    from mmengine.dataset import default_collate

    batch = model.data_preprocessor(default_collate([ds[0], ds[1]]), False)
    with torch.no_grad():
        preds = model(**batch, mode="predict")
        per_view = model(batch["inputs"].flatten(0, 1)).softmax(-1).view(2, 6, 4).mean(1)
    torch.testing.assert_close(torch.stack([p["pred_score"] for p in preds]), per_view)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [4.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(average_views(logits, 2, "logit"), torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    assert average_views(logits, 2)[0, 0] == pytest.approx(0.5)


def test_corrupt_videos_are_skipped_and_counted(mini_root, tmp_path) -> None:
    log = tmp_path / "skipped.txt"
    train = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32, skip_log=str(log))
    bad = next(i for i, r in enumerate(train.records) if r.path.name == Path(mini.CORRUPT).name)
    s = train[bad]                                   # replaced by the next readable video, never an exception
    assert s["data_samples"]["valid"] and s["data_samples"]["index"] == (bad + 1) % len(train)
    train[bad]
    assert SkipLog(log).skipped() == [str(mini_root / mini.CORRUPT)]          # counted once per file
    test = KineticsDataset(str(mini_root), "train", mode="test", num_frames=4, test_size=32, num_clips=1,
                           num_crops=1, skip_log=str(log))
    t = test[bad]
    assert not t["data_samples"]["valid"] and t["inputs"].shape == (1, 3, 4, 32, 32)
    metric = VideoAccuracy(skip_log=str(log))
    metric.process({}, [{"pred_score": torch.tensor([0.1, 0.7, 0.2, 0.0]), "label": 1, "valid": True},
                        {"pred_score": torch.tensor([0.1, 0.2, 0.3, 0.4]), "label": 0, "valid": True},
                        {"pred_score": torch.zeros(4), "label": 1, "valid": False}])
    m = metric.compute_metrics(metric.results)
    assert m == {"top1": 50.0, "top5": 100.0, "eval_videos": 2.0, "eval_skipped": 1.0, "skipped_videos": 1.0}


def test_check_data_reports_counts_missing_and_corrupt(mini_root, tmp_path) -> None:
    from rs_transfer.tasks import get_task

    report = get_task("kinetics400").check(mini_root)
    assert report.ok, report.problems
    assert report.counts == {"train": 8, "train_missing": 0, "train_corrupt": 1, "val": 4, "val_missing": 0,
                             "val_corrupt": 0}
    assert report.corrupt["train"] == [str(mini_root / mini.CORRUPT)]
    assert report.per_class["val"] == {c: 1 for c in mini.CLASSES}
    assert report.to_dict()["corrupt"]["train"]
    empty = get_task("kinetics400").check(tmp_path)
    assert not empty.ok and "no Kinetics train split" in empty.problems[0]


def test_benchmark_command_prints_both_backends(mini_root, capsys) -> None:
    """Smoke test only (tests do not time things): both decoders run the same pipeline and are printed."""
    pytest.importorskip("decord")
    from rs_transfer.cli import main

    assert main(["benchmark", "video-decode", "--data-root", str(mini_root), "--videos", "3", "--frames", "4",
                 "--crop", "32", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "decord" in out and "pyav" in out and "x PyAV's clips/s" in out
