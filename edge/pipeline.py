"""The streaming run for one or many cameras: capture + prepare -> batched inference -> finish + sinks.

The cascade itself (models, gate, batching to each backend's limit, post-processing) is a
Cascade (edgeseg.edge.cascade: local backends or a Triton server); the pipeline gives its three
steps to threads: one capture thread per source (it reads and runs `Cascade.prepare`), ONE
inference thread (`Cascade.infer`) and one output thread (`Cascade.finish` and the sinks).
Bounded queues join them, so throughput reaches the slowest stage's rate while the others overlap
with it, and memory stays bounded. For a live source its capture queue holds one frame: the
source already keeps only the newest, and a deeper queue would only add latency.

Inference: the inference thread takes a batch of frames across the cameras (edge/muxer.py, as
DeepStream's stream muxer: round-robin, pushed when full or after `batch_timeout`, never waiting
longer for a stalled camera) and hands it to the cascade in one `infer` call. A batch holds at
most `max_batch` frames (default: one per camera) and at most the cascade's `frame_limit` (the
frames the classifier accepts in one run, e.g. an engine's profile maximum).
With one source every batch is that camera's next frame, as a single-camera pipeline would be.

Threading contract (backends/base.py): a cascade is constructed by the caller but activated, run
and deactivated by the inference thread, which therefore owns any CUDA context. A cascade the
caller activated already (an Inspector used as a context manager) stays active after the run.

Model updates (edgeseg.edge.swap): inference goes through a ModelSlot, which may swap a new pair
in between two batches (loaded and verified on another thread); each result is finished by the
pair that inferred it and `on_swap` announces a new pair before its first result.

Cameras are independent: a stalled live camera reconnects inside its Source while the others
keep going; an ended file, or a camera whose reconnects failed, ends only that camera; the run
ends when every camera has. Each frame carries its camera (`Frame.camera`, the source's position
in `sources`); the report has the totals and, under "cameras", the same figures per camera.

Latency: each frame's timings hold the time it waited in the queues ("queue": from the end of
preprocessing until inference took it, batch formation included, plus the wait for the output
thread) beside the stages that worked on it, so a file source read ahead of a slow model shows
its wait as wait. Frames of one batch share its classifier (and segmenter) time.

Drops: every frame a live (or `rate`-paced) source captured and the pipeline did not process is
counted as dropped, including the frames that arrived while the models were still loading and
warming up (`dropped_warmup`, part of `dropped`). A paced file is a camera stand-in and a
camera does not wait for the models either; `frames + dropped + corrupt` is then the whole file.

`stop()` (or the `Stop` given to the pipeline) may be called from a signal handler: the capture
threads stop taking frames and the frames already queued finish, so every captured frame reaches
the sinks; a second `stop()` abandons the queued frames: capture and output leave after their current step, and `run()`
waits for an inference call (which cannot be interrupted) only ABANDON_GRACE seconds before it
returns, so the sinks can be closed at once. An error in any thread stops the others and is
re-raised by `run()`.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from edgeseg.edge.cascade import Cascade, Inferred, Prepared
from edgeseg.edge.latency import LatencyRecorder
from edgeseg.edge.muxer import Entry, StreamMuxer
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Source
from edgeseg.edge.swap import ModelSlot
from edgeseg.errors import EdgesegError

_END = object()  # end-of-stream marker passed down the results queue
_POLL = 0.1  # seconds between checks of the stop / abort flags while blocked
BATCH_TIMEOUT = 0.02  # s a batch waits for the cameras that have not given it a frame yet
ABANDON_GRACE = 1.0  # seconds run() still waits for a busy inference thread after an abort


class Stop:
    """Ends a run from any thread or a signal handler: the first call stops taking frames (the
    queued ones finish), a second abandons them. Called before the run starts, the run ends at
    once; one Stop serves one run."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.abandoned = threading.Event()
        self.reason = ""

    def __call__(self, reason: str = "stopped") -> None:
        if self.requested.is_set():
            self.abandoned.set()
            return
        self.reason = reason
        self.requested.set()


@dataclass
class _Camera:
    """One source and what the pipeline counts for it."""

    index: int
    source: Source
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    dropped_warmup: int = 0
    waited_max: int = 0  # most batches one of its frames waited at the head of its queue

    def source_stats(self) -> Dict[str, Any]:
        stats = self.source.stats.to_dict()
        return dict(stats, dropped_warmup=self.dropped_warmup, uri=self.source.uri, live=self.source.live)


@dataclass
class _Captured:
    """What a capture thread hands to inference."""

    prepared: Prepared
    queued: float  # perf_counter when it entered the queue


class Pipeline:
    """Run `sources` through `cascade` into `sinks`, once.

    sources: one Source, or a sequence of them (one camera each; results carry the index).
    cascade: the models, gate and post-processing (edgeseg.edge.cascade), or the ModelSlot
    (edgeseg.edge.swap) that holds them and may swap in a new pair between two batches.
    max_frames: stop each camera after this many frames (None: until it ends or `stop()`).
    max_batch: most frames per inference batch (default: the number of cameras).
    batch_timeout: seconds a batch waits for cameras that have not given it a frame yet.
    on_result: called with each FrameResult after the sinks (e.g. a progress display).
    stop: the Stop that ends this run (default: its own; `stop()` calls it).
    on_swap: called on the output thread with a pair swapped in mid-run, before its first
    result reaches the sinks (Inspector.stream: `Outputs.restart`, a header record first).
    """

    def __init__(
        self,
        sources: Union[Source, Sequence[Source]],
        cascade: Union[Cascade, ModelSlot],
        sinks: Sequence[Sink] = (),
        max_frames: Optional[int] = None,
        queue_size: int = 2,
        on_result: Optional[Callable[[FrameResult], None]] = None,
        max_batch: Optional[int] = None,
        batch_timeout: float = BATCH_TIMEOUT,
        stop: Optional[Stop] = None,
        on_swap: Optional[Callable[[Cascade], None]] = None,
    ) -> None:
        sources = [sources] if isinstance(sources, Source) else list(sources)
        if not sources:
            raise EdgesegError("the pipeline needs at least one source")
        if len({id(source) for source in sources}) != len(sources):
            raise EdgesegError("the same Source was given twice", hint="open the URI once per camera: two readers of one Source would split its frames")
        if max_frames is not None and max_frames < 1:
            raise EdgesegError(f"max frames must be >= 1, got {max_frames}")
        if queue_size < 1:
            raise EdgesegError(f"queue size must be >= 1, got {queue_size}")
        if max_batch is not None and max_batch < 1:
            raise EdgesegError(f"max batch must be >= 1 frame, got {max_batch}")
        if batch_timeout < 0:
            raise EdgesegError(f"batch timeout must be >= 0 s, got {batch_timeout}")
        self.cameras = [_Camera(index, source) for index, source in enumerate(sources)]
        self.slot = cascade if isinstance(cascade, ModelSlot) else ModelSlot(cascade)
        self.on_swap = on_swap
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.max_batch = max_batch or len(sources)
        self.batch_timeout = batch_timeout
        self.on_result = on_result
        self.recorder = LatencyRecorder()  # all cameras
        self._queue_size = queue_size
        self._muxer = StreamMuxer([1 if c.source.live else queue_size for c in self.cameras])
        self._batch_sizes: "Counter[int]" = Counter()
        self._batch_limit = self.max_batch  # lowered to the cascade's frame limit once active
        self._halt = stop if stop is not None else Stop()
        self._stop = self._halt.requested  # stop taking frames, finish the queued ones
        self._abort = self._halt.abandoned  # an error or a second stop: every thread leaves now
        self._ready = threading.Event()  # cascade active
        self._errors: List[BaseException] = []
        self._stopped_by = "end of source"
        self._backends: Dict[str, str] = {}
        self._producer: Optional[Cascade] = None  # the pair that made the last result written
        self._first_event = len(self.slot.events)

    @property
    def cascade(self) -> Cascade:
        """The pair in use (a model update may replace it between two batches)."""
        return self.slot.active

    @property
    def gate(self) -> float:
        return self.cascade.gate

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking frames; the queued ones still finish. A second call abandons them.
        Safe from signal handlers."""
        self._halt(reason)

    def run(self) -> Dict[str, Any]:
        """Process until every source ended, `max_frames`, `stop()` or an error; return the report."""
        results_q: "queue.Queue[Any]" = queue.Queue(maxsize=self._queue_size * len(self.cameras))
        inference = threading.Thread(target=self._guard, args=(self._infer, results_q), name="edgeseg-inference", daemon=True)
        others = [
            threading.Thread(target=self._guard, args=(self._capture, camera), name=f"edgeseg-capture-{camera.index}", daemon=True)
            for camera in self.cameras
        ]
        others.append(threading.Thread(target=self._guard, args=(self._output, results_q), name="edgeseg-output", daemon=True))
        threads = others[:-1] + [inference, others[-1]]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                abandon_at = None
                while thread.is_alive():
                    thread.join(timeout=_POLL)  # short joins keep the main thread responsive to signals
                    if thread is inference and self._abort.is_set():
                        # inference may sit in a backend call that cannot be interrupted: it
                        # touches no sink, so leave it (a daemon) after a grace period
                        abandon_at = abandon_at or time.perf_counter() + ABANDON_GRACE
                        if time.perf_counter() >= abandon_at:
                            break
        except BaseException:  # e.g. KeyboardInterrupt without a handler: leave nothing running
            self._stop.set()
            self._abort.set()
            for thread in others:
                thread.join()
            raise
        if self._errors:
            raise self._errors[0]
        return self.report()

    def report(self) -> Dict[str, Any]:
        """The latency report of all cameras plus source counters, gate, batching and backends;
        "cameras" holds the same per camera."""
        cameras = []
        for camera in self.cameras:
            entry = dict(camera.recorder.report(), camera=camera.index, source=camera.source_stats())
            entry["batch_wait_max"] = camera.waited_max
            cameras.append(entry)
        stats = [c["source"] for c in cameras]
        if len(stats) == 1:
            source = stats[0]
        else:
            source = {key: sum(s[key] for s in stats) for key in ("frames", "dropped", "dropped_warmup", "corrupt", "reconnects", "gaps", "gap_s")}
            source["error"] = "; ".join(f"camera {c['camera']} ({s['uri']}): {s['error']}" for c, s in zip(cameras, stats) if s["error"])
            source["uri"] = ", ".join(s["uri"] for s in stats)
            source["live"] = any(s["live"] for s in stats)
        batches = sum(self._batch_sizes.values())
        report = self.recorder.report()
        report.update(
            {
                "source": source,
                "gate": self.gate,
                "stopped_by": source["error"] or self._halt.reason or self._stopped_by,
                "backends": dict(self._backends),
                "batching": {
                    "max_batch": self._batch_limit,
                    "timeout_ms": self.batch_timeout * 1000.0,
                    "batches": batches,
                    "mean_size": sum(k * v for k, v in self._batch_sizes.items()) / batches if batches else 0.0,
                    "sizes": {str(k): v for k, v in sorted(self._batch_sizes.items())},
                },
                "cameras": cameras,
                "model_updates": [event.to_dict() for event in self.slot.events[self._first_event :]],
            }
        )
        report.update(self.cascade.counters())
        return report

    # -- threads --------------------------------------------------------------------------------
    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: B902 - handed to run() in the main thread
            self._errors.append(exc)
            self._abort.set()
            self._stop.set()

    def _put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: "queue.Queue[Any]") -> Any:
        while not self._abort.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return _END

    def _capture(self, camera: _Camera) -> None:
        """Read one camera's frames and prepare them for inference (`Cascade.prepare`)."""
        source = camera.source
        try:
            while not self._ready.is_set():
                if self._abort.wait(_POLL):
                    return
            camera.dropped_warmup = source.stats.dropped
            count = 0
            while not self._stop.is_set():
                if self.max_frames is not None and count >= self.max_frames:
                    self._stopped_by = "max frames"
                    break
                frame = source.read(timeout=_POLL)
                if frame is None:
                    if source.ended:
                        break
                    continue
                frame.camera = camera.index
                prepared = self.cascade.prepare(frame)
                captured = _Captured(prepared, time.perf_counter())
                while not self._muxer.put(camera.index, captured, timeout=_POLL):
                    if self._abort.is_set():
                        return
                count += 1
        finally:
            self._muxer.finish(camera.index)

    def _infer(self, results_q: "queue.Queue[Any]") -> None:
        """The inference thread: activate the cascade (unless the caller did), then run batches
        until the sources end or an abort."""
        owned = not self.cascade.is_active
        try:
            if owned:
                self.cascade.activate()
            self._backends = self.cascade.describe()
            self._fit_batch_limit()
            self._ready.set()
            while not self._abort.is_set():
                batch = self._muxer.next_batch(self._batch_limit, self.batch_timeout, _POLL)
                if batch is None:
                    break
                if batch and not self._infer_batch(batch, results_q):
                    return
        finally:
            self._ready.set()  # never leave the capture threads waiting
            try:
                self._put(results_q, _END)
            finally:
                self.slot.settle()
                if owned:
                    self.cascade.deactivate()

    def _fit_batch_limit(self) -> None:
        limit = self.cascade.frame_limit
        self._batch_limit = self.max_batch if limit is None else min(self.max_batch, limit)

    def _infer_batch(self, batch: List[Entry], results_q: "queue.Queue[Any]") -> bool:
        """One `Cascade.infer` over the batch; False when aborted."""
        taken = time.perf_counter()
        captured: List[_Captured] = [entry.item for entry in batch]
        for entry in batch:
            camera = self.cameras[entry.camera]
            camera.waited_max = max(camera.waited_max, entry.waited)
        self._batch_sizes[len(batch)] += 1
        producer, inferred = self.slot.infer([c.prepared for c in captured])
        self._fit_batch_limit()
        for c, item in zip(captured, inferred):
            item.stages = {"capture": c.prepared.frame.decode, "queue": taken - c.queued, **item.stages}
            if not self._put(results_q, (item, time.perf_counter(), producer)):
                return False
        return True

    def _output(self, results_q: "queue.Queue[Any]") -> None:
        while True:
            entry = self._get(results_q)
            if entry is _END:
                return
            item: Inferred
            item, queued, producer = entry
            item.stages["queue"] += time.perf_counter() - queued
            if producer is not self._producer:
                if self._producer is not None:  # a pair swapped in: its first result
                    self._backends = producer.describe()
                    if self.on_swap is not None:
                        self.on_swap(producer)
                self._producer = producer
            result = producer.finish(item)
            frame, stages = item.frame, item.stages
            started = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame, result)
            finished = time.perf_counter()
            stages["sink"] = finished - started
            for recorder in (self.recorder, self.cameras[frame.camera].recorder):
                recorder.add(stages, finished - frame.timestamp, item.gated, frame.timestamp - frame.decode, finished)
            if self.on_result is not None:
                self.on_result(result)
