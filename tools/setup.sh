#!/usr/bin/env bash
# Create (or reuse) the rs-transfer environment and install the project into it.
#
#   bash tools/setup.sh            -> ./.venv (a link to a cached environment keyed by the lock's hash)
#
# Why it looks like this (DEVELOPERS.md, ../shared/STACK.md):
# - pip runs with --isolated: a machine-local pip config may add a CPU-only torch wheel that the registry's
#   torchvision is not linked against (torchvision::nms then fails at import).
# - mmcv 2.1.0 must be compiled against the installed torch: setuptools<82 (it imports pkg_resources),
#   --no-build-isolation (an isolated build has no torch and silently yields a wheel WITHOUT ops) and
#   --no-cache-dir (never reuse such a wheel). About 8 minutes on 2 cores.
# - The environment lives in a cache folder named by the hash of requirements/lock.txt and this script, so a
#   fresh clone on a machine that built it once reuses it; a changed lock builds a new one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/requirements/lock.txt"
python="${PYTHON:-python3}"
key="$(cat "$lock" "$root/tools/setup.sh" | sha256sum | cut -c1-16)"
cache="${RS_TRANSFER_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rs-transfer/envs}"
env="$cache/$key"
pip() { "$env/bin/python" -m pip --isolated --disable-pip-version-check "$@"; }
pin() { grep -iE "^$1==" "$lock" | head -n1; }

if [ ! -f "$env/.complete" ]; then
    echo "[setup] building environment $env (first time: ~10 min, most of it compiling mmcv ops)"
    rm -rf "$env"
    mkdir -p "$cache"
    "$python" -m venv "$env"
    pip install -q --upgrade "$(pin pip)"
    pip install -q "$(pin torch)" "$(pin torchvision)" -c "$lock"
    pip install -q "$(pin setuptools)" "$(pin wheel)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" pip install -q --no-cache-dir --no-build-isolation "$(pin mmcv)"
    pip install -q -r "$lock"
    # Fail here, not in the first test, if mmcv was built without its compiled ops.
    "$env/bin/python" -c "from mmcv.ops import nms, RoIAlign; import mmdet, mmseg, torchvision; \
torchvision.ops.nms" >/dev/null
    touch "$env/.complete"
else
    echo "[setup] reusing environment $env"
fi
ln -sfn "$env" "$root/.venv"
# The project itself: editable, so this checkout is what runs (cheap; redone on every call).
pip install -q --no-deps --no-build-isolation -e "$root"
echo "[setup] ready: $root/.venv/bin/rs-transfer"
