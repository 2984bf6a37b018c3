#!/usr/bin/env bash
# The GPU check for a machine with CUDA (nvcc) but no TensorRT, at most 10 minutes, offline:
#
#   bash benchmarks/gpu_check/prepare.sh     # once, where PyPI is reachable: pycuda sdist + deps (~2 MB)
#   bash benchmarks/gpu_check.sh [OUT.json]  # on the GPU machine (default benchmarks/results/gpu_check.json)
#
# 1. builds pycuda 2026.1 from its sdist with this machine's nvcc (PATH gets /usr/local/cuda/bin),
#    in place in a scratch folder, one compiler job per core, with pytools/platformdirs/mako/siphash24
#    from benchmarks/gpu_check/wheels and this Python's own setuptools/numpy (no network), and
#    installs edgeseg there (no dependencies: the Python there provides numpy, opencv, onnxruntime,
#    typer, rich, torch);
# 2. runs the `gpu` tests that need CUDA but not TensorRT (tests/test_cuda_gpu.py): CudaThread from
#    a worker thread, registered pinned + device buffers, async H2D -> CUDA kernel (in the place of
#    execute_async_v3) -> D2H on one stream with event timings through TensorRTBackend's own run
#    loop, 10,000 frames without leaks, two engines on one context thread, outputs that outlive it;
# 3. measures the PyTorch-on-CUDA rows of `edgeseg bench` (bundled models, FP32/FP16) beside ONNX
#    Runtime, when torch sees the GPU;
# 4. writes ONE JSON: environment, pycuda build, every test's outcome, the bench rows.
# Any step that fails is recorded and the script exits 1; the JSON is written either way.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT_JSON=${1:-$REPO/benchmarks/results/gpu_check.json}
PY=$(command -v "${PYTHON:-python3}") || { echo "no ${PYTHON:-python3}" >&2; exit 1; }
WORK=$(mktemp -d)
SITE=$WORK/site
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
mkdir -p "$SITE" "$(dirname "$OUT_JSON")"
status=0
step() { echo "== $*" >&2; }

step "pycuda from its sdist with $(command -v nvcc || echo 'no nvcc')"
# Built in place, one compiler job per core (parallel_build.py; pip would compile its ~60 C++
# files one by one).
start=$(date +%s)
CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
{ timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$REPO"/benchmarks/gpu_check/wheels/*.whl \
  && tar -xzf "$REPO"/benchmarks/gpu_check/wheels/pycuda-*.tar.gz -C "$WORK" \
  && cd "$WORK"/pycuda-*/ \
  && "$PY" configure.py --cuda-root="$CUDA_ROOT" \
  && timeout 420 "$PY" "$REPO/benchmarks/gpu_check/parallel_build.py" -q build_ext --inplace; } > "$WORK/pycuda_build.log" 2>&1
pycuda_rc=$?
cd "$REPO"
pycuda_seconds=$(( $(date +%s) - start ))
[ $pycuda_rc -eq 0 ] || { tail -30 "$WORK/pycuda_build.log" >&2; status=1; }
PYCUDA_SRC=$(ls -d "$WORK"/pycuda-*/ 2>/dev/null | head -1)
timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$REPO" > "$WORK/edgeseg.log" 2>&1 || { tail -20 "$WORK/edgeseg.log" >&2; status=1; }
export PYTHONPATH=$SITE${PYCUDA_SRC:+:$PYCUDA_SRC}

step "gpu tests that need CUDA, not TensorRT"
# From outside the repository, so `edgeseg` is the installed package, not the source folder.
(cd "$WORK" && timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" \
  -m gpu "$REPO/tests/test_cuda_gpu.py" --junitxml "$WORK/tests.xml") || status=1

step "PyTorch on CUDA bench rows"
if (cd "$WORK" && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"); then
  (cd "$WORK" && timeout 150 "$PY" -c "from edgeseg.cli import main; main()" bench "$REPO/edgeseg/assets/classifier.onnx" \
    "$REPO/edgeseg/assets/segmenter.onnx" -b pytorch -b onnxruntime -p fp32 -p fp16 --warmup 0.5 --duration 1 --iterations 10 \
    --frames 0 --out "$WORK/bench" --name bench > "$WORK/bench.log" 2>&1) || { tail -20 "$WORK/bench.log" >&2; status=1; }
else
  echo "torch does not see a CUDA GPU here: no PyTorch rows" > "$WORK/bench.log"
fi

(cd "$WORK" && "$PY" - "$WORK" "$OUT_JSON" "$pycuda_rc" "$pycuda_seconds" "$status" <<'PYEOF'
"""Fold the steps' outputs into the one result file."""
import json, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path

work, out, pycuda_rc, pycuda_seconds, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
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
    "verified": "CUDA through pycuda (no TensorRT): see tests; TensorRT engines are NOT exercised here",
    "environment": environment,
    "pycuda_build": {"ok": pycuda_rc == 0, "seconds": pycuda_seconds, "log_tail": (work / "pycuda_build.log").read_text()[-1500:] if (work / "pycuda_build.log").is_file() else ""},
    "tests": tests,
    "bench": bench if bench is not None else {"not_run": (work / "bench.log").read_text()[-1500:] if (work / "bench.log").is_file() else ""},
    "ok": status == 0 and bool(tests) and all(t["outcome"] == "passed" for t in tests),
}
out.write_text(json.dumps(result, indent=2, default=str) + "\n")
print(f"gpu_check: {sum(t['outcome'] == 'passed' for t in tests)}/{len(tests)} tests passed, pycuda build {pycuda_seconds}s -> {out}")
sys.exit(0 if result["ok"] else 1)
PYEOF
) || status=1
rm -rf "$WORK"
exit $status
