#!/usr/bin/env bash
# The one prepared GPU check (issue 26): every CUDA path of rs-transfer in one command, ONE table at the end.
#
#   bash tools/setup.sh && bash tools/gpu_check.sh [--out DIR] [--budget SECONDS] [--only KEY ...] [--list]
#
# Needs nothing but the README's set-up (.venv, or RS_PYTHON / the python on PATH that has rs_transfer installed);
# it works with whatever torch that environment has (it only asks torch what the machine has). At most --budget
# seconds (default 480 = 8 minutes) of checks: on a slower GPU the checks that would start after the budget is spent
# are reported "skipped: time budget", last ones first (resnetrs50's compile, then its bf16/fp32 timings, then
# video-input). Without CUDA every line is "skipped: no CUDA" (--cpu-smoke runs the few with a tiny CPU form).
# Logs, run folders, gpu_check.json and table.txt go to --out (default ./gpu-check-<time>). Exit status 1 if any
# check failed; the issue's target figures are printed as information, never as failures.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${RS_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
if ! "$PY" -c "import rs_transfer" 2>/dev/null; then
  echo "gpu_check: $PY cannot import rs_transfer; run 'bash tools/setup.sh' first (or set RS_PYTHON)" >&2
  exit 2
fi
exec "$PY" -m rs_transfer.bench.gpu_check --python "$PY" "$@"
