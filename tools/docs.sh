#!/usr/bin/env bash
# Build the documentation site (docs/, mkdocs.yml) into site/ with `mkdocs build --strict`: a broken
# link or anchor, a page missing from the navigation or a CLI reference that fails to generate fails.
# Needs the docs extra: pip install -e ".[docs]".
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1
exec python -m mkdocs build --strict --clean "$@"
