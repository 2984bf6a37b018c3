"""Default folders of the flow, one per kind of output, so each step finds the previous one's
files without flags: data synth -> data/train, train -> runs/<task>, export / calibrate /
build-engine / deploy -> models (ONNX, QDQ variants, engines and cards side by side), bench -> bench.
"""
from pathlib import Path

DATA_DIR = Path("data/train")
RUNS_DIR = Path("runs")
MODELS_DIR = Path("models")
BENCH_DIR = Path("bench")
