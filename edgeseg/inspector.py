"""The Python API a line's own software embeds: two models in, one frame record per frame out.

    with Inspector("classifier.onnx", "segmenter.onnx") as inspector:
        record = inspector(image)              # one HxW / HxWx3 uint8 frame -> its record
        records = inspector([image1, image2])  # a batch -> a list, in order
        report = inspector.stream(["line.mp4"], [JsonlSink("out.jsonl")])  # header record first
        inspector.update("new/classifier.onnx", "new/segmenter.onnx")  # any thread, also mid-stream

A record is the `edgeseg.record/1` frame record (edgeseg.edge.records, the README) that
`edgeseg run --jsonl` writes. `stream` is the streaming run `edgeseg run` itself calls (sources ->
cascade -> sinks -> report). `update` loads a new pair beside the running one, verifies it and
swaps it in between two frames, or rolls it back (edgeseg.edge.swap). The models run on any
backend (`open_backend`: "auto" picks by artifact and machine), or on a Triton server
(backend="triton"). Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast, overload

import numpy as np

from edgeseg.edge.cascade import Cascade, LocalCascade, check_gate
from edgeseg.edge.pipeline import BATCH_TIMEOUT, Pipeline, Stop
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import RunHeader, frame_record, header_record
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame, Source, open_source
from edgeseg.edge.swap import ModelSlot, UpdateEvent, Verify
from edgeseg.errors import UsageError
from edgeseg.files import PathLike

DEFAULT_URL = "grpc://127.0.0.1:8001"
Image = Union[np.ndarray, Frame]
SourceLike = Union[Source, str, int, Path]
Record = Dict[str, Any]

__all__ = ["DEFAULT_URL", "Inspector"]


class Inspector:
    """The classifier -> gate -> ResUNet cascade as one object.

    classifier / segmenter: the two models (.onnx, OpenVINO .xml or TensorRT .engine, card
    beside each); not given with backend="triton", where the server holds them.
    backend: "auto" (by artifact and machine: edgeseg.edge.backends.open_backend), "onnxruntime",
    "openvino", "tensorrt", or "triton" (the cascade on the Triton server at `url`).
    gate: defect probability from which a frame is segmented (default: the classifier card's;
    0 segments every frame, above 1 none). threads: ONNX Runtime / OpenVINO threads per model
    (0: one per core). verify: run each model on its golden set here first
    (edgeseg.edge.verify.verify_models; `edgeseg run` does unless --skip-verify): a model that
    computes differently here raises GoldenMismatch; the outcome goes into the header record.

    The models load on first use (or on entering `with`) and are freed by `close` (or leaving
    `with`). Calls are not thread-safe: one caller at a time; `update` and `stop` may come from
    any thread.
    """

    def __init__(
        self,
        classifier: Optional[PathLike] = None,
        segmenter: Optional[PathLike] = None,
        backend: str = "auto",
        *,
        url: Optional[str] = None,
        gate: Optional[float] = None,
        threads: int = 0,
        verify: bool = False,
    ) -> None:
        self._slot = ModelSlot(_open_cascade(classifier, segmenter, backend, url, gate, threads))
        self._backend, self._threads, self._gate = backend, threads, gate  # how `update` opens a pair
        self._golden = verify and backend != "triton"  # a Triton server's models are not in this process
        self.verified: Dict[str, str] = {}  # per role: the golden-set check's outcome (none: skipped)
        if self._golden:
            self.verified = self._verify_golden({"classifier": cast(PathLike, classifier), "segmenter": cast(PathLike, segmenter)})
        self._count = 0  # index of the next frame given as an array
        self._stop = Stop()  # ends the stream in progress, or the next one

    @property
    def cascade(self) -> Cascade:
        """The pair in use (`update` may replace it)."""
        return self._slot.active

    @property
    def gate(self) -> float:
        return self.cascade.gate

    @gate.setter
    def gate(self, value: float) -> None:
        self._gate = self.cascade.gate = check_gate(value)  # a pair swapped in later keeps it

    @property
    def ready(self) -> bool:
        """The pair in use is loaded (and, when it came through `update`, verified): frames
        are inferred at once."""
        return self.cascade.is_active

    @property
    def model_sha256(self) -> Dict[str, str]:
        """Per role, the sha256 of the model in use: what the frame records name."""
        return self.cascade.model_sha256

    @property
    def updates(self) -> List[UpdateEvent]:
        """Every step of every `update` so far, in order (edgeseg.edge.swap.UpdateEvent)."""
        return list(self._slot.events)

    @property
    def verify(self) -> Verify:
        """How `update` verifies a new pair on this machine before use: called with the
        activated pair and the newest live frame, it raises to refuse it (default
        edgeseg.edge.swap.verify_on_frame: one live frame through both models, answers must be
        numbers). Assign another, e.g. a golden-frame check, to replace it."""
        return self._slot.verify

    @verify.setter
    def verify(self, check: Verify) -> None:
        self._slot.verify = check

    # -- lifecycle --------------------------------------------------------------------------------
    def open(self) -> "Inspector":
        """Load the models now (otherwise the first frame does)."""
        self.cascade.activate()
        return self

    def close(self) -> None:
        """Free the models (and any pair an update left loaded); safe to call twice."""
        self._slot.close()

    def update(
        self, classifier: PathLike, segmenter: PathLike, *, shadow: int = 0, on_event: Optional[Callable[[UpdateEvent], None]] = None
    ) -> UpdateEvent:
        """Replace the models without stopping: open the new pair on the same backend choice,
        load it beside the running one and verify it (`verify`) on this thread, while frames
        go on; the stream in progress (or the next call) then runs its next batch on it, after
        running it beside the old pair on `shadow` frames and reporting their agreement. Frame
        records name the pair that made them; a stream writes a header record at the swap.
        A pair that cannot be opened, takes other input or classes, fails verification or
        fails on its first frames is rolled back: the old pair goes on.

        Returns the "verified" or "rolled_back" event; later ones (swapped, rolled back) go to
        `on_event` (on the inference thread), all to `updates` and the "edgeseg" logger."""
        if self._backend == "triton":
            raise UsageError("with backend 'triton' the models come from the server", hint="update them in the server's model repository")
        paths = {"classifier": classifier, "segmenter": segmenter}
        if self._golden:  # the new pair proves itself on its golden sets, as the first one did
            try:
                self._verify_golden(paths)
            except Exception as exc:  # noqa: B902 - a mismatch is a rollback
                return self._slot.reject(paths, f"failed verification: {exc}", on_event)
        try:
            candidate = _open_cascade(classifier, segmenter, self._backend, None, self._gate, self._threads)
        except Exception as exc:  # noqa: B902 - a bad new pair is a rollback, not an error of the caller
            return self._slot.reject(paths, f"could not be opened: {exc}", on_event)
        return self._slot.offer(candidate, shadow, on_event)

    def _verify_golden(self, models: Dict[str, PathLike]) -> Dict[str, str]:
        """Each model on its golden set here (edgeseg.edge.verify): GoldenMismatch on a difference."""
        from edgeseg.edge.backends import BackendOptions
        from edgeseg.edge.verify import verify_models

        return verify_models(models, self._backend, BackendOptions.with_threads(self._threads))

    def __enter__(self) -> "Inspector":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- frames -----------------------------------------------------------------------------------
    @overload
    def __call__(self, frames: Image, gate: Optional[float] = None) -> Record: ...

    @overload
    def __call__(self, frames: Sequence[Image], gate: Optional[float] = None) -> List[Record]: ...

    def __call__(self, frames: Union[Image, Sequence[Image]], gate: Optional[float] = None) -> Union[Record, List[Record]]:
        """The frame record of one frame, or the list of records of a batch (a list or tuple),
        run as one batch. A frame is a uint8 image (HxW gray, HxWx3 BGR as OpenCV reads it) or an
        edgeseg Frame (its index, source and capture time go into the record). `gate` overrides
        the inspector's for this call."""
        if isinstance(frames, (list, tuple)):
            return [frame_record(frame, result) for frame, result in self._results(frames, gate)]
        frame, result = self._results([cast(Image, frames)], gate)[0]
        return frame_record(frame, result)

    def _results(self, images: Sequence[Image], gate: Optional[float]) -> List[Tuple[Frame, FrameResult]]:
        frames = [self._frame(image) for image in images]
        if not frames:
            return []
        self.cascade.activate()
        producer, inferred = self._slot.infer([self.cascade.prepare(frame) for frame in frames], gate)
        return list(zip(frames, (producer.finish(item) for item in inferred)))

    def _frame(self, image: Image) -> Frame:
        if isinstance(image, Frame):
            return image
        if not isinstance(image, np.ndarray):
            hint = "cv2.imread returns None for a file it cannot read" if image is None else "e.g. cv2.imread(path)"
            raise UsageError(f"a frame is a numpy uint8 image or an edgeseg Frame, got {type(image).__name__}", hint=hint)
        frame = Frame(index=self._count, image=image, timestamp=time.perf_counter(), source="array", captured_at=time.time())
        self._count += 1
        return frame

    # -- streams ----------------------------------------------------------------------------------
    def header(self, source: str, started: Optional[Tuple[float, float]] = None) -> Record:
        """The header record of a run over `source` (what sinks write first): models, sha256,
        backends, gate. `started`: (time.time(), time.perf_counter()) of the run's start."""
        return header_record(self.cascade, source, started, self.verified)

    def stream(
        self,
        sources: Union[SourceLike, Sequence[SourceLike]],
        sinks: Sequence[Sink] = (),
        *,
        max_frames: Optional[int] = None,
        max_batch: Optional[int] = None,
        batch_timeout: float = BATCH_TIMEOUT,
        on_result: Optional[Callable[[FrameResult], None]] = None,
        source_name: Optional[str] = None,
        started: Optional[Tuple[float, float]] = None,
    ) -> Dict[str, Any]:
        """Run every frame of `sources` (opened Sources, or URIs: file, folder, glob, camera
        index, rtsp://..., one camera each, batched together) through the cascade into `sinks`
        until the sources end, `max_frames` per camera, or `stop()`; return the run's report
        (frames, fps, per-stage latency, gate pass rate, per camera). Every sink is started
        with the run's header record when the first frame arrives (`Sink.start`): `source_name`
        (default: the sources' names) and `started` ((time.time(), time.perf_counter()),
        default now) go into it. URIs are opened with the default SourceOptions and closed at
        the end; sinks stay the caller's to close."""
        from edgeseg.edge.outputs import Outputs

        listed = list(sources) if isinstance(sources, (list, tuple)) else [cast(SourceLike, sources)]
        with contextlib.ExitStack() as stack:
            opened = [s if isinstance(s, Source) else stack.enter_context(open_source(s)) for s in listed]
            name = source_name if source_name is not None else ", ".join(source.uri for source in opened)
            header = RunHeader(self.cascade, name, started or (time.time(), time.perf_counter()), self.verified, opened)
            outputs = Outputs(sinks, header)
            settings: Dict[str, Any] = dict(max_frames=max_frames, max_batch=max_batch, batch_timeout=batch_timeout, on_result=on_result)
            try:
                return Pipeline(opened, self._slot, [outputs], stop=self._stop, on_swap=outputs.restart, **settings).run()
            finally:
                self._stop = Stop()  # one Stop per run

    def stop(self, reason: str = "stopped") -> None:
        """End the stream in progress (or the next one, when none is): its queued frames still
        finish; a second call abandons them. Safe from signal handlers and other threads."""
        self._stop(reason)


def _open_cascade(classifier: Optional[PathLike], segmenter: Optional[PathLike], backend: str, url: Optional[str], gate: Optional[float], threads: int) -> Cascade:
    if backend == "triton":
        if classifier is not None or segmenter is not None:
            raise UsageError("with backend 'triton' the models come from the server", hint="give url= instead of the model files")
        from edgeseg.edge.triton import TritonCascade

        return TritonCascade(url or DEFAULT_URL, gate=gate)
    if url is not None:
        raise UsageError(f"url is for backend 'triton', not {backend!r}")
    if classifier is None or segmenter is None:
        raise UsageError("an Inspector needs a classifier and a segmenter model", hint="e.g. Inspector('classifier.onnx', 'segmenter.onnx')")
    from edgeseg.edge.backends import BackendOptions, open_backend

    options = BackendOptions.with_threads(threads)
    return LocalCascade(open_backend(classifier, backend, options), open_backend(segmenter, backend, options), gate=gate)
