#!/usr/bin/env bash
# The standard matrix on a GPU machine: a Jetson (JetPack 5.x: TensorRT 8.5/8.6; JetPack 6.x:
# TensorRT 8.6/10.x) or a discrete GPU with TensorRT, pycuda and (for the eager row) torch.
#
#   benchmarks/bench_gpu.sh                      # bundled demo models
#   benchmarks/bench_gpu.sh path/to/models       # a folder with classifier.onnx + segmenter.onnx
#                                                # (+ their *.int8.trt.qdq.onnx from edgeseg calibrate)
#
# 1. checks the TensorRT path itself (pytest -m gpu, on the bundled ONNX models, no torch needed):
#    a failing OR SKIPPED check stops the benchmark (a skip means tensorrt, pycuda or the GPU is
#    missing, and the figures would be of nothing);
# 2. builds FP32, FP16 and INT8 (QDQ, the form every TensorRT version takes) engines with
#    `edgeseg build-engine`, batch 1..8, a shared timing cache;
# 3. runs benchmarks/bench_matrix.py with those engines at batch 1 and 4: TensorRT, ONNX Runtime
#    (CUDA provider when onnxruntime-gpu is installed) and PyTorch eager, accuracy on held-out
#    synthetic strips, the cascade end to end;
# 4. writes benchmarks/results/bench_<gpu>.json / .md / .png (override with NAME=...).
#
# On a Jetson, fix the power mode and clocks first, or the figures wander with DVFS:
#   sudo nvpmodel -m 0 && sudo jetson_clocks        (the JSON records the power mode)
# Needs: pip install -e ".[trt]" pycuda, TensorRT's Python bindings (JetPack ships them). The
# `trt` extra carries what FP16 on TensorRT 11 needs (the FP16 ONNX: onnx, onnxslim); the PyTorch
# row needs torch and is reported as not run without it.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-edgeseg/assets}
ENGINES=${ENGINES:-engines}
NAME=${NAME:-bench_$(python -c 'from edgeseg.envinfo import collect; g = collect()["gpus"]; print((g[0]["name"] if isinstance(g, list) and g else "gpu").lower().replace(" ", "_"))')}

CHECK_LOG=$(mktemp)
status=0
python -m pytest -q -rs -m gpu tests/test_trt_gpu.py > "$CHECK_LOG" 2>&1 || status=$?
cat "$CHECK_LOG"
if [ "$status" -ne 0 ] || grep -qE "[0-9]+ skipped|^SKIPPED" "$CHECK_LOG"; then
  echo "bench_gpu.sh: the GPU checks failed or were skipped (see above): fix or install what they name, then rerun" >&2
  exit 1
fi
for precision in fp32 fp16; do
  edgeseg build-engine "$MODELS/classifier.onnx" "$MODELS/segmenter.onnx" --precision "$precision" \
    --max-batch 8 --opt-batch 4 --timing-cache "$ENGINES/timing.cache" --out "$ENGINES"
done
edgeseg build-engine "$MODELS/classifier.int8.trt.qdq.onnx" "$MODELS/segmenter.int8.trt.qdq.onnx" --precision int8 \
  --max-batch 8 --opt-batch 4 --timing-cache "$ENGINES/timing.cache" --out "$ENGINES"
python benchmarks/bench_matrix.py "$MODELS/classifier.onnx" "$MODELS/segmenter.onnx" \
  --engines "$ENGINES" --batch 1 --batch 4 --name "$NAME"
