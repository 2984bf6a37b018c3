"""The cascade on Triton Inference Server: 1, 2, 4 and 8 concurrent clients.

A tritonserver (a stock one, or nvidia-pytriton's with Python-backend stand-ins running edgeseg's
ONNX Runtime backend) serves the repository `edgeseg serve` writes. Each client is a closed loop
like perf_analyzer's concurrency mode: it sends its next strip when the previous record came
back (edgeseg.edge.triton.TritonCascade, gRPC). Per level: total frames per second,
p50 / p99 request latency, and the batch sizes Triton formed for the cascade and both models
(from its statistics API, the difference over the level). Levels run in rounds, the order
reversed every other round, so a drift of the machine's load spreads over all levels; the FPS
figure is the median over rounds, latencies are pooled.

    python benchmarks/bench_triton.py                         # demo models, stand-ins when needed
    python benchmarks/bench_triton.py --clients 1 2 4 8 --frames 12 --rounds 2
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from edgeseg.bench.report import write_results
from edgeseg.assets import CLASSIFIER as DEMO_CLASSIFIER, SEGMENTER as DEMO_SEGMENTER
from edgeseg.data.clip import strip_frames
from edgeseg.edge.triton import TritonCascade
from edgeseg.edge.sources import Frame
from edgeseg.envinfo import benchmark_environment
from edgeseg.serve import server as triton
from edgeseg.serve.repository import RepositoryOptions, onnx_to_triton_repository

MODELS = ("cascade", "classifier", "segmenter")


def batch_counts(url: str) -> Dict[str, Dict[int, int]]:
    """{model: {batch size: executions so far}} from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url.split("://", 1)[1]) as client:
        out = {}
        for model in MODELS:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            out[model] = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}
    return out


def level(url: str, clients: int, images: Sequence[np.ndarray]) -> Dict[str, Any]:
    """`clients` closed-loop clients, each sending every image once; wall time and latencies."""
    cascades = [TritonCascade(url) for _ in range(clients)]
    for cascade in cascades:
        cascade.activate()
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        try:
            start.wait()
            for index, image in enumerate(images):
                frame = Frame(index=index, image=image, timestamp=time.perf_counter(), source=f"client{i}")
                began = time.perf_counter()
                cascades[i].infer([cascades[i].prepare(frame)])
                latencies[i].append(time.perf_counter() - began)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    before = batch_counts(url)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for cascade in cascades:
        cascade.deactivate()
    if errors:
        raise errors[0]
    after = batch_counts(url)
    formed = {m: {size: count - before[m].get(size, 0) for size, count in sorted(after[m].items()) if count - before[m].get(size, 0)} for m in MODELS}
    return {"clients": clients, "frames": clients * len(images), "wall_s": wall, "fps": clients * len(images) / wall, "latency_s": [x for per in latencies for x in per], "batches": formed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path, default=DEMO_CLASSIFIER)
    parser.add_argument("--segmenter", type=Path, default=DEMO_SEGMENTER)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=12, help="strips each client sends per round (default 12)")
    parser.add_argument("--defect-rate", type=float, default=0.3, help="share of defective strips (default 0.3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all levels (median FPS reported)")
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="triton_cpu")
    parser.add_argument("--note", default="", help="what else ran on the machine, where the models came from")
    args = parser.parse_args()

    images, _ = strip_frames(args.frames, args.defect_rate, args.seed)
    grays = [np.ascontiguousarray(image[:, :, 0]) for image in images]  # the strips are gray in BGR
    install = triton.find_tritonserver()
    stand_in = not install.has_onnxruntime
    options = RepositoryOptions(stand_in=stand_in, queue_delay_us=args.queue_delay_us, kind="gpu")
    with tempfile.TemporaryDirectory() as tmp:
        repo = onnx_to_triton_repository(args.classifier, args.segmenter, Path(tmp) / "repo", options)
        server = triton.TritonServer(repo, install, triton.server_environment(install), grpc_port=triton.free_port(), http_port=triton.free_port())
        with server:
            level(server.grpc_url, 1, grays[:2])  # warm-up: first-run allocations stay out of the figures
            runs: Dict[int, List[Dict[str, Any]]] = {n: [] for n in args.clients}
            for round_index in range(args.rounds):
                order = args.clients if round_index % 2 == 0 else list(reversed(args.clients))
                for clients in order:
                    runs[clients].append(level(server.grpc_url, clients, grays))
    rows = []
    for clients, measured in runs.items():
        latency = sorted(x for run in measured for x in run["latency_s"])
        batches: Dict[str, Dict[int, int]] = {m: {} for m in MODELS}
        for run in measured:
            for model, formed in run["batches"].items():
                for size, count in formed.items():
                    batches[model][size] = batches[model].get(size, 0) + count
        rows.append(
            {
                "clients": clients,
                "fps": statistics.median(run["fps"] for run in measured),
                "fps_runs": [run["fps"] for run in measured],
                "p50_ms": 1000.0 * float(np.percentile(latency, 50)),
                "p99_ms": 1000.0 * float(np.percentile(latency, 99)),
                "frames": sum(run["frames"] for run in measured),
                "batches": batches,
            }
        )
    result = {
        "benchmark": "triton",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "server": f"tritonserver {install.binary}",
        "models": {"classifier": str(args.classifier), "segmenter": str(args.segmenter), "served_as": "python stand-ins (ONNX Runtime, 1 thread)" if stand_in else "onnxruntime_onnx"},
        "settings": {"frames_per_client": args.frames, "defect_rate": args.defect_rate, "rounds": args.rounds, "queue_delay_us": args.queue_delay_us, "cascade_instances": options.cascade_instances},
        "note": args.note,
        "machine": benchmark_environment(),
        "levels": rows,
    }
    write_results(args.out, args.name, result, markdown(result))
    print(markdown(result))


def _batches(formed: Dict[int, int]) -> str:
    return " ".join(f"{size}×{count}" for size, count in sorted(formed.items())) or "-"


def markdown(result: Dict[str, Any]) -> str:
    lines = [
        f"# Triton: concurrent clients ({result['date']})",
        "",
        f"Server: {result['server']}; models served as {result['models']['served_as']}. "
        f"Each client sends {result['settings']['frames_per_client']} strips (256x1600, {result['settings']['defect_rate']:.0%} defective) per round, "
        f"closed loop; {result['settings']['rounds']} rounds; queue delay {result['settings']['queue_delay_us']} us.",
        "",
        "| clients | total FPS (median) | FPS per round | p50 ms | p99 ms | cascade batches (size×count) | classifier batches | segmenter batches |",
        "|---:|---:|---|---:|---:|---|---|---|",
    ]
    for row in result["levels"]:
        runs = ", ".join(f"{fps:.2f}" for fps in row["fps_runs"])
        lines.append(
            f"| {row['clients']} | {row['fps']:.2f} | {runs} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
            f"{_batches(row['batches']['cascade'])} | {_batches(row['batches']['classifier'])} | {_batches(row['batches']['segmenter'])} |"
        )
    machine = result["machine"]
    cpu = machine.get("cpu", {})
    lines += ["", f"Machine: {cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores. {result['note']}".rstrip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
