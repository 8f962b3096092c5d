"""tools/gpu_check.sh before any GPU: without CUDA every line is ``skipped: no CUDA``; the harness keeps going after
a crash, says so loudly and exits non-zero; the time budget drops checks; the issue-26 target figures and the MFU
arithmetic against hand-computed examples; ``--cpu-smoke`` runs the checks that have a CPU form for real."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rs_transfer.bench.gpu_check import all_checks, main
from rs_transfer.bench.harness import Check, Context, Outcome, Target, failed, format_table, run_all, targets

REPO = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA table")


@no_cuda
def test_without_cuda_every_line_is_skipped_no_cuda(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "RS_PYTHON": sys.executable, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = [c.key for c in all_checks()]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["key"] for c in data["checks"]] == keys and data["failed"] == 0 and data["cuda"] is False
    assert all(c["status"] == "skipped" and c["note"] == "no CUDA" for c in data["checks"])
    table = (tmp_path / "table.txt").read_text()
    assert table in proc.stdout                                   # the table printed is the table written
    rows = [ln for ln in table.splitlines() if "skipped: no CUDA" in ln]
    assert len(rows) == len(keys)
    assert f"0 passed, 0 failed, {len(keys)} skipped" in table
    assert table.count("info (issue 26 target)") == 4 and "no figure (its check did not run)" in table


def test_the_checks_cover_what_issue_26_lists() -> None:
    keys = {c.key for c in all_checks()}
    for task in ("cifar100", "voc-det", "voc-seg", "ade20k", "nyu-depth", "imagenet", "kinetics400"):
        assert f"run-{task}" in keys
    assert {"run-compile", "run-decode-device", "nccl", "preempt", "train-input", "video-input"} <= keys
    assert {f"bench-{m}-{v}" for m in ("resnetrs50", "resnetrs152") for v in ("fp32", "bf16-cl", "compile")} <= keys
    assert [c.key for c in all_checks()][-1] == "bench-resnetrs50-compile"   # the first dropped when time runs out


def _ctx(tmp_path: Path, budget: float = 60.0) -> Context:
    import time

    return Context(out=tmp_path, python=sys.executable, env={"PATH": "/usr/bin:/bin"},
                   deadline=time.monotonic() + budget, cuda=True, gpus=1, device_name="test")


def _shell(code: str):
    def run(ctx: Context) -> Outcome:
        p = ctx.command("t", [ctx.python, "-c", code], cap=30)
        return failed(p) if p.rc else Outcome("pass", p.text.splitlines()[-1])
    return run


def test_a_crash_is_loud_and_the_rest_still_run(tmp_path: Path, capsys) -> None:
    checks = [Check("crash", "a check that crashes", _shell("raise RuntimeError('boom in the kernel')")),
              Check("ok", "a check that passes", _shell("print('figure 42')")),
              Check("bug", "a check with a bug of ours", lambda ctx: 1 / 0)]
    out = run_all(checks, _ctx(tmp_path))
    assert [o.status for o in out.values()] == ["fail", "pass", "fail"]
    assert "exit 1: RuntimeError: boom in the kernel" in out["crash"].note and out["ok"].figure == "figure 42"
    assert out["bug"].note.startswith("ZeroDivisionError")
    err = capsys.readouterr().err
    assert "FAIL: a check that crashes" in err and "boom in the kernel" in err and "!!!!" in err
    table = format_table(checks, out, [], "header")
    assert "1 passed, 2 failed, 0 skipped" in table and "figure 42" in table


def test_the_budget_stops_a_check_and_skips_the_next(tmp_path: Path) -> None:
    checks = [Check("slow", "runs past the budget", _shell("import time; time.sleep(60)")),
              Check("late", "would start after it", _shell("print(1)"))]
    out = run_all(checks, _ctx(tmp_path, budget=6.0))
    assert out["slow"].status == "skipped" and "time budget ran out" in out["slow"].note
    assert out["late"].status == "skipped" and out["late"].note == "time budget"


def test_target_figures_say_by_how_much_they_fall_short() -> None:
    assert Target("r", 1.05, 1.15, "x").figure() == "1.05x vs >= 1.15x: short by 0.10x (91% of it)"
    assert Target("m", 0.30, 0.45, "%").figure() == "30.0% vs >= 45.0%: short by 15.0 points (67% of it)"
    assert Target("k", 4.4, 3.0, "x").figure() == "4.40x vs >= 3.00x: met"
    assert Target("n", None, 3.0, "x").figure() == "no figure (its check did not run)"


def test_targets_read_the_checks_figures() -> None:
    def ok(**figs) -> Outcome:
        return Outcome("pass", figures=figs)

    outcomes = {"bench-resnetrs152-bf16-cl": ok(ratio=1.1, ours_mfu=0.30, ours_per_s=1000.0),
                "bench-resnetrs152-compile": ok(ratio=1.2, ours_mfu=0.40, ours_per_s=1250.0),
                "train-input": ok(images_per_s={"torchvision.io": 900.0, "decode=device (cuda)": 5000.0}),
                "video-input": ok(clips_per_s={"ours": 30.0, "pytorchvideo": 12.0, "ratio": 2.5})}
    t = targets(outcomes)
    assert [x.value for x in t] == [1.2, 0.40, 4.0, 2.5]           # compile is the headline; 5000 / 1250
    assert "compile" in t[0].what and "met" in t[2].figure() and "short by 0.50x" in t[3].figure()
    outcomes["bench-resnetrs152-compile"] = Outcome("fail", note="inductor crashed")
    t = targets(outcomes)
    assert t[0].value == 1.1 and "bf16-cl" in t[0].what and t[2].value == 5.0   # falls back, says which


def test_mfu_arithmetic_by_hand() -> None:
    """resnet50 at 224 px: 4.1 GMACs forward = 8.2 GFLOP, a train step ~3x = 24.6 GFLOP per image; 2000 images/s
    = 49.2 TFLOP/s; on an H100 SXM (989 TFLOP/s dense bf16) MFU = 49.2 / 989 = 4.97 %."""
    from rs_transfer.bench.backbone import BenchResult, peak_bf16_tflops, results_to_dict

    r = BenchResult("resnet50", "train", "compile", 2000.0, 1600.0, 1.0, 1.0, "timm", 24.6e9,
                    peak_bf16_tflops("NVIDIA H100 80GB HBM3"))
    d = results_to_dict(r)
    assert d["ours_tflops"] == pytest.approx(49.2) and d["ref_tflops"] == pytest.approx(39.36)
    assert d["ours_mfu"] == pytest.approx(0.04975, abs=1e-5) and d["ratio"] == pytest.approx(1.25)
    assert peak_bf16_tflops("NVIDIA H200") == 989.0 and peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    json.dumps(d)   # plain JSON figures


def test_benchmark_json_option(tmp_path: Path) -> None:
    from rs_transfer.cli import main as cli

    out = tmp_path / "b.json"
    assert cli(["benchmark", "backbone", "resnet50", "--batch", "2", "--resolution", "32", "--rounds", "1",
                "--mode", "infer", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    (r,) = d["results"]
    assert d["device"] == "cpu" and r["mode"] == "infer" and r["variant"] == "fp32" and r["ours_per_s"] > 0
    assert r["ours_tflops"] == pytest.approx(r["flops_per_image"] * r["ours_per_s"] / 1e12)
    assert r["ours_mfu"] is None                                 # no peak for a CPU


@no_cuda
def test_budget_zero_skips_even_the_cpu_smoke_checks(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--cpu-smoke", "--budget", "0"]) == 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    notes = {c["key"]: c["note"] for c in data["checks"]}
    assert notes["preempt"] == "time budget" and notes["nccl"] == "no CUDA"


@pytest.mark.slow
@no_cuda
def test_cpu_smoke_runs_the_cpu_forms_for_real(tmp_path: Path) -> None:
    """The preemption check (a real SIGTERM and the printed --resume command), a backbone benchmark and the train
    input benchmark with its synthetic JPEGs, through the script, with tiny models."""
    only = ["preempt", "bench-resnetrs50-fp32", "train-input"]
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--out", str(tmp_path), "--cpu-smoke",
                           "--only", *only], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "RS_PYTHON": sys.executable, "HOME": str(tmp_path),
                               "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = {c["key"]: c for c in json.loads((tmp_path / "gpu_check.json").read_text())["checks"]}
    assert [data[k]["status"] for k in only] == ["pass"] * 3
    pre = data["preempt"]
    assert pre["figures"]["resumed_from"] >= 1 and pre["figure"].startswith("SIGTERM after iteration ")
    assert data["bench-resnetrs50-fp32"]["figures"]["ratio"] > 0
    assert "decode=device (cpu)" in data["train-input"]["figures"]["images_per_s"]
    assert (tmp_path / "logs" / "preempt-2-resume.log").is_file()
