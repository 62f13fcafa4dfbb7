#!/usr/bin/env bash
# Build the real pycuda (tools/gpu_smoke's sdist) into DIR so that it imports on a machine without a
# GPU: a stub libcuda.so.1 whose every entry point fails with CUDA_ERROR_NO_DEVICE stands in for
# the driver. The result is an oracle for pycuda's names (tests/test_fakes_match_real.py), never
# for behaviour. Needs the CUDA toolkit headers and nvcc on PATH (or CUDA_ROOT), g++, and about
# five minutes.
#   tools/pycuda_oracle.sh .cache/pycuda-oracle
#   RESNET_DEPLOY_PYCUDA_ORACLE=.cache/pycuda-oracle python -m pytest tests/test_fakes_match_real.py
set -euo pipefail
dir=${1:?usage: pycuda_oracle.sh DIR}
mkdir -p "$dir/lib"
dir=$(cd "$dir" && pwd)
# Linking needs a libcuda.so; the extension's undefined symbols are resolved at import, from the stub below.
echo 'int cuInit(unsigned int flags) { return 100; }' > "$dir/lib/link.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/lib/libcuda.so" "$dir/lib/link.c"
CUDADRV_LIB_DIR="$dir/lib" bash "$(dirname "$0")/gpu_smoke/build_pycuda.sh" "$dir/venv"
extension=$(ls "$dir"/venv/lib/python3*/site-packages/pycuda/_driver*.so)
{
  echo "/* every driver entry point fails with CUDA_ERROR_NO_DEVICE (100): a machine without a GPU */"
  nm -D --undefined-only "$extension" | awk '{print $2}' | sed 's/@.*//' | grep -E '^cu' | grep -v '^cuGetError' \
    | sort -u | sed 's/.*/int &(void) { return 100; }/'
  echo 'int cuGetErrorName(int e, const char **s) { *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
  echo 'int cuGetErrorString(int e, const char **s) { *s = "no CUDA-capable device is detected"; return 0; }'
} > "$dir/lib/driver.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/lib/libcuda.so.1" "$dir/lib/driver.c"
rm "$dir/lib/libcuda.so"
LD_LIBRARY_PATH="$dir/lib" "$dir/venv/bin/python" -c \
  "import pycuda, pycuda.driver; print('oracle ready: pycuda', pycuda.VERSION_TEXT)"
