"""Dataset pickles never run code: a crafted CIFAR file is refused by ``data check`` and ``run`` with one line, and
the command it carries never executes. Genuine files (every pickle protocol, numpy arrays, bytes keys) still load
exactly as ``pickle.load`` reads them."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rs_transfer.errors import UserError
from rs_transfer.tasks.safe_pickle import UnsafePickleError, load_data, loads_data


class _RunsCommand:
    """What an attacker pickles: unpickling calls ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plant(root: Path, split: str, marker: Path) -> None:
    """Replace ``split`` of a real mini CIFAR folder by a pickle that looks like CIFAR but touches ``marker``."""
    entry = {b"data": _RunsCommand(f"touch {marker}"), b"fine_labels": [0, 1], b"filenames": [b"a", b"b"]}
    (root / split).write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_genuine_data_pickles_load_as_pickle_does(protocol: int) -> None:
    entry = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"fine_labels": [3, 99],
             "filenames": ["x.png", b"y.png"], b"batch_label": b"training batch 1 of 1",
             b"label": np.int64(7), b"mean": np.float32(0.5), b"nested": ((1, 2.5), [None, True])}
    blob = pickle.dumps(entry, protocol=protocol)
    got = loads_data(blob)
    want = pickle.loads(blob, encoding="bytes")
    assert got.keys() == want.keys()
    np.testing.assert_array_equal(got[b"data"], want[b"data"])
    assert got[b"data"].dtype == np.uint8 and got[b"label"] == 7 and got[b"nested"] == ((1, 2.5), [None, True])


def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({b"data": _RunsCommand(f"touch {marker}")}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os|nt)\.system"):
        loads_data(blob)
    for evil in (pickle.dumps(eval, protocol=2), pickle.dumps(subprocess.Popen, protocol=4)):
        with pytest.raises(UnsafePickleError):
            loads_data(evil)
    assert not marker.exists()
    (tmp_path / "f").write_bytes(blob)
    with pytest.raises(UserError, match=r"f: refusing"):  # names the file; a UserError -> one CLI line
        load_data(tmp_path / "f")
    assert not marker.exists()


def test_crafted_cifar_is_refused_by_data_check_and_run(tmp_path: Path) -> None:
    from rs_transfer.tasks.cifar100 import check_data, make_mini

    root, genuine = make_mini(tmp_path / "data"), make_mini(tmp_path / "genuine")
    marker = tmp_path / "pwned"
    for split in ("meta", "train"):
        _plant(root, split, marker)
        report = check_data(root)
        assert not report.ok and "not a genuine CIFAR pickle" in report.problems[0], report.problems
        assert "system" in report.problems[0]
        (root / split).write_bytes((genuine / split).read_bytes())  # genuine again for the next split
    assert check_data(root).ok
    _plant(root, "test", marker)
    cmd = [sys.executable, "-m", "rs_transfer.cli"]
    for args in (["data", "check", "--task", "cifar100", "--data-root", str(root)],
                 ["run", "--task", "cifar100", "--backbone", "resnetrs50", "--data-root", str(root),
                  "--work-dir", str(tmp_path / "wd")]):
        res = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300)
        assert res.returncode != 0, res.stdout
        assert "Traceback" not in res.stderr, res.stderr
        assert "not a genuine CIFAR pickle" in res.stdout + res.stderr
        assert not marker.exists(), "the crafted pickle ran its command"
    assert not (tmp_path / "wd" / "results.json").exists()


def test_no_other_code_unpickles_user_data() -> None:
    """The audit as a guard: data is unpickled only through safe_pickle, and checkpoints only through the weights
    loader's ``torch_load`` (weights_only=True unless the user passes --trust)."""
    import re

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\bpickle\.(load|loads|Unpickler)\b|allow_pickle\s*=\s*True|(?<![.\w])eval\(|weights_only\s*=\s*False")
    allowed = {"tasks/safe_pickle.py", "rs_transfer/weights/formats.py"}
    offenders = []
    for folder in ("rs_transfer", "tasks", "video", "configs"):
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and rel not in allowed:
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders
