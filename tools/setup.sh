#!/usr/bin/env bash
# Create (or reuse) the rs-transfer environment and install the project into it.
#
#   bash tools/setup.sh            -> ./.venv (a link to a cached environment keyed by the lock and ENV_VERSION)
#
# Why it looks like this (DEVELOPERS.md, ../shared/STACK.md):
# - pip runs with --isolated: a machine-local pip config may add a CPU-only torch wheel that the registry's
#   torchvision is not linked against (torchvision::nms then fails at import).
# - mmcv 2.1.0 must be compiled against the installed torch: setuptools<82 (it imports pkg_resources),
#   --no-build-isolation (an isolated build has no torch and silently yields a wheel WITHOUT ops) and
#   --no-cache-dir (never reuse such a wheel from pip's cache). About 19 minutes on 2 cores.
# - The environment lives in a cache folder named by the hash of requirements/lock.txt, ENV_VERSION, the Python
#   version and the machine, so a fresh clone on a machine that built it once reuses it; a changed lock builds a
#   new one. Editing this script does NOT change the key: bump ENV_VERSION when (and only when) what the recipe
#   installs or how it builds it changes.
# - The compiled mmcv wheel is cached next to the environments (<cache>/../wheels/<mmcv, torch, Python, CUDA>/), so
#   a lock change that keeps torch and mmcv installs that wheel in seconds instead of compiling for ~19 minutes.
#   It is saved only after its compiled ops imported, and dropped if a later environment finds it broken.
#
# Environment: PYTHON (default python3), MAX_JOBS (compile jobs, default 2), RS_TRANSFER_ENV_CACHE (default
# ~/.cache/rs-transfer/envs), RS_TRANSFER_WHEEL_CACHE (default: "wheels" next to the env cache),
# RS_TRANSFER_SKIP_PROJECT=1 (build/reuse the environment only; do not link .venv or install this checkout).
set -euo pipefail

# The environment recipe's version: part of the cache key. Bump it when the recipe below changes what gets
# installed or how (not for comments, messages or the caching logic).
ENV_VERSION=1
# Environments built before ENV_VERSION existed were keyed by sha256(lock.txt + this script). Reuse one for the
# same lock and recipe: "<sha256(lock.txt) prefix>:<old key>". Remove entries once their lock is gone.
LEGACY_ENVS="c3611bb304f9bb37:6c0874501013f0d4"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/requirements/lock.txt"
python="${PYTHON:-python3}"
cache="${RS_TRANSFER_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rs-transfer/envs}"
wheels="${RS_TRANSFER_WHEEL_CACHE:-$(dirname "$cache")/wheels}"
phase=0
phases=6

say() { echo "[setup] $*"; }
step() { phase=$((phase + 1)); echo "[setup $phase/$phases, ${SECONDS}s] $*"; }
pip() { "$env/bin/python" -m pip --isolated --disable-pip-version-check "$@"; }
pin() {
    local line
    line="$(grep -iE "^$1==" "$lock" | head -n1)"
    [ -n "$line" ] || { echo "[setup] error: $1 is not pinned in $lock" >&2; exit 1; }
    echo "$line"
}

env_key() {
    local pyver
    pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    { cat "$lock"; echo "ENV_VERSION=$ENV_VERSION python=$pyver machine=$(uname -m)"; } | sha256sum | cut -c1-16
}

# A complete environment built by the previous key scheme for this very lock (and the same Python), or nothing.
legacy_env() {
    local lockhash entry
    lockhash="$(sha256sum "$lock" | cut -c1-16)"
    for entry in $LEGACY_ENVS; do
        if [ "${entry%%:*}" = "$lockhash" ] && [ -f "$cache/${entry#*:}/.complete" ] && \
           [ "$("$cache/${entry#*:}/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" = \
             "$("$python" -c 'import sys; print(sys.version_info[:2])')" ]; then
            echo "${entry#*:}"
            return
        fi
    done
}

# What a compiled wheel of $1 (a "name==version" pin) depends on: the installed torch (version incl. its CUDA
# build), the Python ABI, whether the ops are compiled for CUDA (mmcv does when CUDA is visible or FORCE_CUDA=1)
# and for which GPU architectures, and the machine.
wheel_key() {
    "$env/bin/python" - "$1" <<'PY'
import os, platform, sys
import torch
name, version = sys.argv[1].split("==")
cuda = (torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1") and torch.version.cuda
if cuda:
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or ";".join(sorted(
        {"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})) or "default"
    flavour = "cu%s-sm%s" % (torch.version.cuda.replace(".", ""), "_".join(arch.replace(";", " ").split()))
else:
    flavour = "cpu"
print(f"{name.lower()}{version}-torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}-{flavour}-"
      f"{platform.machine()}")
PY
}

# Install the compiled package pinned as $1: the cached wheel when there is one, else build the wheel (no build
# isolation: it compiles against the installed torch) and install it; the caller saves it with save_wheel once
# its ops were checked. Sets built_wheel (to save) or cached_wheel (to drop if broken).
built_wheel=""
built_key=""
cached_wheel=""
install_compiled() {
    local req="$1" key dir tmp
    key="$(wheel_key "$req")"
    dir="$wheels/$key"
    cached_wheel="$(ls "$dir"/*.whl 2>/dev/null | head -n1 || true)"
    if [ -n "$cached_wheel" ]; then
        say "  using the cached wheel $cached_wheel"
        pip install -q --no-deps "$cached_wheel"
        return
    fi
    say "  compiling $req (no cached wheel for $key; ~19 min on 2 cores), then caching it in $dir"
    mkdir -p "$wheels"
    tmp="$(mktemp -d "$wheels/.build-XXXXXX")"
    chmod 755 "$tmp"  # mktemp makes it 0700; the cached wheel is for every user of this cache
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        pip wheel -q --no-deps --no-cache-dir --no-build-isolation -w "$tmp" "$req"
    built_wheel="$(ls "$tmp"/*.whl | head -n1)"
    pip install -q --no-deps "$built_wheel"
    built_key="$key"
}

save_wheel() {  # after the ops check: move the built wheel into the cache (rename = atomic for concurrent setups)
    [ -n "$built_wheel" ] || return 0
    local dir="$wheels/$built_key" tmp
    tmp="$(dirname "$built_wheel")"
    if [ ! -d "$dir" ] && mv "$tmp" "$dir" 2>/dev/null; then
        say "  cached $(basename "$built_wheel") in $dir"
    fi
    rm -rf "$tmp"
}

build_env() {
    step "creating the virtual environment $env with $("$python" --version 2>&1)"
    rm -rf "$env"
    "$python" -m venv "$env"
    pip install -q --upgrade "$(pin pip)"
    step "installing $(pin torch) and $(pin torchvision)"
    pip install -q "$(pin torch)" "$(pin torchvision)" -c "$lock"
    step "installing the build tools $(pin setuptools) $(pin wheel)"
    pip install -q "$(pin setuptools)" "$(pin wheel)"
    step "installing $(pin mmcv) with compiled ops"
    install_compiled "$(pin mmcv)"
    step "installing the rest of requirements/lock.txt"
    pip install -q -r "$lock"
    step "checking the compiled ops"
    # Fail here, not in the first test, if mmcv was built without its compiled ops.
    if ! "$env/bin/python" -c "from mmcv.ops import nms, RoIAlign; import mmdet, mmseg, torchvision; \
torchvision.ops.nms" >/dev/null; then
        if [ -n "$cached_wheel" ]; then
            rm -f "$cached_wheel"
            echo "[setup] error: the cached wheel $cached_wheel has no working ops; removed it, run again" >&2
        fi
        exit 1
    fi
    save_wheel
    touch "$env/.complete"
}

main() {
    key="$(env_key)"
    env="$cache/$key"
    mkdir -p "$cache"
    # Two set-ups of the same key wait for each other instead of colliding (a read-only cache needs no lock).
    if command -v flock >/dev/null && [ -w "$cache" ]; then
        exec 9>"$cache/.$key.lock"
        flock 9
    fi
    old="$(legacy_env)"
    if [ ! -f "$env/.complete" ] && [ -n "$old" ]; then
        say "the environment $cache/$old was built for this lock by the previous key scheme: reusing it as $key"
        if [ -w "$cache" ]; then
            rm -rf "$env"
            ln -sfn "$old" "$env"
        else
            env="$cache/$old"
        fi
    fi
    if [ ! -f "$env/.complete" ]; then
        say "building environment $env (first time: ~20 min, most of it compiling mmcv ops; minutes when the mmcv"
        say "wheel for this torch is cached in $wheels)"
        build_env
        say "environment ready after ${SECONDS}s"
    else
        say "reusing environment $env"
    fi
    if [ "${RS_TRANSFER_SKIP_PROJECT:-0}" = 1 ]; then
        say "ready: $env (RS_TRANSFER_SKIP_PROJECT=1: .venv and the project left alone)"
        return
    fi
    ln -sfn "$env" "$root/.venv"
    # The project itself: editable, so this checkout is what runs (cheap; redone on every call).
    say "installing this checkout (editable)"
    pip install -q --no-deps --no-build-isolation -e "$root"
    say "ready: $root/.venv/bin/rs-transfer"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced (tests source it to exercise the functions)
    main "$@"
fi
