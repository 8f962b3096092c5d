"""3D backbones: registry table, parameter counts derived independently, shapes, and 2D -> 3D inflation."""
from __future__ import annotations

import pytest
import torch

from rs_transfer import create_model, list_models, load_weights, save_weights
from rs_transfer.backbones import BLOCKS_PER_DEPTH, build_backbone, get_spec
from rs_transfer.video.models import CVRL_TEMPORAL_KERNELS, per_block


def test_registry_lists_the_3d_table() -> None:
    assert list_models("resnet3d") == ["resnet3d50"]
    assert list_models("resnetrs3d") == ["resnetrs3d50", "resnetrs3d101", "resnetrs3d152", "resnetrs3d200"]
    rs = get_spec("resnetrs3d101").kwargs
    assert rs["temporal_kernels"] == per_block((1, 1, 3, 3), BLOCKS_PER_DEPTH[101])
    assert (rs["stem"], rs["stem_pool"], rs["shortcut"], rs["se_ratio"]) == ("deep", "conv", "avg", 0.25)
    assert (rs["stem_temporal_kernel"], rs["stem_temporal_stride"], rs["drop_path_rate"]) == (5, 2, 0.1)
    assert get_spec("resnet3d50").kwargs["temporal_kernels"] == ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1),
                                                                 (1, 3, 1))


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet3d50_parameter_count_from_the_2d_count() -> None:
    """3D params = 2D ResNet-50 params + the extra temporal taps: (k_t - 1) x the 1x1 weights of every block whose
    first conv has k_t > 1, and 4 extra taps of the 7x7x3 -> 64 stem conv (temporal kernel 5)."""
    two_d = _count(create_model("resnet50", num_classes=400))
    extra = 4 * 64 * 3 * 7 * 7
    in_chs = 64
    for stage, kernels in enumerate(CVRL_TEMPORAL_KERNELS):
        planes = 64 * 2 ** stage
        for j, kt in enumerate(kernels):
            extra += (kt - 1) * in_chs * planes
            in_chs = planes * 4
    assert _count(create_model("resnet3d50", num_classes=400)) == two_d + extra == 28_043_472


def test_slow_layout_matches_pytorchvideo_parameter_count() -> None:
    """Our ResNetRS with pytorchvideo's default create_resnet layout (stem 3x7x7, no temporal stride, temporal
    kernel 3 in stages 3-4) has exactly its parameter count (32,472,912 with 400 classes)."""
    ours = create_model("resnet3d50", num_classes=400, stem_temporal_kernel=3, stem_temporal_stride=1,
                        temporal_kernels=per_block((1, 1, 3, 3), BLOCKS_PER_DEPTH[50]))
    assert _count(ours) == 32_472_912
    pv = pytest.importorskip("pytorchvideo.models.resnet")
    assert _count(pv.create_resnet(model_num_class=400)) == 32_472_912


def test_shapes_and_feature_info() -> None:
    x = torch.randn(1, 3, 8, 64, 64)
    for name in ("resnet3d50", "resnetrs3d50"):
        net = build_backbone(name, out_indices=(0, 1, 2, 3)).eval()
        with torch.no_grad():
            feats = net(x)
        # temporal stride 2 in the stem only: 8 -> 4 frames everywhere; spatial strides 4..32
        assert [tuple(f.shape) for f in feats] == [(1, 256, 4, 16, 16), (1, 512, 4, 8, 8), (1, 1024, 4, 4, 4),
                                                 (1, 2048, 4, 2, 2)]
        assert [(i["num_chs"], i["reduction"]) for i in net.feature_info] == [(256, 4), (512, 8), (1024, 16),
                                                                              (2048, 32)]
    clf = create_model("resnetrs3d50", num_classes=7, layers=(1, 1, 1, 1),
                       temporal_kernels=((1,), (1,), (3,), (3,))).eval()
    with torch.no_grad():
        assert clf(x).shape == (1, 7)


@pytest.mark.parametrize("two_d, three_d, tiny", [("resnet50", "resnet3d50", True),
                                                  ("resnetrs50", "resnetrs3d50", True),
                                                  ("resnetrs50", "resnetrs3d50", False)])
def test_inflated_3d_model_reproduces_2d_logits_on_a_still_clip(tmp_path, randomize, two_d, three_d, tiny) -> None:
    """``center`` inflation: on a clip of identical frames every 3D conv sees exactly its 2D kernel, so in eval mode
    the 3D model gives the 2D logits (SE, ResNet-D stem/shortcuts and the stem's temporal stride included)."""
    small = dict(layers=(1, 1, 1, 1), width=0.25) if tiny else {}
    src = randomize(create_model(two_d, num_classes=10, **small)).eval()
    ckpt = save_weights(src, tmp_path / "2d.pth")
    kernels = tuple((k[0],) for k in get_spec(three_d).kwargs["temporal_kernels"]) if tiny else None
    dst = create_model(three_d, num_classes=10, **small, **({"temporal_kernels": kernels} if tiny else {})).eval()
    report = load_weights(dst, ckpt)
    assert report.ok and not report.missing and not report.head_skipped
    convs = [k for k, v in src.state_dict().items() if v.ndim == 4]
    assert sorted(report.inflated) == sorted(convs)          # every conv (SE fc1/fc2 included) was inflated
    assert report.loaded == len(src.state_dict())
    image = torch.randn(2, 3, 64, 64)
    clip = image.unsqueeze(2).expand(-1, -1, 6, -1, -1).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(dst(clip), src(image), rtol=1e-4, atol=1e-4)
