#!/usr/bin/env bash
# One command that sets up and runs edgeseg's tests on a fresh Debian 12 machine, as root, and
# again on a machine where it ran before (every step skips what is already there).
#
#   bash tests/run.sh              install what is missing, then the suite, then its
#                                  machine-independence pass
#   bash tests/run.sh --latest     the suite against the newest versions pyproject allows, in
#                                  .venv-latest: reports what would break, never fails
#   bash tests/run.sh --refresh    resolve the newest allowed versions, run the suite on them and,
#                                  when it passes, rewrite constraints.txt (then commit it)
#   extra arguments go to pytest:  bash tests/run.sh tests/test_rle.py -x
#
# Steps: Debian packages the integration tests start (Mosquitto, ffmpeg, GStreamer's RTSP server)
# and that builds need (python3.11-venv, gcc); the venv .venv from constraints.txt (torch pinned:
# its CPU build); the TensorRT binding environments (tests/trt_api/envs.py, cached); the Triton
# binary (nvidia-pytriton, binary only); then pytest. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=test
case "${1:-}" in
  --latest) mode=latest; shift ;;
  --refresh) mode=refresh; shift ;;
esac

say() { printf '\n== %s\n' "$*"; }

packages=()
[ -x /usr/sbin/mosquitto ] || packages+=(mosquitto)
command -v ffmpeg >/dev/null || packages+=(ffmpeg)
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null \
  || packages+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
/usr/bin/python3.11 -c "import ensurepip" 2>/dev/null || packages+=(python3.11 python3.11-venv)
command -v gcc >/dev/null || packages+=(gcc)
command -v readelf >/dev/null || packages+=(binutils)
command -v chromedriver >/dev/null || packages+=(chromium chromium-driver)  # tests/test_view.py (headless)
if [ ${#packages[@]} -gt 0 ]; then
  say "apt: ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# A venv made from the pinned environment (or, for --latest/--refresh, without it); remade when
# constraints.txt or pyproject.toml change.
venv=.venv
pins=(-c constraints.txt)
if [ "$mode" != test ]; then venv=.venv-latest; pins=(); fi
stamp="$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)-$mode"
if [ ! -f "$venv/.edgeseg-stamp" ] || [ "$(cat "$venv/.edgeseg-stamp")" != "$stamp" ]; then
  say "venv $venv (${pins[*]:-newest allowed versions})"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${pins[@]}" torch==2.13.0 -e ".[dev]"
  echo "$stamp" > "$venv/.edgeseg-stamp"
fi
. "$venv/bin/activate"
# The TensorRT API suites need the real bindings of every supported TensorRT (~1 MB wheels each,
# cached under ~/.cache/edgeseg/trt-api); the Triton tests pytriton's tritonserver (its binary
# only: --no-deps keeps its numpy<2 pin out of this environment).
python tests/trt_api/envs.py
python -c "import pytriton" 2>/dev/null || pip install -q --no-deps nvidia-pytriton==0.7.0

if [ "$mode" = latest ]; then
  say "pytest on the newest allowed versions (a report: failures here do not fail this command)"
  pip freeze --exclude-editable | grep -i -E '^(numpy|opencv|onnxruntime|openvino|onnx|typer|rich|polygraphy)==' || true
  python -m pytest -q "$@" || echo "the newest allowed versions break the tests above: pin or fix before refreshing"
  exit 0
fi
say "pytest"
python -m pytest -q "$@"
if [ $# -eq 0 ]; then
  say "mypy"
  bash tests/typecheck.sh
  # The same rendering, CLI-text and numeric tests with another terminal width, a long temp path
  # and wider text (another OpenCV's font, tests/conftest.py): an assertion that holds only on the
  # machine it was written on fails here, where it is written.
  say "machine-independence pass"
  long="$(mktemp -d)/$(printf 'a-long-temporary-folder-%.0s' 1 2 3 4 5)"
  mkdir -p "$long"
  COLUMNS=61 TMPDIR="$long" EDGESEG_TEST_FONT_SCALE=1.3 python -m pytest -q -p no:cacheprovider \
    tests/test_annotate.py tests/test_sinks.py tests/test_tables.py tests/test_bench_chart.py \
    tests/test_cli_options.py tests/test_backend_openvino.py tests/test_qdq.py
  rm -rf "$(dirname "$long")"
fi
if [ "$mode" = refresh ]; then
  { sed -n '1,4p' constraints.txt | sed "s/Resolved on .*/Resolved on Python $(python -c 'import platform; print(platform.python_version())') ($(uname -m)), $(date -u +%F)./"
    pip freeze --exclude-editable | grep -v -i '^nvidia-pytriton' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'; } > constraints.txt.new
  mv constraints.txt.new constraints.txt
  say "constraints.txt rewritten: review the diff and commit it"
fi
