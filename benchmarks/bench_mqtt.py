"""What `--mqtt` costs the pipeline: the time MqttSink.write takes on the output thread, with the
broker up, with it down (paho reconnecting in the background), and with the offline queue full.

Real parts only: the bundled demo models run over the bundled clip once (gate 0) to make real
frame results; a Mosquitto broker (/usr/sbin/mosquitto) is started on 127.0.0.1 and stopped to
stage the outage. Every repeat measures the three states in turn, each on `--writes` writes of
defect records, so a drift in the machine's load hits them alike; the figures are medians over
repeats of each state's p50 / p99 / max in microseconds. Results go to <out>/<name>.json and .md
with the machine description.

    python benchmarks/bench_mqtt.py
    python benchmarks/bench_mqtt.py --writes 500 --repeats 5 --note "shared 2-core machine"
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services import Mosquitto  # noqa: E402  (the tests' broker helper: one way to run it)

from edgeseg.bench.report import write_results  # noqa: E402
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, CLIP as DEMO_CLIP, SEGMENTER as DEMO_SEGMENTER  # noqa: E402
from edgeseg.edge.backends import open_backend  # noqa: E402
from edgeseg.edge.cascade import LocalCascade  # noqa: E402
from edgeseg.edge.mqtt import MqttSink  # noqa: E402
from edgeseg.edge.pipeline import Pipeline  # noqa: E402
from edgeseg.edge.sinks import Sink  # noqa: E402
from edgeseg.edge.sources import open_source  # noqa: E402
from edgeseg.envinfo import benchmark_environment  # noqa: E402

STATES = ("connected", "broker_down", "queue_full")


class _Keep(Sink):
    """Keeps every defective frame's (frame, result) to replay into the MQTT sink."""

    def __init__(self) -> None:
        self.pairs: List[Tuple[Any, Any]] = []

    def write(self, frame: Any, result: Any) -> None:
        if result.gated and any(area > 0 for area in result.segmentation.areas.values()):
            self.pairs.append((frame, result))


def defect_results(frames: int) -> List[Tuple[Any, Any]]:
    keep = _Keep()
    with open_source(str(DEMO_CLIP)) as source:
        classifier, segmenter = open_backend(DEMO_CLASSIFIER, "onnxruntime"), open_backend(DEMO_SEGMENTER, "onnxruntime")
        Pipeline(source, LocalCascade(classifier, segmenter, gate=0.0), [keep], max_frames=frames).run()
    if not keep.pairs:
        raise SystemExit("the demo models found no defect on the clip: nothing to publish")
    return keep.pairs


def time_writes(sink: MqttSink, pairs: List[Tuple[Any, Any]], writes: int) -> Dict[str, float]:
    samples = []
    for i in range(writes):
        frame, result = pairs[i % len(pairs)]
        started = time.perf_counter()
        sink.write(frame, result)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return {"p50_us": samples[len(samples) // 2], "p99_us": samples[int(len(samples) * 0.99)], "max_us": samples[-1]}


def wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the MQTT client did not reach the expected state in time")
        time.sleep(0.05)


def measure(args: argparse.Namespace, pairs: List[Tuple[Any, Any]], folder: Path) -> Dict[str, List[Dict[str, float]]]:
    runs: Dict[str, List[Dict[str, float]]] = {state: [] for state in STATES}
    broker = Mosquitto(folder)
    broker.start()
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/bench", queue_limit=args.writes, heartbeat_s=0, flush_timeout=30)
    try:
        for _ in range(args.repeats):
            wait(lambda: sink.connected)
            wait(lambda: sink.stats()["acknowledged"] == sink.stats()["published"] - sink.stats()["dropped"])
            runs["connected"].append(time_writes(sink, pairs, args.writes))
            broker.stop()
            wait(lambda: not sink.connected)
            runs["broker_down"].append(time_writes(sink, pairs, args.writes))  # fills the queue to its bound
            runs["queue_full"].append(time_writes(sink, pairs, args.writes))  # every write refused, counted
            broker.start()
    finally:
        sink.close()
        broker.stop()
    stats = sink.stats()
    if stats["dropped"] < args.writes * args.repeats:
        raise SystemExit(f"the queue-full state dropped only {stats['dropped']} writes: the bound did not hold")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300, help="writes timed per state and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=30, help="demo clip frames run to make real results")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="mqtt_write_cpu")
    parser.add_argument("--note", default="", help="machine state to record with the results (e.g. shared with other jobs)")
    args = parser.parse_args()
    machine = benchmark_environment()
    pairs = defect_results(args.frames)
    with tempfile.TemporaryDirectory() as folder:
        runs = measure(args, pairs, Path(folder))
    figures = {state: {k: round(statistics.median(r[k] for r in runs[state]), 1) for k in runs[state][0]} for state in STATES}
    result = {
        "benchmark": "mqtt_write",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "note": args.note,
        "config": {"writes": args.writes, "repeats": args.repeats, "queue_limit": args.writes, "defect_frames": len(pairs)},
        "results": figures,
        "runs": runs,
    }
    cpu = machine.get("cpu") or {}
    lines = [
        "# MqttSink.write on the pipeline's output thread",
        "",
        f"{cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores, 1-min load {machine.get('load_average_1m'):.1f} at the start. {args.note}".strip(),
        f"{args.writes} writes of real defect records per state, {args.repeats} interleaved repeats, medians; queue bound {args.writes}.",
        "",
        "| state | p50 µs | p99 µs | max µs |",
        "|---|---|---|---|",
        *(f"| {state.replace('_', ' ')} | {f['p50_us']} | {f['p99_us']} | {f['max_us']} |" for state, f in figures.items()),
        "",
    ]
    files = write_results(args.out, args.name, result, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {files['json']} and {files['markdown']}")


if __name__ == "__main__":
    main()
