"""Latency statistics: the one place percentiles are computed (pipeline report, benchmarks).

Per frame the pipeline records how long each stage took and the glass-to-glass time: from the
frame's capture timestamp (its image handed to edgeseg by the device or decoder) to the end of
its sinks, so it includes every wait in the queues between the threads. "queue" is that wait:
from the end of preprocessing to leaving the capture queue for inference, plus the wait for the
output thread; "processing" is glass-to-glass less the queue wait, i.e. what the frame cost.
A file source is read ahead of inference, so its frames wait in the queue by design and its
glass-to-glass exceeds the slowest stage; processing is the figure to compare with a model's
time. "capture" is the time spent reading the frame (decode; for a camera, also the wait for
the sensor); it precedes the capture timestamp and is not part of glass-to-glass. `h2d` and
`d2h` are the parts of the classifier and segmenter time that the backend reports as copies
(TensorRT, ONNX Runtime on CUDA); CPU backends have none, and a stage that never ran is left
out of the report.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

STAGES = ("capture", "preprocess", "queue", "h2d", "classifier", "segmenter", "d2h", "triton", "postprocess", "sink")  # triton: remote round trip (edge/triton.py)
GLASS_TO_GLASS = "glass_to_glass"
PROCESSING = "processing"  # glass-to-glass less the queue wait
UNSTABLE_CV = 0.1  # coefficient of variation above which a timing is too noisy to trust


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """count, mean, median, p90, p95, p99, min, max, std and cv (std / mean) of `samples`.

    Percentiles interpolate linearly between order statistics (numpy's default), in the unit
    of the samples. An empty sequence gives {"count": 0}.
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    mean = float(values.mean())
    std = float(values.std())
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, [50, 90, 95, 99]))
    return {
        "count": int(values.size),
        "mean": mean,
        "median": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "min": float(values.min()),
        "max": float(values.max()),
        "std": std,
        "cv": std / mean if mean > 0 else math.nan,
    }


class LatencyRecorder:
    """Collects per-frame stage times (seconds) and builds the run report (milliseconds)."""

    def __init__(self) -> None:
        self._stages: Dict[str, List[float]] = {stage: [] for stage in STAGES}
        self._glass: List[float] = []
        self._processing: List[float] = []
        self.frames = 0
        self.gated = 0
        self._first: Optional[float] = None
        self._last: Optional[float] = None

    def add(self, stages: Dict[str, float], glass_to_glass: float, gated: bool, started: float, finished: float) -> None:
        """One frame: its stage durations, glass-to-glass time, whether the segmenter ran, and
        when its capture started / its sinks finished (perf_counter), for the run's frame rate."""
        for stage, seconds in stages.items():
            self._stages[stage].append(seconds)
        self._glass.append(glass_to_glass)
        self._processing.append(glass_to_glass - stages.get("queue", 0.0))
        self.frames += 1
        self.gated += int(gated)
        self._first = started if self._first is None else min(self._first, started)
        self._last = finished if self._last is None else max(self._last, finished)

    def report(self) -> Dict[str, Any]:
        """frames, wall time, fps, gate pass rate and a summary (ms) of glass-to-glass,
        processing and each stage that ran."""
        wall = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
        latency = {GLASS_TO_GLASS: summary_ms(summarize(self._glass)), PROCESSING: summary_ms(summarize(self._processing))}
        for stage in STAGES:
            if self._stages[stage]:
                latency[stage] = summary_ms(summarize(self._stages[stage]))
        return {
            "frames": self.frames,
            "wall_s": wall,
            # the same span on the host's monotonic clock (time.perf_counter), comparable across
            # runs on one host: e.g. the union of several processes' spans
            "first_capture_s": self._first,
            "last_output_s": self._last,
            "fps": self.frames / wall if wall > 0 else 0.0,
            "gated": self.gated,
            "gate_pass_rate": self.gated / self.frames if self.frames else 0.0,
            "latency_ms": latency,
        }


def summary_ms(summary: Dict[str, float]) -> Dict[str, float]:
    """A summarize() of seconds in milliseconds (count and cv are unitless)."""
    return {k: (v * 1000.0 if k not in ("count", "cv") else v) for k, v in summary.items()}


def latency_table(report: Dict[str, Any], title: str = "edgeseg run") -> Any:
    """A run report for people (a rich renderable, edgeseg.edge.tables.Fit): one row per stage,
    p50/p90/p99/max in ms, totals in the caption."""
    from rich.table import Table

    from edgeseg.edge.tables import Fit

    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    for column in ("frames", "mean", "p50", "p90", "p99", "max"):
        table.add_column(column if column == "frames" else f"{column} ms", justify="right")
    for stage, stats in report["latency_ms"].items():
        if not stats.get("count"):
            continue
        table.add_row(
            stage.replace("_", "-"),
            str(stats["count"]),
            *(f"{stats[k]:.2f}" for k in ("mean", "median", "p90", "p99", "max")),
        )
    source = report.get("source", {})
    parts = [
        f"{report['frames']} frames in {report['wall_s']:.2f} s = {report['fps']:.1f} FPS",
        f"gate pass rate {report['gate_pass_rate']:.0%}",
        f"dropped {source.get('dropped', 0)}" + (f" ({source['dropped_warmup']} during warm-up)" if source.get("dropped_warmup") else ""),
        f"corrupt {source.get('corrupt', 0)}",
    ]
    if source.get("gaps"):
        parts.append(f"{source['gaps']} gap(s) of {source['gap_s']:.1f} s, {source['reconnects']} reconnect(s)")
    table.caption = " · ".join(parts)
    table.caption_justify = "left"
    return Fit(table)


def camera_table(report: Dict[str, Any], title: str = "per camera") -> Any:
    """A many-camera run report for people (Fit): one row per camera (frames, FPS, glass-to-glass
    and processing in ms, queue wait, gate pass rate, drops); the batching in the caption."""
    from rich.table import Table

    from edgeseg.edge.tables import Fit

    table = Table(title=title, title_justify="left")
    for column in ("camera", "source", "frames", "FPS", "g2g p50 ms", "g2g p99 ms", "processing p50 ms", "queue p50 ms", "gate pass", "dropped"):
        table.add_column(column, justify="left" if column in ("camera", "source") else "right")
    for camera in report["cameras"]:
        latency = camera["latency_ms"]

        def p(key: str, stat: str) -> str:
            return f"{latency[key][stat]:.2f}" if latency.get(key, {}).get("count") else "-"

        table.add_row(
            str(camera["camera"]),
            camera["source"]["uri"],
            str(camera["frames"]),
            f"{camera['fps']:.1f}",
            p(GLASS_TO_GLASS, "median"),
            p(GLASS_TO_GLASS, "p99"),
            p(PROCESSING, "median"),
            p("queue", "median"),
            f"{camera['gate_pass_rate']:.0%}",
            str(camera["source"]["dropped"]),
        )
    batching = report.get("batching", {})
    if batching.get("batches"):
        table.caption = (
            f"{batching['batches']} batches, {batching['mean_size']:.2f} frames each on average "
            f"(at most {batching['max_batch']}, waiting up to {batching['timeout_ms']:g} ms for a camera)"
        )
        table.caption_justify = "left"
    return Fit(table)
