"""The timing loop: trtexec's method on edgeseg's backend protocol.

Warm-up runs for a time (not a count), so caches, allocators, clocks and lazy kernel selection
settle whatever the model's speed. The timed phase then runs until BOTH a minimum number of
iterations and a minimum duration are reached (trtexec's --iterations / --duration), so a fast
model gets many samples and a slow one still a meaningful count. Per iteration it keeps the
host latency (the wall time of `Backend.infer`, feed to numpy outputs) and the parts the
backend reports: compute (CUDA events on TensorRT), H2D and D2H copies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from edgeseg.edge.backends.base import TIMING_KEYS, Backend
from edgeseg.edge.latency import UNSTABLE_CV, summarize, summary_ms
from edgeseg.errors import EdgesegError

@dataclass(frozen=True)
class Settings:
    """How long to measure: warm-up seconds, then at least `iterations` and `duration` seconds."""

    warmup_s: float = 1.0
    duration_s: float = 3.0
    iterations: int = 10

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.duration_s < 0:
            raise EdgesegError("--warmup and --duration must be >= 0 seconds")
        if self.iterations < 1:
            raise EdgesegError(f"--iterations must be >= 1, got {self.iterations}")


@dataclass
class Measurement:
    """Per-iteration seconds: `host` always, `parts` (h2d / compute / d2h) as the backend reports."""

    batch: int
    host: List[float] = field(default_factory=list)
    parts: Dict[str, List[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    warmup_iterations: int = 0
    rounds: List[float] = field(default_factory=list)  # throughput of each merged round

    def merge(self, other: "Measurement") -> None:
        """Add another round of the same cell (interleaved repeats): samples pooled, wall time summed."""
        self.host.extend(other.host)
        for key, values in other.parts.items():
            self.parts.setdefault(key, []).extend(values)
        self.wall_s += other.wall_s
        self.warmup_iterations += other.warmup_iterations
        self.rounds.append(other.throughput)

    @property
    def iterations(self) -> int:
        return len(self.host)

    @property
    def throughput(self) -> float:
        """Model inputs per second over the timed phase (iterations x batch / wall time); for a
        tiled model an input is a tile, as trtexec counts a batch."""
        return self.iterations * self.batch / self.wall_s if self.wall_s > 0 else 0.0

    def latency_ms(self) -> Dict[str, Dict[str, float]]:
        """summarize() of host latency and of each reported part, in milliseconds (cv unitless)."""
        series = {"host": self.host, **{k: v for k, v in self.parts.items() if v}}
        return {name: summary_ms(summarize(values)) for name, values in series.items()}

    @property
    def unstable(self) -> bool:
        """True when the host latency's coefficient of variation exceeds UNSTABLE_CV."""
        return self.iterations > 1 and summarize(self.host)["cv"] > UNSTABLE_CV


def measure(backend: Backend, feed: Dict[str, np.ndarray], settings: Settings) -> Measurement:
    """Time `backend.infer(feed)` on an activated backend."""
    batch = int(next(iter(feed.values())).shape[0])
    result = Measurement(batch=batch, parts={key: [] for key in TIMING_KEYS})
    warm_until = time.perf_counter() + settings.warmup_s
    while True:  # at least one warm-up run: first-call allocations never reach the samples
        backend.infer(feed)
        result.warmup_iterations += 1
        if time.perf_counter() >= warm_until:
            break
    started = time.perf_counter()
    done_at = started + settings.duration_s
    clock = started
    while result.iterations < settings.iterations or clock < done_at:
        before = time.perf_counter()
        backend.infer(feed)
        clock = time.perf_counter()
        result.host.append(clock - before)
        for key in TIMING_KEYS:
            if key in backend.timings:
                result.parts[key].append(backend.timings[key])
    result.wall_s = clock - started
    return result

