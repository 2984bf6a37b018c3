"""The one backend protocol the pipeline drives (modelled on Polygraphy's BaseRunner).

Public `activate` / `infer` / `deactivate` do the bookkeeping and the checks; a backend writes
only the `_*_impl` parts. The I/O specs are read from the live session or engine and checked
against the model card ONCE, in `activate`, so `infer` is a straight call per frame.

Threading contract (this is what makes TensorRT + pycuda work from a pipeline worker): the
constructor only reads files (artifact, card) and may run anywhere; `activate`, `infer` and
`deactivate` must all be called from ONE thread, the thread that owns the backend (for TensorRT,
the one that creates and pushes the CUDA context). The pipeline constructs backends in the main
thread and activates, runs and deactivates them inside its inference thread.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.edge.card import ModelCard, TensorSpec
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

# Keys a backend may put in `Backend.timings` after each `infer` (seconds):
# "h2d" host->device copies, "compute" the model itself, "d2h" device->host copies.
TIMING_KEYS = ("h2d", "compute", "d2h")


class Backend(abc.ABC):
    """A loaded model that maps {input name: array} to {output name: array}.

    Attributes set by `activate`: `inputs` / `outputs` (TensorSpec as the runtime reports them;
    a str dimension is dynamic) and `max_batch` (largest batch accepted, None when unbounded).
    After each `infer`, `timings` holds that call's parts (see TIMING_KEYS); CPU backends report
    only "compute".

    Outputs of `infer` are valid until the next `infer` call when `reuses_output_buffers` is
    True (e.g. TensorRT's pinned host buffers); callers that keep them longer copy them.
    """

    kind: ClassVar[str] = ""  # one of registry.LOCAL_BACKENDS: what `--backend` calls it
    reuses_output_buffers: ClassVar[bool] = False

    def __init__(self, artifact: PathLike, card: ModelCard) -> None:
        self.artifact = Path(artifact)
        self.card = card
        self.inputs: List[TensorSpec] = []
        self.outputs: List[TensorSpec] = []
        self.max_batch: Optional[int] = None
        self.timings: Dict[str, float] = {}
        self._active = False

    # -- public lifecycle: checks and bookkeeping ---------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        """Load the session / engine, read its I/O specs and check them against the card."""
        if self._active:
            return
        self._activate_impl()
        try:
            self.inputs, self.outputs = self._io_specs_impl()
            check_specs(self.artifact, self.card, self.inputs, self.outputs)
        except BaseException:
            self._deactivate_impl()
            raise
        self._active = True

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once. `feed` maps input names to contiguous arrays of the card's dtype."""
        if not self._active:
            raise RuntimeError(f"{type(self).__name__}.infer() called before activate()")
        return self._infer_impl(feed)

    def deactivate(self) -> None:
        """Free the session / engine and every buffer; safe to call twice."""
        if not self._active:
            return
        self._active = False
        self._deactivate_impl()

    def __enter__(self) -> "Backend":
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def describe(self) -> str:
        """One line for logs and reports, e.g. "onnxruntime 1.17 (CPUExecutionProvider)"."""
        return self.kind

    @property
    def runs_on(self) -> str:
        """"cpu" or "cuda": where the model computes (valid once active), e.g. to pick the
        reference rate a benchmark compares its FLOP/s with."""
        return "cpu"

    # -- what a backend implements --------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None:
        """Create the session / engine, context, stream and buffers."""

    @abc.abstractmethod
    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        """(inputs, outputs) as the loaded model declares them; may set `self.max_batch`."""

    @abc.abstractmethod
    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once and fill `self.timings`."""

    @abc.abstractmethod
    def _deactivate_impl(self) -> None:
        """Release everything `_activate_impl` created (also called when activation fails)."""


def check_specs(artifact: Path, card: ModelCard, inputs: List[TensorSpec], outputs: List[TensorSpec]) -> None:
    """Refuse a model whose tensors disagree with its card: the card's input and output must
    exist with the same dtype, every dimension fixed on both sides must agree, and the images
    the card's preprocessing makes (1 x height x width) must fit the model's fixed dimensions:
    otherwise the first frame would fail inside the runtime with a raw shape error."""
    for role, want, have in (("input", card.input, inputs), ("output", card.output, outputs)):
        found = {spec.name: spec for spec in have}
        if want.name not in found:
            raise EdgesegError(
                f"{artifact}: its card names {role} {want.name!r} but the model has {sorted(found)}",
                hint="the card belongs to another model: re-export, or rebuild the engine from its ONNX",
            )
        spec = found[want.name]
        if spec.dtype != want.dtype:
            raise EdgesegError(
                f"{artifact}: {role} {want.name!r} is {spec.dtype} but its card says {want.dtype}",
                hint="re-export the model or rebuild the engine so that card and model agree",
            )
        fixed_mismatch = len(spec.shape) != len(want.shape) or any(
            isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0 and a != b for a, b in zip(spec.shape, want.shape)
        )
        if fixed_mismatch:
            raise EdgesegError(
                f"{artifact}: {role} {want.name!r} has shape {spec.shape} but its card says {want.shape}",
                hint="re-export the model or rebuild the engine so that card and model agree",
            )
    pre = card.preprocess
    image = pre.item_shape  # what preprocess() feeds per batch item, in the card's layout
    for spec in (next(s for s in inputs if s.name == card.input.name), card.input):
        if len(spec.shape) == 4 and any(isinstance(d, int) and d > 0 and d != m for d, m in zip(spec.shape[1:], image)):
            raise EdgesegError(
                f"{artifact}: its card preprocesses frames to {'x'.join(map(str, image))} ({pre.layout}) but input "
                f"{card.input.name!r} takes {spec.shape}",
                hint="fix preprocess in the card (or re-export the model) so that the size matches the model input",
            )
