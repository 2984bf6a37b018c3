"""An RTSP camera outage longer than any retry count: `edgeseg run` keeps running through it.

Real parts only: a gst-rtsp-server (tests/services.py) serves an MJPEG clip on 127.0.0.1;
`edgeseg run` (the bundled demo models, `--source-timeout 1`, JSONL) reads it in its own process;
after `--before` seconds the server is stopped for `--outage` seconds and started again, and the
run goes on `--after` seconds (and until it has `--frames` frames in all: a soak) before SIGTERM. The run's RSS, threads and open file descriptors
are sampled every second from /proc; the timeline comes from the JSONL's frame times (the same
clock as this script's time.perf_counter) and the run's report. Results go to <out>/<name>.json
and .md with the machine description.

    python benchmarks/bench_outage.py                         # a 60 s outage
    python benchmarks/bench_outage.py --outage 30 --note "shared 2-core machine"
    python benchmarks/bench_outage.py --fps 50 --frames 10000 --name rtsp_soak_cpu -- --gate 0.5
                                                              # a soak; after `--`: run options
"""
from __future__ import annotations

import argparse
import datetime
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services import mjpeg_clip, rtsp_server  # noqa: E402  (the tests' RTSP server: one way to run it)

from edgeseg.bench.report import write_results  # noqa: E402
from edgeseg.envinfo import benchmark_environment  # noqa: E402


def sample(pid: int) -> Dict[str, float]:
    """RSS (MiB), threads and open file descriptors of process `pid` now."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(status["Threads"]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def frame_times(jsonl: Path) -> List[float]:
    paths = [jsonl] if jsonl.is_file() else list(jsonl.parent.glob(f".{jsonl.stem}.*.part.jsonl"))
    lines = paths[0].read_text().splitlines() if paths else []
    return [r["monotonic_s"] for r in map(json.loads, lines) if r.get("type") == "frame"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=float, default=20.0, help="seconds of stream before the outage")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the RTSP server is down")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of stream after the server is back")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="rtsp_outage_cpu")
    parser.add_argument("--fps", type=int, default=25, help="frame rate of the served clip")
    parser.add_argument("--frames", type=int, default=0, help="after the outage, go on until the run has written this many frames")
    parser.add_argument("--note", default="", help="machine state to record with the results (e.g. shared with other jobs)")
    parser.add_argument("run_options", nargs="*", help="more `edgeseg run` options, after `--`")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="edgeseg-outage-"))
    clip = mjpeg_clip(folder / "clip.avi", max(args.before + args.after, args.frames / args.fps) + args.outage + 60, fps=args.fps)
    server = rtsp_server(clip, folder)
    jsonl = folder / "run.jsonl"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", server.url, "--source-timeout", "1"]
    process = subprocess.Popen([*command, *args.run_options, "--jsonl", str(jsonl), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: List[Dict[str, Any]] = []

    def run_for(seconds: float, phase: str) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and process.poll() is None:
            samples.append(dict(sample(process.pid), t=round(time.perf_counter(), 3), phase=phase))
            time.sleep(1.0)

    try:
        while not frame_times(jsonl) and process.poll() is None:  # models loaded, first frame in
            time.sleep(0.2)
        run_for(args.before, "before")
        stopped = time.perf_counter()
        server.stop()
        run_for(args.outage, "outage")
        server.start()
        restarted = time.perf_counter()
        run_for(args.after, "after")
        while len(frame_times(jsonl)) < args.frames and process.poll() is None:
            run_for(10.0, "after")
        alive = process.poll() is None
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    report = json.loads(stdout) if stdout.strip() else {}
    times = frame_times(jsonl)
    last_before = max((t for t in times if t < stopped + 0.5), default=None)
    first_after = min((t for t in times if t > restarted), default=None)
    source = report.get("source", {})
    first, last = samples[0], samples[-1]
    result = {
        "machine": benchmark_environment(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": args.note,
        "settings": vars(args) | {"out": str(args.out)},
        "alive_after_outage": alive,
        "exit_code": process.returncode,
        "frames": report.get("frames"),
        "timeline_s": {
            "outage": round(restarted - stopped, 2),
            "last_frame_after_stop": None if last_before is None else round(last_before - stopped, 2),
            "first_frame_after_restart": None if first_after is None else round(first_after - restarted, 2),
        },
        "source": {key: source.get(key) for key in ("gaps", "gap_s", "reconnects", "down", "error")},
        "process": {"start": first, "end": last, "threads_max": max(s["threads"] for s in samples), "fds_max": max(s["fds"] for s in samples)},
        "samples": samples,
        "stderr_tail": stderr[-2000:],
    }
    timeline = result["timeline_s"]
    lines = [
        f"# RTSP outage of {timeline['outage']:.0f} s through `edgeseg run` ({result['date']})",
        "",
        f"{args.note}".strip(),
        "",
        f"- run alive after the outage: {alive}; exit code after SIGTERM: {process.returncode}; frames {result['frames']}",
        f"- last frame {timeline['last_frame_after_stop']} s after the server stopped; first frame "
        f"{timeline['first_frame_after_restart']} s after it restarted",
        f"- report: {source.get('gaps')} gap(s) of {source.get('gap_s')} s, {source.get('reconnects')} reconnect(s), error {source.get('error')!r}",
        "",
        "| | RSS MiB | threads | fds |",
        "|---|---|---|---|",
        f"| start (first frame in) | {first['rss_mib']} | {first['threads']} | {first['fds']} |",
        f"| end (after the outage) | {last['rss_mib']} | {last['threads']} | {last['fds']} |",
        f"| max over the run | {max(s['rss_mib'] for s in samples)} | {result['process']['threads_max']} | {result['process']['fds_max']} |",
        "",
    ]
    files = write_results(args.out, args.name, result, "\n".join(lines))
    print("\n".join(lines))
    print(f"written: {files['json']}, {files['markdown']}")


if __name__ == "__main__":
    main()
