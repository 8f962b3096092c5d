"""The self-supervised ResNet zoo: each release's checkpoint is rebuilt here in its REAL layout (the modules and
wrappers of its official code, re-written independently at small depth), saved as its training script saves it,
loaded with strict backbone matching, and compared with the network it came from.

Small models (one block per stage, torchvision's Bottleneck at full width) keep this fast; key names, prefixes,
extra heads and wrappers are exactly those of the releases (see rs_transfer/weights/layouts.py for the sources).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from rs_transfer import create_model, load_weights
from rs_transfer.weights import IMAGENET, SWAV, UNIT, sources

LAYERS = (1, 1, 1, 1)


def _resnet(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet(Bottleneck, list(LAYERS), num_classes=num_classes, **kw)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled stage-4 features of a torchvision-structured network (whatever its fc became)."""
    m = model
    with torch.no_grad():
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return x.mean((2, 3))


def _ours(tmp_path, ckpt: dict, name: str, **kw):
    torch.save(ckpt, tmp_path / name)
    model = create_model("resnet50", layers=LAYERS, num_classes=0).eval()
    report = load_weights(model, tmp_path / name, **kw)  # strict backbone matching (the default)
    return model, report


def _mlp_v3(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """moco-v3 moco/builder.py MoCo._build_mlp."""
    mlp: list[nn.Module] = []
    for i in range(num_layers):
        dim1 = input_dim if i == 0 else mlp_dim
        dim2 = output_dim if i == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if i < num_layers - 1:
            mlp += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


class MoCo(nn.Module):
    """facebookresearch/moco moco/builder.py (v1: mlp=False; v2: mlp=True), queue shortened to K=64."""

    def __init__(self, dim: int = 128, K: int = 64, mlp: bool = True) -> None:
        super().__init__()
        self.encoder_q, self.encoder_k = _resnet(num_classes=dim), _resnet(num_classes=dim)
        if mlp:
            dim_mlp = self.encoder_q.fc.weight.shape[1]
            self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
            self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


class MoCoV3(nn.Module):
    """facebookresearch/moco-v3 moco/builder.py MoCo_ResNet (dim 256, mlp_dim 4096 shortened to 64)."""

    def __init__(self, dim: int = 32, mlp_dim: int = 64) -> None:
        super().__init__()
        self.base_encoder, self.momentum_encoder = _resnet(mlp_dim), _resnet(mlp_dim)
        hidden = self.base_encoder.fc.weight.shape[1]
        del self.base_encoder.fc, self.momentum_encoder.fc
        self.base_encoder.fc = _mlp_v3(2, hidden, mlp_dim, dim)
        self.momentum_encoder.fc = _mlp_v3(2, hidden, mlp_dim, dim)
        self.predictor = _mlp_v3(2, dim, mlp_dim, dim, False)


class SimSiam(nn.Module):
    """facebookresearch/simsiam simsiam/builder.py (dim 2048 / pred_dim 512 shortened)."""

    def __init__(self, dim: int = 64, pred_dim: int = 16) -> None:
        super().__init__()
        self.encoder = _resnet(num_classes=dim, zero_init_residual=True)
        prev = self.encoder.fc.weight.shape[1]
        self.encoder.fc = nn.Sequential(nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
                                        nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
                                        self.encoder.fc, nn.BatchNorm1d(dim, affine=False))
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, dim))


def _ddp(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in sd.items()}  # DistributedDataParallel(model).state_dict()


def _examples_wrapper(model: nn.Module, arch: str = "resnet50") -> dict:
    """pytorch/examples imagenet/main.py save_checkpoint (MoCo and SimSiam write the same minus best_acc1/scheduler)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    return {"epoch": 200, "arch": arch, "state_dict": _ddp(model.state_dict()), "best_acc1": torch.tensor(12.5),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


@pytest.mark.parametrize("mlp, layout", [(True, "moco-v2"), (False, "moco-v1")])
def test_moco_v1_v2(tmp_path, randomize, mlp, layout) -> None:
    ref = randomize(MoCo(mlp=mlp)).eval()
    ckpt = {"epoch": 200, "arch": "resnet50", "state_dict": _ddp(ref.state_dict()),
            "optimizer": torch.optim.SGD(ref.parameters(), lr=0.03).state_dict()}  # main_moco.py save_checkpoint
    ours, report = _ours(tmp_path, ckpt, "moco.pth.tar")
    assert (report.wrapper, report.layout, report.ok) == ("pytorch-examples", layout, True)
    assert report.stripped_prefixes == ["module.", "encoder_q."]
    # everything that is not the query encoder's backbone is listed, nothing silently dropped
    assert {"queue", "queue_ptr"} <= set(report.ignored)
    assert any(k.startswith("encoder_k.") for k in report.ignored)
    assert {k for k in report.ignored if k.startswith("encoder_q.")} == {
        f"encoder_q.{k}" for k in ref.encoder_q.state_dict() if k.startswith("fc.")}
    assert (report.normalization, report.normalization_how) == (IMAGENET, "layout")
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), _features(ref.encoder_q, x), atol=1e-4)


def test_moco_v3(tmp_path, randomize) -> None:
    ref = randomize(MoCoV3()).eval()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ckpt = {"epoch": 300, "arch": "resnet50", "state_dict": _ddp(ref.state_dict()),
            "optimizer": torch.optim.SGD(ref.parameters(), lr=0.6).state_dict(), "scaler": scaler.state_dict()}
    ours, report = _ours(tmp_path, ckpt, "r-50-300ep.pth.tar")
    assert (report.layout, report.ok, report.normalization) == ("moco-v3", True, IMAGENET)
    assert {k.split(".")[0] for k in report.ignored} == {"momentum_encoder", "predictor", "base_encoder"}
    assert all(k.startswith("base_encoder.fc.") for k in report.ignored if k.startswith("base_encoder."))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), _features(ref.base_encoder, x), atol=1e-4)


def test_simsiam(tmp_path, randomize) -> None:
    ref = randomize(SimSiam()).eval()
    ckpt = {"epoch": 100, "arch": "resnet50", "state_dict": _ddp(ref.state_dict()),
            "optimizer": torch.optim.SGD(ref.parameters(), lr=0.05).state_dict()}
    ours, report = _ours(tmp_path, ckpt, "checkpoint_0099.pth.tar")
    assert (report.layout, report.ok, report.normalization) == ("simsiam", True, IMAGENET)
    assert {k for k in report.ignored if k.startswith("encoder.")} == {
        f"encoder.{k}" for k in ref.encoder.state_dict() if k.startswith("fc.")}
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), _features(ref.encoder, x), atol=1e-4)


class SwAVResNet(ResNet):
    """facebookresearch/swav src/resnet50.py: a zero ``padding`` layer + conv1 padding 2, projection head, prototypes
    (``nmb_prototypes`` a list = DeepCluster-v2's MultiPrototypes, ``prototypes.prototypes{i}``)."""

    def __init__(self, output_dim: int = 16, hidden_mlp: int = 32, nmb_prototypes: int | list[int] = 30) -> None:
        super().__init__(Bottleneck, list(LAYERS))
        del self.fc
        self.padding = nn.ConstantPad2d(1, 0.0)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=2, bias=False)
        self.projection_head = nn.Sequential(nn.Linear(2048, hidden_mlp), nn.BatchNorm1d(hidden_mlp),
                                             nn.ReLU(inplace=True), nn.Linear(hidden_mlp, output_dim))
        if isinstance(nmb_prototypes, list):
            self.prototypes = nn.Module()
            for i, k in enumerate(nmb_prototypes):
                self.prototypes.add_module(f"prototypes{i}", nn.Linear(output_dim, k, bias=False))
        else:
            self.prototypes = nn.Linear(output_dim, nmb_prototypes, bias=False)

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.maxpool(self.relu(self.bn1(self.conv1(self.padding(x)))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x)))).mean((2, 3))


@pytest.mark.parametrize("prototypes", [30, [10, 20]])
def test_swav_and_deepclusterv2(tmp_path, randomize, prototypes) -> None:
    ref = randomize(SwAVResNet(nmb_prototypes=prototypes)).eval()
    ours, report = _ours(tmp_path, _ddp(ref.state_dict()), "swav_800ep_pretrain.pth.tar")  # published: a bare sd
    assert (report.wrapper, report.layout, report.ok) == ("plain", "swav", True)
    assert {k.split(".")[0] for k in report.ignored} == {"projection_head", "prototypes"}
    assert report.normalization == SWAV and report.normalization.std[0] == pytest.approx(0.228 * 255)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), ref.forward_backbone(x), atol=1e-4)


@pytest.mark.parametrize("release", ["dino-r50", "barlowtwins-r50", "vicreg-r50"])
def test_plain_torchvision_releases_take_their_normalisation_from_the_named_source(tmp_path, monkeypatch, randomize,
                                                                                   release) -> None:
    """DINO / Barlow Twins / VICReg publish the backbone state_dict without fc (hubconf.py of each)."""
    ref = randomize(_resnet()).eval()
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path))
    spec = sources.get_source(release)
    (tmp_path / "weights").mkdir()
    torch.save(sd, tmp_path / "weights" / spec.filename)
    model = create_model("resnet50", layers=LAYERS, num_classes=0).eval()
    report = load_weights(model, release)
    assert (report.layout, report.ok) == ("torchvision-resnet", True)
    assert (report.normalization, report.normalization_how, report.normalization_warning) == (
        IMAGENET, "named-source", None)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model(x), _features(ref, x), atol=1e-4)


def test_pytorch_examples_checkpoint_is_not_guessed(tmp_path, randomize) -> None:
    """imagenet/main.py's {'epoch', 'arch', 'state_dict', 'best_acc1', 'optimizer', 'scheduler'}: loads under
    weights_only; its normalisation is NOT inferred from the wrapper (ImageNet by default, with the warning)."""
    ref = randomize(_resnet()).eval()
    with pytest.warns(UserWarning, match="nothing declares the input normalisation"):
        ours, report = _ours(tmp_path, _examples_wrapper(ref), "checkpoint.pth.tar")
    assert (report.wrapper, report.layout, report.ok, report.stripped_prefixes) == (
        "pytorch-examples", "torchvision-resnet", True, ["module."])
    assert (report.normalization, report.normalization_how) == (IMAGENET, "default")
    assert "--normalization" in report.normalization_warning
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), _features(ref, x), atol=1e-4)
    # the user declares it: no warning, recorded as explicit
    model = create_model("resnet50", layers=LAYERS, num_classes=0)
    explicit = load_weights(model, tmp_path / "checkpoint.pth.tar", normalization="0.5,0.5")
    assert explicit.normalization_how == "explicit" and explicit.normalization.mean == (127.5,) * 3
    assert model.input_normalization == explicit.normalization


def test_real_shapes_torchvision_resnet50_in_a_moco_v2_wrapper(tmp_path) -> None:
    """One real-size check: a full torchvision ResNet-50 as MoCo v2's encoder_q loads into resnet50."""
    q = torchvision.models.resnet50(num_classes=128)
    q.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), q.fc)
    sd = {**{f"module.encoder_q.{k}": v for k, v in q.state_dict().items()},
          **{f"module.encoder_k.{k}": v for k, v in copy.deepcopy(q).state_dict().items()},
          "module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    report = load_weights(create_model("resnet50", num_classes=10), tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    assert report.ok and report.loaded == len([k for k in q.state_dict() if not k.startswith("fc.")])
    assert report.layout == "moco-v2" and "ignored" in report.summary()


def _pad_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """chigur/byol-convert resnet.py calc_padding_same + pad_same (TF SAME: the extra pixel at the end)."""
    out_h, out_w = -(-x.shape[2] // s), -(-x.shape[3] // s)
    ph, pw = max((out_h - 1) * s + k - x.shape[2], 0), max((out_w - 1) * s + k - x.shape[3], 0)
    return nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class BYOLConverted(nn.Module):
    """The network of the BYOL conversion (chigur/byol-convert resnet.py): torchvision names, convs and max-pool
    with padding 0, every input padded TF-style first."""

    def __init__(self) -> None:
        super().__init__()
        tv = _resnet()
        for m in tv.modules():
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                m.padding = (0, 0) if isinstance(m, nn.Conv2d) else 0
        self.tv = tv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tv
        with torch.no_grad():
            x = t.relu(t.bn1(t.conv1(_pad_same(x, 7, 2))))
            x = t.maxpool(_pad_same(x, 3, 2))
            for layer in (t.layer1, t.layer2, t.layer3, t.layer4):
                for b in layer:
                    out = t.relu(b.bn1(b.conv1(x)))
                    out = t.relu(b.bn2(b.conv2(_pad_same(out, 3, b.stride))))
                    out = b.bn3(b.conv3(out))
                    x = t.relu(out + (b.downsample(x) if b.downsample is not None else x))
            return x.mean((2, 3))


def test_byol_conversion_with_its_tf_same_padding(tmp_path, monkeypatch, randomize) -> None:
    """chigur/byol-convert writes torchvision keys with fc and without num_batches_tracked; its network pads like
    Haiku did (SAME), which the named source's model option ``padding='tf-same'`` reproduces exactly."""
    ref = randomize(BYOLConverted()).eval()
    sd = {k: v for k, v in ref.tv.state_dict().items() if "num_batches_tracked" not in k}
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path))
    spec = sources.get_source("byol-r50")
    (tmp_path / "weights").mkdir()
    torch.save(sd, tmp_path / "weights" / spec.filename)
    model = create_model("resnet50", layers=LAYERS, num_classes=0, **spec.model_options).eval()
    report = load_weights(model, "byol-r50")
    assert (report.layout, report.ok, report.normalization, report.normalization_how) == (
        "torchvision-resnet", True, IMAGENET, "named-source")
    for size in (64, 57):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(model(x), ref(x), atol=1e-4)
    plain = create_model("resnet50", layers=LAYERS, num_classes=0).eval()
    load_weights(plain, "byol-r50")
    with torch.no_grad():  # PyTorch's symmetric padding is a different network for these weights
        assert not torch.allclose(plain(x), ref(x), atol=1e-3)


def test_lightning_checkpoint_is_unwrapped_not_guessed(tmp_path, randomize) -> None:
    """A Lightning checkpoint ({'epoch', 'global_step', 'pytorch-lightning_version', 'state_dict': {'model.*'}, ...})
    loads; like any wrapper it says nothing about the normalisation (ImageNet default, with the warning)."""
    ref = randomize(_resnet()).eval()
    ckpt = {"epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()},
            "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"lr": 0.1}}
    with pytest.warns(UserWarning, match="nothing declares"):
        ours, report = _ours(tmp_path, ckpt, "epoch=3-step=300.ckpt")
    assert (report.wrapper, report.layout, report.ok, report.stripped_prefixes) == (
        "lightning", "torchvision-resnet", True, ["model."])
    assert report.normalization_how == "default"
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), _features(ref, x), atol=1e-4)
