#!/usr/bin/env bash
# Fetch, on a machine with PyPI, what benchmarks/gpu_check.sh installs on an offline GPU machine,
# into benchmarks/gpu_check/wheels/ (git-ignored: carried to the machine, never committed; ~6 MB):
# pycuda's sdist (built there with its nvcc) and wheels for the GPU machine's Python of what such a
# machine lacks: pycuda's pure-Python needs (pytools, platformdirs, mako, siphash24), the test and
# CLI stack (pytest, typer, rich and their dependencies) and the build backend edgeseg's install
# needs (setuptools < 70.1 with wheel). PYTHON_VERSION: the GPU machine's Python (default 3.12);
# siphash24 is a binary wheel, so the set is for that Python minor only.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
rm -rf wheels && mkdir -p wheels  # one version of each, for one Python
pip download -q --no-deps --no-binary=:all: --no-build-isolation -d wheels "pycuda==2026.1"
pip download -q --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d wheels pytools platformdirs mako siphash24 pytest typer rich wheel "setuptools<70.1"
ls -l wheels
du -sh wheels
