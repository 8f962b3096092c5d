"""Checkpoint loading: each source's real key format, written by the test, through the real loader."""
from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from rs_transfer import create_model, load_weights, save_weights
from rs_transfer.weights import UNIT, CheckpointError, WeightsMismatchError, sources


# ---- an independent replica of the SimCLRv2-Pytorch (Separius) sk0 module tree, for its real key format --------
class _BNReLU(nn.Sequential):
    def __init__(self, c: int, relu: bool = True) -> None:
        super().__init__(nn.BatchNorm2d(c), nn.ReLU() if relu else nn.Identity())


class _Projection(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = _BNReLU(cout, relu=False)

    def forward(self, x):
        return self.bn(self.shortcut(x))


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, project: bool) -> None:
        super().__init__()
        self.projection = _Projection(cin, planes * 4, stride) if project else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(cin, planes, 1, bias=False), _BNReLU(planes),
                                 nn.Conv2d(planes, planes, 3, stride, 1, bias=False), _BNReLU(planes),
                                 nn.Conv2d(planes, planes * 4, 1, bias=False), _BNReLU(planes * 4, relu=False))

    def forward(self, x):
        return torch.relu(self.projection(x) + self.net(x))


class _Blocks(nn.Module):
    def __init__(self, n: int, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Bottleneck(cin, planes, stride, True)] +
                                    [_Bottleneck(planes * 4, planes, 1, False) for _ in range(n - 1)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class SimCLRv2Replica(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3)) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _BNReLU(64), nn.MaxPool2d(3, 2, 1))
        ops, cin = [stem], 64
        for i, n in enumerate(layers):
            ops.append(_Blocks(n, cin, 64 * 2 ** i, 1 if i == 0 else 2))
            cin = 64 * 2 ** i * 4
        self.net = nn.Sequential(*ops)
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x):
        return self.fc(self.net(x).mean((2, 3)))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_simclrv2_conversion_layout(tmp_path, randomize) -> None:
    ref = randomize(SimCLRv2Replica()).eval()
    assert "net.1.blocks.0.projection.shortcut.weight" in ref.state_dict()  # the published key layout
    torch.save({"resnet": ref.state_dict(), "head": {"layers.0.weight": torch.zeros(2, 2)}}, tmp_path / "r50.pth")
    ours = create_model("resnet50")
    report = load_weights(ours, tmp_path / "r50.pth")
    assert (report.wrapper, report.layout, report.ok) == ("simclrv2", "simclrv2", True)
    assert report.normalization == UNIT  # SimCLR feeds [0, 1] images, no mean/std
    assert ours.input_normalization == UNIT
    x = torch.randn(2, 3, 64, 64)
    assert (_logits(ref, x) - _logits(ours, x)).abs().max().item() <= 1e-4


def test_simclrv1_mmengine_ddp_and_own_formats(tmp_path, randomize) -> None:
    import torchvision
    from mmengine.logging import MessageHub

    ref = randomize(torchvision.models.resnet50()).eval()
    sd = ref.state_dict()
    x = torch.randn(1, 3, 64, 64)
    expected = _logits(ref, x)

    torch.save({"state_dict": sd}, tmp_path / "simclrv1.pth")  # tonylins/simclr-converter
    m = create_model("resnet50")
    assert load_weights(m, tmp_path / "simclrv1.pth").normalization == UNIT
    assert torch.allclose(_logits(m, x), expected, atol=1e-4)

    # an mmengine checkpoint as Runner.save_checkpoint writes it: message hub with HistoryBuffers, numpy inside
    hub = MessageHub.get_instance("test_weights")
    hub.update_scalar("train/loss", 1.25)
    ckpt = {"meta": {"epoch": 1, "mmengine_version": "0.10.7"}, "message_hub": hub.state_dict(),
            "state_dict": {**{f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")},
                           "head.fc.weight": torch.zeros(10, 2048), "head.fc.bias": torch.zeros(10)}}
    torch.save(ckpt, tmp_path / "mmengine.pth")
    m = create_model("resnet50", num_classes=10)
    report = load_weights(m, tmp_path / "mmengine.pth")  # weights_only=True with the allow-list, no trust
    assert report.wrapper == "mmengine" and report.stripped_prefixes == ["backbone."] and report.ok
    assert set(report.head_skipped) == {"head.fc.weight", "head.fc.bias"}
    torch.testing.assert_close(m.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])

    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    m = create_model("resnet50")
    assert load_weights(m, tmp_path / "ddp.pth").stripped_prefixes == ["module."]
    assert torch.allclose(_logits(m, x), expected, atol=1e-4)

    for suffix in (".pth", ".safetensors"):
        path = save_weights(ref, tmp_path / f"own{suffix}", normalization="unit-range")
        m = create_model("resnet50")
        report = load_weights(m, path)
        assert report.container == ("safetensors" if suffix == ".safetensors" else "torch")
        assert report.normalization == UNIT  # carried by our own format
        assert torch.allclose(_logits(m, x), expected, atol=1e-4)


def test_head_differences_are_allowed_backbone_differences_are_not(tmp_path) -> None:
    src = create_model("resnetrs50")
    torch.save(src.state_dict(), tmp_path / "rs50.pth")
    # another number of classes: the head is reported, not loaded, and the load succeeds
    report = load_weights(create_model("resnetrs50", num_classes=100), tmp_path / "rs50.pth")
    assert report.ok and any(k.startswith("fc.weight") for k in report.head_skipped)
    # a partial checkpoint: missing keys are listed and the load fails...
    partial_sd = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial_sd, tmp_path / "partial.pth")
    with pytest.raises(WeightsMismatchError, match=r"missing \(\d+\): layer4\.0\.") as err:
        load_weights(create_model("resnetrs50"), tmp_path / "partial.pth")
    assert all(k.startswith("layer4.") for k in err.value.report.missing)
    # ...unless strict=False
    assert load_weights(create_model("resnetrs50"), tmp_path / "partial.pth", strict=False).missing
    # the wrong architecture: unexpected and mismatched keys are listed
    torch.save(create_model("resnet50").state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsMismatchError, match="unexpected") as err:
        load_weights(create_model("resnetrs50"), tmp_path / "tv.pth")
    assert "conv1.weight" in err.value.report.unexpected
    # another width: shape mismatches are listed with both shapes
    torch.save(create_model("resnetrs50", width=0.5).state_dict(), tmp_path / "half.pth")
    with pytest.raises(WeightsMismatchError, match=r"mismatched .*conv1\.0\.weight: \(16, 3, 3, 3\) -> \(32, 3, 3, 3\)"):
        load_weights(create_model("resnetrs50"), tmp_path / "half.pth")


class Evil:  # a pickled object that is not a tensor: needs full unpickling
    def __reduce__(self):
        return (print, ("this would run",))


def test_untrusted_pickles_and_bad_files(tmp_path, monkeypatch) -> None:
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="trust=True"):
        load_weights(create_model("resnet50"), tmp_path / "evil.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_weights(create_model("resnet50"), tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found: .*nothere.pth"):
        load_weights(create_model("resnet50"), tmp_path / "nothere.pth")
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))
    with pytest.raises(CheckpointError, match=r"expected .*home/weights/resnetrs50_ema-6b53758b\.pth.*Published at: https://"):
        load_weights(create_model("resnetrs50"), "resnetrs50.tf_in1k")
    with pytest.raises(CheckpointError, match="Closest: resnetrs50.tf_in1k"):
        load_weights(create_model("resnetrs50"), "resnetrs50.tf_in1")


def test_named_source_resolves_from_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path))
    spec = sources.get_source("simclrv2-r50-1x-sk0")
    (tmp_path / "weights").mkdir()
    torch.save({"resnet": SimCLRv2Replica().state_dict(), "head": {}}, tmp_path / "weights" / spec.filename)
    report = load_weights(create_model("resnet50"), "simclrv2-r50-1x-sk0")
    assert report.ok and report.normalization == UNIT


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (the stdlib handler has none); counts bytes sent."""

    sent = 0

    def do_GET(self):  # noqa: N802
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        type(self).sent += len(data) - start

    def log_message(self, *args):
        pass


def test_download_is_resumable_checksummed_atomic(tmp_path, monkeypatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(payload).hexdigest()
    (served / "w.pth").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/w.pth"
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))
    good = sources.WeightSource("t", "resnet50", f"t-{digest[:8]}.pth", url, url, digest[:8])
    bad = sources.WeightSource("b", "resnet50", "b-00000000.pth", url, url, "00000000")
    monkeypatch.setitem(sources.SOURCES, "t", good)
    monkeypatch.setitem(sources.SOURCES, "b", bad)
    try:
        dest = sources.weights_home() / good.filename
        dest.parent.mkdir(parents=True)
        dest.with_name(dest.name + ".part").write_bytes(payload[:300_000])  # an interrupted earlier download
        _RangeHandler.sent = 0
        assert sources.download("t", progress=False) == dest
        assert dest.read_bytes() == payload and _RangeHandler.sent == len(payload) - 300_000  # resumed
        assert not dest.with_name(dest.name + ".part").exists()
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            sources.download("b", progress=False)
        assert not (sources.weights_home() / bad.filename).exists()  # nothing half-verified left in place
    finally:
        server.shutdown()
