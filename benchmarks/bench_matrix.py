"""The standard matrix on the machine at hand: `edgeseg bench` over every backend and precision
that runs here, with accuracy on held-out synthetic strips and the cascade end to end, plus the
project's targets checked against the figures.

Models: the bundled demo models (edgeseg/assets, full 256x1600 segmenter input) unless given.
FP16 ONNX variants are made on the fly; INT8 uses the bundled QDQ models beside the FP32 ones;
TensorRT cells need engines (see bench_gpu.sh, which builds them and calls this script).
Validation: 60 synthetic strips, seed 2 (the demo models' held-out seed, never trained on).
Each CPU segmenter cell is also profiled by operator (ONNX Runtime's profiler, torch.profiler),
so a missed target comes with where the time went. Writes <out>/<name>.json, .md and .png
(default benchmarks/results/bench_cpu.*).

Targets (issue #6, ONNX Runtime CPU, demo models at 256x1600):
  INT8 `cpu` flavour >= 1.8x FP32 throughput on the segmenter, mean Dice within 0.01;
  ONNX Runtime >= 3x PyTorch eager on the same model; segmenter FP32 >= 40 % of the GEMM rate.
Targets (issue #12, OpenVINO; ratios against ONNX Runtime FP32 on the same model):
  best INT8 CPU cell >= 1.6x on the demo segmenter and >= 2.0x on a default-width ResUNet
  (--default-width: a random-init width-16 ResUNet at 256x1600, "resunet16", ONNX Runtime and
  OpenVINO cells only, quantised here on 16 synthetic strips); OpenVINO INT8 mean Dice within
  0.01 and classifier recall within 0.01 of FP32; the cascade end to end on OpenVINO INT8 >=
  1.3x its ONNX Runtime FP32 FPS. OpenVINO cells are profiled by layer (get_profiling_info).

    python benchmarks/bench_matrix.py
    python benchmarks/bench_matrix.py --default-width
    python benchmarks/bench_matrix.py --engines engines --batch 1 --batch 4 --name bench_orin_maxn
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench_int8 import profile as ort_profile
from bench_openvino_qdq import layer_profile as openvino_profile
from edgeseg.bench.measure import Settings
from edgeseg.bench.report import write_files
from edgeseg.bench.suite import Options, run_bench, sample_feed
from edgeseg.bench.torch_backend import default_device
from edgeseg.bench.variants import BACKENDS, PRECISIONS, plan
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, SEGMENTER as DEMO_SEGMENTER
from edgeseg.data.synth import write_synthetic
from edgeseg.edge.card import ModelCard, card_path, read_card, write_card

VALIDATION_STRIPS, VALIDATION_SEED = 60, 2
TARGETS = {"int8_cpu_vs_fp32": 1.8, "int8_mean_dice_drop": 0.01, "onnxruntime_vs_pytorch": 3.0, "fp32_share_of_gemm": 0.40}
OPENVINO_TARGETS = {"best_int8_demo": 1.6, "best_int8_default_width": 2.0, "dice_drop": 0.01, "recall_drop": 0.01, "cascade_int8_vs_ort_fp32": 1.3}
DEFAULT_WIDTH = "resunet16"
LOWER_IS_BETTER = ("int8_mean_dice_drop", "openvino_int8_mean_dice_drop", "openvino_int8_recall_drop")


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
    checks += openvino_targets(document)
    return checks


def openvino_targets(document: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue #12's targets: best INT8 CPU cell (ONNX Runtime or OpenVINO, either flavour the
    matrix ran) over ONNX Runtime FP32, OpenVINO INT8 accuracy, cascade FPS."""
    checks = []

    def add(name: str, figure: Optional[float], target: float, higher: bool, what: str) -> None:
        met = None if figure is None else (figure >= target if higher else figure <= target)
        checks.append({"target": name, "what": what, "figure": figure, "goal": target, "met": met})

    for model, key, goal in (("segmenter", "openvino_best_int8_demo", "best_int8_demo"), (DEFAULT_WIDTH, "openvino_best_int8_default_width", "best_int8_default_width")):
        paired = document["ratios"].get(f"{model} b1", {})
        best = max((paired[label], label) for label in paired if label.endswith(" int8")) if any(l.endswith(" int8") for l in paired) else None
        add(key, best[0] if best else None, OPENVINO_TARGETS[goal], True, f"{model}: best INT8 CPU cell ({best[1] if best else '-'}) / ONNX Runtime FP32")
    for task, metric, key in (("segmenter", "mean_dice", "openvino_int8_mean_dice_drop"), ("classifier", "recall", "openvino_int8_recall_drop")):
        fp32, int8 = _row(document, task, "onnxruntime", "fp32"), _row(document, task, "openvino", "int8")
        drop = None
        if fp32 and int8 and metric in fp32.get("accuracy", {}) and metric in int8.get("accuracy", {}):
            drop = fp32["accuracy"][metric] - int8["accuracy"][metric]
        add(key, drop, OPENVINO_TARGETS["dice_drop" if metric == "mean_dice" else "recall_drop"], False, f"{task} {metric} ONNX Runtime FP32 - OpenVINO INT8")
    fps = {(p["backend"], p["precision"]): p["fps"] for p in document.get("pipeline", [])}
    cascade = fps[("openvino", "int8")] / fps[("onnxruntime", "fp32")] if ("openvino", "int8") in fps and fps.get(("onnxruntime", "fp32")) else None
    add("openvino_cascade_int8_vs_ort_fp32", cascade, OPENVINO_TARGETS["cascade_int8_vs_ort_fp32"], True, "cascade FPS, OpenVINO INT8 / ONNX Runtime FP32 (demo models)")
    return checks


def torch_profile(checkpoint: Path, card: ModelCard, runs: int = 3) -> Dict[str, float]:
    """Milliseconds per inference by aten operator (self time, torch.profiler), PyTorch eager."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from edgeseg.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    x = torch.from_numpy(sample_feed(card, 1)[card.input.name])
    with torch.inference_mode():
        model(x)  # warm-up: oneDNN primitive creation stays out of the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    totals = {event.key: event.self_cpu_time_total / runs / 1000.0 for event in prof.key_averages()}
    return {op: round(ms, 2) for op, ms in sorted(totals.items(), key=lambda kv: -kv[1]) if ms >= 0.05}


def profiles(document: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Where the segmenter's time goes in each measured CPU cell (ONNX Runtime's profiler, torch's)."""
    found = {}
    fp32 = _row(document, "segmenter", "onnxruntime", "fp32")
    for row in document["results"]:
        if row["name"] not in ("segmenter", DEFAULT_WIDTH) or row.get("batch") != 1 or "throughput" not in row or row["device"] != "cpu":
            continue
        label = ("" if row["name"] == "segmenter" else f"{row['name']} ") + f"{row['backend']} {row['precision']}"
        if row["backend"] == "onnxruntime":
            found[label] = ort_profile(Path(row["artifact"]), 0)
        elif row["backend"] == "openvino":
            found[label] = openvino_profile(Path(row["artifact"]))
        elif row["backend"] == "pytorch" and fp32 is not None:  # the checkpoint the FP32 ONNX was exported from
            found[label] = torch_profile(Path(row["artifact"]), read_card(Path(fp32["artifact"])))
    return found


def profiles_markdown(found: Dict[str, Dict[str, float]]) -> str:
    lines = ["", "## Where the segmenter's time goes (ms per inference by operator, batch 1)", ""]
    for label, ops in found.items():
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:8])
        lines.append(f"- {label} (total {sum(ops.values()):.0f}): {top}")
    return "\n".join(lines) + "\n"


def targets_markdown(checks: List[Dict[str, Any]]) -> str:
    lines = ["", "## Targets", "", "| target | figure | goal | met |", "|---|---|---|---|"]
    for c in checks:
        figure = "not measured" if c["figure"] is None else f"{c['figure']:.3f}"
        met = "-" if c["met"] is None else ("yes" if c["met"] else "**no**")
        lines.append(f"| {c['what']} | {figure} | {'<=' if c['target'] in LOWER_IS_BETTER else '>='} {c['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def default_width_resunet(folder: Path) -> Path:
    """A random-init default-width ResUNet at 256x1600 (speed does not depend on the weights) with
    both INT8 QDQ flavours beside it, calibrated on 16 synthetic strips."""
    from bench_int8 import calibration_set, random_init_models

    from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path

    print(f"exporting and quantising {DEFAULT_WIDTH}", flush=True)
    target = folder / DEFAULT_WIDTH
    target.mkdir()
    exported = random_init_models(target, tasks=("segmenter",))["segmenter"]
    onnx = target / f"{DEFAULT_WIDTH}.onnx"
    exported.rename(onnx)
    card_path(exported).rename(card_path(onnx))
    write_card(onnx, read_card(onnx, verify=False))
    calib = calibration_set(target, read_card(onnx).preprocess)
    cache = target / "ranges.json"
    for flavour in ("cpu", "trt"):
        onnx_to_qdq(onnx, calib, qdq_path(onnx, flavour), flavour=flavour, ranges_cache=cache)
    return onnx


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
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="backends to run (repeat; default: all)")
    parser.add_argument("--default-width", action="store_true", help=f"add a default-width random-init ResUNet ({DEFAULT_WIDTH}), ONNX Runtime and OpenVINO cells")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgeseg-matrix-") as scratch:
        folder = Path(scratch)
        validation = write_synthetic(folder / "validation", args.validation_strips, seed=VALIDATION_SEED).root
        backends = args.backend or BACKENDS
        cells = plan(args.models or [DEMO_CLASSIFIER, DEMO_SEGMENTER], backends, PRECISIONS, args.engines, folder, default_device())
        if args.default_width:
            cells += plan([default_width_resunet(folder)], [b for b in ("onnxruntime", "openvino") if b in backends], PRECISIONS, None, folder)
        options = Options(
            settings=Settings(args.warmup, args.duration, args.iterations),
            batches=args.batch or [1],
            torch_device=default_device(),
            validation=validation,
            pipeline_frames=args.frames,
            prevalence=args.prevalence,
            repeats=args.repeats,
            scored=sorted({c.name for c in cells} - {DEFAULT_WIDTH}),  # random init: its accuracy means nothing
        )
        document = run_bench(cells, options, lambda step: print(step, flush=True))
        document["profiles_ms_by_op"] = profiles(document)  # while the FP16 variants made on the fly exist
    document["settings"]["validation"] = f"{args.validation_strips} synthetic strips, seed {VALIDATION_SEED}"
    document["targets"] = targets(document)
    appendix = targets_markdown(document["targets"]) + profiles_markdown(document["profiles_ms_by_op"])
    files = write_files(document, args.out, args.name, appendix)
    print(files["markdown"].read_text())


if __name__ == "__main__":
    main()
