"""The one cascade: preprocess -> classifier -> gate -> segmenter -> postprocess, over a batch of frames.

A Cascade works in three steps, so a pipeline can give each to its own thread while the caller
who has one frame in hand simply calls `results`:

  prepare(frame) -> Prepared       any thread (a pipeline's capture threads): the model input
  infer(batch)   -> [Inferred]     one thread at a time (a pipeline's inference thread): the
                                   models, each run in batches of at most what it accepts
  finish(item)   -> FrameResult    any thread (a pipeline's output thread): masks, areas, RLE, boxes

Two implementations: `LocalCascade` drives two Backends (ONNX Runtime, OpenVINO, TensorRT, or
the Triton BLS model's calls to the server's own models); edgeseg.edge.triton.TritonCascade
sends frames to that BLS model on a Triton server. The pipeline (edgeseg.edge.pipeline), the
BLS model (edgeseg.serve.cascade) and the Inspector (edgeseg.inspector) all run one of them.

Lifecycle as a Backend's (Polygraphy's BaseRunner): the constructor only reads cards; `activate`
loads (and warms up) the models, `deactivate` frees them; both are idempotent and a context
manager wraps them. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard
from edgeseg.edge.postprocess import FrameResult, MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.records import model_entry
from edgeseg.errors import EdgesegError

if TYPE_CHECKING:  # sources imports capture code a cascade does not run
    from edgeseg.edge.sources import Frame

ROLES = ("classifier", "segmenter")


def check_gate(gate: float) -> float:
    """The gate as a float, or EdgesegError: a finite probability threshold >= 0 (values above
    1 are allowed and gate every frame out)."""
    value = float(gate)
    if not math.isfinite(value) or value < 0:
        raise EdgesegError(f"gate must be a defect probability >= 0 (0 segments every frame, above 1 none), got {gate}")
    return value


@dataclass
class Prepared:
    """A frame made ready for `infer`: `tensor` is what this cascade feeds its first model,
    `preprocess` the seconds that took."""

    frame: Frame
    tensor: np.ndarray
    preprocess: float


@dataclass
class Inferred:
    """A frame between the models and the post-processing: its defect probability, whether it
    reached the segmenter (`gated`, against `gate`), the segmenter's `output` (None when not
    gated; what `finish` turns into masks) and the seconds per stage so far."""

    frame: Frame
    probability: float
    gated: bool
    gate: float
    output: Any
    stages: Dict[str, float]


class Cascade(abc.ABC):
    """The classifier -> gate -> segmenter cascade; subclasses write `prepare`, `infer`,
    `describe`, `models` and the `_*_impl` lifecycle parts.

    classifier_card / segmenter_card: the two models' cards. gate: the defect probability from
    which a frame is segmented (default: the classifier card's `thresholds.defect`). post: turns
    the segmenter's output into a frame's result.
    """

    def __init__(self, classifier_card: ModelCard, segmenter_card: ModelCard, post: MaskPostprocess, gate: Optional[float] = None) -> None:
        for card, role in ((classifier_card, "classifier"), (segmenter_card, "segmenter")):
            if card.task != role:
                raise EdgesegError(
                    f"{self._name(role)} is a {card.task} model but was given as the {role}",
                    hint="pass the classifier as --classifier and the ResUNet as --segmenter",
                )
        if any(isinstance(d, int) and d != 1 for d in classifier_card.output.shape[1:]):
            raise EdgesegError(
                f"{self._name('classifier')}: classifier output {classifier_card.output.shape} is not one score per image",
                hint="the gate needs a single defect logit or probability per image",
            )
        self.classifier_card = classifier_card
        self.segmenter_card = segmenter_card
        self.post = post
        self.gate = check_gate(gate if gate is not None else classifier_card.thresholds.get("defect", 0.5))
        self._active = False
        self._sha256: Optional[Dict[str, str]] = None

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        """Load the models (ready for the first frame); nothing when already active."""
        if not self._active:
            self._activate_impl()
            self._active = True

    def deactivate(self) -> None:
        """Free the models; safe to call twice."""
        if self._active:
            self._active = False
            self._deactivate_impl()

    def __enter__(self) -> "Cascade":
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- the cascade ------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, frame: Frame) -> Prepared:
        """The frame made ready for `infer` (thread-safe)."""

    @abc.abstractmethod
    def infer(self, batch: Sequence[Prepared], gate: Optional[float] = None) -> List[Inferred]:
        """Classifier on every frame, segmenter on those whose probability is >= `gate`
        (default `self.gate`); one Inferred per frame, in order. One caller at a time; the
        backends' threading contract holds (edgeseg.edge.backends.base)."""

    def finish(self, item: Inferred) -> FrameResult:
        """The frame's result (masks, areas, RLE, boxes), naming this pair's `model_sha256`; the
        time it took is its "postprocess" stage."""
        result = self.post.frame_result(item.frame, item.output, item.probability, item.gated, item.stages, item.gate)
        result.models = self.model_sha256
        return result

    def results(self, frames: Sequence[Frame], gate: Optional[float] = None) -> List[FrameResult]:
        """All three steps for a batch of frames on this thread (activate first)."""
        return [self.finish(item) for item in self.infer([self.prepare(frame) for frame in frames], gate)]

    @property
    def frame_limit(self) -> Optional[int]:
        """Most frames one `infer` call runs in a single model call or request (None: no
        limit); a larger batch is split."""
        return None

    @abc.abstractmethod
    def describe(self) -> Dict[str, str]:
        """Per role, one line naming what runs it (valid once active), e.g. "onnxruntime 1.17
        (CPUExecutionProvider)"."""

    @abc.abstractmethod
    def models(self) -> Dict[str, Dict[str, Any]]:
        """Per role, the header record's model entry (edgeseg.edge.records.model_entry)."""

    @property
    def model_sha256(self) -> Dict[str, str]:
        """Per role, the sha256 of the model (its header entry's), which every frame record
        names; read once (valid once active)."""
        if self._sha256 is None:
            self._sha256 = {role: entry["sha256"] for role, entry in self.models().items()}
        return self._sha256

    def counters(self) -> Dict[str, Any]:
        """Figures for a run's report beside the pipeline's own (e.g. a remote's reconnects)."""
        return {}

    def _name(self, role: str) -> str:
        """How errors name the model in `role` (its file, for a local one)."""
        return f"the {role}"

    @abc.abstractmethod
    def _activate_impl(self) -> None:
        """Load what `infer` needs."""

    @abc.abstractmethod
    def _deactivate_impl(self) -> None:
        """Free what `_activate_impl` made."""


class LocalCascade(Cascade):
    """The cascade on two Backends in this process.

    The classifier's input is made in `prepare`; the segmenter reuses it when the two cards
    preprocess alike, else makes its own for the gated frames only. warm_up: run each model
    once on zeros in `activate`, so first-run allocations stay out of the frame timings.
    """

    def __init__(
        self,
        classifier: Backend,
        segmenter: Backend,
        gate: Optional[float] = None,
        postprocess: Optional[MaskPostprocess] = None,
        warm_up: bool = True,
    ) -> None:
        self.classifier = classifier
        self.segmenter = segmenter
        super().__init__(classifier.card, segmenter.card, postprocess or MaskPostprocess(segmenter.card), gate)
        self.warm_up = warm_up
        self._shared = classifier.card.preprocess == segmenter.card.preprocess
        self._tiles = 1  # classifier images per frame, known from the first batch

    def _name(self, role: str) -> str:
        return str(self.classifier.artifact if role == "classifier" else self.segmenter.artifact)

    def _activate_impl(self) -> None:
        activated = []
        try:
            for backend in (self.classifier, self.segmenter):
                backend.activate()
                activated.append(backend)
                if self.warm_up:
                    _warm_up(backend)
        except BaseException:
            for backend in activated:
                backend.deactivate()
            raise

    def _deactivate_impl(self) -> None:
        self.classifier.deactivate()
        self.segmenter.deactivate()

    def prepare(self, frame: Frame) -> Prepared:
        started = time.perf_counter()
        tensor = preprocess(frame.image, self.classifier_card.preprocess)
        return Prepared(frame, tensor, time.perf_counter() - started)

    @property
    def frame_limit(self) -> Optional[int]:
        limit = self.classifier.max_batch
        return None if limit is None else max(1, limit // self._tiles)

    def infer(self, batch: Sequence[Prepared], gate: Optional[float] = None) -> List[Inferred]:
        threshold = self.gate if gate is None else check_gate(gate)
        stages = [{"preprocess": p.preprocess} for p in batch]
        self._tiles = batch[0].tensor.shape[0]
        started = time.perf_counter()
        scores, cls_timings = _run(self.classifier, [p.tensor for p in batch])
        elapsed = time.perf_counter() - started
        activation = self.classifier_card.output_activation
        probabilities = [defect_probability(s, activation) for s in scores]
        for frame_stages in stages:
            frame_stages["classifier"] = elapsed
        chosen = [i for i, p in enumerate(probabilities) if p >= threshold]
        maps: List[Optional[np.ndarray]] = [None] * len(batch)
        seg_timings: Dict[str, float] = {}
        if chosen:
            tensors = []
            for i in chosen:
                started = time.perf_counter()
                tensors.append(batch[i].tensor if self._shared else preprocess(batch[i].frame.image, self.segmenter_card.preprocess))
                stages[i]["preprocess"] += time.perf_counter() - started
            started = time.perf_counter()
            outputs, seg_timings = _run(self.segmenter, tensors)
            elapsed = time.perf_counter() - started
            for i, output in zip(chosen, outputs):
                maps[i] = output
                stages[i]["segmenter"] = elapsed
        for i, frame_stages in enumerate(stages):
            timings = [cls_timings] + ([seg_timings] if maps[i] is not None else [])
            for part in ("h2d", "d2h"):
                if any(part in t for t in timings):
                    frame_stages[part] = sum(t.get(part, 0.0) for t in timings)
        return [Inferred(p.frame, probabilities[i], maps[i] is not None, threshold, maps[i], stages[i]) for i, p in enumerate(batch)]

    def describe(self) -> Dict[str, str]:
        return {"classifier": self.classifier.describe(), "segmenter": self.segmenter.describe()}

    def models(self) -> Dict[str, Dict[str, Any]]:
        return {role: model_entry(b.card, b.artifact, b.describe()) for role, b in zip(ROLES, (self.classifier, self.segmenter))}


def _warm_up(backend: Backend) -> None:
    """One run on zeros: first-run allocations and kernel selection stay out of frame timings."""
    spec = backend.card.preprocess
    dtype = np.dtype(backend.card.input.dtype)
    backend.infer({backend.card.input.name: np.zeros((1,) + spec.item_shape, dtype=dtype)})


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
