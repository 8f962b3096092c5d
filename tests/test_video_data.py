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
    assert SkipLog(log).files() == [str(mini_root / mini.CORRUPT)]          # counted once per file
    test = KineticsDataset(str(mini_root), "train", mode="test", num_frames=4, test_size=32, num_clips=1,
                           num_crops=1, skip_log=str(log))
    t = test[bad]
    assert not t["data_samples"]["valid"] and t["inputs"].shape == (1, 3, 4, 32, 32)
    metric = VideoAccuracy(skip_log=str(log), known_corrupt=2, missing=3, max_unreadable=0.9)
    metric.process({}, [{"pred_score": torch.tensor([0.1, 0.7, 0.2, 0.0]), "label": 1, "valid": True},
                        {"pred_score": torch.tensor([0.1, 0.2, 0.3, 0.4]), "label": 0, "valid": True},
                        {"pred_score": torch.zeros(4), "label": 1, "valid": False}])
    m = metric.evaluate(3)
    assert m == {"top1": 50.0, "top5": 100.0, "eval_videos": 2.0, "eval_corrupt": 3.0, "eval_missing": 3.0,
                 "eval_skipped": 1.0, "skipped_videos": 1.0}


@pytest.mark.parametrize("valid, invalid, known, limit, fails", [(0, 4, 0, 0.05, True), (0, 0, 3, 0.05, True),
                                                                (95, 5, 0, 0.05, False), (94, 5, 1, 0.05, True),
                                                                (90, 10, 0, 0.2, False)])
def test_metric_refuses_a_number_from_unreadable_videos(valid, invalid, known, limit, fails) -> None:
    """All, or more than ``max_unreadable`` of the val videos unreadable: one-line UserError, never a top-1 of 0."""
    from rs_transfer.errors import UserError

    metric = VideoAccuracy(known_corrupt=known, max_unreadable=limit)
    good = {"pred_score": torch.tensor([0.9, 0.1]), "label": 0, "valid": True}
    metric.process({}, [good] * valid + [{"pred_score": torch.zeros(2), "label": 0, "valid": False}] * invalid)
    if not fails:
        assert metric.evaluate(valid + invalid)["top1"] == 100.0
        return
    with pytest.raises(UserError) as err:
        metric.evaluate(max(valid + invalid, 1))
    assert "unreadable" in str(err.value) and "\n" not in str(err.value)


def test_all_unreadable_val_stops_the_run_without_results(tmp_path) -> None:
    """End to end: a val split whose every file is corrupt stops before training, results.json is never written."""
    from rs_transfer.errors import UserError
    from rs_transfer.runner import run_experiment

    root = mini.make_mini(tmp_path / "bad", counts={"train": 1, "val": 1})
    for f in (root / "val").rglob("*.mp4"):
        f.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(UserError, match="unreadable"):
        run_experiment("kinetics400", "resnet3d50", preset="mini", data_root=str(root), work_dir=tmp_path / "wd",
                       model_overrides=dict(layers=(1, 1, 1, 1), width=0.25))
    assert not (tmp_path / "wd" / "results.json").exists()


def test_a_transform_bug_raises_but_a_decoder_error_is_skipped(mini_root, tmp_path, monkeypatch) -> None:
    log = tmp_path / "skipped.txt"
    ds = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32, skip_log=str(log))

    def broken(*args, **kwargs):
        raise ValueError("bug in a transform")

    monkeypatch.setattr(T, "random_resized_crop", broken)
    with pytest.raises(ValueError, match="bug in a transform"):
        ds[0]
    assert SkipLog(log).files() == []            # a bug is not a corrupt video
    monkeypatch.undo()
    from rs_transfer.video import decode

    def failing_get(self, indices):
        raise RuntimeError("decoder blew up")

    monkeypatch.setattr(decode.DecordReader, "get", failing_get)
    monkeypatch.setattr(decode.PyAVReader, "get", failing_get)
    s = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32, skip_log=str(log),
                        max_retries=2)
    with pytest.raises(RuntimeError, match="consecutive unreadable"):
        s[0]
    assert len(SkipLog(log).files()) == 2          # decoder failures are counted as corrupt


def test_known_corrupt_files_are_never_opened(mini_root, monkeypatch) -> None:
    from rs_transfer.tasks import get_task
    from rs_transfer.video import kinetics
    from rs_transfer.video.task import known_corrupt

    get_task("kinetics400").check(mini_root)
    bad = known_corrupt(mini_root, "train")
    assert bad == [str(mini_root / mini.CORRUPT)]
    opened: list[str] = []
    real = kinetics.open_video
    monkeypatch.setattr(kinetics, "open_video", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k))
    ds = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32, exclude=bad)
    assert len(ds) == 8 and ds.excluded == 1
    for i in range(len(ds)):
        ds[i]
    assert str(mini_root / mini.CORRUPT) not in opened and len(opened) == 8


def test_test_views_decode_at_the_short_side_once(mini_root, monkeypatch) -> None:
    """10x3-style testing decodes scaled frames (decord width/height), the union of the clips' frames once: no
    full-resolution frames and no per-clip resize."""
    from rs_transfer.video import kinetics

    sizes, resizes = [], []
    real_open, real_resize = kinetics.open_video, T.resize
    monkeypatch.setattr(kinetics, "open_video", lambda p, b="auto", size=None: sizes.append(size) or
                        real_open(p, b, size))
    monkeypatch.setattr(T, "resize", lambda clip, size: resizes.append(tuple(clip.shape)) or real_resize(clip, size))
    ds = KineticsDataset(str(mini_root), "val", mode="test", num_frames=4, frame_stride=2, test_size=32,
                         num_clips=3, num_crops=3)
    views = ds[0]["inputs"]
    assert views.shape == (9, 3, 4, 32, 32)
    assert sizes == [(32, 43)] and resizes == []          # 48x64 -> short side 32, scaled by the decoder
    sizes.clear()
    ds.decode_short_side = False                          # native decode: ONE resize of the frame union
    native = ds[0]["inputs"]
    assert sizes == [None] and len(resizes) == 1 and resizes[0][1] <= 3 * 4
    assert (native.float() - views.float()).abs().mean() < 8   # same content, two scalers


def test_sample_seeds_make_clips_reproducible(mini_root) -> None:
    ds = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32)
    a, b, c = ds[(2, 123)], ds[(2, 123)], ds[(2, 124)]
    assert torch.equal(a["inputs"], b["inputs"])
    assert not torch.equal(a["inputs"], c["inputs"])


def test_resumable_sampler_order_and_skip(mini_root) -> None:
    """DefaultSampler's order (seed + epoch), a seed per sample, and a one-time skip of a resumed epoch's head."""
    from mmengine.dataset import DefaultSampler

    from rs_transfer.video.sampler import ResumableSampler

    ds = KineticsDataset(str(mini_root), "train", num_frames=4, frame_stride=2, crop_size=32)
    ours, ref = ResumableSampler(ds, seed=7), DefaultSampler(ds, seed=7)
    ours.set_epoch(3)
    ref.set_epoch(3)
    pairs = list(ours)
    assert [i for i, _ in pairs] == list(ref) and len({s for _, s in pairs}) == len(pairs)
    ours.skip(4)
    assert len(ours) == len(ds) - 4 and list(ours) == pairs[4:]
    assert list(ours) == pairs                            # the skip applies to one pass only
    ours.set_epoch(4)
    assert list(ours) != pairs


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


def test_video_input_benchmark_prints_the_ratio(mini_root, capsys, monkeypatch) -> None:
    """Smoke test (tests do not time things): both pipelines run on the same files and the ratio is printed;
    without pytorchvideo the command says how to install it and times ours only."""
    pytest.importorskip("pytorchvideo")
    from rs_transfer.cli import main
    from rs_transfer.video import bench_input

    args = ["benchmark", "video-input", "--data-root", str(mini_root), "--frames", "4", "--crop", "32", "--batch",
            "2", "--workers", "0", "--rounds", "2", "--fps", "12"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "round 2 pytorchvideo" in out and "ratio ours/pytorchvideo =" in out
    monkeypatch.setattr(bench_input, "pytorchvideo_available", lambda: False)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pip install pytorchvideo" in out and "no ratio" in out


def test_probe_runs_once_per_machine(mini_root, monkeypatch) -> None:
    """Local rank 0 probes (in parallel) and writes the cache; another local rank of the same torchrun reads it and
    opens no file itself."""
    from rs_transfer.video import task as vtask

    paths = [r.path for r in scan_split(mini_root, "train").records]
    monkeypatch.setenv("LOCAL_RANK", "0")
    first = vtask.probe_files(paths, "probe-once", workers=4)
    assert list(first) == [str(mini_root / mini.CORRUPT)]

    def no_probe(path):
        raise AssertionError(f"rank 1 probed {path}")

    monkeypatch.setattr(vtask, "_probe", no_probe)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert vtask.probe_files(paths, "probe-once", wait_s=5) == first
