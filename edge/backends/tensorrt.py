"""TensorRT backend: one engine, named-tensor I/O, pinned buffers, one stream, timed with CUDA events.

Before anything is deserialised the engine's card is checked against the running TensorRT, GPU
and platform (trt_compat.engine_mismatch): a plan from another TensorRT build, GPU, CPU
architecture or Jetson module fails with one line that says how to rebuild, instead of a crash
inside deserialize_cuda_engine. A DLA engine's runtime is set to the card's DLA core first.

Every CUDA call — deserialising, buffer allocation, copies, execution, freeing — runs in a
`CudaThread` that owns the primary context, so `infer` may be called from any thread (the
pipeline's worker); by default the process's engines on one GPU share that thread
(`CudaThread.shared`) and with it one execution-context scratch buffer, sized for the largest
engine (contexts made without their own device memory, trt_compat.context_without_scratch).
Buffers are allocated once, at the profile's largest shape: pinned host arrays and device arrays
(mem_alloc), bound once with set_tensor_address. The host arrays are numpy memory page-locked
with register_host_memory (cuMemHostRegister) and unregistered on deactivate, so an output a
caller still holds after `deactivate` stays valid memory — it never points into pinned memory
freed with the context. Where registering is refused (unverified on Jetson), pagelocked_empty is
used instead and outputs are returned as copies. On an integrated GPU (Jetson: one DRAM for CPU
and GPU, GpuIdentity.zero_copy) the host arrays are mapped into the device's address space
(DEVICEMAP) and bound by their device pointer: the engine reads the frame and writes its outputs
in place, with no device arrays and no copies.
The TensorRT Runtime is kept for the engine's lifetime: TensorRT requires the runtime that
deserialised an engine to outlive it (IRuntime docs), and Python would otherwise free it at once.
Each `infer`: copy the feed into the pinned input, set_input_shape, async H2D -> execute_async_v3
-> async D2H on the engine's stream (no copies with mapped buffers), events between them for the
h2d / compute / d2h timings.

API facts (TensorRT 8.5 - 11.x, see trt_compat): num_io_tensors, get_tensor_name, get_tensor_mode,
get_tensor_shape, get_tensor_dtype, get_tensor_profile_shape(name, profile) -> (min, opt, max),
IExecutionContext.set_input_shape / set_tensor_address / get_tensor_shape / execute_async_v3(stream)
exist from 8.5 (polygraphy 0.53's TrtRunner relies on exactly these; NVIDIA's samples/python/common
uses get_tensor_profile_shape(name, 0)). pycuda: pagelocked_empty(shape, dtype, order, mem_flags),
register_host_memory(ary, flags), host_alloc_flags / mem_host_register_flags.DEVICEMAP,
HostPointer.get_device_pointer(), mem_alloc, Stream, Event.record / time_since, memcpy_htod_async /
memcpy_dtoh_async (pycuda 2026.1 doc/driver.rst, src/wrapper/wrap_cudadrv.cpp). Python 3.8-compatible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import numpy as np

from edgeseg.edge import trt_compat
from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard, TensorSpec
from edgeseg.edge.cuda_context import CudaThread, gpu_identity, host_platform
from edgeseg.edge.registry import TENSORRT
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import require

# trt.DataType member -> numpy dtype, looked up by member name: INT64 (10.x) and BOOL/UINT8 do not
# exist in every version, so only the members this TensorRT has are compared.
_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


@dataclass
class _Binding:
    """One I/O tensor: its pinned host array and device allocation, both at the maximum shape.
    device is None when `host` is mapped (zero copy): the engine is bound to `address`, the host
    array's device pointer, instead."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: List[Union[int, str]]  # as the engine declares it; str = dynamic
    min_shape: Tuple[int, ...]
    max_shape: Tuple[int, ...]
    host: np.ndarray
    device: Any
    address: int  # what set_tensor_address bound: int(device), or the mapped host array's device pointer
    registered: bool  # host is numpy memory page-locked in place (else CUDA-owned pagelocked memory)


def _numpy_dtype(trt: Any, data_type: Any, name: str) -> np.dtype:
    for member, numpy_type in _DTYPES.items():
        if getattr(trt.DataType, member, None) == data_type:
            return np.dtype(numpy_type)
    raise EdgesegError(f"tensor {name!r} is {data_type}, which the TensorRT backend cannot feed from numpy")


def host_buffer(cuda: Any, count: int, dtype: np.dtype, mapped: bool = False) -> Tuple[np.ndarray, bool]:
    """(`count` page-locked elements, registered?): numpy-owned memory registered with CUDA, which
    outlives the context; else pagelocked_empty, which the context owns (call in the CUDA thread).
    mapped: also map it into the device's address space (DEVICEMAP); `host.base.get_device_pointer()`
    is then its address for kernels, which may differ from the host address."""
    try:
        flags = cuda.mem_host_register_flags.DEVICEMAP if mapped else 0
        return cuda.register_host_memory(cuda.aligned_empty((count,), dtype), flags), True
    except cuda.Error:  # e.g. cuMemHostRegister not supported on this platform
        return cuda.pagelocked_empty(count, dtype, "C", cuda.host_alloc_flags.DEVICEMAP if mapped else 0), False


def release_host_buffer(host: np.ndarray, registered: bool) -> None:
    """Unregister (the numpy memory stays valid for views still held) or free pagelocked memory."""
    owner: Any = host.base  # pycuda's RegisteredHostMemory / HostAllocation
    if registered:
        owner.unregister()
    else:
        owner.free()


def rebuild_hint(card: ModelCard) -> str:
    """The command that rebuilds this engine on the machine that failed to load it."""
    return f"rebuild it here: edgeseg build-engine {card.source.onnx or '<model>.onnx'} --precision {card.artifact.precision}"


class TensorRTBackend(Backend):
    """A TensorRT engine (`model.<precision>.engine` with its card) behind the backend protocol.

    device: CUDA device index. cuda_thread: the context-owning thread to run in; by default the
    process's shared thread for `device` (CudaThread.shared), so the classifier and the segmenter
    share one context, one thread and one scratch buffer.
    """

    kind = TENSORRT
    reuses_output_buffers = True

    def __init__(self, artifact: PathLike, card: ModelCard, device: int = 0, cuda_thread: Optional[CudaThread] = None) -> None:
        super().__init__(artifact, card)
        if card.artifact.format != TENSORRT:
            raise EdgesegError(f"{self.artifact}: its card does not describe a TensorRT engine", hint=rebuild_hint(card))
        trt = require("tensorrt", "the TensorRT backend")
        trt_compat.features(trt.__version__)  # refuses TensorRT < 8.5
        gpu = gpu_identity(device)
        reason = trt_compat.engine_mismatch(
            card.artifact, trt.__version__, gpu.name if gpu else None, gpu.compute_capability if gpu else None, host_platform(gpu)
        )
        if reason:
            raise EdgesegError(f"engine {self.artifact} cannot run here: {reason}", hint=rebuild_hint(card))
        self.device = device
        self.gpu_name = gpu.name if gpu else ""
        self.zero_copy = bool(gpu and gpu.zero_copy)  # stage I/O in mapped pinned memory, no copies
        self._shared_thread = cuda_thread
        self._cuda: Optional[CudaThread] = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._scratch_size = 0  # the context's scratch bytes (trt_compat.scratch_size)
        self._scratch_bound: Optional[int] = None  # the shared scratch address the context holds
        self._events: List[Any] = []
        self._bindings: List[_Binding] = []
        self._shapes: Dict[str, Tuple[int, ...]] = {}

    def describe(self) -> str:
        trt = require("tensorrt", "the TensorRT backend")
        return f"tensorrt {trt.__version__} on {self.gpu_name} ({self.card.artifact.precision})"

    @property
    def runs_on(self) -> str:
        return "cuda"

    # -- lifecycle (each step runs in the CUDA thread) ---------------------------------------------
    def _activate_impl(self) -> None:
        self._cuda = self._shared_thread or CudaThread.shared(self.device)
        try:
            self._cuda.call(self._load)
        except BaseException:
            self._deactivate_impl()  # whatever _load made before it failed
            raise

    def _load(self) -> None:
        trt = require("tensorrt", "the TensorRT backend")
        cuda = require("pycuda.driver", "the TensorRT backend")
        self._runtime = runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if "version_compatible" in (self.card.artifact.build_flags or []):
            trt_compat.enable_engine_host_code(runtime)
        core = trt_compat.dla_core(self.card.artifact)
        if core is not None:
            runtime.DLA_core = core
        self._engine = runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self._engine is None:
            raise EdgesegError(f"TensorRT could not deserialise {self.artifact} (see its log above)", hint=rebuild_hint(self.card))
        context: "trt.IExecutionContext" = trt_compat.context_without_scratch(trt, self._engine)  # type: ignore[name-defined]  # (tests/trt_api reads the type)
        self._context = context
        self._scratch_size = trt_compat.scratch_size(self._engine)
        self._stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for name in inputs:  # at their largest shapes, so outputs resolve to their largest too
            self._set_shape(name, self._profile(name)[1])
        for name in names:
            is_input = name in inputs
            declared = [int(d) for d in self._engine.get_tensor_shape(name)]
            low, high = self._profile(name) if is_input else (tuple(self._context.get_tensor_shape(name)),) * 2
            if min(high, default=0) < 0:
                raise EdgesegError(f"{self.artifact}: output {name!r} has a data-dependent shape {high}, which edgeseg does not support")
            dtype = _numpy_dtype(trt, self._engine.get_tensor_dtype(name), name)
            shape: List[Union[int, str]] = [d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(declared)]
            host, registered = host_buffer(cuda, int(np.prod(high)), dtype, mapped=self.zero_copy)
            try:
                device = None if self.zero_copy else cuda.mem_alloc(host.nbytes)
                address = int(device) if device is not None else int(cast(Any, host.base).get_device_pointer())
            except BaseException:
                release_host_buffer(host, registered)
                raise
            binding = _Binding(name, is_input, dtype, shape, tuple(low), tuple(high), host, device, address, registered)
            self._bindings.append(binding)  # owned from here on: _free releases it even if a later step fails
            if not self._context.set_tensor_address(name, binding.address):
                raise EdgesegError(f"TensorRT refused the buffer for {name!r} in {self.artifact}")

    def _profile(self, name: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """(min, max) input shape: profile 0's for dynamic inputs, the fixed shape otherwise."""
        declared = tuple(int(d) for d in self._engine.get_tensor_shape(name))
        if all(d >= 0 for d in declared):
            return declared, declared
        low, _, high = self._engine.get_tensor_profile_shape(name, 0)
        return tuple(int(d) for d in low), tuple(int(d) for d in high)

    def _set_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        if self._shapes.get(name) == shape:
            return
        if not self._context.set_input_shape(name, shape):
            binding = next((b for b in self._bindings if b.name == name), None)
            bounds = f" (the engine takes {binding.min_shape} to {binding.max_shape})" if binding else ""
            raise EdgesegError(
                f"{self.artifact}: input {name!r} cannot take shape {shape}{bounds}",
                hint="rebuild the engine with a larger --max-batch, or feed fewer tiles per call",
            )
        self._shapes[name] = shape

    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        specs = {True: [], False: []}  # type: Dict[bool, List[TensorSpec]]
        for b in self._bindings:
            specs[b.is_input].append(TensorSpec(b.name, list(b.shape), b.dtype.name))
        first = next(b for b in self._bindings if b.is_input)
        self.max_batch = first.max_shape[0] if first.max_shape else None
        return specs[True], specs[False]

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        assert self._cuda is not None
        return self._cuda.call(self._run, feed)

    def _run(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda = require("pycuda.driver", "the TensorRT backend")
        start, copied_in, computed, copied_out = self._events
        for b in self._bindings:
            if b.is_input:
                array = feed[b.name]
                self._set_shape(b.name, tuple(array.shape))
                np.copyto(b.host[: array.size].reshape(array.shape), array, casting="same_kind")
        scratch = self._cuda.scratch(self._scratch_size)  # type: ignore[union-attr]
        if scratch != self._scratch_bound:  # first run, or another engine grew the shared buffer
            trt_compat.bind_scratch(self._context, scratch, self._scratch_size)
            self._scratch_bound = scratch
        start.record(self._stream)
        for b in self._bindings:
            if b.is_input and b.device is not None:
                cuda.memcpy_htod_async(b.device, b.host[: feed[b.name].size], self._stream)
        copied_in.record(self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise EdgesegError(f"TensorRT failed to run {self.artifact} (see its log above)")
        computed.record(self._stream)
        results: Dict[str, np.ndarray] = {}
        for b in self._bindings:
            if not b.is_input:
                shape = tuple(self._context.get_tensor_shape(b.name))
                view = b.host[: int(np.prod(shape))]
                if b.device is not None:
                    cuda.memcpy_dtoh_async(view, b.device, self._stream)
                results[b.name] = view.reshape(shape)
        copied_out.record(self._stream)
        self._stream.synchronize()
        for b in self._bindings:  # CUDA-owned host memory dies with the context: hand out copies
            if not b.is_input and not b.registered:
                results[b.name] = results[b.name].copy()
        self.timings = {
            "h2d": copied_in.time_since(start) / 1e3,
            "compute": computed.time_since(copied_in) / 1e3,
            "d2h": copied_out.time_since(computed) / 1e3,
        }
        return results

    def _deactivate_impl(self) -> None:
        if self._cuda is None:
            return
        if self._cuda.alive:
            self._cuda.call(self._free)
        if self._shared_thread is None:
            self._cuda.release()
        self._cuda = None

    def _free(self) -> None:
        """Release in the owning thread, with the context current: pycuda objects freed elsewhere
        would try to activate an out-of-thread context."""
        for b in self._bindings:
            if b.device is not None:
                b.device.free()
            release_host_buffer(b.host, b.registered)
        self._bindings, self._shapes, self._events = [], {}, []
        self._scratch_bound = None
        self._stream = None
        self._context = None  # context, then engine, then the runtime that made it
        self._engine = None
        self._runtime = None
