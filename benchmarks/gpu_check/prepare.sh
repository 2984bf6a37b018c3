#!/usr/bin/env bash
# Fetch, on a machine with PyPI, what benchmarks/gpu_check.sh installs on an offline GPU machine:
# pycuda's sdist (built there with its nvcc) and the pure-Python packages pycuda needs that such a
# machine may lack (pytools, platformdirs, mako, siphash24 for pytools; about 2.5 MB in all), into
# benchmarks/gpu_check/wheels/ (git-ignored: never committed). PYTHON_VERSION: the GPU machine's
# Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
rm -rf wheels && mkdir -p wheels  # one version of each, for one Python
pip download -q --no-deps --no-binary=:all: --no-build-isolation -d wheels "pycuda==2026.1"
pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d wheels pytools platformdirs mako siphash24
ls -l wheels
du -sh wheels
