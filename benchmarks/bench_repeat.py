"""Does `edgeseg bench --compare` call two runs of the same models on the same machine equal?

The same models are benchmarked `--runs` times in a row with `edgeseg bench` (as a user would,
a few seconds apart), and every later run is compared with the first by `edgeseg bench
--compare --threshold`. A regression flagged here is a false alarm: the machine's own noise
exceeded what the runs' repeats estimated. Timing-dependent by nature, so it lives here and not
in the test suite. Results go to <out>/<name>.json and .md with the machine description.

    python benchmarks/bench_repeat.py
    python benchmarks/bench_repeat.py --runs 3 --threshold 0.25 --note "shared 2-core machine"
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from edgeseg.assets import __file__ as _assets_init
from edgeseg.bench.report import write_results
from edgeseg.envinfo import benchmark_environment

ASSETS = Path(_assets_init).parent


def _edgeseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from edgeseg.cli import main; main()", *args], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.25, help="relative change `bench --compare` flags")
    parser.add_argument("--duration", default="0.5", help="seconds per measured batch size (bench --duration)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="repeat_cpu")
    parser.add_argument("--note", default="", help="machine state to record with the results")
    args = parser.parse_args()
    models = [str(ASSETS / "classifier.onnx"), str(ASSETS / "segmenter.onnx")]
    settings = ["-b", "onnxruntime", "-p", "fp32", "--warmup", "0", "--duration", args.duration, "--repeats", "3", "--max-frames", "4", "--json"]
    comparisons: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            done = _edgeseg("bench", *models, *settings, "--out", folder, "--name", f"run{run}")
            if done.returncode != 0:
                raise SystemExit(f"bench run {run} failed: {done.stderr[-2000:]}")
        for run in range(1, args.runs):
            done = _edgeseg("bench", "--compare", f"{folder}/run0.json", f"{folder}/run{run}.json", "--threshold", str(args.threshold), "--json")
            report = json.loads(done.stdout)
            comparisons.append({"runs": [0, run], "exit_code": done.returncode, "regressions": report["regressions"],
                                "flagged": [c for c in report["changes"] if c["regression"]]})
    result = {"environment": benchmark_environment(), "note": args.note, "threshold": args.threshold, "comparisons": comparisons}
    lines = [f"# bench --compare on repeated runs of the same models (threshold {args.threshold:.0%})", "", args.note, "",
             "| runs | exit | regressions flagged |", "|---|---|---|"]
    lines += [f"| {c['runs'][0]} vs {c['runs'][1]} | {c['exit_code']} | {c['regressions']} |" for c in comparisons]
    files = write_results(args.out, args.name, result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {files['json']} and {files['markdown']}")


if __name__ == "__main__":
    main()
