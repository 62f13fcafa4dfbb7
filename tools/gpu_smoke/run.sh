#!/usr/bin/env bash
# The GPU smoke test in one go: build pycuda offline (once) and run the project's pycuda loop for real.
#   tools/gpu_smoke/run.sh [--iterations N] [--batch B] [--device D] [--json PATH]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv="$repo/.cache/gpu-smoke-venv"
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import pycuda.driver" 2>/dev/null || bash "$here/build_pycuda.sh" "$venv"
cd "$repo"
exec "$venv/bin/python" "$here/smoke.py" "$@"
