"""What the line outputs cost `edgeseg run`: its FPS on the bundled demo with and without them.

Each `--outputs` entry is one set of `edgeseg run` options (e.g. "--metrics 127.0.0.1:0"); the
script runs `edgeseg run --json --max-frames N` over the bundled demo models and clip without
any of them ("none"), with each set, and with every set together (when there are several),
interleaved repeat by repeat so a drift in the machine's load hits every arm alike. A figure is
the median over repeats of the run report's FPS (frames over the span from the first capture
to the last output); the cost is 1 - median FPS / the baseline's median FPS. On a loaded machine
FPS drifts more than a few percent between runs, so the table also gives the time each frame
spent in the outputs (the report's "sink" stage, median ms) beside its processing time: the
extra sink time over the frame's processing time is the outputs' share of the work, read from
the same runs. Results go to
<out>/<name>.json and .md with the machine description (CPU flags included).

    python benchmarks/bench_line_outputs.py
    python benchmarks/bench_line_outputs.py --outputs "--metrics 127.0.0.1:0" "--view 127.0.0.1:0" --repeats 5
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from edgeseg.bench.report import write_results
from edgeseg.envinfo import benchmark_environment

NONE = "none"


def run_once(options: List[str], max_frames: int, threads: int) -> Dict[str, float]:
    """One run's FPS and its per-frame medians (ms): time in the outputs ("sink") and processing."""
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--json", "--max-frames", str(max_frames), "--threads", str(threads), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command[3:])} failed: {result.stderr.strip()[-2000:]}")
    report = json.loads(result.stdout)
    latency = report["latency_ms"]
    return {"fps": float(report["fps"]), "sink_ms": latency["sink"]["median"], "processing_ms": latency["processing"]["median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", nargs="+", default=["--metrics 127.0.0.1:0"], help="sets of run options to measure, one quoted string each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-frames", type=int, default=40, help="demo clip frames per run (the clip has 40)")
    parser.add_argument("--threads", type=int, default=0, help="--threads of every run (0: one per core)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="line_outputs_cpu")
    parser.add_argument("--note", default="", help="machine state to record with the results (e.g. shared with other jobs)")
    args = parser.parse_args()
    arms: Dict[str, List[str]] = {NONE: []}
    arms.update({text: shlex.split(text) for text in args.outputs})
    if len(args.outputs) > 1:
        arms["all together"] = [word for text in args.outputs for word in shlex.split(text)]
    machine = benchmark_environment()
    runs: Dict[str, List[Dict[str, float]]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        for arm, options in arms.items():
            runs[arm].append(run_once(options, args.max_frames, args.threads))

    def median(arm: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[arm])

    figures = {
        arm: {
            "fps_median": round(median(arm, "fps"), 3),
            "cost": round(1.0 - median(arm, "fps") / median(NONE, "fps"), 4),
            "sink_ms_median": round(median(arm, "sink_ms"), 3),
            "processing_ms_median": round(median(arm, "processing_ms"), 2),
            "sink_share": round((median(arm, "sink_ms") - median(NONE, "sink_ms")) / median(arm, "processing_ms"), 5),
        }
        for arm in arms
    }
    result = {
        "benchmark": "line_outputs",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "note": args.note,
        "config": {"repeats": args.repeats, "max_frames": args.max_frames, "threads": args.threads, "outputs": args.outputs},
        "results": figures,
        "runs": runs,
    }
    cpu = machine.get("cpu") or {}
    lines = [
        "# `edgeseg run` FPS with the line outputs (bundled demo)",
        "",
        f"{cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores ({' '.join(cpu.get('simd') or [])}), 1-min load {machine.get('load_average_1m'):.1f} at the start. {args.note}".strip(),
        f"`edgeseg run --json --max-frames {args.max_frames} --threads {args.threads}` + the options below, {args.repeats} interleaved repeats, medians.",
        "",
        "| options | FPS (median) | FPS cost vs none | FPS per repeat | sink ms/frame | processing ms/frame | extra sink time / processing |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {arm if arm != NONE else '(none)'} | {f['fps_median']} | {f['cost']:+.1%} | {', '.join('%.2f' % r['fps'] for r in runs[arm])} "
            f"| {f['sink_ms_median']} | {f['processing_ms_median']} | {f['sink_share']:+.2%} |"
            for arm, f in figures.items()
        ),
        "",
    ]
    files = write_results(args.out, args.name, result, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {files['json']} and {files['markdown']}")


if __name__ == "__main__":
    main()
