"""Pipeline throughput on ONNX Runtime CPU: the two figures of the streaming-runtime issue.

(a) overhead: the threaded pipeline (video decode, preprocess, classifier -> gate -> ResUNet,
    post-processing, JSONL sink) against a bare ONNX Runtime loop over the same decoded frames
    with the same gate decisions (preprocess + session.run only). Target >= 0.95x.
(b) gating: the pipeline with the classifier gate against the same pipeline running the ResUNet
    on every frame (gate 0), on a clip with a known share of defective strips. Target >= 2x.

Each repeat runs the three measurements back to back (order reversed every other repeat) and
gives one ratio per figure; the figures are the medians of those ratios, so slow drifts in the
machine's load cancel out. Every run is kept in the JSON, with the machine description, in
<out>/<name>.json and a table in <out>/<name>.md.

    python benchmarks/bench_pipeline.py                      # bundled demo models
    python benchmarks/bench_pipeline.py --classifier c.onnx --segmenter s.onnx --frames 30
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from edgeseg.commands.run import DEMO_CLASSIFIER, DEMO_SEGMENTER
from edgeseg.data.clip import strip_frames, write_clip
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.postprocess import defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.sinks import JsonlSink
from edgeseg.edge.sources import open_source
from edgeseg.envinfo import collect
from edgeseg.files import atomic_output

TARGET_OVERHEAD = 0.95
TARGET_GATING = 2.0


def machine() -> Dict[str, Any]:
    """Versions (edgeseg info) plus the CPU, its cores and the load when the run started."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = collect()
    info.update({"cpu": cpu, "logical_cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
    return info


def decode_all(video: Path) -> List[np.ndarray]:
    with open_source(video) as source:
        return [frame.image for frame in source]


def bare_loop(images: List[np.ndarray], models: Dict[str, Path], cards: Dict[str, ModelCard], gate: float, threads: int) -> Tuple[float, List[bool]]:
    """Frames/s of preprocess + session.run, classifier then (when gated) segmenter, one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {task: ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"]) for task, path in models.items()}
    for task, session in sessions.items():  # warm-up, as the pipeline's activation does
        spec = cards[task].preprocess
        session.run(None, {cards[task].input.name: np.zeros((1, 1, spec.height, spec.width), np.float32)})
    cls_card, seg_card = cards["classifier"], cards["segmenter"]
    decisions = []
    started = time.perf_counter()
    for image in images:
        scores = sessions["classifier"].run([cls_card.output.name], {cls_card.input.name: preprocess(image, cls_card.preprocess)})[0]
        gated = defect_probability(scores, cls_card.output_activation) >= gate
        if gated:
            sessions["segmenter"].run([seg_card.output.name], {seg_card.input.name: preprocess(image, seg_card.preprocess)})
        decisions.append(gated)
    return len(images) / (time.perf_counter() - started), decisions


def pipeline_run(video: Path, models: Dict[str, Path], gate: float, threads: int, folder: Path) -> Tuple[float, List[bool], Dict[str, Any]]:
    """Frames/s of the full pipeline over the video (JSONL sink), its gate decisions and report."""
    jsonl = folder / "frames.jsonl"
    backends = {task: OnnxRuntimeBackend(path, read_card(path), intra_op_threads=threads) for task, path in models.items()}
    with open_source(video) as source, JsonlSink(jsonl) as sink:
        report = Pipeline(source, backends["classifier"], backends["segmenter"], [sink], gate=gate).run()
    decisions = [json.loads(line)["gated"] for line in jsonl.read_text().splitlines()]
    return report["fps"], decisions, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path, default=DEMO_CLASSIFIER)
    parser.add_argument("--segmenter", type=Path, default=DEMO_SEGMENTER)
    parser.add_argument("--frames", type=int, default=30, help="strips in the clip (default 30)")
    parser.add_argument("--defect-rate", type=float, default=0.3, help="share of defective strips (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the three measurements (median ratio reported)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="pipeline_onnxruntime_cpu")
    args = parser.parse_args()

    models = {"classifier": args.classifier, "segmenter": args.segmenter}
    cards = {task: read_card(path) for task, path in models.items()}
    gate = float(cards["classifier"].thresholds.get("defect", 0.5))
    images, defective = strip_frames(args.frames, args.defect_rate, args.seed)
    runs: Dict[str, List[float]] = {"bare": [], "pipeline": [], "always": []}
    checks: Dict[str, Any] = {}
    last_report: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        folder = Path(tmp)
        video = write_clip(images, folder / "clip.mp4")
        decoded = decode_all(video)
        for repeat in range(args.repeats):
            for kind in ("bare", "pipeline", "always")[:: 1 if repeat % 2 == 0 else -1]:
                if kind == "bare":
                    fps, bare_decisions = bare_loop(decoded, models, cards, gate, args.threads)
                elif kind == "pipeline":
                    fps, pipe_decisions, last_report = pipeline_run(video, models, gate, args.threads, folder)
                else:
                    fps, always_decisions, _ = pipeline_run(video, models, 0.0, args.threads, folder)
                runs[kind].append(fps)
            print(f"run {repeat + 1}/{args.repeats}: bare {runs['bare'][-1]:.3f} fps, pipeline {runs['pipeline'][-1]:.3f} fps, always-ResUNet {runs['always'][-1]:.3f} fps", flush=True)
            checks = {
                "same_gate_decisions": bare_decisions == pipe_decisions,
                "always_ran_every_frame": all(always_decisions),
                "gate_pass_rate": sum(pipe_decisions) / len(pipe_decisions),
                "classifier_recall": _ratio(sum(d and g for d, g in zip(defective, pipe_decisions)), sum(defective)),
                "classifier_precision": _ratio(sum(d and g for d, g in zip(defective, pipe_decisions)), sum(pipe_decisions)),
            }
    medians = {key: statistics.median(values) for key, values in runs.items()}
    overhead_runs = [p / b for p, b in zip(runs["pipeline"], runs["bare"])]
    gating_runs = [p / a for p, a in zip(runs["pipeline"], runs["always"])]
    overhead, gating = statistics.median(overhead_runs), statistics.median(gating_runs)
    result = {
        "schema": "edgeseg.bench.pipeline/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "models": {task: {"path": str(path), "sha256": cards[task].artifact.get("sha256"), "input": cards[task].input.shape, "preprocess": cards[task].preprocess.to_dict()} for task, path in models.items()},
        "config": {"frames": args.frames, "defect_rate": args.defect_rate, "defective_frames": sum(defective), "seed": args.seed, "repeats": args.repeats, "intra_op_threads": args.threads, "gate": gate, "frame_size": list(images[0].shape[:2])},
        "fps_runs": runs,
        "fps_median": medians,
        "checks": checks,
        "pipeline_latency_ms": last_report.get("latency_ms", {}),
        "figures": {
            "pipeline_vs_bare": {"ratio": overhead, "runs": overhead_runs, "target": TARGET_OVERHEAD, "met": overhead >= TARGET_OVERHEAD},
            "gating_vs_always": {"ratio": gating, "runs": gating_runs, "target": TARGET_GATING, "met": gating >= TARGET_GATING},
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / f"{args.name}.json") as tmp_json:
        tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    with atomic_output(args.out / f"{args.name}.md") as tmp_md:
        tmp_md.write_text(markdown(result))
    print(markdown(result))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def markdown(result: Dict[str, Any]) -> str:
    m, c, f, med = result["machine"], result["config"], result["figures"], result["fps_median"]
    ort = m.get("onnxruntime") or {}
    lines = [
        "# Pipeline throughput, ONNX Runtime CPU",
        "",
        f"{result['date']} · {m['cpu']} · {m['logical_cores']} logical cores (1-min load {m['load_average_1m']:.2f} at start) · "
        f"onnxruntime {ort.get('version', '?')} · Python {m['python'].split()[0]} · {m['platform']}",
        "",
        f"Clip: {c['frames']} synthetic strips {c['frame_size'][1]}x{c['frame_size'][0]}, {c['defective_frames']} defective "
        f"({c['defect_rate']:.0%}), seed {c['seed']}; gate {c['gate']}; {c['repeats']} repeats, ratios per repeat, medians; "
        f"intra-op threads {c['intra_op_threads'] or 'auto'}.",
        "Models: " + ", ".join(f"{task} `{Path(info['path']).name}` input {info['input']}" for task, info in result["models"].items()) + ".",
        "",
        "| measurement | frames/s (median) | runs |",
        "|---|---:|---|",
        f"| bare ONNX Runtime loop (preprocess + run, same gate decisions) | {med['bare']:.3f} | {_runs(result['fps_runs']['bare'])} |",
        f"| pipeline, classifier gate | {med['pipeline']:.3f} | {_runs(result['fps_runs']['pipeline'])} |",
        f"| pipeline, ResUNet on every frame (gate 0) | {med['always']:.3f} | {_runs(result['fps_runs']['always'])} |",
        "",
        "| figure | ratio (median) | per repeat | target | met |",
        "|---|---:|---|---:|---|",
        f"| pipeline / bare loop | {f['pipeline_vs_bare']['ratio']:.3f} | {_runs(f['pipeline_vs_bare']['runs'])} | >= {f['pipeline_vs_bare']['target']} | {'yes' if f['pipeline_vs_bare']['met'] else 'no'} |",
        f"| gated / always-ResUNet | {f['gating_vs_always']['ratio']:.2f} | {_runs(f['gating_vs_always']['runs'])} | >= {f['gating_vs_always']['target']} | {'yes' if f['gating_vs_always']['met'] else 'no'} |",
        "",
        f"Checks: same gate decisions as the bare loop: {result['checks'].get('same_gate_decisions')}; "
        f"gate pass rate {result['checks'].get('gate_pass_rate', float('nan')):.0%}; classifier recall "
        f"{result['checks'].get('classifier_recall', float('nan')):.2f}, precision {result['checks'].get('classifier_precision', float('nan')):.2f} on this clip.",
        "",
    ]
    return "\n".join(lines)


def _runs(values: List[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
