"""``decode="device"``: workers ship bytes, the preprocessor decodes the batch (``decode_jpeg(list)``) and crops.

On the CPU the very same code runs with ``decode_jpeg(device="cpu")``; these tests check that it agrees with the
worker pipeline exactly at evaluation, keeps what nvJPEG cannot read on the CPU path, and treats unreadable files
as worker mode does (logged; training replaces them within the batch, evaluation marks them ``unreadable``)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from rs_transfer.tasks import _imagenet_device as dev
from rs_transfer.tasks._corrupt import SkipLog
from rs_transfer.tasks._imagenet_data import (ImageNetAccuracy, ImageNetDataPreprocessor, ImageNetDataset, decode,
                                              eval_transform, make_device_transform)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_transfer.tasks._imagenet_mini import make_mini

    return make_mini(tmp_path_factory.mktemp("imagenet_dev"))


def _jpeg(mode: str, size: tuple[int, int] = (37, 29)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    chans = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], chans), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if chans == 1 else arr, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_components_route_what_nvjpeg_cannot_read_to_the_cpu(tmp_path: Path) -> None:
    assert dev.jpeg_components(_jpeg("RGB")) == 3
    assert dev.jpeg_components(_jpeg("L")) == 1
    assert dev.jpeg_components(_jpeg("CMYK")) == 4
    assert dev.jpeg_components(b"\x89PNG\r\n\x1a\n....") is None
    for mode, encoded in (("RGB", True), ("L", True), ("CMYK", False)):
        p = tmp_path / f"{mode}.JPEG"
        p.write_bytes(_jpeg(mode))
        item = dev.read_item(str(p))
        assert (item.ndim == 1) == encoded, mode
        if not encoded:   # decoded in the worker, RGB like worker mode
            assert torch.equal(item, decode(str(p)))


def _batch(ds: ImageNetDataset, idx: list[int]) -> dict:
    return dev.collate([ds[i] for i in idx])


def test_eval_batches_equal_the_worker_pipeline(mini_root: Path) -> None:
    res, pad = 32, 8
    worker = ImageNetDataset(str(mini_root), ["val"], resolution=res, crop_padding=pad)
    device = ImageNetDataset(str(mini_root), ["val"], resolution=res, crop_padding=pad, decode="device")
    pre = ImageNetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1],
                                   device_transform=dict(resolution=res, crop_padding=pad))
    idx = list(range(min(12, len(worker))))
    data = _batch(device, idx)
    assert all(t.ndim == 1 for t in data["inputs"].unpack())  # the workers only read bytes
    out = pre(data, training=False)
    ref = torch.stack([worker[i]["inputs"] for i in idx]).float()
    assert out["inputs"].shape == (len(idx), 3, res, res)
    assert torch.equal(out["inputs"], ref)
    assert torch.equal(torch.as_tensor(out["data_samples"]), torch.as_tensor([worker[i]["data_samples"]
                                                                            for i in idx]))


def test_unreadable_files_are_logged_and_handled_like_worker_mode(mini_root: Path, tmp_path: Path) -> None:
    good = sorted((mini_root / "val").rglob("*.JPEG"))[:3]
    bad = tmp_path / "bad.JPEG"
    raw = good[0].read_bytes()
    bad.write_bytes(raw[:raw.index(b"\xff\xda") + 16])   # complete headers, scan data cut off (a truncated file)
    log = tmp_path / "skipped.tsv"
    t = make_device_transform(resolution=32, crop_padding=8, skip_log=str(log))
    items = [dict(inputs=dev.read_item(str(p)), data_samples=k, split=0, unreadable=0, path=str(p))
             for k, p in enumerate([good[0], bad, good[1], good[2]])]
    assert items[1]["inputs"].ndim == 1                              # it reaches the batched decoder

    data = dev.collate(items)
    res = t(data, torch.device("cpu"), training=False)
    out = res["inputs"]
    assert res["unreadable"].tolist() == [0, 1, 0, 0] and out[1].sum() == 0
    assert data["unreadable"].tolist() == [0, 0, 0, 0]                # the input batch is not mutated
    assert torch.equal(out[2], eval_transform(decode(str(good[1])), 32, 8))   # the batch's others survive
    assert SkipLog(log).files("eval") == [str(bad)]

    # Through the preprocessor the raw batch (what the loop hands the metric) carries the flag; the metric counts it.
    pre = ImageNetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1], device_transform=dict(resolution=32, crop_padding=8))
    raw = dev.collate(items)
    pre(raw, training=False)
    metric = ImageNetAccuracy(topk=(1,), max_skipped_fraction=0.5)
    metric.process(raw, [{"scores": torch.tensor([y]), "label": y} for y in raw["data_samples"].tolist()])  # top-k ids
    assert metric.compute_metrics(metric.results) == {"eval_images": 3.0, "eval_skipped": 1.0, "top1": 100.0}

    torch.manual_seed(0)
    data = dev.collate(items)
    res = t(data, torch.device("cpu"), training=True)
    assert res["inputs"].shape == (4, 3, 32, 32) and res["inputs"].dtype == torch.uint8
    assert res["data_samples"][1].item() in (0, 2, 3)                 # replaced with another image and its label
    assert res["data_samples"][[0, 2, 3]].tolist() == [0, 2, 3]
    assert SkipLog(log).files("train") == [str(bad)]

    only_bad = dev.collate([items[1], dict(items[1])])
    with pytest.raises(RuntimeError, match="every image of a training batch"):
        t(only_bad, torch.device("cpu"), training=True)


def test_decode_option_is_checked(mini_root: Path) -> None:
    with pytest.raises(ValueError, match="decode='gpu'"):
        ImageNetDataset(str(mini_root), ["val"], decode="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_nvjpeg_batch_matches_cpu_closely(mini_root: Path) -> None:
    paths = sorted((mini_root / "val").rglob("*.JPEG"))[:8]
    items = [dev.read_item(str(p)) for p in paths]
    gpu = dev.decode_batch(items, torch.device("cuda"))
    for p, img in zip(paths, gpu):
        ref = decode(str(p))
        assert img is not None and img.shape == ref.shape
        assert (img.cpu().int() - ref.int()).abs().float().mean() < 2.0   # nvJPEG's IDCT differs by a level or so


def test_workers_hand_over_whole_batches(mini_root: Path) -> None:
    """Worker processes ship each batch as one packed tensor; a list of per-image tensors (one shared-memory
    segment each) broke the hand-over and the loader then waited forever (``timeout`` turns that into a failure)."""
    from torch.utils.data import DataLoader

    ds = ImageNetDataset(str(mini_root), "train", augment=True, resolution=32, decode="device")
    loader = DataLoader(ds, batch_size=64, num_workers=2, collate_fn=dev.collate, timeout=120)
    t, n = make_device_transform(resolution=32), 0
    for data in loader:
        assert isinstance(data["inputs"], dev.PackedImages) and len(data["inputs"]) == len(data["path"])
        n += int(t(data, torch.device("cpu"), training=True)["inputs"].shape[0])
    assert n == len(ds)
