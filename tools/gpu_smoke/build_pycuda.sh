#!/usr/bin/env bash
# Build pycuda from the sdist kept beside this script, with no network, into a virtual environment
# that uses the system's numpy, pip and setuptools (>= 70.1). Needs a CUDA toolkit (nvcc, cuda.h,
# libcuda.so from the driver or the toolkit's lib64/stubs), g++ and Python headers.
#   tools/gpu_smoke/build_pycuda.sh [VENV]            (default VENV: .cache/gpu-smoke-venv)
#   CUDA_ROOT=/usr/local/cuda-12.6 tools/gpu_smoke/build_pycuda.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${1:-$repo/.cache/gpu-smoke-venv}
sdist="$here/pycuda-2025.1.2.tar.gz"
if [ -z "${CUDA_ROOT:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_ROOT=/usr/local/cuda
  else CUDA_ROOT=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); fi
fi
[ -f "$CUDA_ROOT/include/cuda.h" ] || { echo "no cuda.h under CUDA_ROOT=$CUDA_ROOT; set CUDA_ROOT" >&2; exit 2; }
# No pip or setuptools of its own: the system's (setuptools >= 70.1 builds wheels without the `wheel` package).
python3 -m venv --system-site-packages --without-pip "$venv"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -xzf "$sdist" -C "$build"
cd "$build/pycuda-2025.1.2"
# No CURAND: the smoke test does not use it, and minimal toolkits (pip wheels, containers) lack curand.h.
configure=(--cuda-root="$CUDA_ROOT" --no-cuda-enable-curand)
# Where libcuda.so is not in CUDA_ROOT/lib64 or its stubs (e.g. Jetson: /usr/lib/aarch64-linux-gnu/tegra).
[ -n "${CUDADRV_LIB_DIR:-}" ] && configure+=(--cudadrv-lib-dir="$CUDADRV_LIB_DIR")
"$venv/bin/python" configure.py "${configure[@]}"
"$venv/bin/python" -m pip install --no-index --no-deps --no-build-isolation .
cd "$repo"
echo "pycuda built into $venv: $("$venv/bin/python" -c 'import pycuda; print(pycuda.VERSION_TEXT)')"
