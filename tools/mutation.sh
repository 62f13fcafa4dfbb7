#!/usr/bin/env bash
# Mutation testing of the modules that decide correctness, one module at a time with the tests that cover
# it (mutmut 3; needs the dev extra). Prints generated / killed / survived / timeout per module and rebuilds
# benchmarks/results/mutation.md. Slow (see that file for the times): not run in CI.
#   bash tools/mutation.sh                      # every module in tools/mutation.py's MODULES
#   bash tools/mutation.sh quantize.cache parity   # chosen modules (slugs or paths)
#   bash tools/mutation.sh --recheck parity     # the last run's survivors against the current tests
#   bash tools/mutation.sh --report-only        # rebuild mutation.md from benchmarks/results/mutation/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tools/mutation.py "$@"
