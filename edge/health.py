"""Is the line inspecting? Liveness and readiness of a streaming run, as probes and a service
manager ask for them.

`Health` is a sink (edgeseg.edge.sinks): it sees every frame after the run's other outputs took
it, and compares that progress with the frames the sources delivered (`SourceStats.frames`).

- live: no delivered frame has waited more than `stall_s` for its result. A hung inference
  (a backend call that never returns) or a hung output leaves frames waiting and turns this
  false; a quiet line (cameras between coils, a camera down) leaves none waiting and stays live,
  so a watchdog does not restart a process that has nothing to do.
- ready: the models are verified and active (`models_ready`) and every camera is delivering
  (it delivered a frame and is neither down, in an outage the Source detected after its
  `timeout`, nor ended).

edgeseg.edge.metrics serves both as /healthz and /readyz; edgeseg.edge.sdnotify sends
systemd's READY=1 and WATCHDOG=1 from them. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame, Source

STALL_S = 10.0  # seconds a delivered frame may wait for its result before the run is not live


@dataclass(frozen=True)
class Status:
    """A probe's answer: ok, and one line per reason it is not."""

    ok: bool
    reasons: List[str] = field(default_factory=list)

    def text(self) -> str:
        return "ok\n" if self.ok else "".join(reason + "\n" for reason in self.reasons)


class Health(Sink):
    """Liveness and readiness of a run over `sources` (see the module doc).

    models_ready: True once the models are verified and active (e.g. `lambda:
    inspector.cascade.is_active`; the golden self-test, where it runs, belongs in it); None:
    once the run's header record came (`start`: the first frame went through the models).
    stall_s: seconds a delivered frame may wait for its result before `live()` says no.
    Give it to the run as the last of its outputs, so progress means every output took the frame.
    """

    kind = "health"

    def __init__(self, sources: Sequence[Source], models_ready: Optional[Callable[[], bool]] = None, stall_s: float = STALL_S) -> None:
        self.sources = list(sources)
        self.stall_s = stall_s
        self._started = False
        self.models_ready = models_ready or (lambda: self._started)
        self._lock = threading.Lock()
        self._progress = time.monotonic()  # the last result, or the last time nothing was waiting

    def start(self, header: Dict[str, Any]) -> None:
        self._started = True

    def write(self, frame: Frame, result: FrameResult) -> None:
        with self._lock:
            self.frames += 1
            self._progress = time.monotonic()

    def waiting(self) -> int:
        """Frames the sources delivered that have not reached the outputs yet."""
        return sum(source.stats.frames for source in self.sources) - self.frames

    def live(self) -> Status:
        with self._lock:
            now = time.monotonic()
            waiting = self.waiting()
            if waiting <= 0:
                self._progress = now
                return Status(True)
            stalled = now - self._progress
        if stalled <= self.stall_s:
            return Status(True)
        return Status(False, [f"inference stalled: {waiting} frame(s) waiting, no result for {stalled:.1f} s (limit {self.stall_s:g} s)"])

    def ready(self) -> Status:
        reasons = [] if self.models_ready() else ["models not verified and active yet"]
        for index, source in enumerate(self.sources):
            why = not_delivering(source)
            if why:
                reasons.append(f"camera {index} ({source.uri}): {why}")
        return Status(not reasons, reasons)


def not_delivering(source: Source) -> Optional[str]:
    """Why `source` is not delivering frames now (None: it is)."""
    stats = source.stats
    if stats.error:
        return stats.error
    if source.ended:
        return "ended"
    if stats.down:
        return "down (reconnecting)"
    if stats.frames == 0:
        return "no frame yet"
    return None
