"""ONNX Runtime backend: the CPU path that runs everywhere, and CUDA when onnxruntime-gpu is there.

IO binding keeps the inputs and outputs where the provider wants them: on CUDA the input copy is
made (and timed as "h2d") when it is bound, the output copy back (timed as "d2h") after the run,
so "compute" is the model alone, as TensorRT reports it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.artifacts import flavour_sibling
from edgeseg.edge.card import Artifact, ModelCard, TensorSpec
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import available, require

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
_log = logging.getLogger("edgeseg")
_warned: set = set()  # artifacts already warned about in this process
_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# ONNX Runtime's "tensor(float)" -> numpy names used in cards
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def default_providers() -> List[str]:
    """CUDA first when this onnxruntime build has it, CPU always as the fallback."""
    ort = require("onnxruntime", "the ONNX Runtime backend")
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def ort_session(
    model: Union[PathLike, bytes],
    *,
    providers: Optional[Sequence[str]] = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    graph_optimization: str = "all",
    allow_spinning: bool = False,
    log_severity: int = 2,
    profile_prefix: Optional[str] = None,
    optimized_model: Optional[PathLike] = None,
) -> Any:
    """The one place an ONNX Runtime InferenceSession is made: the backend's, and the bare ones of
    the offline checks that need what the Backend protocol does not offer (a model still in
    memory, intermediate outputs, the profiler, the optimised graph written to a file).

    model: a path or serialised bytes. providers: None = `default_providers()`. log_severity: 3
    hides ONNX Runtime's warnings. profile_prefix: turns the profiler on (files named from it).
    optimized_model: where ONNX Runtime writes the graph it optimised. A model ONNX Runtime cannot
    load is an EdgesegError.
    """
    ort = require("onnxruntime", "ONNX Runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[graph_optimization])
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.log_severity_level = log_severity
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
    chosen = list(providers) if providers is not None else default_providers()
    missing = [p for p in chosen if p not in ort.get_available_providers()]
    if missing:
        raise EdgesegError(
            f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(ort.get_available_providers())})",
            hint="install onnxruntime-gpu for CUDAExecutionProvider, or leave the providers to the default",
        )
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=chosen)
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/InvalidGraph/... types
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(
            f"ONNX Runtime cannot load {'the model' if isinstance(source, bytes) else source}: {first_line}",
            hint=None if isinstance(source, bytes) else "the file is corrupt or not an ONNX model: re-export it with `edgeseg export`",
        ) from exc


class OnnxRuntimeBackend(Backend):
    """One ONNX model in one InferenceSession.

    providers: None = CUDA when available, else CPU; or an explicit list.
    intra_op_threads / inter_op_threads: 0 lets ONNX Runtime choose (one per physical core).
    graph_optimization: "disable" | "basic" | "extended" | "all".
    allow_spinning: whether idle intra-op threads spin-wait for work (ONNX Runtime's own
    default is to spin). Off by default here: spinning workers take the CPU from the pipeline's
    capture and output threads and, on small or shared CPUs, from the calling thread itself (on
    the 2-core development machine the demo cascade ran 1.3-1.45x faster without it).
    """

    kind = "onnxruntime"

    def __init__(
        self,
        artifact: PathLike,
        card: ModelCard,
        providers: Optional[Sequence[str]] = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        graph_optimization: str = "all",
        allow_spinning: bool = False,
    ) -> None:
        super().__init__(artifact, card)
        if graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise EdgesegError(
                f"unknown graph optimisation level {graph_optimization!r}", hint=f"use one of {', '.join(GRAPH_OPTIMIZATIONS)}"
            )
        if intra_op_threads < 0 or inter_op_threads < 0:
            raise EdgesegError("thread counts must be >= 0 (0 lets ONNX Runtime choose)")
        self.providers = list(providers) if providers is not None else None
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.graph_optimization = graph_optimization
        self.allow_spinning = allow_spinning
        self.note = ""  # set at activation when the artifact is a poor fit for this provider
        self._session: Any = None
        self._binding: Any = None
        self._device = "cpu"
        self._bound_shapes: Dict[str, Tuple[int, ...]] = {}

    def describe(self) -> str:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        used = ", ".join(self._session.get_providers()) if self._session is not None else "inactive"
        return f"onnxruntime {ort.__version__} ({used})" + (f"; {self.note}" if self.note else "")

    @property
    def runs_on(self) -> str:
        return self._device

    def _activate_impl(self) -> None:
        self._session = ort_session(
            self.artifact, providers=self.providers, intra_op_threads=self.intra_op_threads, inter_op_threads=self.inter_op_threads,
            graph_optimization=self.graph_optimization, allow_spinning=self.allow_spinning,
        )
        self._device = "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.note = slow_flavour_note(self.artifact, self.card.artifact) if self._device == "cpu" else ""
        if self.note and str(self.artifact) not in _warned:
            _warned.add(str(self.artifact))
            _log.warning("warning: %s", self.note)
        self._binding = self._session.io_binding()
        self._bound_shapes = {}

    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        inputs = [_spec(node) for node in self._session.get_inputs()]
        outputs = [_spec(node) for node in self._session.get_outputs()]
        first = self._session.get_inputs()[0].shape[0] if self._session.get_inputs()[0].shape else None
        self.max_batch = first if isinstance(first, int) and first > 0 else None
        return inputs, outputs

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        binding = self._binding
        start = time.perf_counter()
        shapes_changed = False
        for name, array in feed.items():
            if self._device == "cpu":
                binding.bind_cpu_input(name, array)
            else:
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
            if self._bound_shapes.get(name) != array.shape:
                self._bound_shapes[name] = array.shape
                shapes_changed = True
        if shapes_changed:
            # An output bound without a shape is allocated by the first run and then reused;
            # a new input shape (another batch) needs fresh output allocations.
            binding.clear_binding_outputs()
            for spec in self.outputs:
                binding.bind_output(spec.name, self._device)
        bound = time.perf_counter()
        self._session.run_with_iobinding(binding)
        ran = time.perf_counter()
        values = binding.copy_outputs_to_cpu()
        done = time.perf_counter()
        if self._device == "cpu":
            self.timings = {"compute": done - start}
        else:
            self.timings = {"h2d": bound - start, "compute": ran - bound, "d2h": done - ran}
        return {spec.name: value for spec, value in zip(self.outputs, values)}

    def _deactivate_impl(self) -> None:
        self._binding = None
        self._session = None
        self._bound_shapes = {}


def slow_flavour_note(artifact: Path, made_as: Artifact) -> str:
    """Why this INT8 model is slow on ONNX Runtime's CPU provider and what to run instead; "" when
    it is not the `trt` flavour. That flavour (symmetric int8 activations, TensorRT's form) has
    no fast S8S8 convolution on x86 ONNX Runtime: 0.5-0.6x FP32 (benchmarks/results/int8_cpu.md)."""
    if made_as.precision != "int8" or made_as.flavour != "trt":
        return ""
    faster = flavour_sibling(artifact, "cpu")
    instead = f"run {faster.name} beside it" if faster != artifact and faster.is_file() else "make the `cpu` flavour with `edgeseg calibrate --flavour cpu`"
    if available("openvino"):
        from edgeseg.edge.backends.openvino import saturates_here

        if not saturates_here(made_as):  # OpenVINO runs it fast, but right only where its int8 products do not saturate
            instead += ", or use --backend openvino"
    return f"{artifact.name} is the TensorRT form of INT8, slower than FP32 on ONNX Runtime's CPU provider: {instead}"


def _spec(node: Any) -> TensorSpec:
    shape: List[Union[int, str]] = [d if isinstance(d, int) else str(d) for d in (node.shape or [])]
    return TensorSpec(name=node.name, shape=shape, dtype=_DTYPES.get(node.type, node.type))
