#!/usr/bin/env bash
# The GPU check for a bare lent GPU machine: CUDA toolkit (nvcc), a Python with torch, onnx,
# onnxruntime, numpy and opencv; no TensorRT, no pycuda, no internet; only what the repository
# carries (<= 64 MiB, the git-ignored benchmarks/gpu_check/wheels included). Under 5 minutes on 16 cores.
#
#   bash benchmarks/gpu_check/prepare.sh                 # once, where PyPI is reachable (PYTHON_VERSION=3.X
#                                                        # for the GPU machine's Python, default 3.12)
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]   # anywhere (CI): what the machine must provide
#   bash benchmarks/gpu_check.sh [--out DIR]             # on the GPU machine
#
# DIR: where gpu_check.json goes; default $OUT; never inside the repository.
# 1. checks every prerequisite first and names each missing one (exit 2 before any work);
# 2. builds pycuda 2026.1 from its sdist with this nvcc, without CURAND (no curand.h needed), one
#    compiler job per core; installs pytest/typer/rich/wheel/setuptools<70.1 from the carried wheels
#    and edgeseg (no dependencies) into a scratch site;
# 3. runs the `gpu` tests that need CUDA but not TensorRT (tests/test_cuda_gpu.py);
# 4. measures the PyTorch-on-CUDA rows of `edgeseg bench` when torch sees the GPU;
# 5. writes ONE JSON (edgeseg.gpu-check/1). Exit 1 when a step failed; the JSON is written either way.
# --dry-run does 1 (reporting, exit 0) and the non-CUDA part of 5 (a JSON marked dry_run), so the
# script is exercised in CI (tests/test_gpu_check.py).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=$REPO/benchmarks/gpu_check/wheels
DRY=0
OUT_DIR=${OUT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR=${2:-}; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  echo "gpu_check: no output folder: pass --out DIR or set \$OUT" >&2; exit 2
fi
OUT_DIR=$(realpath -m "$OUT_DIR")
case "$OUT_DIR/" in
  "$REPO"/*) echo "gpu_check: output folder $OUT_DIR is inside the repository: pass --out DIR outside it" >&2; exit 2 ;;
esac
mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
OUT_JSON=$OUT_DIR/gpu_check.json
PY=$(command -v "${PYTHON:-python3}") || { echo "gpu_check: no ${PYTHON:-python3} on PATH" >&2; exit 2; }
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
step() { echo "== $*" >&2; }

# -- 1. prerequisites -------------------------------------------------------------------------------
missing=0
have() { printf '  ok       %-34s %s\n' "$1" "$2" >&2; }
lack() { printf '  MISSING  %-34s %s\n' "$1" "$2" >&2; missing=$((missing + 1)); }
step "prerequisites (this machine must provide the first group; the repository carries the second)"
NVCC=$(command -v nvcc || true)
CUDA_ROOT=$(dirname "$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")")
[ -n "$NVCC" ] && have nvcc "$NVCC" || lack nvcc "the CUDA toolkit's compiler on PATH (or /usr/local/cuda/bin)"
[ -f "$CUDA_ROOT/include/cuda.h" ] && have cuda.h "$CUDA_ROOT/include" || lack cuda.h "CUDA toolkit headers under $CUDA_ROOT/include (curand.h is not needed)"
command -v g++ > /dev/null && have g++ "$(command -v g++)" || lack g++ "a C++ compiler for pycuda's extension"
PYV=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' && have "python $PYV" "$PY" || lack "python >= 3.8" "$PY is $PYV"
"$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  && have Python.h "python$PYV-dev headers" || lack Python.h "python$PYV-dev (headers to build pycuda)"
for module in numpy torch onnx onnxruntime cv2; do
  why="importable by $PY"
  [ $module = cv2 ] && why="$why (opencv-python-headless: edgeseg.edge.card imports preprocess, which imports cv2)"
  version=$("$PY" -c "import $module; print(getattr($module, '__version__', '?'))" 2>/dev/null) && have "$module" "$version" || lack "$module" "$why"
done
TAG=cp${PYV/./}
carried() {  # name, glob under wheels/
  local found; found=$(ls "$WHEELS"/$2 2>/dev/null | head -1)
  [ -n "$found" ] && have "carried: $1" "$(basename "$found")" || lack "carried: $1" "benchmarks/gpu_check/wheels/$2 (PYTHON_VERSION=$PYV bash benchmarks/gpu_check/prepare.sh)"
}
carried "pycuda sdist" "pycuda-*.tar.gz"
carried "siphash24 for python $PYV" "siphash24-*-$TAG-*.whl"
for wheel in pytools platformdirs mako pytest pluggy iniconfig packaging typer click rich shellingham markdown_it_py mdurl pygments typing_extensions wheel setuptools; do
  carried "$wheel" "${wheel}-*.whl"
done
echo "  not needed: TensorRT, an installed pycuda, internet access" >&2
if [ $missing -gt 0 ]; then
  echo "gpu_check: $missing prerequisite(s) missing (listed above)" >&2
  if [ $DRY -eq 0 ]; then exit 2; fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
mkdir -p "$SITE"
status=0
pycuda_rc=-1
pycuda_seconds=0
if [ $DRY -eq 0 ]; then
  # -- 2. pycuda and the carried packages ---------------------------------------------------------------
  step "pycuda from its sdist with $NVCC, without CURAND"
  start=$(date +%s)
  { timeout 60 "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-compile --target "$SITE" \
      pytools platformdirs mako siphash24 pytest typer rich wheel "setuptools<70.1" \
    && tar -xzf "$WHEELS"/pycuda-*.tar.gz -C "$WORK" \
    && cd "$WORK"/pycuda-*/ \
    && PYTHONPATH=$SITE "$PY" configure.py --cuda-root="$CUDA_ROOT" --no-cuda-enable-curand \
    && PYTHONPATH=$SITE timeout 240 "$PY" "$REPO/benchmarks/gpu_check/parallel_build.py" -q build_ext --inplace; } > "$WORK/pycuda_build.log" 2>&1
  pycuda_rc=$?
  cd "$REPO"
  pycuda_seconds=$(( $(date +%s) - start ))
  [ $pycuda_rc -eq 0 ] || { tail -30 "$WORK/pycuda_build.log" >&2; status=1; }
  PYCUDA_SRC=$(ls -d "$WORK"/pycuda-*/ 2>/dev/null | head -1)
  PYTHONPATH=$SITE timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$REPO" > "$WORK/edgeseg.log" 2>&1 \
    || { tail -20 "$WORK/edgeseg.log" >&2; status=1; }
  export PYTHONPATH=$SITE${PYCUDA_SRC:+:$PYCUDA_SRC}

  # -- 3. tests ---------------------------------------------------------------------------------------
  step "gpu tests that need CUDA, not TensorRT"
  # From outside the repository, so `edgeseg` is the installed package, not the source folder.
  (cd "$WORK" && timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" \
    -m gpu "$REPO/tests/test_cuda_gpu.py" --junitxml "$WORK/tests.xml") || status=1

  # -- 4. bench ---------------------------------------------------------------------------------------
  step "PyTorch on CUDA bench rows"
  if (cd "$WORK" && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"); then
    (cd "$WORK" && timeout 90 "$PY" -c "from edgeseg.cli import main; main()" bench "$REPO/edgeseg/assets/classifier.onnx" \
      "$REPO/edgeseg/assets/segmenter.onnx" -b pytorch -b onnxruntime -p fp32 -p fp16 --warmup 0.5 --duration 1 --iterations 10 \
      --frames 0 --out "$WORK/bench" --name bench > "$WORK/bench.log" 2>&1) || { tail -20 "$WORK/bench.log" >&2; status=1; }
  else
    echo "torch does not see a CUDA GPU here: no PyTorch rows" > "$WORK/bench.log"
  fi
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi

# -- 5. the one result file -------------------------------------------------------------------------------
(cd "$WORK" && "$PY" - "$WORK" "$OUT_JSON" "$pycuda_rc" "$pycuda_seconds" "$status" "$DRY" "$missing" <<'PYEOF'
"""Fold the steps' outputs into the one result file."""
import json, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
pycuda_rc, pycuda_seconds, status, dry, missing = map(int, sys.argv[3:8])
def run(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as exc:
        return f"unavailable: {exc}"
try:
    from edgeseg.envinfo import benchmark_environment
    environment = benchmark_environment()
except Exception as exc:
    environment = {"error": repr(exc)}
environment["nvcc"] = run("nvcc", "--version").splitlines()[-1:]
environment["nvidia_smi"] = run("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
tests = []
if (work / "tests.xml").is_file():
    for case in ET.parse(work / "tests.xml").getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        detail = next((child.get("message", "")[:300] for child in case if child.tag in ("failure", "error", "skipped")), "")
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)), "detail": detail})
bench = json.loads((work / "bench" / "bench.json").read_text()) if (work / "bench" / "bench.json").is_file() else None
result = {
    "schema": "edgeseg.gpu-check/1",
    "dry_run": bool(dry),
    "missing_prerequisites": missing,
    "verified": "CUDA through pycuda (no TensorRT): see tests; TensorRT engines are NOT exercised here",
    "environment": environment,
    "pycuda_build": {"ok": pycuda_rc == 0, "seconds": pycuda_seconds, "log_tail": (work / "pycuda_build.log").read_text()[-1500:] if (work / "pycuda_build.log").is_file() else ""},
    "tests": tests,
    "bench": bench if bench is not None else {"not_run": (work / "bench.log").read_text()[-1500:] if (work / "bench.log").is_file() else ""},
    "ok": status == 0 and bool(tests) and all(t["outcome"] == "passed" for t in tests),
}
out.write_text(json.dumps(result, indent=2, default=str) + "\n")
if dry:
    print(f"gpu_check --dry-run: {missing} prerequisite(s) missing here; report -> {out}")
    sys.exit(0)
print(f"gpu_check: {sum(t['outcome'] == 'passed' for t in tests)}/{len(tests)} tests passed, pycuda build {pycuda_seconds}s -> {out}")
sys.exit(0 if result["ok"] else 1)
PYEOF
) || status=1
exit $status
