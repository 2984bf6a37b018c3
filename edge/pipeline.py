"""The cascade for one or many cameras: capture + preprocess -> batched inference -> postprocess + sinks.

Threads: one capture thread per source (it reads and preprocesses), ONE inference thread and one
output thread (post-processing and sinks). Bounded queues join them, so throughput reaches the
slowest stage's rate while the others overlap with it, and memory stays bounded. For a live
source its capture queue holds one frame: the source already keeps only the newest, and a deeper
queue would only add latency.

Inference: the inference thread takes a batch of frames across the cameras (edge/muxer.py, as
DeepStream's stream muxer: round-robin, pushed when full or after `batch_timeout`, never waiting
longer for a stalled camera), runs the classifier once on all of them and the segmenter once on
those whose defect probability >= gate; clean frames skip it. A batch holds at most `max_batch`
frames (default: one per camera) and at most as many images as the classifier accepts in one run
(`Backend.max_batch`, an engine's profile maximum); a run larger than a backend accepts is split.
With one source every batch is that camera's next frame, as a single-camera pipeline would be.

Threading contract (backends/base.py): backends are constructed by the caller but activated,
run and deactivated only by the inference thread, which therefore owns any CUDA context.

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

`stop()` may be called from a signal handler: the capture threads stop taking frames and the
frames already queued finish, so every captured frame reaches the sinks; a second `stop()`
abandons the queued frames: capture and output leave after their current step, and `run()`
waits for an inference call (which cannot be interrupted) only ABANDON_GRACE seconds before it
returns, so the sinks can be closed at once. An error in any thread stops the others and is
re-raised by `run()`.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.latency import LatencyRecorder
from edgeseg.edge.muxer import Entry, StreamMuxer
from edgeseg.edge.postprocess import FrameResult, MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame, Source
from edgeseg.errors import EdgesegError

_END = object()  # end-of-stream marker passed down the results queue
_POLL = 0.1  # seconds between checks of the stop / abort flags while blocked
BATCH_TIMEOUT = 0.02  # s a batch waits for the cameras that have not given it a frame yet
ABANDON_GRACE = 1.0  # seconds run() still waits for a busy inference thread after an abort


def check_gate(gate: float) -> float:
    """The gate as a float, or EdgesegError: a finite probability threshold >= 0 (values above
    1 are allowed and gate every frame out)."""
    value = float(gate)
    if not math.isfinite(value) or value < 0:
        raise EdgesegError(f"gate must be a defect probability >= 0 (0 segments every frame, above 1 none), got {gate}")
    return value


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

    frame: Frame
    tensor: np.ndarray
    preprocess: float  # seconds
    queued: float  # perf_counter when it entered the queue


class Pipeline:
    """Run `sources` through `classifier` -> gate -> `segmenter` into `sinks`, once.

    sources: one Source, or a sequence of them (one camera each; results carry the index).
    gate: defect probability at or above which the segmenter runs (default: the classifier
    card's `thresholds.defect`); 0 runs it on every frame, above 1 on none.
    max_frames: stop each camera after this many frames (None: until it ends or `stop()`).
    max_batch: most frames per inference batch (default: the number of cameras).
    batch_timeout: seconds a batch waits for cameras that have not given it a frame yet.
    postprocess: mask thresholds (default: the segmenter card's).
    on_result: called with each FrameResult after the sinks (e.g. a progress display).
    """

    def __init__(
        self,
        sources: Union[Source, Sequence[Source]],
        classifier: Backend,
        segmenter: Backend,
        sinks: Sequence[Sink] = (),
        gate: Optional[float] = None,
        max_frames: Optional[int] = None,
        queue_size: int = 2,
        postprocess: Optional[MaskPostprocess] = None,
        on_result: Optional[Callable[[FrameResult], None]] = None,
        max_batch: Optional[int] = None,
        batch_timeout: float = BATCH_TIMEOUT,
    ) -> None:
        for backend, task in ((classifier, "classifier"), (segmenter, "segmenter")):
            if backend.card.task != task:
                raise EdgesegError(
                    f"{backend.artifact} is a {backend.card.task} model but was given as the {task}",
                    hint="pass the classifier as --classifier and the ResUNet as --segmenter",
                )
        per_image = [d for d in classifier.card.output.shape[1:]]
        if any(isinstance(d, int) and d != 1 for d in per_image):
            raise EdgesegError(
                f"{classifier.artifact}: classifier output {classifier.card.output.shape} is not one score per image",
                hint="the gate needs a single defect logit or probability per image",
            )
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
        self.classifier = classifier
        self.segmenter = segmenter
        self.sinks = list(sinks)
        self.gate = check_gate(gate if gate is not None else classifier.card.thresholds.get("defect", 0.5))
        self.max_frames = max_frames
        self.max_batch = max_batch or len(sources)
        self.batch_timeout = batch_timeout
        self.post = postprocess or MaskPostprocess(segmenter.card)
        self.on_result = on_result
        self.recorder = LatencyRecorder()  # all cameras
        self._queue_size = queue_size
        self._muxer = StreamMuxer([1 if c.source.live else queue_size for c in self.cameras])
        self._batch_sizes: "Counter[int]" = Counter()
        self._batch_limit = self.max_batch  # lowered to what the classifier takes once tiles are known
        self._stop = threading.Event()  # stop taking frames, finish the queued ones
        self._abort = threading.Event()  # an error or a second stop: every thread leaves now
        self._ready = threading.Event()  # backends active
        self._errors: List[BaseException] = []
        self._stopped_by = "end of source"
        self._backend_names: Dict[str, str] = {}

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking frames; the queued ones still finish. A second call abandons them.
        Safe from signal handlers."""
        if self._stop.is_set():
            self._abort.set()
            return
        self._stopped_by = reason
        self._stop.set()

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
                "stopped_by": source["error"] or self._stopped_by,
                "backends": dict(self._backend_names),
                "batching": {
                    "max_batch": self._batch_limit,
                    "timeout_ms": self.batch_timeout * 1000.0,
                    "batches": batches,
                    "mean_size": sum(k * v for k, v in self._batch_sizes.items()) / batches if batches else 0.0,
                    "sizes": {str(k): v for k, v in sorted(self._batch_sizes.items())},
                },
                "cameras": cameras,
            }
        )
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
        """Read one camera's frames and preprocess them for the classifier (and the segmenter
        when the two share a preprocessing, so the tensor is made once)."""
        spec = self.classifier.card.preprocess
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
                started = time.perf_counter()
                tensor = preprocess(frame.image, spec)
                queued = time.perf_counter()
                captured = _Captured(frame, tensor, queued - started, queued)
                while not self._muxer.put(camera.index, captured, timeout=_POLL):
                    if self._abort.is_set():
                        return
                count += 1
        finally:
            self._muxer.finish(camera.index)

    def _infer(self, results_q: "queue.Queue[Any]") -> None:
        """The inference thread: activate, then run batches until the sources end or an abort."""
        try:
            self._activate()
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
                self._deactivate()

    def _activate(self) -> None:
        """Load and warm up both backends on this (the inference) thread; fit the batch limit."""
        classifier = self.classifier
        for backend, role in ((classifier, "classifier"), (self.segmenter, "segmenter")):
            backend.activate()
            _warm_up(backend)
            self._backend_names[role] = backend.describe()
        if classifier.max_batch is not None:  # at least one image per frame; tiles refine it later
            self._batch_limit = min(self.max_batch, classifier.max_batch)

    def _deactivate(self) -> None:
        self.classifier.deactivate()
        self.segmenter.deactivate()

    def _infer_batch(self, batch: List[Entry], results_q: "queue.Queue[Any]") -> bool:
        """Classifier on every frame of the batch, segmenter on the gated ones; False when aborted."""
        classifier, segmenter = self.classifier, self.segmenter
        taken = time.perf_counter()
        captured: List[_Captured] = [entry.item for entry in batch]
        stages = [{"capture": c.frame.decode, "preprocess": c.preprocess, "queue": taken - c.queued} for c in captured]
        for entry in batch:
            camera = self.cameras[entry.camera]
            camera.waited_max = max(camera.waited_max, entry.waited)
        self._batch_sizes[len(batch)] += 1
        tiles = captured[0].tensor.shape[0]
        if classifier.max_batch is not None:
            self._batch_limit = max(1, min(self.max_batch, classifier.max_batch // tiles))

        started = time.perf_counter()
        scores, cls_timings = _run(classifier, [c.tensor for c in captured])
        elapsed = time.perf_counter() - started
        activation = classifier.card.output_activation
        probabilities = [defect_probability(s, activation) for s in scores]
        gated = [p >= self.gate for p in probabilities]
        for frame_stages in stages:
            frame_stages["classifier"] = elapsed
        maps: List[Optional[np.ndarray]] = [None] * len(batch)
        seg_timings: Dict[str, float] = {}
        chosen = [i for i, g in enumerate(gated) if g]
        if chosen:
            shared = classifier.card.preprocess == segmenter.card.preprocess
            tensors = []
            for i in chosen:
                started = time.perf_counter()
                tensors.append(captured[i].tensor if shared else preprocess(captured[i].frame.image, segmenter.card.preprocess))
                stages[i]["preprocess"] += time.perf_counter() - started
            started = time.perf_counter()
            outputs, seg_timings = _run(segmenter, tensors)
            elapsed = time.perf_counter() - started
            for i, output in zip(chosen, outputs):
                maps[i] = output
                stages[i]["segmenter"] = elapsed
        for i, frame_stages in enumerate(stages):
            for part in ("h2d", "d2h"):
                timings = [cls_timings] + ([seg_timings] if gated[i] else [])
                if any(part in t for t in timings):
                    frame_stages[part] = sum(t.get(part, 0.0) for t in timings)
        for i, c in enumerate(captured):
            if not self._put(results_q, (c.frame, probabilities[i], gated[i], maps[i], stages[i], time.perf_counter())):
                return False
        return True

    def _output(self, results_q: "queue.Queue[Any]") -> None:
        while True:
            item = self._get(results_q)
            if item is _END:
                return
            frame, probability, gated, maps, stages, queued = item
            stages["queue"] += time.perf_counter() - queued
            result = self.post.frame_result(frame, maps, probability, gated, stages, self.gate)
            started = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame, result)
            finished = time.perf_counter()
            stages["sink"] = finished - started
            for recorder in (self.recorder, self.cameras[frame.camera].recorder):
                recorder.add(stages, finished - frame.timestamp, gated, frame.timestamp - frame.decode, finished)
            if self.on_result is not None:
                self.on_result(result)


def _warm_up(backend: Backend) -> None:
    """One run on zeros: first-run allocations and kernel selection stay out of frame timings."""
    spec = backend.card.preprocess
    dtype = np.dtype(backend.card.input.dtype)
    backend.infer({backend.card.input.name: np.zeros((1, 1, spec.height, spec.width), dtype=dtype)})


def _run(backend: Backend, tensors: List[np.ndarray]) -> Tuple[List[np.ndarray], Dict[str, float]]:
    """Run `backend` on the images of several frames (each tensor one frame's tiles) in as few
    calls as its `max_batch` allows; return each frame's output and the summed timings."""
    images = tensors[0] if len(tensors) == 1 else np.concatenate(tensors)
    step = backend.max_batch or len(images)
    name, output = backend.card.input.name, backend.card.output.name
    parts: List[np.ndarray] = []
    timings: Dict[str, float] = {}
    for start in range(0, len(images), step):
        result = backend.infer({name: images[start : start + step]})[output]
        parts.append(result.copy() if backend.reuses_output_buffers else result)  # the next run overwrites its buffer
        for key, seconds in backend.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
    outputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
    bounds = np.cumsum([t.shape[0] for t in tensors])[:-1]
    return np.split(outputs, bounds), timings
