#!/usr/bin/env bash
# mypy over the whole distribution as it is imported: edgeseg with its mapped subpackages
# (pyproject's package-dir: edge/ -> edgeseg.edge, export/, calibration/), which mypy cannot
# follow in the source tree, so a temporary tree of links puts them where the imports say.
# Run from the venv tests/run.sh makes; exit 1 on any error.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
cp -rs "$repo/edgeseg" "$tree/edgeseg"
for sub in edge export calibration; do ln -s "$repo/$sub" "$tree/edgeseg/$sub"; done
cd "$tree"
python -m mypy --config-file "$repo/pyproject.toml" -p edgeseg
