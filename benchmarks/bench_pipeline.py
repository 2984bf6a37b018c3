"""Pipeline throughput on ONNX Runtime or OpenVINO (CPU): the two figures of the streaming-runtime issue.

(a) overhead: the threaded pipeline (video decode, preprocess, classifier -> gate -> ResUNet,
    post-processing, JSONL sink) against a bare one-thread ONNX Runtime loop over the same clip
    with the same gate decisions: read the frame with cv2, preprocess, session.run. Target
    >= 0.95x. Also reported: the same loop over frames decoded in advance, which leaves the
    decoding out of the baseline (on a machine with spare cores the pipeline hides it; on a
    saturated one it cannot).
(b) gating: the pipeline with the classifier gate against the same pipeline running the ResUNet
    on every frame (gate 0), on a clip with a known share of defective strips. Target >= 2x.

Every loop uses the same session settings (threads, spin-wait). With --backend openvino the
bare loops call `compile_model` with the properties edgeseg's OpenVINO backend passes (the same
compiled model: one cache blob) and `InferRequest.infer`, and the pipeline runs edgeseg's
OpenVINO backend (target: within 5 % of the bare loop). Each repeat runs the
measurements back to back (order reversed every other repeat) and gives one ratio per figure;
the figures are the medians of those ratios, so slow drifts in the machine's load cancel out.
Every run is kept in <out>/<name>.json with the machine description; <out>/<name>.md has the
tables.

    python benchmarks/bench_pipeline.py                      # bundled demo models
    python benchmarks/bench_pipeline.py --classifier c.onnx --segmenter s.onnx --frames 30
    python benchmarks/bench_pipeline.py --backend openvino --int8     # demo INT8 `cpu` QDQ models
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, SEGMENTER as DEMO_SEGMENTER
from edgeseg.data.clip import strip_frames, write_clip
from edgeseg.bench.report import write_results
from edgeseg.edge.artifacts import qdq_path
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend, ort_session
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.postprocess import defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.sinks import JsonlSink
from edgeseg.edge.sources import open_source
from edgeseg.envinfo import benchmark_environment

TARGET_OVERHEAD = 0.95
TARGET_GATING = 2.0


def decode_all(video: Path) -> List[np.ndarray]:
    with open_source(video) as source:
        return [frame.image for frame in source]


def _backends(models: Dict[str, Path], backend: str, threads: int, spin: bool) -> Dict[str, Any]:
    """edgeseg backends (not activated) with the settings every loop of this run uses."""
    if backend == "openvino":
        from edgeseg.edge.backends.openvino import OpenVINOBackend

        return {task: OpenVINOBackend(path, read_card(path), threads=threads) for task, path in models.items()}
    return {task: OnnxRuntimeBackend(path, read_card(path), intra_op_threads=threads, allow_spinning=spin) for task, path in models.items()}


def _sessions(models: Dict[str, Path], backend: str, threads: int, spin: bool) -> Dict[str, Any]:
    """Plain runtime objects with the settings the pipeline's backends use: an InferenceSession,
    or an OpenVINO infer request of the model compiled with the backend's properties; either way
    `.run(output_names, feed) -> [array]`."""
    if backend == "openvino":
        import openvino as ov

        core = ov.Core()
        requests = {}
        for task, configured in _backends(models, backend, threads, spin).items():
            request = core.compile_model(str(models[task]), configured.device, configured.config()).create_infer_request()
            requests[task] = _OpenVINORequest(request)
        return requests
    return {task: ort_session(path, providers=["CPUExecutionProvider"], intra_op_threads=threads, allow_spinning=spin) for task, path in models.items()}


class _OpenVINORequest:
    """An InferRequest called like an InferenceSession: what a bare OpenVINO loop does."""

    def __init__(self, request: Any) -> None:
        self.request = request

    def run(self, _names: Any, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return [self.request.infer(feed, share_inputs=True)[0]]


def bare_loop(
    frames: Iterable[np.ndarray], models: Dict[str, Path], cards: Dict[str, ModelCard], gate: float, backend: str, threads: int, spin: bool
) -> Tuple[float, List[bool]]:
    """Frames/s of one thread doing preprocess + session.run, classifier then (when gated) the
    segmenter, over `frames` (a list in memory, or a generator that decodes the video)."""
    sessions = _sessions(models, backend, threads, spin)
    for task, session in sessions.items():  # warm-up, as the pipeline's activation does
        spec = cards[task].preprocess
        session.run(None, {cards[task].input.name: np.zeros((1, 1, spec.height, spec.width), np.float32)})
    cls_card, seg_card = cards["classifier"], cards["segmenter"]
    decisions = []
    started = time.perf_counter()
    for image in frames:
        scores = sessions["classifier"].run([cls_card.output.name], {cls_card.input.name: preprocess(image, cls_card.preprocess)})[0]
        gated = defect_probability(scores, cls_card.output_activation) >= gate
        if gated:
            sessions["segmenter"].run([seg_card.output.name], {seg_card.input.name: preprocess(image, seg_card.preprocess)})
        decisions.append(gated)
    return len(decisions) / (time.perf_counter() - started), decisions


def read_video(video: Path) -> Iterator[np.ndarray]:
    """The naive reader a bare loop would use: cv2.VideoCapture.read until it fails."""
    capture = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield image
    finally:
        capture.release()


def pipeline_run(video: Path, models: Dict[str, Path], gate: float, backend: str, threads: int, spin: bool, folder: Path) -> Tuple[float, List[bool], Dict[str, Any]]:
    """Frames/s of the full pipeline over the video (JSONL sink), its gate decisions and report."""
    jsonl = folder / "frames.jsonl"
    backends = _backends(models, backend, threads, spin)
    with open_source(video) as source, JsonlSink(jsonl) as sink:
        report = Pipeline(source, LocalCascade(backends["classifier"], backends["segmenter"], gate=gate), [sink]).run()
    decisions = [json.loads(line)["gated"] for line in jsonl.read_text().splitlines()]
    return report["fps"], decisions, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path, default=DEMO_CLASSIFIER)
    parser.add_argument("--segmenter", type=Path, default=DEMO_SEGMENTER)
    parser.add_argument("--frames", type=int, default=30, help="strips in the clip (default 30)")
    parser.add_argument("--defect-rate", type=float, default=0.3, help="share of defective strips (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the measurements (median ratio reported)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    parser.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin-wait (its own default; edgeseg's is off)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime")
    parser.add_argument("--int8", action="store_true", help="the bundled INT8 `cpu` QDQ demo models (default: FP32)")
    parser.add_argument("--name", help="results stem (default pipeline_<backend>[_int8]_cpu)")
    parser.add_argument("--note", default="", help="provenance to record with the results (where the models came from)")
    args = parser.parse_args()
    if args.int8:
        args.classifier, args.segmenter = (qdq_path(p, "cpu") for p in (args.classifier, args.segmenter))
    args.name = args.name or f"pipeline_{args.backend}{'_int8' if args.int8 else ''}_cpu"

    models = {"classifier": args.classifier, "segmenter": args.segmenter}
    cards = {task: read_card(path) for task, path in models.items()}
    gate = float(cards["classifier"].thresholds.get("defect", 0.5))
    images, defective = strip_frames(args.frames, args.defect_rate, args.seed)
    kinds = ("bare_video", "bare_memory", "pipeline", "always")
    runs: Dict[str, List[float]] = {kind: [] for kind in kinds}
    decisions: Dict[str, List[bool]] = {}
    last_report: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        folder = Path(tmp)
        video = write_clip(images, folder / "clip.mp4")
        decoded = decode_all(video)
        for repeat in range(args.repeats):
            for kind in kinds[:: 1 if repeat % 2 == 0 else -1]:
                if kind == "bare_video":
                    fps, decisions[kind] = bare_loop(read_video(video), models, cards, gate, args.backend, args.threads, args.spin)
                elif kind == "bare_memory":
                    fps, decisions[kind] = bare_loop(decoded, models, cards, gate, args.backend, args.threads, args.spin)
                elif kind == "pipeline":
                    fps, decisions[kind], last_report = pipeline_run(video, models, gate, args.backend, args.threads, args.spin, folder)
                else:
                    fps, decisions[kind], _ = pipeline_run(video, models, 0.0, args.backend, args.threads, args.spin, folder)
                runs[kind].append(fps)
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{k} {runs[k][-1]:.3f} fps" for k in kinds), flush=True)
    gated = decisions["pipeline"]
    checks = {
        "same_gate_decisions": decisions["bare_video"] == decisions["bare_memory"] == gated,
        "always_ran_every_frame": all(decisions["always"]),
        "gate_pass_rate": sum(gated) / len(gated),
        "classifier_recall": _ratio(sum(d and g for d, g in zip(defective, gated)), sum(defective)),
        "classifier_precision": _ratio(sum(d and g for d, g in zip(defective, gated)), sum(gated)),
    }
    figures = {
        name: _figure([p / b for p, b in zip(runs["pipeline"], runs[base])], target)
        for name, base, target in (
            ("pipeline_vs_bare_video", "bare_video", TARGET_OVERHEAD),
            ("pipeline_vs_bare_memory", "bare_memory", None),
            ("gating_vs_always", "always", TARGET_GATING),
        )
    }
    result = {
        "schema": "edgeseg.bench.pipeline/2",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": args.note,
        "machine": benchmark_environment(),
        "models": {task: {"path": str(path), "sha256": cards[task].artifact.sha256, "input": cards[task].input.shape, "preprocess": cards[task].preprocess.to_dict()} for task, path in models.items()},
        "config": {"backend": args.backend, "backends": last_report.get("backends", {}), "frames": args.frames, "defect_rate": args.defect_rate, "defective_frames": sum(defective), "seed": args.seed, "repeats": args.repeats, "intra_op_threads": args.threads, "spinning": args.spin, "gate": gate, "frame_size": list(images[0].shape[:2])},
        "fps_runs": runs,
        "fps_median": {kind: statistics.median(values) for kind, values in runs.items()},
        "checks": checks,
        "pipeline_latency_ms": last_report.get("latency_ms", {}),
        "figures": figures,
    }
    text = markdown(result)
    write_results(args.out, args.name, result, text)
    print(text)


def _figure(ratios: List[float], target: Optional[float]) -> Dict[str, Any]:
    ratio = statistics.median(ratios)
    return {"ratio": ratio, "runs": ratios, "target": target, "met": None if target is None else ratio >= target}


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def markdown(result: Dict[str, Any]) -> str:
    m, c, f, med, runs = result["machine"], result["config"], result["figures"], result["fps_median"], result["fps_runs"]
    ort = m.get("onnxruntime") or {}
    checks = result["checks"]
    rows = [
        ("bare loop reading the video (cv2 read + preprocess + run, one thread)", "bare_video"),
        ("bare loop over frames decoded in advance (preprocess + run)", "bare_memory"),
        ("edgeseg pipeline, classifier gate (decode, preprocess, cascade, post-processing, JSONL)", "pipeline"),
        ("edgeseg pipeline, ResUNet on every frame (gate 0)", "always"),
    ]
    figures = [
        ("pipeline / bare loop reading the video", "pipeline_vs_bare_video"),
        ("pipeline / bare loop over pre-decoded frames", "pipeline_vs_bare_memory"),
        ("gated / always-ResUNet", "gating_vs_always"),
    ]
    lines = [
        f"# Pipeline throughput, {'OpenVINO' if c.get('backend') == 'openvino' else 'ONNX Runtime'} CPU",
        "",
        f"{result['date']} · {m['cpu']['model']} · {m['cpu']['logical_cores']} logical cores (1-min load {m['load_average_1m']:.2f} at start) · "
        f"onnxruntime {ort.get('version', '?')} · openvino {(m.get('openvino') or {}).get('version', '-') if isinstance(m.get('openvino'), dict) else '-'} · "
        f"Python {m['python'].split()[0]} · {m['platform']}",
        "",
        f"Clip: {c['frames']} synthetic strips {c['frame_size'][1]}x{c['frame_size'][0]}, {c['defective_frames']} defective "
        f"({c['defect_rate']:.0%}), seed {c['seed']}; gate {c['gate']}; {c['repeats']} repeats, ratios per repeat, medians; "
        f"intra-op threads {c['intra_op_threads'] or 'auto'}, spin-wait {'on' if c['spinning'] else 'off'} everywhere.",
        "Backends: " + "; ".join(f"{task}: {name}" for task, name in c.get("backends", {}).items()) + ".",
        "Models: " + ", ".join(f"{task} `{Path(info['path']).name}` input {info['input']}" for task, info in result["models"].items()) + ".",
        *([f"Note: {result['note']}"] if result.get("note") else []),
        "",
        "| measurement | frames/s (median) | runs |",
        "|---|---:|---|",
        *(f"| {label} | {med[kind]:.3f} | {_runs(runs[kind])} |" for label, kind in rows),
        "",
        "| figure | ratio (median) | per repeat | target | met |",
        "|---|---:|---|---:|---|",
        *(
            f"| {label} | {f[key]['ratio']:.3f} | {_runs(f[key]['runs'])} | "
            f"{'>= ' + str(f[key]['target']) if f[key]['target'] else '-'} | {'-' if f[key]['met'] is None else ('yes' if f[key]['met'] else 'no')} |"
            for label, key in figures
        ),
        "",
        f"Checks: same gate decisions in all loops: {checks['same_gate_decisions']}; gate pass rate {checks['gate_pass_rate']:.0%}; "
        f"classifier recall {checks['classifier_recall']:.2f}, precision {checks['classifier_precision']:.2f} on this clip.",
        "",
    ]
    return "\n".join(lines)


def _runs(values: List[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
