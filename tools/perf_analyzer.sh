#!/usr/bin/env bash
# Run NVIDIA's perf_analyzer (Triton's load generator) against a server, its arguments passed through.
# The binary ships in the tritonclient 2.41.0 wheel's bin/ (later wheels no longer carry it); it is
# installed once, pinned, into $PERF_ANALYZER_DIR (default .cache/perf-analyzer, git-ignored), apart from
# the serve extra's tritonclient. It needs libb64 (Debian's libb64-0d, installed with apt-get when
# missing and run as root) and libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel; no GPU is used).
#   tools/perf_analyzer.sh -m resnet18-w0.25 -u 127.0.0.1:8001 -i grpc --concurrency-range 16
#   tools/perf_analyzer.sh --install-only    # install and print the binary's path
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${PERF_ANALYZER_DIR:-$root/.cache/perf-analyzer}
binary="$dir/bin/perf_analyzer"
cudart="$dir/nvidia/cuda_runtime/lib"

if [[ ! -x "$binary" || ! -e "$cudart/libcudart.so.12" ]]; then
  python -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
    "tritonclient==2.41.0" "nvidia-cuda-runtime-cu12==12.4.127" >&2
fi
if ! /sbin/ldconfig -p | grep 'libb64\.so\.0d' >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get install -y -qq libb64-0d >&2 || { apt-get update -qq >&2 && apt-get install -y -qq libb64-0d >&2; }
  else
    echo "perf_analyzer.sh: libb64.so.0d is missing; install it (Debian/Ubuntu: apt-get install libb64-0d)" >&2
    exit 3
  fi
fi
if [[ "${1:-}" == "--install-only" ]]; then
  echo "$binary"
  exit 0
fi
export LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$binary" "$@"
