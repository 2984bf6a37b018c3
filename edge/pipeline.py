"""The cascade on three threads: capture + preprocess -> inference -> postprocess + sinks.

Bounded queues join the threads, so throughput reaches the slowest stage's rate while the others
overlap with it, and memory stays bounded. For a live source the first queue holds one frame:
the source already keeps only the newest, and a deeper queue would only add latency.

Inference: classifier probability >= gate -> segmenter (ResUNet); clean frames skip it.

Threading contract (backends/base.py): backends are constructed by the caller but activated,
run and deactivated only by the inference thread, which therefore owns any CUDA context.

Latency: each frame's timings hold the time it waited in the queues ("queue": from the end of
preprocessing until inference took it, plus the wait for the output thread) beside the stages
that worked on it, so a file source read ahead of a slow model shows its wait as wait.

Drops: every frame a live (or `rate`-paced) source captured and the pipeline did not process is
counted as dropped, including the frames that arrived while the models were still loading and
warming up (`dropped_warmup`, part of `dropped`). A paced file is a camera stand-in and a
camera does not wait for the models either; `frames + dropped + corrupt` is then the whole file.

`stop()` may be called from a signal handler: the capture thread stops taking frames and the
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
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.latency import LatencyRecorder
from edgeseg.edge.postprocess import FrameResult, MaskPostprocess, Segmentation, defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Source
from edgeseg.errors import EdgesegError

_END = object()  # end-of-stream marker passed down the queues
_POLL = 0.1  # seconds between checks of the stop / abort flags while blocked
ABANDON_GRACE = 1.0  # seconds run() still waits for a busy inference thread after an abort


def check_gate(gate: float) -> float:
    """The gate as a float, or EdgesegError: a finite probability threshold >= 0 (values above
    1 are allowed and gate every frame out)."""
    value = float(gate)
    if not math.isfinite(value) or value < 0:
        raise EdgesegError(f"gate must be a defect probability >= 0 (0 segments every frame, above 1 none), got {gate}")
    return value


class Pipeline:
    """Run `source` through `classifier` -> gate -> `segmenter` into `sinks`, once.

    gate: defect probability at or above which the segmenter runs (default: the classifier
    card's `thresholds.defect`); 0 runs it on every frame, above 1 on none.
    max_frames: stop after this many frames (None: until the source ends or `stop()`).
    postprocess: mask thresholds (default: the segmenter card's).
    on_result: called with each FrameResult after the sinks (e.g. a progress display).
    """

    def __init__(
        self,
        source: Source,
        classifier: Backend,
        segmenter: Backend,
        sinks: Sequence[Sink] = (),
        gate: Optional[float] = None,
        max_frames: Optional[int] = None,
        queue_size: int = 2,
        postprocess: Optional[MaskPostprocess] = None,
        on_result: Optional[Callable[[FrameResult], None]] = None,
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
        if max_frames is not None and max_frames < 1:
            raise EdgesegError(f"max frames must be >= 1, got {max_frames}")
        if queue_size < 1:
            raise EdgesegError(f"queue size must be >= 1, got {queue_size}")
        self.source = source
        self.classifier = classifier
        self.segmenter = segmenter
        self.sinks = list(sinks)
        self.gate = check_gate(gate if gate is not None else classifier.card.thresholds.get("defect", 0.5))
        self.max_frames = max_frames
        self.post = postprocess or MaskPostprocess(segmenter.card)
        self.on_result = on_result
        self.recorder = LatencyRecorder()
        self._queue_size = queue_size
        self._stop = threading.Event()  # stop taking frames, finish the queued ones
        self._abort = threading.Event()  # an error or a second stop: every thread leaves now
        self._ready = threading.Event()  # backends active
        self._errors: List[BaseException] = []
        self._stopped_by = "end of source"
        self._backend_names: Dict[str, str] = {}
        self._dropped_warmup = 0

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking frames; the queued ones still finish. A second call abandons them.
        Safe from signal handlers."""
        if self._stop.is_set():
            self._abort.set()
            return
        self._stopped_by = reason
        self._stop.set()

    def run(self) -> Dict[str, Any]:
        """Process until the source ends, `max_frames`, `stop()` or an error; return the report."""
        frames_q: "queue.Queue[Any]" = queue.Queue(maxsize=1 if self.source.live else self._queue_size)
        results_q: "queue.Queue[Any]" = queue.Queue(maxsize=self._queue_size)
        threads = [
            threading.Thread(target=self._guard, args=(self._capture, frames_q), name="edgeseg-capture", daemon=True),
            threading.Thread(target=self._guard, args=(self._infer, frames_q, results_q), name="edgeseg-inference", daemon=True),
            threading.Thread(target=self._guard, args=(self._output, results_q), name="edgeseg-output", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                abandon_at = None
                while thread.is_alive():
                    thread.join(timeout=_POLL)  # short joins keep the main thread responsive to signals
                    if thread is threads[1] and self._abort.is_set():
                        # inference may sit in a backend call that cannot be interrupted: it
                        # touches no sink, so leave it (a daemon) after a grace period
                        abandon_at = abandon_at or time.perf_counter() + ABANDON_GRACE
                        if time.perf_counter() >= abandon_at:
                            break
        except BaseException:  # e.g. KeyboardInterrupt without a handler: leave nothing running
            self._stop.set()
            self._abort.set()
            for thread in (threads[0], threads[2]):
                thread.join()
            raise
        if self._errors:
            raise self._errors[0]
        return self.report()

    def report(self) -> Dict[str, Any]:
        """The latency report plus source counters, gate and backends."""
        report = self.recorder.report()
        stats = dict(self.source.stats.to_dict(), dropped_warmup=self._dropped_warmup)
        report.update(
            {
                "source": dict(stats, uri=self.source.uri, live=self.source.live),
                "gate": self.gate,
                "stopped_by": self.source.stats.error or self._stopped_by,
                "backends": dict(self._backend_names),
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

    def _capture(self, frames_q: "queue.Queue[Any]") -> None:
        """Read frames and preprocess them for the classifier (and the segmenter when the two
        share a preprocessing, so the tensor is made once)."""
        spec = self.classifier.card.preprocess
        try:
            while not self._ready.is_set():
                if self._abort.wait(_POLL):
                    return
            self._dropped_warmup = self.source.stats.dropped
            count = 0
            while not self._stop.is_set():
                if self.max_frames is not None and count >= self.max_frames:
                    self._stopped_by = "max frames"
                    break
                frame = self.source.read(timeout=_POLL)
                if frame is None:
                    if self.source.ended:
                        break
                    continue
                started = time.perf_counter()
                tensor = preprocess(frame.image, spec)
                queued = time.perf_counter()
                if not self._put(frames_q, (frame, tensor, queued - started, queued)):
                    return
                count += 1
        finally:
            self._put(frames_q, _END)

    def _infer(self, frames_q: "queue.Queue[Any]", results_q: "queue.Queue[Any]") -> None:
        classifier, segmenter = self.classifier, self.segmenter
        shared = classifier.card.preprocess == segmenter.card.preprocess
        activation = classifier.card.output_activation
        try:
            for backend, role in ((classifier, "classifier"), (segmenter, "segmenter")):
                backend.activate()
                _warm_up(backend)
                self._backend_names[role] = backend.describe()
            self._ready.set()
            checked = set()  # backends whose batch limit was checked (once: frames share a shape)
            while True:
                item = self._get(frames_q)
                if item is _END:
                    break
                frame, tensor, prep, queued = item
                taken = time.perf_counter()
                if classifier not in checked:
                    _check_batch(classifier, tensor.shape[0])
                    checked.add(classifier)
                stages = {"capture": frame.decode, "preprocess": prep, "queue": taken - queued}
                started = time.perf_counter()
                scores = classifier.infer({classifier.card.input.name: tensor})[classifier.card.output.name]
                stages["classifier"] = time.perf_counter() - started
                timings = [dict(classifier.timings)]
                probability = defect_probability(scores, activation)
                gated = probability >= self.gate
                maps: Optional[np.ndarray] = None
                if gated:
                    started = time.perf_counter()
                    seg_tensor = tensor if shared else preprocess(frame.image, segmenter.card.preprocess)
                    stages["preprocess"] += time.perf_counter() - started
                    if segmenter not in checked:
                        _check_batch(segmenter, seg_tensor.shape[0])
                        checked.add(segmenter)
                    started = time.perf_counter()
                    maps = segmenter.infer({segmenter.card.input.name: seg_tensor})[segmenter.card.output.name]
                    if segmenter.reuses_output_buffers:
                        maps = maps.copy()  # the next infer overwrites the backend's buffer
                    stages["segmenter"] = time.perf_counter() - started
                    timings.append(dict(segmenter.timings))
                for part in ("h2d", "d2h"):
                    if any(part in t for t in timings):
                        stages[part] = sum(t.get(part, 0.0) for t in timings)
                if not self._put(results_q, (frame, probability, gated, maps, stages, time.perf_counter())):
                    return
        finally:
            self._ready.set()  # never leave the capture thread waiting
            try:
                self._put(results_q, _END)
            finally:
                classifier.deactivate()
                segmenter.deactivate()

    def _output(self, results_q: "queue.Queue[Any]") -> None:
        classes = self.segmenter.card.classes
        while True:
            item = self._get(results_q)
            if item is _END:
                return
            frame, probability, gated, maps, stages, queued = item
            height, width = frame.image.shape[:2]
            started = time.perf_counter()
            stages["queue"] += started - queued
            if maps is not None:
                segmentation = self.post(maps, (height, width))
            else:
                segmentation = Segmentation(areas={name: 0 for name in classes})
            stages["postprocess"] = time.perf_counter() - started
            result = FrameResult(
                index=frame.index,
                source=frame.source,
                timestamp=frame.timestamp,
                height=height,
                width=width,
                defect_probability=probability,
                gated=gated,
                segmentation=segmentation,
                latency=stages,
                gate=self.gate,
            )
            started = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame, result)
            finished = time.perf_counter()
            stages["sink"] = finished - started
            self.recorder.add(stages, finished - frame.timestamp, gated, frame.timestamp - frame.decode, finished)
            if self.on_result is not None:
                self.on_result(result)


def _warm_up(backend: Backend) -> None:
    """One run on zeros: first-run allocations and kernel selection stay out of frame timings."""
    spec = backend.card.preprocess
    dtype = np.dtype(backend.card.input.dtype)
    backend.infer({backend.card.input.name: np.zeros((1, 1, spec.height, spec.width), dtype=dtype)})


def _check_batch(backend: Backend, batch: int) -> None:
    if backend.max_batch is not None and batch > backend.max_batch:
        raise EdgesegError(
            f"{backend.artifact} takes at most {backend.max_batch} image(s) per run but a frame needs {batch} tiles",
            hint="rebuild the engine with a larger maximum batch, or use geometry 'resize'",
        )

