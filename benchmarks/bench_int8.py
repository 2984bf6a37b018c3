"""INT8 on ONNX Runtime CPU: FP32 vs INT8 `cpu` (U8S8) vs INT8 `trt` (symmetric S8S8) throughput.

At the models' full input (segmenter 256x1600, classifier 128x800), batch 1, through edgeseg's
ONNX Runtime backend (the runtime's inference path, all graph optimisations). Target: INT8 `cpu`
>= 1.8x FP32 on the segmenter. Variants are timed interleaved and repeated (other processes share
the CPU): each repeat's INT8 run is compared with the FP32 run beside it, the median of those
paired ratios is the figure, and every repeat and the ratio spread are kept. An ONNX Runtime profile (time per operator type) of each variant says where
the time goes, and why a ratio is what it is.

Models: the bundled demo models when present (results: int8_cpu_demo), else or with --random-init
default-width random-init models exported with edgeseg's export API (results: int8_cpu; speed does
not depend on the weights; the INT8-vs-FP32 output error then says nothing about accuracy, see
`edgeseg calibrate --validation` for that). The calibration set is 16 synthetic strips. Writes
<out>/<name>.json and <out>/<name>.md with the machine description, and which nodes the cpu
flavour kept in float (narrow layers at the float edges, `cpu_float_nodes`).

    python benchmarks/bench_int8.py                 # bundled width-8 demo models
    python benchmarks/bench_int8.py --random-init   # default width
    python benchmarks/bench_int8.py --segmenter out/segmenter.onnx --classifier out/classifier.onnx --repeats 9
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgeseg.bench.report import write_results
from edgeseg.calibration.calibration_set import CalibrationSet, fit_frame, save_calibration_set
from edgeseg.calibration.qdq import onnx_to_qdq
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, SEGMENTER as DEMO_SEGMENTER
from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng
from edgeseg.edge.artifacts import qdq_path
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend, ort_session
from edgeseg.edge.card import Source, read_card
from edgeseg.edge.preprocess import Preprocess, preprocess
from edgeseg.envinfo import benchmark_environment

TARGET = 1.8
VARIANTS = ("fp32", "int8-cpu", "int8-trt")
CALIBRATION_FRAMES = 16
PROFILE_RUNS = 5


def random_init_models(folder: Path, tasks: Sequence[str] = ("segmenter", "classifier")) -> Dict[str, Path]:
    """Default-width ResUNet and classifier (or `tasks` of them), random init (seed 0), exported at DEFAULT_INPUT."""
    import torch

    from edgeseg.export.contract import Contract, default_thresholds
    from edgeseg.export.torch_onnx import module_to_onnx
    from edgeseg.models import DEFAULT_INPUT, MODEL_FOR_TASK, create_model

    classes = {"segmenter": ["1", "2", "3", "4"], "classifier": ["defect"]}
    paths = {}
    for task in tasks:
        torch.manual_seed(0)
        model = create_model(MODEL_FOR_TASK[task])
        spec = Preprocess(*DEFAULT_INPUT[task], mean=0.5, std=0.25)
        contract = Contract(task, spec, classes[task], default_thresholds(task, len(classes[task])))
        report = module_to_onnx(model, folder / f"{task}.onnx", contract, source=Source(architecture=MODEL_FOR_TASK[task], weights="random-init"))
        paths[task] = Path(report.onnx)
    return paths


def calibration_set(folder: Path, geometry: Preprocess) -> CalibrationSet:
    frames = []
    for index in range(CALIBRATION_FRAMES):
        rng = strip_rng(2024, index)
        image, _ = make_strip(rng, sample_defect_classes(rng))
        frames.append(fit_frame(image, geometry))
    return save_calibration_set(folder / "calibration.npz", frames, [f"synth{i}" for i in range(len(frames))], "images", geometry)


def time_variants(paths: Dict[str, Path], repeats: int, iterations: int, threads: int) -> Dict[str, List[float]]:
    """Images/s of each variant per repeat, variants interleaved within each repeat."""
    backends = {label: OnnxRuntimeBackend(path, read_card(path), providers=["CPUExecutionProvider"], intra_op_threads=threads) for label, path in paths.items()}
    card = next(iter(backends.values())).card
    rng = strip_rng(7, 0)
    batch = preprocess(make_strip(rng, (3,))[0], card.preprocess)
    feed = {card.input.name: batch}
    runs: Dict[str, List[float]] = {label: [] for label in paths}
    for backend in backends.values():
        backend.activate()
        backend.infer(feed)  # warm-up: allocations, kernel selection
    try:
        for _ in range(repeats):
            for label, backend in backends.items():
                started = time.perf_counter()
                for _ in range(iterations):
                    backend.infer(feed)
                runs[label].append(iterations * batch.shape[0] / (time.perf_counter() - started))
    finally:
        for backend in backends.values():
            backend.deactivate()
    return runs


def profile(path: Path, threads: int, runs: int = PROFILE_RUNS) -> Dict[str, float]:
    """Milliseconds per inference by operator type (ONNX Runtime's profiler, optimised graph):
    each node's fastest of `runs` warm runs (the first, cold run is left out), the least
    disturbed figure on a shared CPU, summed by operator type."""
    card = read_card(path)
    with tempfile.TemporaryDirectory() as folder:  # no spinning, as edgeseg's backend runs
        session = ort_session(path, providers=["CPUExecutionProvider"], intra_op_threads=threads, log_severity=3, profile_prefix=str(Path(folder) / "ort"))
        x = np.zeros((1, 1, card.preprocess.height, card.preprocess.width), np.float32)
        for _ in range(runs + 1):
            session.run(None, {card.input.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    warm = model_runs[1:]
    fastest: Dict[str, float] = {}
    op_of: Dict[str, str] = {}
    for run, (start, end) in enumerate(warm):
        per_node: Dict[str, float] = collections.Counter()
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and start <= event["ts"] <= end:
                per_node[event["name"]] += event["dur"]
                op_of[event["name"]] = event["args"]["op_name"]
        for node, us in per_node.items():
            fastest[node] = min(us, fastest.get(node, us))
    totals: Dict[str, float] = collections.Counter()
    for node, us in fastest.items():
        totals[op_of[node]] += us
    return {op: round(us / 1000.0, 2) for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def summarise(runs: Dict[str, List[float]]) -> Dict[str, Any]:
    base = runs["fp32"]
    result: Dict[str, Any] = {}
    for label, values in runs.items():
        ratios = [v / b for v, b in zip(values, base)]
        result[label] = {
            "images_per_s": {"median": statistics.median(values), "min": min(values), "max": max(values)},
            "ms_per_image": 1000.0 / statistics.median(values),
            # paired: each repeat's variant against the FP32 run next to it, robust to load drift
            "ratio_vs_fp32": statistics.median(ratios),
            "ratio_per_repeat": {"min": min(ratios), "max": max(ratios)},
            "ratio_of_medians": statistics.median(values) / statistics.median(base),
            "runs": values,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmenter", type=Path, help="FP32 ONNX with card (default: bundled demo, else random-init default width)")
    parser.add_argument("--classifier", type=Path, help="FP32 ONNX with card (default: bundled demo, else random-init default width)")
    parser.add_argument("--random-init", action="store_true", help="default-width random-init models even when the demo models exist")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=3, help="inferences per variant per repeat")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default, one per core)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", help="results file stem (default: int8_cpu_demo for the demo models, else int8_cpu)")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as scratch:
        folder = Path(scratch)
        models, origin = _models(args.segmenter, args.classifier, args.random_init, folder)
        calib = calibration_set(folder, read_card(models["segmenter"]).preprocess)
        result: Dict[str, Any] = {
            "benchmark": "int8 onnxruntime cpu",
            "date": started.isoformat(timespec="seconds"),
            "machine": benchmark_environment(),
            "settings": {"batch": 1, "repeats": args.repeats, "iterations": args.iterations, "threads": args.threads, "models": origin,
                         "calibration": f"{len(calib)} synthetic strips, minmax"},
            "target": {"segmenter int8-cpu ratio vs fp32": TARGET},
            "models": {},
        }
        for task, fp32 in models.items():
            card = read_card(fp32)
            variants = {"fp32": fp32}
            errors, kept_float = {}, {}
            for flavour in ("cpu", "trt"):
                made = onnx_to_qdq(fp32, calib, qdq_path(folder / f"{task}.onnx", flavour), flavour=flavour)
                variants[f"int8-{flavour}"] = made.path
                errors[f"int8-{flavour}"] = made.first_batch_rel_l2
                kept_float[f"int8-{flavour}"] = made.kept_float
            print(f"{task}: timing {', '.join(variants)} at {card.preprocess.height}x{card.preprocess.width}", flush=True)
            summary = summarise(time_variants(variants, args.repeats, args.iterations, args.threads))
            for label, path in variants.items():
                summary[label]["profile_ms_by_op"] = profile(path, args.threads)
                summary[label]["rel_l2_vs_fp32"] = errors.get(label, 0.0)
                summary[label]["kept_float"] = kept_float.get(label, [])
            result["models"][task] = {"input": [card.preprocess.height, card.preprocess.width], "variants": summary}
        result["machine"]["load_average_1m_end"] = _load()
    segmenter = result["models"]["segmenter"]["variants"]["int8-cpu"]["ratio_vs_fp32"]
    result["target"]["met"] = segmenter >= TARGET
    name = args.name or ("int8_cpu_demo" if origin == DEMO else "int8_cpu")
    text = markdown(result)
    write_results(args.out, name, result, text)
    print(text)


DEMO = "bundled demo models"


def _models(segmenter: Optional[Path], classifier: Optional[Path], random_init: bool, folder: Path) -> Any:
    if segmenter is not None or classifier is not None:
        if segmenter is None or classifier is None or random_init:
            raise SystemExit("give both --segmenter and --classifier (without --random-init), or neither")
        return {"segmenter": segmenter, "classifier": classifier}, "given"
    if not random_init and DEMO_SEGMENTER.is_file() and DEMO_CLASSIFIER.is_file():
        return {"segmenter": DEMO_SEGMENTER, "classifier": DEMO_CLASSIFIER}, DEMO
    print("exporting default-width random-init models", flush=True)
    return random_init_models(folder), "default-width random-init (weights do not change speed)"


def _load() -> Optional[float]:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def markdown(result: Dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# INT8 on ONNX Runtime CPU ({result['date']})",
        "",
        f"Machine: {m['cpu']['model']}, {m['cpu']['logical_cores']} logical cores, SIMD {' '.join(m['cpu']['simd']) or 'n/a'}; "
        f"onnxruntime {_ort_version(m)}; load average {m.get('load_average_1m')} at start, {m.get('load_average_1m_end')} at end.",
        f"Models: {result['settings']['models']}. Batch 1, {result['settings']['repeats']} interleaved repeats of "
        f"{result['settings']['iterations']} inferences; calibration {result['settings']['calibration']}.",
        "",
        "| model | input | variant | images/s (median) | min–max | ms/image | vs FP32 (median of paired repeats) | min–max | rel. L2 vs FP32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, entry in result["models"].items():
        for label, v in entry["variants"].items():
            ips, rr = v["images_per_s"], v["ratio_per_repeat"]
            lines.append(
                f"| {task} | {entry['input'][0]}x{entry['input'][1]} | {label} | {ips['median']:.2f} | {ips['min']:.2f}–{ips['max']:.2f} | "
                f"{v['ms_per_image']:.0f} | **{v['ratio_vs_fp32']:.2f}x** | {rr['min']:.2f}–{rr['max']:.2f} | {v['rel_l2_vs_fp32']:.4f} |"
            )
    met = "met" if result["target"]["met"] else "MISSED"
    segmenter = result["models"]["segmenter"]["variants"]
    ratio = segmenter["int8-cpu"]["ratio_vs_fp32"]
    fp32_conv, int8_conv = (_conv_ms(segmenter[label]["profile_ms_by_op"]) for label in ("fp32", "int8-cpu"))
    fp32_rest, int8_rest = (sum(segmenter[label]["profile_ms_by_op"].values()) - conv for label, conv in (("fp32", fp32_conv), ("int8-cpu", int8_conv)))
    lines += ["", f"Target INT8 `cpu` >= {TARGET}x FP32 on the segmenter: {ratio:.2f}x, {met}.",
              f"Segmenter profile: convolutions {fp32_conv:.0f} ms FP32 vs {int8_conv:.0f} ms INT8 `cpu` ({fp32_conv / max(int8_conv, 1e-9):.2f}x), "
              f"everything else {fp32_rest:.0f} vs {int8_rest:.0f} ms.", "", f"Where the time goes (ms per inference, ONNX Runtime profiler, each node's fastest of {PROFILE_RUNS} runs):", ""]
    for task, entry in result["models"].items():
        for label, v in entry["variants"].items():
            top = ", ".join(f"{op} {ms:.0f}" for op, ms in list(v["profile_ms_by_op"].items())[:6])
            lines.append(f"- {task} {label}: {top}")
    lines += ["", "Kept in float by the `cpu` flavour (narrow Convs at the float edges, where ONNX Runtime's x86 int8 kernel is slower than float):", ""]
    for task, entry in result["models"].items():
        kept = entry["variants"]["int8-cpu"].get("kept_float", [])
        lines.append(f"- {task}: {len(kept)} nodes" + (f" ({', '.join(kept)})" if kept else ""))
    return "\n".join(lines) + "\n"


def _conv_ms(profile: Dict[str, float]) -> float:
    return sum(ms for op, ms in profile.items() if op in ("Conv", "FusedConv", "QLinearConv"))


def _ort_version(m: Dict[str, Any]) -> str:
    ort = m.get("onnxruntime")
    return ort.get("version", "?") if isinstance(ort, dict) else str(ort)


if __name__ == "__main__":
    main()
