"""3D backbones: registry table, parameter counts derived from TF Model Garden's layer definitions (independently
of our model), shapes, the named 2D-inflation layout, and 2D -> 3D inflation."""
from __future__ import annotations

import pytest
import torch

from rs_transfer import create_model, list_models, load_weights, save_weights
from rs_transfer.backbones import build_backbone, get_spec
from rs_transfer.video.models import CVRL_TEMPORAL_KERNELS

# ---- TF Model Garden, as written there (official/vision/...) --------------------------------------------------
# modeling/backbones/resnet_3d.py RESNET_SPECS: (block, filters, repeats) per group.
TF_RESNET_SPECS = {50: [(64, 3), (128, 4), (256, 6), (512, 3)], 101: [(64, 3), (128, 4), (256, 23), (512, 3)]}
# configs/backbones_3d.py ResNet3D50 block_specs + k400_3d-resnet50_tpu.yaml (identical there).
TF_RESNET3D50 = dict(stem_type="v0", stem_conv_temporal_kernel_size=5, se_ratio=0.0,
                     temporal_kernel_sizes=[(3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1)],
                     use_self_gating=[True] * 4)
# configs/backbones_3d.py ResNet3DRS (per-group kernel repeated by build_resnet3d_rs) + k400_resnet3drs_50_tpu.yaml
# (which overrides se_ratio 0.2 -> 0.25).
TF_RESNET3DRS = dict(stem_type="v1", stem_conv_temporal_kernel_size=5, se_ratio=0.25, rs_kernels=(1, 1, 3, 3),
                     use_self_gating=[True] * 4)


def tf_param_count(model_id: int, stem_type: str, stem_conv_temporal_kernel_size: int, se_ratio: float,
                   use_self_gating: list[bool], num_classes: int, temporal_kernel_sizes=None,
                   rs_kernels=None) -> int:
    """Trainable parameters of TF's ResNet3D + video classification head, following the Keras layers it builds
    (a layer TF creates but never calls, e.g. ``_shortcut_maxpool`` or an unused ``_shortcut_conv``, has no
    weights). BatchNorm: gamma + beta (moving statistics are not trainable)."""
    specs = TF_RESNET_SPECS[model_id]
    if rs_kernels is not None:  # build_resnet3d_rs: list(block_spec.temporal_kernel_sizes) * block_repeats
        temporal_kernel_sizes = [(k,) * n for k, (_, n) in zip(rs_kernels, specs)]
    kt = stem_conv_temporal_kernel_size

    def bn(c: int) -> int:
        return 2 * c

    if stem_type == "v0":   # Conv3D(64, [kt, 7, 7]), no bias; BN
        n = kt * 7 * 7 * 3 * 64 + bn(64)
    else:                   # v1: Conv3D(32, [kt,3,3]), Conv3D(32, [1,3,3]), Conv3D(64, [1,3,3]), each + BN
        n = kt * 9 * 3 * 32 + bn(32) + 9 * 32 * 32 + bn(32) + 9 * 32 * 64 + bn(64)
    in_filters = 64
    for (filters, repeats), kernels, gating in zip(specs, temporal_kernel_sizes, use_self_gating):
        assert len(kernels) == repeats   # _block_group's own check
        for i in range(repeats):
            out = 4 * filters
            if in_filters != out:          # BottleneckBlock3D.call: _shortcut_conv + _norm0
                n += in_filters * out + bn(out)
            n += kernels[i] * in_filters * filters + bn(filters)     # _temporal_conv [kt, 1, 1]
            n += 9 * filters * filters + bn(filters)                 # _spatial_conv [1, 3, 3]
            n += filters * out + bn(out)                             # _expand_conv
            if se_ratio and 0 < se_ratio <= 1:                       # nn_layers.SqueezeExcitation, divisor 1
                reduced = max(1, int(out * se_ratio))
                n += out * reduced + reduced + reduced * out + out
            if gating and i == repeats - 1:                          # SelfGating: Conv3D(out, 1x1x1, bias)
                n += out * out + out
            in_filters = out
    return n + in_filters * num_classes + num_classes               # Dense head


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_the_3d_table() -> None:
    assert list_models("resnet3d") == ["resnet3d50"]
    assert list_models("resnetrs3d") == ["resnetrs3d50", "resnetrs3d101", "resnetrs3d152", "resnetrs3d200"]
    assert CVRL_TEMPORAL_KERNELS == tuple(TF_RESNET3D50["temporal_kernel_sizes"])
    for name in ("resnet3d50", "resnetrs3d101"):
        assert get_spec(name).kwargs["layout"] == "tf"
    rs = create_model("resnetrs3d101", num_classes=400).arch
    assert rs["temporal_kernels"] == ((1,) * 3, (1,) * 4, (3,) * 23, (3,) * 3)
    assert (rs["stem"], rs["stem_pool"], rs["shortcut"], rs["se_ratio"]) == ("deep", "max", "conv", 0.25)
    assert rs["self_gating"] == [True] * 4 and rs["stem_pool_temporal_stride"] == 1


def test_parameter_counts_equal_tf_definitions() -> None:
    """33,617,872 for 3D ResNet-50 at 400 classes (PROTOCOLS.md), from TF's layers; and 3D ResNet-RS-50/101."""
    assert tf_param_count(50, num_classes=400, **TF_RESNET3D50) == 33_617_872
    assert _count(create_model("resnet3d50", num_classes=400)) == 33_617_872
    for depth in (50, 101):
        assert _count(create_model(f"resnetrs3d{depth}", num_classes=400)) == \
            tf_param_count(depth, num_classes=400, **TF_RESNET3DRS)
    # The self-gating layers are what the old (gate-less) layout lacked: 5,574,400 parameters at 50 layers.
    no_gate = dict(TF_RESNET3D50, use_self_gating=[False] * 4)
    assert tf_param_count(50, num_classes=400, **TF_RESNET3D50) - tf_param_count(50, num_classes=400,
                                                                                  **no_gate) == 5_574_400


def test_pytorchvideo_slow_layout_parameter_count() -> None:
    """A second reference: ResNet3D with pytorchvideo's default ``create_resnet`` layout (stem [3,7,7] without
    temporal stride, temporal kernels (1,1,3,3), no self-gating) has its 32,472,912 parameters at 400 classes."""
    ours = create_model("resnet3d50", num_classes=400, stem_temporal_kernel=3, stem_temporal_stride=1,
                        stem_pool_temporal_stride=1, temporal_kernels="rs", self_gating=False)
    assert _count(ours) == 32_472_912
    pv = pytest.importorskip("pytorchvideo.models.resnet")
    assert _count(pv.create_resnet(model_num_class=400)) == 32_472_912


def test_tf_shapes_temporal_and_spatial() -> None:
    """32 input frames: the baseline's stem conv and stem pool each halve time (8 frames from stage 1 on, as TF's
    ``stem_pool_temporal_stride: 2``); the RS stem pool keeps them (16). Spatial strides 4..32."""
    x = torch.randn(1, 3, 32, 64, 64)
    for name, frames in (("resnet3d50", 8), ("resnetrs3d50", 16)):
        net = build_backbone(name, out_indices=(0, 1, 2, 3), layers=(1, 1, 1, 1), width=0.25).eval()
        with torch.no_grad():
            feats = net(x)
        assert [tuple(f.shape) for f in feats] == [(1, 64, frames, 16, 16), (1, 128, frames, 8, 8),
                                                 (1, 256, frames, 4, 4), (1, 512, frames, 2, 2)]
        assert [i["reduction"] for i in net.feature_info] == [4, 8, 16, 32]
    # temporal_stride sits on the temporal [k_t, 1, 1] conv of the stage's first block (TF BottleneckBlock3D)
    net = create_model("resnet3d50", num_classes=5, temporal_strides=(1, 2, 1, 1))
    block = net.layer2[0]
    assert block.conv1.stride == (2, 1, 1) and block.conv1.kernel_size == (3, 1, 1)
    assert block.conv2.stride == (1, 2, 2) and block.downsample[0].stride == (2, 2, 2)
    assert net.layer2[-1].gate is not None and net.layer2[0].gate is None      # last block of the stage only


def test_self_gating_is_tf_s3dg() -> None:
    from rs_transfer.video.resnet3d import SelfGating

    g = SelfGating(4)
    x = torch.randn(2, 4, 3, 5, 5)
    with torch.no_grad():
        g.fc.weight.normal_()
        g.fc.bias.normal_()
        pooled = x.mean((2, 3, 4))                                    # GlobalAveragePooling3D
        gate = torch.sigmoid(pooled @ g.fc.weight.view(4, 4).T + g.fc.bias)
        torch.testing.assert_close(g(x), x * gate[:, :, None, None, None])


def test_architecture_line_names_the_layout() -> None:
    line = create_model("resnetrs3d50").describe()
    assert line.startswith("layout tf: stem deep + max pool (temporal stride 1), conv shortcuts, self-gating")
    assert "no self-gating" in create_model("resnetrs3d50", layout="2d").describe()
    with pytest.raises(ValueError, match="layout"):
        create_model("resnet3d50", layout="pytorchvideo")


@pytest.mark.parametrize("two_d, three_d, tiny", [("resnet50", "resnet3d50", True),
                                                  ("resnetrs50", "resnetrs3d50", True),
                                                  ("resnetrs50", "resnetrs3d50", False)])
def test_2d_layout_inflates_key_for_key_and_reproduces_2d_logits(tmp_path, randomize, two_d, three_d,
                                                                   tiny) -> None:
    """``layout="2d"`` + ``center`` inflation: on a clip of identical frames every 3D conv sees exactly its 2D kernel,
    so in eval mode the 3D model gives the 2D logits (SE, ResNet-D stem/shortcuts, temporal strides included)."""
    small = dict(layers=(1, 1, 1, 1), width=0.25) if tiny else {}
    src = randomize(create_model(two_d, num_classes=10, **small)).eval()
    ckpt = save_weights(src, tmp_path / "2d.pth")
    dst = create_model(three_d, num_classes=10, layout="2d", **small).eval()
    report = load_weights(dst, ckpt)
    assert report.ok and not report.missing and not report.head_skipped
    convs = [k for k, v in src.state_dict().items() if v.ndim == 4]
    assert sorted(report.inflated) == sorted(convs)          # every conv (SE fc1/fc2 included) was inflated
    assert report.loaded == len(src.state_dict())
    image = torch.randn(2, 3, 64, 64)
    clip = image.unsqueeze(2).expand(-1, -1, 6, -1, -1).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(dst(clip), src(image), rtol=1e-4, atol=1e-4)


def test_tf_layout_reports_the_gates_a_2d_checkpoint_lacks(tmp_path, randomize) -> None:
    small = dict(layers=(1, 1, 1, 1), width=0.25)
    ckpt = save_weights(create_model("resnet50", num_classes=10, **small), tmp_path / "2d.pth")
    report = load_weights(create_model("resnet3d50", num_classes=10, **small), ckpt, strict=False)
    assert sorted(report.missing) == [f"layer{i}.0.gate.fc.{p}" for i in range(1, 5) for p in ("bias", "weight")]


def test_inflate_mode_mean_and_center(tmp_path, randomize) -> None:
    """``inflate`` (config ``model.backbone.inflate``): center puts the 2D kernel in the middle tap, mean spreads
    it over k_t taps; both give the 2D response on a still clip."""
    small = dict(layers=(1, 1, 1, 1), width=0.25)
    src = randomize(create_model("resnet50", num_classes=10, **small))
    ckpt = save_weights(src, tmp_path / "2d.pth")
    taps = {}
    for mode in ("center", "mean"):
        net = create_model("resnet3d50", num_classes=10, layout="2d", weights=str(ckpt), inflate=mode, **small)
        net.init_weights()
        taps[mode] = net.conv1.weight[0, 0, :, 3, 3].detach()
    w = src.conv1.weight[0, 0, 3, 3].detach()
    torch.testing.assert_close(taps["center"], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]) * w)
    torch.testing.assert_close(taps["mean"], torch.full((5,), 1 / 5) * w)
    with pytest.raises(ValueError, match="inflate"):
        create_model("resnet3d50", inflate="zero")
