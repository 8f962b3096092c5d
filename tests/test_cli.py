"""The command line as a person uses it: help, listings, inspect, one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rs_transfer.cli import main


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "inspect", "weights"):
        assert command in out


def test_list_models_and_weights(capsys) -> None:
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "resnetrs420" in out and "resnet152" in out
    assert main(["list", "weights"]) == 0
    out = capsys.readouterr().out
    assert "simclrv2-r152-1x-sk0" in out and "unit-range" in out


def test_inspect_reports_params_flops_and_load(tmp_path, capsys) -> None:
    from rs_transfer import create_model

    torch.save({"resnet": {}, "head": {}}, tmp_path / "empty.pth")
    torch.save(create_model("resnetrs50").state_dict(), tmp_path / "rs50.pth")
    assert main(["inspect", "resnetrs50", "--weights", str(tmp_path / "rs50.pth")]) == 0
    out = capsys.readouterr().out
    assert "35.69M" in out  # timm's count (Table 2 prints 36M)
    assert "FLOPs @ 3x160x160: 4.56B" in out  # Table 2: 4.6B at 160 (multiply-add = 2 FLOPs)
    assert "layer4 2048ch /32" in out and "loaded 402" in out and "imagenet" in out


def test_bad_input_is_one_line_without_traceback(tmp_path) -> None:
    cmd = [sys.executable, "-m", "rs_transfer.cli"]
    res = subprocess.run(cmd + ["inspect", "resnetrs5"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Closest: resnetrs50" in res.stderr and "Traceback" not in res.stderr
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    res = subprocess.run(cmd + ["inspect", "resnet50", "--weights", str(tmp_path / "bad.pth")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.pth does not fit" in res.stderr and "mismatched (1): conv1.weight" in res.stderr
