"""SimCLR v1/v2 checkpoints: the Separius/SimCLRv2-Pytorch conversion (sk0 and selective-kernel sk1, widths 1-3)
and the tonylins/simclr-converter SimCLRv1 conversion, each rebuilt here from the converters' own module
definitions (written independently, small depth), saved in their format and loaded with parity.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rs_transfer import create_model, load_weights
from rs_transfer.weights import IMAGENET, UNIT, sources
from rs_transfer.weights.catalog import SIMCLRV2_TOP1


# ---- Separius/SimCLRv2-Pytorch resnet.py, re-written from its definitions ----------------------------------------
def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)


class BNReLU(nn.Sequential):
    def __init__(self, c: int, relu: bool = True) -> None:
        super().__init__(nn.BatchNorm2d(c, eps=1e-5), nn.ReLU() if relu else nn.Identity())


class SK(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ratio: float, min_dim: int = 32) -> None:
        super().__init__()
        self.main_conv = nn.Sequential(_conv(cin, 2 * cout, stride=stride), BNReLU(2 * cout))
        mid = max(int(cout * ratio), min_dim)
        self.mixing_conv = nn.Sequential(_conv(cout, mid, 1), BNReLU(mid), _conv(mid, 2 * cout, 1))

    def forward(self, x):
        x = torch.stack(torch.chunk(self.main_conv(x), 2, dim=1), dim=0)
        m = self.mixing_conv(x.sum(dim=0).mean(dim=[2, 3], keepdim=True))
        m = torch.stack(torch.chunk(m, 2, dim=1), dim=0)
        return (x * F.softmax(m, dim=0)).sum(dim=0)


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ratio: float) -> None:
        super().__init__()
        if ratio > 0:
            self.shortcut = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, stride, 0), _conv(cin, cout, 1))
        else:
            self.shortcut = _conv(cin, cout, 1, stride)
        self.bn = BNReLU(cout, relu=False)

    def forward(self, x):
        return self.bn(self.shortcut(x))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ratio: float, project: bool) -> None:
        super().__init__()
        self.projection = Projection(cin, cout * 4, stride, ratio) if project else nn.Identity()
        ops = [_conv(cin, cout, 1), BNReLU(cout)]
        ops += [SK(cout, cout, stride, ratio)] if ratio > 0 else [_conv(cout, cout, stride=stride), BNReLU(cout)]
        ops += [_conv(cout, cout * 4, 1), BNReLU(cout * 4, relu=False)]
        self.net = nn.Sequential(*ops)

    def forward(self, x):
        return F.relu(self.projection(x) + self.net(x))


class Blocks(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(cin, cout, stride, ratio, True)]
                                    + [Block(cout * 4, cout, 1, ratio, False) for _ in range(n - 1)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class SimCLRv2(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width: int = 1, ratio: float = 0.0) -> None:
        super().__init__()
        c = 64 * width // 2
        if ratio > 0:
            stem = [_conv(3, c, stride=2), BNReLU(c), _conv(c, c), BNReLU(c), _conv(c, c * 2)]
        else:
            stem = [_conv(3, c * 2, 7, 2)]
        ops, cin = [nn.Sequential(*stem, BNReLU(c * 2), nn.MaxPool2d(3, 2, 1))], 64 * width
        for i, n in enumerate(layers):
            ops.append(Blocks(n, cin, 64 * width * 2 ** i, 1 if i == 0 else 2, ratio))
            cin = 64 * width * 2 ** i * 4
        self.net = nn.Sequential(*ops)
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x):
        return self.fc(self.net(x).mean(dim=[2, 3]))


def _head(cin: int = 64) -> nn.Module:  # ContrastiveHead, 3 layers (sizes shortened)
    return nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(cin, cin, bias=False), nn.BatchNorm1d(cin)])})


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("width, sk", [(1, 0), (2, 0), (1, 1), (2, 1)])
def test_simclrv2_conversion_loads_with_parity(tmp_path, randomize, width, sk) -> None:
    layers = (1, 1, 1, 1) if width > 1 or sk else (3, 4, 6, 3)
    ref = randomize(SimCLRv2(layers, width, 0.0625 if sk else 0.0)).eval()
    keys = set(ref.state_dict())
    assert "net.1.blocks.0.projection." + ("shortcut.2.weight" if sk else "shortcut.weight") in keys
    assert sk == any(".net.2.mixing_conv.2.weight" in k for k in keys)  # the conversion's real key layout
    torch.save({"resnet": ref.state_dict(), "head": _head().state_dict()}, tmp_path / "r50.pth")  # convert.py
    spec = sources.get_source(f"simclrv2-r50-{width}x-sk{sk}")
    ours = create_model("resnet50", layers=layers, **spec.model_options)
    report = load_weights(ours, tmp_path / "r50.pth")
    assert (report.wrapper, report.layout, report.ok) == (
        "simclrv2-conversion", "simclrv2-sk1" if sk else "simclrv2", True)
    assert report.loaded == len(ref.state_dict()) and not report.head_skipped
    assert report.ignored and all(k.startswith("head.") for k in report.ignored)  # the contrastive head, listed
    assert (report.normalization, report.normalization_how) == (UNIT, "layout")  # SimCLR: [0, 1] inputs
    x = torch.rand(2, 3, 64, 64)
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 1e-3
    assert (ref_out - _logits(ours, x)).abs().max().item() <= 1e-4 * max(1.0, ref_out.abs().max().item())
    # odd sizes exercise the zero padding of the pooled projection
    x = torch.rand(1, 3, 57, 57)
    torch.testing.assert_close(_logits(ours, x), _logits(ref, x), rtol=1e-4, atol=1e-4)


def test_simclrv2_plain_net_state_dict_is_unit_range_too(tmp_path, randomize) -> None:
    """A bare ``net.*`` state_dict (no {'resnet'} wrapper): the layout alone says SimCLRv2 -> [0, 1] inputs."""
    ref = randomize(SimCLRv2((1, 1, 1, 1))).eval()
    torch.save(ref.state_dict(), tmp_path / "bare.pth")
    report = load_weights(create_model("resnet50", layers=(1, 1, 1, 1)), tmp_path / "bare.pth")
    assert (report.wrapper, report.layout, report.normalization) == ("plain", "simclrv2", UNIT)


def test_sk_model_sizes_equal_the_published_table() -> None:
    """google-research/simclr README "Param (M)" (backbone without the linear head) for all 13 released models:
    an independent check of the selective-kernel, stem and width definitions at real size."""
    published = {(50, 1, 0): 24, (50, 1, 1): 35, (50, 2, 0): 94, (50, 2, 1): 140, (101, 1, 0): 43,
                 (101, 1, 1): 65, (101, 2, 0): 170, (101, 2, 1): 257, (152, 1, 0): 58, (152, 1, 1): 89,
                 (152, 2, 0): 233, (152, 2, 1): 354, (152, 3, 1): 795}
    assert set(published) == set(SIMCLRV2_TOP1)
    for (depth, width, sk), millions in published.items():
        spec = sources.get_source(f"simclrv2-r{depth}-{width}x-sk{sk}")
        with torch.device("meta"):
            model = create_model(spec.arch, num_classes=0, **spec.model_options)
        ours = sum(p.numel() for p in model.parameters()) / 1e6
        # the README rounds both r152 2x models up (ours: 232.25M, 353.40M; every other row rounds exactly)
        tolerance = 1.0 if (depth, width) == (152, 2) else 0.5
        assert abs(ours - millions) <= tolerance, (depth, width, sk, ours)


def test_sk1_checkpoint_into_a_plain_resnet_names_the_variant(tmp_path, randomize) -> None:
    ref = randomize(SimCLRv2((3, 4, 6, 3), 1, 0.0625))
    torch.save({"resnet": ref.state_dict(), "head": {}}, tmp_path / "r50_1x_sk1.pth")
    with pytest.raises(Exception) as err:
        load_weights(create_model("resnet50"), tmp_path / "r50_1x_sk1.pth")
    last = str(err.value).splitlines()[-1]
    assert last.startswith("this is a SimCLRv2 sk1") and "sk_ratio=0.0625" in last and "shortcut=simclr" in last


@pytest.mark.parametrize("width", [1, 2])
def test_simclrv1_conversion_needs_its_named_source_for_unit_range(tmp_path, monkeypatch, randomize, width) -> None:
    """tonylins/simclr-converter writes {'state_dict': torchvision keys} (resnet_wider.py: every width scaled): the
    same wrapper as many ImageNet checkpoints, so only the named source (or --normalization) says [0, 1]."""
    import torchvision

    if width == 1:
        ref = randomize(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])).eval()
    else:  # resnet_wider.py scales inplanes and every stage by w (torchvision cannot): keys/normalisation checked
        ref = randomize(create_model("resnet50", layers=(1, 1, 1, 1), width=width)).eval()
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path))
    spec = sources.get_source(f"simclrv1-r50-{width}x")
    (tmp_path / "weights").mkdir()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "weights" / spec.filename)
    with pytest.warns(UserWarning, match="SimCLR v1/v2 conversions"):
        default = load_weights(create_model("resnet50", layers=(1, 1, 1, 1), **spec.model_options),
                               tmp_path / "weights" / spec.filename)
    assert (default.wrapper, default.normalization, default.normalization_how) == ("state_dict", IMAGENET, "default")
    ours = create_model("resnet50", layers=(1, 1, 1, 1), **spec.model_options)
    named = load_weights(ours, spec.name)
    assert (named.normalization, named.normalization_how, named.normalization_warning) == (UNIT, "named-source", None)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(_logits(ours, x), _logits(ref, x), rtol=1e-4, atol=1e-4)


def test_weights_convert_and_inspect_take_the_model_options(tmp_path, randomize, capsys) -> None:
    """`weights convert` / `inspect` build the variant (--width, --backbone-options); the converted file keeps the
    normalisation the layout declared, so the reload is exact."""
    import json

    from rs_transfer.cli import main

    ref = randomize(SimCLRv2((1, 1, 1, 1), 2, 0.0625)).eval()
    torch.save({"resnet": ref.state_dict(), "head": {}}, tmp_path / "r50_2x_sk1.pth")
    opts = ["--width", "2", "--backbone-options", "layers=[1,1,1,1]", "stem=deep", "stem_pool=max",
            "shortcut=simclr", "se_ratio=0", "sk_ratio=0.0625"]
    out = tmp_path / "ours.safetensors"
    assert main(["weights", "convert", str(tmp_path / "r50_2x_sk1.pth"), str(out), "--model", "resnet50", *opts]) == 0
    capsys.readouterr()
    assert main(["inspect", "resnet50", "--weights", str(out), "--resolution", "64", "--json", *opts]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"]["normalization"]["name"] == "unit-range"
    assert info["weights"]["normalization_how"] == "checkpoint-metadata" and info["weights"]["missing"] == []
    ours = create_model("resnet50", layers=(1, 1, 1, 1), **sources.get_source("simclrv2-r50-2x-sk1").model_options)
    report = load_weights(ours, out)
    assert (report.normalization, report.normalization_how, report.layout) == (
        UNIT, "checkpoint-metadata", "timm-resnetd")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(_logits(ours, x), _logits(ref, x), rtol=1e-4, atol=1e-4)
