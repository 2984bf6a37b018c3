"""What the line outputs cost `edgeseg run`: its FPS on the bundled demo with and without them.

Each `--outputs` entry is one set of `edgeseg run` options; the script runs `edgeseg run --json
--loop --max-frames N` over the bundled demo models and clip without any of them ("none"), with
each set, and with every set together (when there are several), interleaved repeat by repeat so a
drift in the machine's load hits every arm alike. The outputs are used as on a line while the
run goes: `{port}` in an option is a free port of its own; `{opcua}` is the URL of a
real asyncua server on 127.0.0.1 holding the demo's verdict variables (tests/services.py, the
PLC); every `--metrics` endpoint is scraped each `--scrape-interval` s (Prometheus scrapes each
15 s by default) and every `--view` stream is read by a client as a browser would. These peers
run at the lowest CPU priority: on a line they are other machines.

Two FPS figures: the steady one, from the completion times of the frames (every arm writes
--jsonl) that finished `--warmup` s after the run's first, which is what a line sees for months;
and the run report's, over the whole run, which also holds the outputs' start (asyncua's import
and session setup run on a thread while the first frames go). An arm's cost is the median over
repeats of 1 - its FPS / the FPS of the baseline run of the same repeat (pairs cancel most of
the machine's drift). The CPU cost is the same ratio of the run process's CPU seconds (start-up
included), a figure that the peers and the load barely move. The table also gives
the time each frame spent in the outputs (the report's "sink" stage) and what the outputs
delivered (scrapes, view frames received, verdicts the OPC UA server acknowledged), so a cost is
never read off an output that did nothing. Results go to <out>/<name>.json and .md with the machine description (CPU flags included).

    python benchmarks/bench_line_outputs.py                        # metrics, view and OPC UA
    python benchmarks/bench_line_outputs.py --outputs "--metrics 127.0.0.1:{port}" --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

from edgeseg import assets
from edgeseg.bench.report import write_results
from edgeseg.edge.card import read_card
from edgeseg.edge.uri import listen_address
from edgeseg.envinfo import benchmark_environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from services import OpcUaServer, free_port  # noqa: E402  (the tests' services: one way to run them)

T = TypeVar("T")
NONE = "none"
DELIVERED = {"scrapes": "scrapes", "view_frames": "view frames", "opcua_acknowledged": "OPC UA verdicts"}
DEFAULT_OUTPUTS = ["--metrics 127.0.0.1:{port}", "--view 127.0.0.1:{port}", "--opcua {opcua}"]


class Clients:
    """The line's clients of one run's endpoints, each on a thread: a Prometheus scraper per
    `--metrics` address, a browser-like MJPEG reader per `--view` address (camera 0). They keep
    trying until the endpoint is up, and count what they got."""

    def __init__(self, options: List[str], interval: float) -> None:
        self.interval = interval
        self.counts = {"scrapes": 0, "view_frames": 0}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=work, args=(f"http://{host}:{port}",), daemon=True)
            for flag, work in (("--metrics", self._scrape), ("--view", self._watch))
            for host, port in (listen_address(value, flag, 0) for option, value in zip(options, options[1:]) if option == flag)
        ]

    def __enter__(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _scrape(self, base: str) -> None:
        lowest_priority()
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
                    response.read()
                self.counts["scrapes"] += 1
            except OSError:
                pass  # not up yet, or gone at the end
            self._stop.wait(self.interval)

    def _watch(self, base: str) -> None:
        lowest_priority()
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(f"{base}/stream.mjpg?camera=0", timeout=2) as response:
                    for length in _parts(response):
                        response.read(length)
                        self.counts["view_frames"] += 1
                        if self._stop.is_set():
                            return
            except OSError:
                pass
            self._stop.wait(0.1)


def lowest_priority() -> None:
    """Put the calling thread (and the threads it starts) at nice 19: the line's peers (the PLC,
    Prometheus, an operator's browser) run on other machines, so here they take only the CPU the
    run leaves, instead of competing with it as equals."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def on_peer_thread(make: Callable[[], T]) -> T:
    """make() on a thread at the lowest priority: a server it starts runs its own threads there."""
    made: List[T] = []

    def work() -> None:
        lowest_priority()
        made.append(make())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if not made:
        raise SystemExit("a peer of the line did not start (see above)")
    return made[0]


def _parts(response: Any) -> Iterator[int]:
    """The Content-Length of each part of a multipart MJPEG stream, as its headers end."""
    length: Optional[int] = None
    for line in iter(response.readline, b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        elif line in (b"\r\n", b"\n") and length is not None:
            yield length
            length = None


def _delivered(counts: Dict[str, float]) -> str:
    return ", ".join(f"{counts[key]:g} {label}" for key, label in DELIVERED.items() if counts[key]) or "-"


def fill(text: str, opcua: Optional[str]) -> List[str]:
    """The run options of `text`: each `{port}` a free port of its own, `{opcua}` the server URL."""
    words = [word.replace("{opcua}", opcua) if opcua else word for word in shlex.split(text)]
    return [word.replace("{port}", str(free_port())) if "{port}" in word else word for word in words]


def _cpu(before: Any, after: Any) -> float:
    """User + system seconds between two getrusage readings."""
    return float((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def run_once(options: List[str], max_frames: int, threads: int, interval: float, warmup: float) -> Dict[str, float]:
    """One run's FPS (whole run, and steady: frames completed `warmup` s after the first), the
    run process's CPU seconds, its per-frame medians (ms) of time in the outputs ("sink") and
    processing, and what its outputs delivered."""
    with tempfile.TemporaryDirectory() as folder:
        jsonl = Path(folder) / "run.jsonl"  # every arm writes it: the completion time of each frame
        command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--json", "--loop", "--max-frames", str(max_frames),
                   "--threads", str(threads), "--jsonl", str(jsonl), *options]
        before, peers_before = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        with Clients(options, interval) as clients:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        after, peers_after = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        if result.returncode != 0:
            raise SystemExit(f"{shlex.join(command[3:])} failed: {result.stderr.strip()[-2000:]}")
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    completed = sorted(r["monotonic_s"] + r["latency_ms"]["glass_to_glass"] / 1000.0 for r in records if r["type"] == "frame")
    steady = [t for t in completed if t >= completed[0] + warmup]
    if len(steady) < 2:
        raise SystemExit(f"only {len(steady)} frame(s) completed after the {warmup} s warm-up: give more --max-frames")
    report = json.loads(result.stdout)
    latency = report["latency_ms"]
    return {
        "fps": float(report["fps"]), "fps_steady": (len(steady) - 1) / (steady[-1] - steady[0]), "frames": report["frames"],
        "cpu_s": _cpu(before, after), "peers_cpu_s": _cpu(peers_before, peers_after),
        "sink_ms": latency["sink"]["median"], "processing_ms": latency["processing"]["median"],
        **clients.counts, "opcua_acknowledged": report.get("opcua", {}).get("acknowledged", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", nargs="+", default=DEFAULT_OUTPUTS, help="sets of run options to measure, one quoted string each ({port}: a free port, {opcua}: the test server)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=400, help="frames per run (the demo clip has 40 and is looped)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after a run's first frame before its steady FPS is counted")
    parser.add_argument("--threads", type=int, default=0, help="--threads of every run (0: one per core)")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between two scrapes of a --metrics endpoint")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="line_outputs_cpu")
    parser.add_argument("--note", default="", help="machine state to record with the results (e.g. shared with other jobs)")
    args = parser.parse_args()
    machine = benchmark_environment()
    with ExitStack() as stack:
        opcua = None
        if any("{opcua}" in text for text in args.outputs):
            classes = read_card(assets.SEGMENTER).classes
            opcua = stack.enter_context(closing(on_peer_thread(lambda: OpcUaServer(classes)))).url
        arms: Dict[str, str] = {NONE: ""}
        arms.update({text: text for text in args.outputs})
        if len(args.outputs) > 1:
            arms["all together"] = " ".join(args.outputs)
        runs: Dict[str, List[Dict[str, float]]] = {arm: [] for arm in arms}
        for _ in range(args.repeats):
            for arm, text in arms.items():
                runs[arm].append(run_once(fill(text, opcua), args.max_frames, args.threads, args.scrape_interval, args.warmup))

    def median(arm: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[arm])

    def paired(arm: str, key: str) -> float:
        """Median over repeats of arm / none, each repeat against its own baseline run."""
        return statistics.median(run[key] / base[key] for run, base in zip(runs[arm], runs[NONE]))

    figures = {
        arm: {
            "fps_median": round(median(arm, "fps"), 3),
            "cost": round(1.0 - paired(arm, "fps"), 4),
            "fps_steady_median": round(median(arm, "fps_steady"), 3),
            "steady_cost": round(1.0 - paired(arm, "fps_steady"), 4),
            "cpu_s_median": round(median(arm, "cpu_s"), 2),
            "cpu_cost": round(paired(arm, "cpu_s") - 1.0, 4),
            "peers_cpu_s_median": round(median(arm, "peers_cpu_s"), 2),
            "sink_ms_median": round(median(arm, "sink_ms"), 3),
            "processing_ms_median": round(median(arm, "processing_ms"), 2),
            "delivered": {key: median(arm, key) for key in DELIVERED},
        }
        for arm in arms
    }
    result = {
        "benchmark": "line_outputs",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "note": args.note,
        "config": {"repeats": args.repeats, "max_frames": args.max_frames, "threads": args.threads, "outputs": args.outputs, "scrape_interval": args.scrape_interval, "warmup_s": args.warmup},
        "results": figures,
        "runs": runs,
    }
    cpu = machine.get("cpu") or {}
    lines = [
        "# `edgeseg run` FPS with the line outputs (bundled demo)",
        "",
        f"{cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores ({' '.join(cpu.get('simd') or [])}), 1-min load {machine.get('load_average_1m'):.1f} at the start. {args.note}".strip(),
        f"`edgeseg run --json --loop --max-frames {args.max_frames} --threads {args.threads} --jsonl F` + the options below, {args.repeats} interleaved repeats, medians.",
        f"While each run goes, its /metrics is scraped every {args.scrape_interval:g} s, its view stream is read by one client, and `{{opcua}}` is a real asyncua server on 127.0.0.1;",
        "these peers run at nice 19 (on a line they are other machines; their CPU seconds on this one are given). A cost is the median of each repeat against its own baseline run.",
        f"Steady FPS: frames completed from {args.warmup:g} s after a run's first one (what a line sees for months); whole run: the run report's FPS,",
        "which also holds the outputs' start (asyncua's import and session on a thread while the first frames go); CPU: the run process's seconds, start-up included.",
        "",
        "| options | steady FPS | steady cost | steady FPS per repeat | whole-run FPS | whole-run cost | run CPU s | CPU cost | peers' CPU s | sink ms/frame | delivered per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {arm if arm != NONE else '(none)'} | {f['fps_steady_median']} | {f['steady_cost']:+.1%} | {', '.join('%.1f' % r['fps_steady'] for r in runs[arm])} "
            f"| {f['fps_median']} | {f['cost']:+.1%} | {f['cpu_s_median']} | {f['cpu_cost']:+.1%} | {f['peers_cpu_s_median']} | {f['sink_ms_median']} | {_delivered(f['delivered'])} |"
            for arm, f in figures.items()
        ),
        "",
    ]
    files = write_results(args.out, args.name, result, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {files['json']} and {files['markdown']}")


if __name__ == "__main__":
    main()
