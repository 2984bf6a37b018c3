"""The standard matrix on the machine at hand: `edgeseg bench` over every backend and precision
that runs here, with accuracy on held-out synthetic strips and the cascade end to end, plus the
project's targets checked against the figures.

Models: the bundled demo models (edgeseg/assets, full 256x1600 segmenter input) unless given.
FP16 ONNX variants are made on the fly; INT8 uses the bundled QDQ models beside the FP32 ones;
TensorRT cells need engines (see bench_gpu.sh, which builds them and calls this script).
Validation: 60 synthetic strips, seed 2 (the demo models' held-out seed, never trained on).
Writes <out>/<name>.json, .md and .png (default benchmarks/results/bench_cpu.*).

Targets (issue #6, ONNX Runtime CPU, demo models at 256x1600):
  INT8 `cpu` flavour >= 1.8x FP32 throughput on the segmenter, mean Dice within 0.01;
  ONNX Runtime >= 3x PyTorch eager on the same model; segmenter FP32 >= 40 % of the GEMM rate.

    python benchmarks/bench_matrix.py
    python benchmarks/bench_matrix.py --engines engines --batch 1 --batch 4 --name bench_orin_maxn
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgeseg.bench.measure import Settings
from edgeseg.bench.report import write_files
from edgeseg.bench.suite import Options, run_bench
from edgeseg.bench.torch_backend import default_device
from edgeseg.bench.variants import BACKENDS, PRECISIONS, plan
from edgeseg.commands.run import DEMO_CLASSIFIER, DEMO_SEGMENTER
from edgeseg.data.synth import write_synthetic

VALIDATION_STRIPS, VALIDATION_SEED = 60, 2
TARGETS = {"int8_cpu_vs_fp32": 1.8, "int8_mean_dice_drop": 0.01, "onnxruntime_vs_pytorch": 3.0, "fp32_share_of_gemm": 0.40}


def _row(document: Dict[str, Any], name: str, backend: str, precision: str, batch: int = 1) -> Optional[Dict[str, Any]]:
    return next(
        (r for r in document["results"] if "throughput" in r and (r["name"], r["backend"], r["precision"], r["batch"]) == (name, backend, precision, batch)),
        None,
    )


def targets(document: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each target with its measured figure (None when a cell it needs did not run)."""
    fp32 = _row(document, "segmenter", "onnxruntime", "fp32")
    int8 = _row(document, "segmenter", "onnxruntime", "int8")
    eager = _row(document, "segmenter", "pytorch", "fp32")
    checks = []

    def add(name: str, figure: Optional[float], target: float, higher: bool, what: str) -> None:
        met = None if figure is None else (figure >= target if higher else figure <= target)
        checks.append({"target": name, "what": what, "figure": figure, "goal": target, "met": met})

    paired = document["ratios"].get("segmenter b1", {})
    ratio = paired.get("onnxruntime int8") if fp32 and int8 else None
    add("int8_cpu_vs_fp32", ratio, TARGETS["int8_cpu_vs_fp32"], True, "segmenter INT8 `cpu` / FP32 throughput, ONNX Runtime")
    drop = None
    if fp32 and int8 and "accuracy" in fp32 and "accuracy" in int8:
        drop = fp32["accuracy"]["mean_dice"] - int8["accuracy"]["mean_dice"]
    add("int8_mean_dice_drop", drop, TARGETS["int8_mean_dice_drop"], False, "segmenter mean Dice FP32 - INT8 `cpu`")
    eager_ratio = paired.get("pytorch fp32") if fp32 and eager else None
    add(
        "onnxruntime_vs_pytorch",
        1.0 / eager_ratio if eager_ratio else None,
        TARGETS["onnxruntime_vs_pytorch"],
        True,
        "segmenter FP32 throughput, ONNX Runtime / PyTorch eager",
    )
    add("fp32_share_of_gemm", fp32.get("efficiency") if fp32 else None, TARGETS["fp32_share_of_gemm"], True, "segmenter FP32 achieved GFLOP/s / GEMM rate")
    return checks


def targets_markdown(checks: List[Dict[str, Any]]) -> str:
    lines = ["", "## Targets", "", "| target | figure | goal | met |", "|---|---|---|---|"]
    for c in checks:
        figure = "not measured" if c["figure"] is None else f"{c['figure']:.3f}"
        met = "-" if c["met"] is None else ("yes" if c["met"] else "**no**")
        lines.append(f"| {c['what']} | {figure} | {'>=' if c['target'] != 'int8_mean_dice_drop' else '<='} {c['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, help="FP32 ONNX models with cards (default: the bundled demo models)")
    parser.add_argument("--engines", type=Path, help="folder of TensorRT engines built from them")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (repeat; default 1)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (ratios are medians of paired rounds)")
    parser.add_argument("--frames", type=int, default=30, help="strips in the end-to-end clip")
    parser.add_argument("--prevalence", type=float, default=0.3)
    parser.add_argument("--validation-strips", type=int, default=VALIDATION_STRIPS, help="held-out synthetic strips for the accuracy columns")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="bench_cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgeseg-matrix-") as scratch:
        folder = Path(scratch)
        validation = write_synthetic(folder / "validation", args.validation_strips, seed=VALIDATION_SEED).root
        cells = plan(args.models or [DEMO_CLASSIFIER, DEMO_SEGMENTER], BACKENDS, PRECISIONS, args.engines, folder, default_device())
        options = Options(
            settings=Settings(args.warmup, args.duration, args.iterations),
            batches=args.batch or [1],
            torch_device=default_device(),
            validation=validation,
            pipeline_frames=args.frames,
            prevalence=args.prevalence,
            repeats=args.repeats,
        )
        document = run_bench(cells, options, lambda step: print(step, flush=True))
    document["settings"]["validation"] = f"{args.validation_strips} synthetic strips, seed {VALIDATION_SEED}"
    document["targets"] = targets(document)
    files = write_files(document, args.out, args.name, targets_markdown(document["targets"]))
    print(files["markdown"].read_text())


if __name__ == "__main__":
    main()
