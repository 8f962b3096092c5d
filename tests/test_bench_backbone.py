"""`rs-transfer benchmark backbone`: equal work on both sides, every registered 2D depth has a reference, FLOP and
MFU arithmetic. The CUDA variants (channels_last + bf16, torch.compile) run only where a GPU is (marker ``gpu``)."""
from __future__ import annotations

import pytest
import torch

from rs_transfer.bench.backbone import (BenchResult, benchmark, build_pair, format_results, peak_bf16_tflops,
                                        reference_model, reference_name, step_flops)
from rs_transfer.cli import main


def _drop_path_rates(model: torch.nn.Module) -> list[float]:
    """Per-block stochastic-depth rates in block order (ours: DropPath.rate; timm: drop_prob; none = 0)."""
    rates = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(model, name):
            dp = getattr(block, "drop_path", None)
            rates.append(float(getattr(dp, "rate", getattr(dp, "drop_prob", 0.0)) or 0.0) if dp is not None else 0.0)
    return rates


@pytest.mark.slow
def test_train_mode_does_the_same_work_and_weights_match() -> None:
    """resnetrs200 has dropout 0.25 and stochastic depth 0.1: the timm reference gets both, with the same per-block
    rates; in eval mode the two give the same logits (same weights)."""
    ours, ref, label = build_pair("resnetrs200")
    assert "timm resnetrs200" in label and "drop_path_rate 0.1" in label
    assert _drop_path_rates(ours) == pytest.approx(_drop_path_rates(ref))
    assert max(_drop_path_rates(ref)) == pytest.approx(0.1)
    assert ours.drop_rate == ref.drop_rate == 0.25
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-4)


def test_resnet200_reference_is_timms_and_vanilla_refs_are_torchvision() -> None:
    ref, label = reference_model("resnet200")  # torchvision has no resnet200: this crashed before
    assert label.startswith("timm resnet200") and sum(len(getattr(ref, f"layer{i}")) for i in range(1, 5)) == 66
    _, label = reference_model("resnet50")
    assert label.startswith("torchvision resnet50")
    assert reference_name("resnetrs350_i320") == ("timm", "resnetrs350")  # same architecture, other resolution
    with pytest.raises(ValueError, match="no reference implementation"):
        reference_name("resnetrs3d50")
    assert main(["benchmark", "backbone", "resnet3d50", "--rounds", "1"]) == 2  # one line, no traceback


def test_flops_follow_the_table2_convention_and_train_is_about_three_forwards() -> None:
    from rs_transfer.backbones import create_model

    model = create_model("resnet50")
    fwd = step_flops(model, 224, "infer", torch.device("cpu"))
    assert fwd == pytest.approx(8.2e9, rel=0.02)  # torchvision's 4.1 GMACs, multiply-add = 2
    train = step_flops(model, 224, "train", torch.device("cpu"))
    assert 2.5 < train / fwd < 3.1  # backward ~ 2x forward (the stem conv needs no input gradient)


def test_peak_table_and_mfu_arithmetic() -> None:
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA L40S") == 362.0 and peak_bf16_tflops("NVIDIA L4") == 121.0
    assert peak_bf16_tflops("NVIDIA A10G") is None and peak_bf16_tflops("Tesla T4") is None
    assert peak_bf16_tflops(None) is None
    r = BenchResult("resnet50", "train", "compile", 2000.0, 1000.0, 1.0, 1.0, "ref", 24.6e9, 989.0)
    assert r.tflops(r.ours_per_s) == pytest.approx(49.2) and r.mfu(r.ours_per_s) == pytest.approx(49.2 / 989)
    assert "MFU" in format_results([r]) and "5.0%" in format_results([r])
    cpu = BenchResult("resnet50", "infer", "fp32", 10.0, 10.0, None, None, "ref", 8.2e9, None)
    assert cpu.mfu(10.0) is None and "ours MFU" not in format_results([cpu])


def test_cli_benchmark_small(capsys) -> None:
    assert main(["benchmark", "backbone", "resnet50", "--batch", "2", "--resolution", "32", "--rounds", "1",
                 "--mode", "infer"]) == 0
    out = capsys.readouterr().out
    assert "resnet50       infer  fp32" in out and "torchvision resnet50" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["fp32", "bf16-cl", "compile"])
def test_cuda_variants_run_and_report_mfu(variant: str) -> None:
    r = benchmark("resnetrs50", batch=8, resolution=128, mode="train", rounds=2, iters=2, device="cuda",
                  variant=variant)
    assert r.ours_per_s > 0 and r.ref_per_s > 0 and r.ours_peak_mib and r.ref_peak_mib
    name = torch.cuda.get_device_name()
    if peak_bf16_tflops(name) is not None:
        assert 0 < r.mfu(r.ours_per_s) < 1
