"""tools/setup.sh without a 20-minute compile: the environment key ignores edits of the script (only the lock and
ENV_VERSION count), an environment of the previous key scheme is reused, and the compiled-wheel cache builds once
and then installs from the cache (a tiny local package stands in for mmcv)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _checkout(tmp_path: Path, script_text: str | None = None) -> Path:
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    (root / "requirements").mkdir()
    shutil.copy(REPO / "requirements" / "lock.txt", root / "requirements" / "lock.txt")
    (root / "tools" / "setup.sh").write_text(script_text if script_text is not None else SCRIPT.read_text())
    return root


def _bash(root: Path, snippet: str, **env: str) -> str:
    """Source the checkout's setup.sh (defines its functions, runs nothing) and run ``snippet``."""
    proc = subprocess.run(["bash", "-c", f'source "{root}/tools/setup.sh"\n{snippet}'], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable, **env}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_env_key_ignores_script_edits_but_not_env_version(tmp_path: Path) -> None:
    text = SCRIPT.read_text()
    key = _bash(_checkout(tmp_path / "a"), "env_key").strip()
    edited = text.replace("set -euo pipefail", "set -euo pipefail\n# a comment, a new message...", 1)
    assert _bash(_checkout(tmp_path / "b", edited), "env_key").strip() == key
    bumped = text.replace("\nENV_VERSION=1\n", "\nENV_VERSION=2\n")
    assert bumped != text
    assert _bash(_checkout(tmp_path / "c", bumped), "env_key").strip() != key


def test_environment_of_the_previous_key_scheme_is_reused(tmp_path: Path) -> None:
    """An entry of LEGACY_ENVS for THIS lock is reused (the script's own entries name locks of the past: a changed
    lock builds a new environment, so the test writes an entry for the lock it copies)."""
    import hashlib

    lockhash = hashlib.sha256((REPO / "requirements" / "lock.txt").read_bytes()).hexdigest()[:16]
    legacy = "0123456789abcdef"
    text = SCRIPT.read_text()
    start = text.index('\nLEGACY_ENVS="') + 1
    end = text.index('"', text.index('"', start) + 1) + 1
    root = _checkout(tmp_path, text[:start] + f'LEGACY_ENVS="{lockhash}:{legacy}"' + text[end:])
    cache = tmp_path / "envs"
    assert _bash(root, 'echo "$LEGACY_ENVS"').split() == [f"{lockhash}:{legacy}"]
    old = cache / legacy
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "python").symlink_to(sys.executable)   # stands in for the env's interpreter (same Python)
    (old / ".complete").touch()
    out = subprocess.run(["bash", str(root / "tools" / "setup.sh")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable, "RS_TRANSFER_ENV_CACHE": str(cache),
                              "RS_TRANSFER_SKIP_PROJECT": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    key = _bash(root, "env_key").strip()
    assert "previous key scheme: reusing it" in out.stdout and "building" not in out.stdout
    assert os.readlink(cache / key) == legacy and not (root / ".venv").exists()


@pytest.mark.slow
def test_compiled_wheel_is_built_once_then_installed_from_the_cache(tmp_path: Path) -> None:
    pkg = tmp_path / "fakeops"
    pkg.mkdir()
    (pkg / "fakeops.py").write_text("X = 1\n")
    (pkg / "setup.py").write_text(
        "from setuptools import setup\n"
        f"open({str(tmp_path / 'builds.log')!r}, 'a').write('build\\n')  # once per setup.py run\n"
        "setup(name='fakeops', version='0.1', py_modules=['fakeops'])\n")
    env = Path(sys.prefix)  # its pip and setuptools build the wheel; installs go to a private --target folder
    common = f"""
env={env}; wheels={tmp_path / 'wheels'}
wheel_key() {{ echo fakeops0.1-test; }}                   # the real key imports torch (tested below)
pip() {{ if [ "$1" = install ]; then shift; "$env/bin/python" -m pip --isolated --disable-pip-version-check \\
    install --target "$SITE" "$@"; else "$env/bin/python" -m pip --isolated --disable-pip-version-check "$@"; fi; }}
"""
    root = _checkout(tmp_path)
    log = tmp_path / "builds.log"
    out = _bash(root, common + f"SITE={tmp_path / 'site1'}; install_compiled {pkg}; save_wheel")
    assert "compiling" in out and "cached fakeops-0.1-py3-none-any.whl" in out
    builds = log.read_text().count("build")
    assert builds >= 1
    assert [p.name for p in (tmp_path / "wheels" / "fakeops0.1-test").iterdir()] == ["fakeops-0.1-py3-none-any.whl"]
    assert not [p for p in (tmp_path / "wheels").iterdir() if p.name.startswith(".build")]  # no leftovers
    assert ((tmp_path / "wheels" / "fakeops0.1-test").stat().st_mode & 0o777) == 0o755  # readable by every user
    out = _bash(root, common + f"SITE={tmp_path / 'site2'}; install_compiled {pkg}; save_wheel")
    assert "using the cached wheel" in out and "compiling" not in out
    assert log.read_text().count("build") == builds  # nothing compiled the second time
    assert (tmp_path / "site1" / "fakeops.py").is_file() and (tmp_path / "site2" / "fakeops.py").is_file()


def test_wheel_key_names_mmcv_torch_python_and_cuda(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    key = _bash(_checkout(tmp_path), f'env={sys.prefix}; wheel_key "mmcv==2.1.0"').strip()
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert key.startswith(f"mmcv2.1.0-torch{torch.__version__}-{py}-")
    assert ("-cpu-" in key) == (not torch.cuda.is_available() and os.environ.get("FORCE_CUDA") != "1")
