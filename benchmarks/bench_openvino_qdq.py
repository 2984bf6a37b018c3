"""Which QDQ model runs best on OpenVINO: both flavours and the quantiser's options, timed on
OpenVINO (and ONNX Runtime) against ONNX Runtime FP32, with accuracy through OpenVINO.

Per model (the bundled width-8 demo segmenter, and a default-width random-init ResUNet with
--random-init), batch 1 at 256x1600, calibration 16 synthetic strips (minmax, ranges computed
once and shared), every variant timed interleaved in the same rounds (order reversed every other
round); the figure is the median of the per-round ratios against ONNX Runtime FP32 beside it.

Quantiser variants (onnx_to_qdq tweaks on top of a flavour):
  trt                 the TensorRT form: S8S8 symmetric, per-channel, Conv/Gemm/pooling inputs only
  cpu                 ONNX Runtime's x86 form: U8S8 asymmetric activations, reduce_range, all ops
  cpu no-reduce-range full 8-bit weights
  cpu per-tensor      one weight scale per tensor instead of per output channel
  cpu symmetric-act   int8 symmetric activations (zero point 0) on every op
  cpu weighted-ops    Q/DQ only on the ops the trt flavour quantises
Each INT8 variant runs on OpenVINO with f32 float layers, the two flavours also with bf16 float
layers (the backend's default for int8 on CPUs with bf16) and on ONNX Runtime. Then the backend settings
(hint, threads, streams, async requests) on the chosen file, and OpenVINO's per-layer profile
(get_profiling_info) of FP32 and INT8. With the demo models, mean Dice of each variant through
OpenVINO on 60 held-out synthetic strips (seed 2) and classifier recall for the two flavours.

    python benchmarks/bench_openvino_qdq.py                 # demo models -> openvino_qdq_demo
    python benchmarks/bench_openvino_qdq.py --random-init   # default width -> openvino_qdq
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bench_int8 import calibration_set, random_init_models
from edgeseg.bench.report import write_results
from edgeseg.bench.suite import sample_feed
from edgeseg.calibration.qdq import TRT_OP_TYPES, onnx_to_qdq
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, SEGMENTER as DEMO_SEGMENTER
from edgeseg.edge.artifacts import qdq_path
from edgeseg.edge.backends.base import Backend
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.backends.openvino import OpenVINOBackend
from edgeseg.edge.card import read_card
from edgeseg.edge.registry import FLAVOURS
from edgeseg.envinfo import benchmark_environment

VALIDATION_STRIPS, VALIDATION_SEED = 60, 2


def variants() -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType

    return {
        "trt": ("trt", {}),
        "cpu": ("cpu", {}),
        "cpu no-reduce-range": ("cpu", {"reduce_range": False}),
        "cpu per-tensor": ("cpu", {"per_channel": False}),
        "cpu symmetric-act": ("cpu", {"activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}}),
        "cpu weighted-ops": ("cpu", {"op_types_to_quantize": list(TRT_OP_TYPES)}),
    }


def interleaved(cells: Dict[str, Callable[[], None]], repeats: int, iterations: int) -> Dict[str, List[float]]:
    """Runs/s of each cell per round, cells interleaved (order reversed every other round)."""
    for run in cells.values():
        run()  # warm-up
    rounds: Dict[str, List[float]] = {label: [] for label in cells}
    labels = list(cells)
    for index in range(repeats):
        for label in labels if index % 2 == 0 else labels[::-1]:
            started = time.perf_counter()
            for _ in range(iterations):
                cells[label]()
            rounds[label].append(iterations / (time.perf_counter() - started))
    return rounds


def paired(rounds: Dict[str, List[float]], base: str) -> Dict[str, Dict[str, Any]]:
    out = {}
    for label, values in rounds.items():
        ratios = [v / b for v, b in zip(values, rounds[base])]
        out[label] = {"ms": 1000.0 / statistics.median(values), "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios), "runs": values}
    return out


def _caller(backend: Backend, feed: Dict[str, Any]) -> Callable[[], None]:
    return lambda: backend.infer(feed)


def time_model(fp32: Path, made: Dict[str, Path], repeats: int, iterations: int) -> Dict[str, Dict[str, Any]]:
    card = read_card(fp32)
    feed = sample_feed(card, 1)
    backends: Dict[str, Backend] = {
        "onnxruntime fp32": OnnxRuntimeBackend(fp32, card),
        "openvino fp32": OpenVINOBackend(fp32, card, cache_dir=None),
        "openvino fp32 (bf16 float)": OpenVINOBackend(fp32, card, cache_dir=None, precision="bf16"),
    }
    for label, path in made.items():
        backends[f"openvino int8 {label}"] = OpenVINOBackend(path, read_card(path), cache_dir=None, precision="f32")
    for flavour in ("trt", "cpu"):
        path = made[flavour]
        backends[f"openvino int8 {flavour} (bf16 float)"] = OpenVINOBackend(path, read_card(path), cache_dir=None, precision="bf16")
        backends[f"onnxruntime int8 {flavour}"] = OnnxRuntimeBackend(path, read_card(path))
    for backend in backends.values():
        backend.activate()
    try:
        return paired(interleaved({label: _caller(b, feed) for label, b in backends.items()}, repeats, iterations), "onnxruntime fp32")
    finally:
        for backend in backends.values():
            backend.deactivate()


def time_settings(path: Path, repeats: int, iterations: int) -> Dict[str, Dict[str, Any]]:
    """Images/s of one file under OpenVINO's settings: the latency hint with every core or one,
    the throughput hint (2 streams) synchronously and with an AsyncInferQueue keeping every
    stream busy (what a batching, multi-camera caller could do)."""
    import openvino as ov

    card = read_card(path)
    feed = sample_feed(card, 1)
    configs = {
        "LATENCY, threads auto": {},
        "LATENCY, 1 thread": {"threads": 1},
        "THROUGHPUT (sync, 1 request)": {"hint": "THROUGHPUT"},
        "THROUGHPUT + AsyncInferQueue": {"hint": "THROUGHPUT"},
    }
    backends = {label: OpenVINOBackend(path, card, cache_dir=None, **config) for label, config in configs.items()}
    for backend in backends.values():
        backend.activate()
    queue_backend = backends["THROUGHPUT + AsyncInferQueue"]
    jobs = int(queue_backend.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(queue_backend.compiled, jobs)

    def queued() -> None:  # `jobs` images in flight at once, counted per image below
        for _ in range(jobs):
            queue.start_async(feed, share_inputs=True)
        queue.wait_all()

    cells = {label: _caller(b, feed) for label, b in backends.items()}
    cells["THROUGHPUT + AsyncInferQueue"] = queued
    try:
        rounds = interleaved(cells, repeats, iterations)
    finally:
        del queue
        for backend in backends.values():
            backend.deactivate()
    rounds["THROUGHPUT + AsyncInferQueue"] = [r * jobs for r in rounds["THROUGHPUT + AsyncInferQueue"]]
    result = paired(rounds, "LATENCY, threads auto")
    for label, backend_config in configs.items():
        result[label]["config"] = OpenVINOBackend(path, card, cache_dir=None, **backend_config).config()
    result["THROUGHPUT + AsyncInferQueue"]["requests"] = jobs
    return result


def layer_profile(path: Path, runs: int = 3) -> Dict[str, float]:
    """ms per inference by executed layer type (OpenVINO PERF_COUNT), the fastest of `runs`."""
    card = read_card(path)
    feed = sample_feed(card, 1)
    best: Dict[str, float] = {}
    with OpenVINOBackend(path, card, cache_dir=None, profiling=True) as backend:
        backend.infer(feed)
        for _ in range(runs):
            backend.infer(feed)
            for key, ms in backend.profile().items():
                best[key] = min(ms, best.get(key, ms))
    return {k: round(v, 2) for k, v in sorted(best.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def accuracy(made: Dict[str, Path], reference: Path, classifier: Optional[Dict[str, Path]], folder: Path) -> Dict[str, Dict[str, float]]:
    from edgeseg.calibration.accuracy import classifier_probabilities, load_validation, segmenter_scores
    from edgeseg.data.synth import write_synthetic
    from edgeseg.training.metrics import classification_metrics

    data = load_validation(write_synthetic(folder / "validation", VALIDATION_STRIPS, seed=VALIDATION_SEED).root)
    scores: Dict[str, Dict[str, float]] = {}
    for label, path in {"fp32": reference, **made}.items():
        for backend_name, backend in (("openvino", OpenVINOBackend(path, read_card(path), cache_dir=None, precision="f32")), ("onnxruntime", OnnxRuntimeBackend(path, read_card(path)))):
            if backend_name == "onnxruntime" and label not in ("fp32", "trt", "cpu"):
                continue
            dice, _, _ = segmenter_scores(backend, data)
            scores[f"{backend_name} {label}"] = {"mean_dice": float(dice.mean(axis=0).mean())}
        if label in ("fp32", "trt", "cpu"):  # the float layers in bf16, as the int8 default runs on such CPUs
            dice, _, _ = segmenter_scores(OpenVINOBackend(path, read_card(path), cache_dir=None, precision="bf16"), data)
            scores[f"openvino {label} (bf16 float)"] = {"mean_dice": float(dice.mean(axis=0).mean())}
    for label, path in (classifier or {}).items():
        probabilities, gate = classifier_probabilities(OpenVINOBackend(path, read_card(path), cache_dir=None, precision="f32"), data)
        scores.setdefault(f"openvino {label}", {})["recall"] = float(classification_metrics(probabilities, data.defective, gate)["recall"])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-init", action="store_true", help="default-width random-init ResUNet instead of the demo models")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", help="results stem (default openvino_qdq_demo / openvino_qdq)")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="edgeseg-ovqdq-") as scratch:
        folder = Path(scratch)
        if args.random_init:
            print("exporting default-width random-init models", flush=True)
            models = random_init_models(folder)
            origin = "default-width (16) random-init ResUNet (weights do not change speed)"
        else:
            models = {"segmenter": DEMO_SEGMENTER, "classifier": DEMO_CLASSIFIER}
            origin = "bundled demo models (width 8, trained)"
        seg = models["segmenter"]
        calib = calibration_set(folder, read_card(seg).preprocess)
        cache = folder / "ranges.json"
        made: Dict[str, Path] = {}
        errors: Dict[str, float] = {}
        for label, (flavour, tweaks) in sorted(variants().items(), key=lambda kv: kv[0] != "cpu"):  # cpu first: it fills the ranges cache
            print(f"quantising {label}", flush=True)
            result = onnx_to_qdq(seg, calib, qdq_path(folder / f"{label.replace(' ', '_')}.onnx", flavour), flavour=flavour, ranges_cache=cache, tweaks=tweaks)
            made[label], errors[label] = result.path, result.first_batch_rel_l2
        load_start = os.getloadavg()[0]
        print("timing", flush=True)
        timing = time_model(seg, made, args.repeats, args.iterations)
        best = max((label for label in made), key=lambda label: timing[f"openvino int8 {label}"]["ratio"])
        print(f"settings on {best}", flush=True)
        settings = time_settings(made[best], args.repeats, args.iterations)
        profiles = {"openvino fp32": layer_profile(seg), f"openvino int8 {best}": layer_profile(made[best])}
        scores: Dict[str, Dict[str, float]] = {}
        if not args.random_init:
            print("accuracy through OpenVINO", flush=True)
            classifier = {f: qdq_path(DEMO_CLASSIFIER, f) for f in FLAVOURS}
            scores = accuracy(made, seg, {"fp32": DEMO_CLASSIFIER, **classifier}, folder)
        load_end = os.getloadavg()[0]
    card = read_card(seg)
    result = {
        "benchmark": "openvino qdq variants",
        "date": started.isoformat(timespec="seconds"),
        "machine": dict(benchmark_environment(), load_average_1m=load_start, load_average_1m_end=load_end),
        "settings": {"batch": 1, "input": [card.preprocess.height, card.preprocess.width], "repeats": args.repeats, "iterations": args.iterations,
                     "models": origin, "calibration": f"{len(calib)} synthetic strips, minmax", "baseline": "onnxruntime fp32"},
        "variants": {label: {"flavour": flavour, "tweaks": {k: str(v) for k, v in tweaks.items()}, "rel_l2_vs_fp32": errors[label]} for label, (flavour, tweaks) in variants().items()},
        "timing": timing,
        "best_openvino_int8": best,
        "openvino_settings": settings,
        "profiles_ms_by_layer": profiles,
        "accuracy": scores,
    }
    text = markdown(result)
    write_results(args.out, args.name or ("openvino_qdq" if args.random_init else "openvino_qdq_demo"), result, text)
    print(text)


def markdown(result: Dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    ov = m.get("openvino") or {}
    lines = [
        f"# QDQ variants on OpenVINO ({result['date']})",
        "",
        f"Machine: {m['cpu']['model']}, {m['cpu']['logical_cores']} logical cores, SIMD {' '.join(m['cpu']['simd'])}; shared with other jobs: "
        f"1-min load {m['load_average_1m']:.2f} at the start of timing, {m['load_average_1m_end']:.2f} at the end. "
        f"openvino {ov.get('version', '?')}, onnxruntime {(m.get('onnxruntime') or {}).get('version', '?')}.",
        f"Models: {s['models']}, input {s['input'][0]}x{s['input'][1]}, batch 1; calibration {s['calibration']}; "
        f"{s['repeats']} interleaved rounds of {s['iterations']} inferences; ratio = median of per-round ratios against {s['baseline']}.",
        "",
        "| cell | ms (median) | x ORT FP32 | min–max | rel. L2 vs FP32 | mean Dice (through that backend) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    acc = result["accuracy"]
    for label, t in result["timing"].items():
        variant = label.split(" int8 ")[-1].replace(" (bf16 float)", "") if " int8 " in label else None
        rel = f"{result['variants'][variant]['rel_l2_vs_fp32']:.4f}" if variant in result["variants"] else "-"
        key = f"{label.split(' ')[0]} {variant or 'fp32'}"
        key += " (bf16 float)" if "bf16" in label else ""
        dice = f"{acc[key]['mean_dice']:.4f}" if key in acc and "mean_dice" in acc[key] else "-"
        lines.append(f"| {label} | {t['ms']:.1f} | **{t['ratio']:.2f}** | {t['ratio_min']:.2f}–{t['ratio_max']:.2f} | {rel} | {dice} |")
    recalls = {k: v["recall"] for k, v in acc.items() if "recall" in v}
    if recalls:
        lines += ["", "Classifier recall through OpenVINO: " + ", ".join(f"{k.split(' ', 1)[1]} {v:.3f}" for k, v in recalls.items()) + "."]
    lines += ["", f"Best OpenVINO INT8 file: `{result['best_openvino_int8']}`. OpenVINO settings on it (images/s ratio to the default, LATENCY with every core):", "",
              "| setting | ms per image | x default | min–max |", "|---|---:|---:|---|"]
    for label, t in result["openvino_settings"].items():
        lines.append(f"| {label} | {t['ms']:.1f} | {t['ratio']:.2f} | {t['ratio_min']:.2f}–{t['ratio_max']:.2f} |")
    lines += ["", "Where OpenVINO's time goes (ms per inference by executed layer type, PERF_COUNT, fastest of 3):", ""]
    for label, ops in result["profiles_ms_by_layer"].items():
        lines.append(f"- {label} (total {sum(ops.values()):.0f}): " + ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:8]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
