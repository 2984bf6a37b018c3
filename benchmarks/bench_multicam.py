"""Many cameras: one `edgeseg run` batching N sources against N separate `edgeseg run` processes.

For N in --cameras (default 1, 2, 4) and every backend (ONNX Runtime; OpenVINO as well when that
backend is there), the same clip is given N times:

  one process   `edgeseg run --source CLIP x N --max-frames F --json`: one inference thread
                batches the N cameras' frames (one classifier run per batch, one segmenter run
                for the gated frames);
  N processes   N `edgeseg run --source CLIP --max-frames F --json` started together.

Total FPS: all frames over the time from the first frame's capture to the last frame's sinks
(for N processes the union of their spans, from the reports' monotonic-clock times, so model
loading is left out in both modes). The end-to-end rate (all frames over the time from launch
until every process exited, Python start and model loading included) is kept beside it. With
one camera both modes are the same command: their ratio shows the run-to-run noise. Per camera: glass-to-glass p50 / p99 and processing p50
(glass-to-glass less the queue wait; a file is read ahead of inference, so its frames queue).

Every repeat runs each (N, mode) once, in an order reversed every other repeat, so a slow drift
in the machine's load hits both modes alike; the figures are medians over repeats. Results go to
<out>/<name>.json and .md with the machine description.

    python benchmarks/bench_multicam.py                      # bundled demo models and clip
    python benchmarks/bench_multicam.py --cameras 1,2,4,8 --frames 40 --repeats 5
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from edgeseg.bench.report import write_results
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, CLIP as DEMO_CLIP, SEGMENTER as DEMO_SEGMENTER
from edgeseg.edge.backends import BACKENDS
from edgeseg.envinfo import benchmark_environment

MODES = ("one_process", "separate")
_EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]


def available_backends() -> List[str]:
    """onnxruntime, plus openvino where edgeseg has that backend and the package is installed."""
    found = ["onnxruntime"]
    if "openvino" in BACKENDS:
        try:
            import openvino  # noqa: F401
        except ImportError:
            pass
        else:
            found.append("openvino")
    return found


def _command(args: argparse.Namespace, backend: str, sources: int) -> List[str]:
    command = [*_EDGESEG, "run", "--classifier", str(args.classifier), "--segmenter", str(args.segmenter), "--backend", backend]
    command += ["--max-frames", str(args.frames), "--threads", str(args.threads), "--json"]
    for _ in range(sources):
        command += ["--source", str(args.clip)]
    return command


def measure(args: argparse.Namespace, backend: str, cameras: int, mode: str) -> Dict[str, Any]:
    """One (backend, N, mode) run: total FPS, end-to-end FPS and per-camera latency."""
    commands = [_command(args, backend, cameras)] if mode == "one_process" else [_command(args, backend, 1) for _ in range(cameras)]
    started = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate() for p in processes]
    elapsed = time.perf_counter() - started
    reports = []
    for process, (stdout, stderr) in zip(processes, outputs):
        if process.returncode != 0:
            raise RuntimeError(f"{backend} {mode} x{cameras}: edgeseg run exited {process.returncode}: {stderr.strip()[-500:]}")
        reports.append(json.loads(stdout))
    per_camera = [camera for report in reports for camera in report["cameras"]]
    frames = sum(report["frames"] for report in reports)
    span = max(r["last_output_s"] for r in reports) - min(r["first_capture_s"] for r in reports)
    return {
        "fps": frames / span if span > 0 else 0.0,
        "fps_end_to_end": frames / elapsed,
        "frames": frames,
        "cameras": [_camera_figures(camera) for camera in per_camera],
        "batch_mean": statistics.mean(report["batching"]["mean_size"] for report in reports),
    }


def _camera_figures(camera: Dict[str, Any]) -> Dict[str, float]:
    latency = camera["latency_ms"]
    return {
        "fps": camera["fps"],
        "g2g_p50_ms": latency["glass_to_glass"]["median"],
        "g2g_p99_ms": latency["glass_to_glass"]["p99"],
        "processing_p50_ms": latency["processing"]["median"],
    }


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians over repeats: total FPS, end-to-end FPS, and per camera (each figure's median over repeats)."""
    count = len(runs[0]["cameras"])
    return {
        "fps": statistics.median(r["fps"] for r in runs),
        "fps_runs": [r["fps"] for r in runs],
        "fps_end_to_end": statistics.median(r["fps_end_to_end"] for r in runs),
        "batch_mean": statistics.median(r["batch_mean"] for r in runs),
        "per_camera": [
            {key: statistics.median(r["cameras"][i][key] for r in runs) for key in runs[0]["cameras"][0]} for i in range(count)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path, default=DEMO_CLASSIFIER)
    parser.add_argument("--segmenter", type=Path, default=DEMO_SEGMENTER)
    parser.add_argument("--clip", type=Path, default=DEMO_CLIP, help="video every camera plays (default: the demo clip)")
    parser.add_argument("--cameras", default="1,2,4", help="comma-separated camera counts (default 1,2,4)")
    parser.add_argument("--frames", type=int, default=40, help="frames per camera (default 40, the demo clip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per model in every process (0 = one per core)")
    parser.add_argument("--backends", default="", help="comma-separated (default: onnxruntime, plus openvino when present)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="multicam_cpu")
    parser.add_argument("--note", default="", help="machine state to record with the results (e.g. shared with other jobs)")
    args = parser.parse_args()
    counts = [int(n) for n in args.cameras.split(",") if n.strip()]
    if not counts or min(counts) < 1 or args.frames < 1 or args.repeats < 1:
        parser.error("--cameras needs counts >= 1, --frames and --repeats >= 1")
    backends = [b for b in args.backends.split(",") if b] or available_backends()

    machine = benchmark_environment()
    cells = [(backend, n, mode) for backend in backends for n in counts for mode in MODES]
    runs: Dict[Tuple[str, int, str], List[Dict[str, Any]]] = {cell: [] for cell in cells}
    for repeat in range(args.repeats):
        for cell in cells[:: 1 if repeat % 2 == 0 else -1]:
            runs[cell].append(measure(args, *cell))
            print(f"repeat {repeat + 1}/{args.repeats}: {cell[0]} x{cell[1]} {cell[2]}: {runs[cell][-1]['fps']:.2f} fps", flush=True)
    rows = []
    for backend, n, mode in cells:
        rows.append(dict(backend=backend, cameras=n, mode=mode, **summarize(runs[(backend, n, mode)])))
    result = {
        "schema": "edgeseg.bench.multicam/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": args.note,
        "machine": machine,
        "load_average_1m_end": benchmark_environment()["load_average_1m"],
        "config": {
            "clip": args.clip.name,
            "classifier": args.classifier.name,
            "segmenter": args.segmenter.name,
            "frames_per_camera": args.frames,
            "repeats": args.repeats,
            "intra_op_threads": args.threads,
            "backends": backends,
            "cameras": counts,
        },
        "rows": rows,
        "ratios": _ratios(rows),
    }
    text = markdown(result)
    write_results(args.out, args.name, result, text)
    print(text)


def _ratios(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Total FPS of one batching process over N separate processes, per backend and N."""
    by = {(r["backend"], r["cameras"], r["mode"]): r for r in rows}
    out = []
    for (backend, n, mode), row in by.items():
        if mode == "one_process" and (backend, n, "separate") in by:
            separate = by[(backend, n, "separate")]
            out.append({"backend": backend, "cameras": n, "fps_ratio": row["fps"] / separate["fps"] if separate["fps"] else None})
    return out


def _mode(mode: str, cameras: int) -> str:
    if mode == "one_process":
        return "1 process, batched" if cameras > 1 else "1 process"
    return f"{cameras} separate processes" if cameras > 1 else "1 process (again)"


def markdown(result: Dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    ort = m.get("onnxruntime") or {}
    lines = [
        "# Many cameras: one batching process against separate processes",
        "",
        f"{result['date']} · {m['cpu']['model']} · {m['cpu']['logical_cores']} logical cores · 1-min load "
        f"{m['load_average_1m']:.2f} at start, {result['load_average_1m_end']:.2f} at the end · onnxruntime {ort.get('version', '?')} · "
        f"Python {m['python'].split()[0]} · {m['platform']}",
        "",
        f"Every camera plays `{c['clip']}` ({c['frames_per_camera']} frames, read as fast as the pipeline takes them); models "
        f"`{c['classifier']}` + `{c['segmenter']}`; intra-op threads {c['intra_op_threads'] or 'auto'} per model in every process; "
        f"{c['repeats']} repeats, interleaved, medians.",
        *([f"Note: {result['note']}"] if result.get("note") else []),
        "",
        "| backend | cameras | mode | total FPS | end-to-end FPS | mean batch | per camera g2g p50 ms | per camera g2g p99 ms | per camera processing p50 ms |",
        "|---|---:|---|---:|---:|---:|---|---|---|",
    ]
    for r in result["rows"]:
        per = r["per_camera"]
        lines.append(
            f"| {r['backend']} | {r['cameras']} | {_mode(r['mode'], r['cameras'])} | "
            f"{r['fps']:.2f} | {r['fps_end_to_end']:.2f} | {r['batch_mean']:.2f} | "
            + " | ".join(", ".join(f"{cam[key]:.0f}" for cam in per) for key in ("g2g_p50_ms", "g2g_p99_ms", "processing_p50_ms"))
            + " |"
        )
    lines += ["", "| backend | cameras | one process / separate processes (total FPS) |", "|---|---:|---:|"]
    lines += [f"| {r['backend']} | {r['cameras']} | {r['fps_ratio']:.2f} |" for r in result["ratios"] if r["fps_ratio"] is not None]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
