"""Backbone family: every registered model runs, feature_info is true, sizes match the paper, timm/torchvision parity."""
from __future__ import annotations

import pytest
import torch

from rs_transfer import build_backbone, create_model, list_models
from rs_transfer.backbones import ResNetRS, UnknownModelError, get_spec
from rs_transfer.errors import UserError

# Paper Table 2 parameter counts (millions, 1000 classes), printed rounded to integers.
TABLE2_PARAMS = {"resnetrs50": 36, "resnetrs101": 64, "resnetrs152": 87, "resnetrs200": 93, "resnetrs270": 130,
                 "resnetrs350": 164, "resnetrs420": 192}


def _input(model: torch.nn.Module, size: int = 32, batch: int = 2) -> torch.Tensor:
    if getattr(model, "dims", 2) == 3:
        return torch.randn(batch, 3, 4, size, size)
    return torch.randn(batch, 3, size, size)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_model(name: str) -> None:
    model = create_model(name, num_classes=7)
    x = _input(model)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet50", "resnetrs50", "resnetrs101"])
def test_feature_info_matches_outputs(name: str) -> None:
    backbone = build_backbone(name, out_indices=(0, 1, 2, 3)).eval()
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert len(feats) == 4
    for f, info in zip(feats, backbone.feature_info):
        assert f.shape[1] == info["num_chs"]
        assert f.shape[-1] == 64 // info["reduction"]
    # a subset of stages, and no classifier parameters in a backbone
    sub = build_backbone(name, out_indices=(1, 3))
    assert [f.shape[1] for f in sub(torch.randn(1, 3, 64, 64))] == [sub.feature_info[1]["num_chs"],
                                                                   sub.feature_info[3]["num_chs"]]
    assert not any(k.startswith("fc.") for k in sub.state_dict())


@pytest.mark.parametrize("name", sorted(TABLE2_PARAMS))
def test_params_match_table2_and_timm(name: str) -> None:
    timm = pytest.importorskip("timm")
    ours = _params(create_model(name))
    assert ours == _params(timm.create_model(name, pretrained=False))
    # Table 2 prints millions rounded to integers; our count must round to the printed value.
    assert round(ours / 1e6) == TABLE2_PARAMS[name]


@pytest.mark.parametrize("name", ["resnetrs50", "resnetrs101", "resnetrs152", "resnetrs200", "resnetrs270",
                                  "resnetrs350", "resnetrs420"])
def test_timm_parity(name: str, tmp_path, randomize) -> None:
    from rs_transfer import load_weights

    timm = pytest.importorskip("timm")
    ref = randomize(timm.create_model(name, pretrained=False)).eval()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = create_model(name).eval()
    report = load_weights(ours, tmp_path / "timm.pth")
    assert report.layout == "timm-resnetrs" and report.ok
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref_out, our_out = ref(x), ours(x)
    assert ref_out.abs().max() > 1e-3  # the check below must not pass on all-zero logits
    assert (ref_out - our_out).abs().max().item() <= 1e-4


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_torchvision_parity(depth: int, tmp_path, randomize) -> None:
    import torchvision

    from rs_transfer import load_weights

    ref = randomize(getattr(torchvision.models, f"resnet{depth}")()).eval()
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = create_model(f"resnet{depth}").eval()
    assert set(ours.state_dict()) == set(ref.state_dict())  # identical module structure and keys
    report = load_weights(ours, tmp_path / "tv.pth")
    assert report.layout == "torchvision-resnet" and report.ok
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() <= 1e-4


def test_free_parameters_make_study_variants() -> None:
    # depth 26 and 300 (scaling study), width multipliers, switches off = vanilla
    m26 = create_model("resnetrs50", depth=26)
    assert [len(getattr(m26, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    m300 = ResNetRS(depth=300, num_classes=10)
    assert [len(getattr(m300, f"layer{i}")) for i in range(1, 5)] == [4, 36, 54, 4]
    for width in (0.25, 0.5, 1.5, 2.0):
        m = create_model("resnetrs50", width=width, num_classes=10).eval()
        assert m.feature_info[-1]["num_chs"] == int(64 * width * 8) * 4
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    no_se = create_model("resnetrs50", se_ratio=0.0)
    assert not any(".se." in k for k in no_se.state_dict())
    assert _params(no_se) < _params(create_model("resnetrs50"))
    custom = create_model("resnetrs50", layers=(1, 1, 1, 1), num_classes=3).eval()
    assert custom(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_stochastic_depth_schedules() -> None:
    stage = create_model("resnetrs50", drop_path_rate=0.1, drop_path_schedule="stage")
    rates = [[b.drop_path.rate for b in getattr(stage, f"layer{i}")] for i in range(1, 5)]
    assert [r[0] for r in rates] == pytest.approx([0.04, 0.06, 0.08, 0.10])  # 0.1 * (i + 2) / 5
    assert all(len(set(r)) == 1 for r in rates)
    linear = create_model("resnetrs50", drop_path_rate=0.1, drop_path_schedule="linear")
    flat = [b.drop_path.rate for i in range(1, 5) for b in getattr(linear, f"layer{i}")]
    assert flat[0] == 0.0 and flat[-1] == pytest.approx(0.1) and flat == sorted(flat)
    with pytest.raises(ValueError, match="stage' or 'linear"):
        create_model("resnetrs50", drop_path_rate=0.1, drop_path_schedule="cosine")


def test_frozen_stages_and_norm_eval() -> None:
    bb = build_backbone("resnetrs50", frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in bb.conv1.parameters())
    assert not any(p.requires_grad for p in bb.layer1.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    assert not any(m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _bn_stats(modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    return [t.clone() for m in modules for bn in m.modules() if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm)
            for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]


@pytest.mark.parametrize("norm_eval", [False, True])
@pytest.mark.parametrize("name", ["resnetrs50", "resnetrs3d50"])  # the 2D and the 3D ResNet share the freezing
def test_frozen_stages_get_no_grad_and_keep_bn_statistics(name: str, norm_eval: bool) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name, frozen_stages=1, norm_eval=norm_eval, layers=(1, 1, 1, 1), width=0.25)
    bb.eval().train()  # the Runner switches modes: the freeze must hold after every train()
    frozen, live = [bb.conv1, bb.bn1, bb.maxpool, bb.layer1], [bb.layer2, bb.layer3, bb.layer4]
    frozen_before, live_before = _bn_stats(frozen), _bn_stats(live)
    sum(f.mean() for f in bb(_input(bb))).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is not None for m in live for p in m.parameters())
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, _bn_stats(frozen)))
    live_same = [torch.equal(a, b) for a, b in zip(live_before, _bn_stats(live))]
    assert all(live_same) if norm_eval else not any(live_same)  # unfrozen BN statistics move unless norm_eval


def test_unknown_names_and_options_fail_clearly() -> None:
    with pytest.raises(UnknownModelError, match="Closest: resnetrs50"):
        get_spec("resnetrs5")
    with pytest.raises(UserError, match="Did you mean se_ratio"):
        create_model("resnetrs50", se_ration=0.5)


def test_visible_from_mmdet_and_mmseg_registries() -> None:
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    import rs_transfer.backbones.resnet  # noqa: F401  (registers ResNetRS in mmengine's root registry)

    by_class = DET_MODELS.build(dict(type=ResNetRS, depth=50, num_classes=0, out_indices=(0, 1, 2, 3)))
    by_name = SEG_MODELS.build(dict(type="ResNetRS", depth=50, num_classes=0, out_indices=(3,)))
    assert isinstance(by_class, ResNetRS) and isinstance(by_name, ResNetRS)
    assert by_name.eval()(torch.randn(1, 3, 64, 64))[0].shape == (1, 2048, 2, 2)
