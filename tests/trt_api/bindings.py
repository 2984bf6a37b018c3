"""Stand-ins whose contract comes from the real TensorRT bindings, and a CUDA model, for running
edgeseg's own TensorRT code without a GPU (imported inside one version's environment by contract.py).

- `Mirror(real_class)`: an object of a real pybind11 class. A member that the real class lacks is an
  AttributeError; every call is checked against the class's pybind11 signatures (each overload's
  arity, keywords and argument types: int, bool, str, buffer, Dims/tuple, and TensorRT classes and
  enums), a property may be set only where the real one has a setter. Behaviour comes from a
  subclass's `do_<method>` / default property values; otherwise a call returns a neutral value of
  the signature's return type (True, 0, a Mirror of the returned class).
- `FakeTensorRT`: the real `tensorrt` module (enums, Logger, calibrator bases, __version__) with its
  factories (Builder, Runtime, OnnxParser) replaced by Mirrors: a builder that "parses" an ONNX and
  serialises what the config asked for plus the ONNX itself; an engine whose kernel is that ONNX
  run by ONNX Runtime on the bytes in device memory.
- `CudaModel`: pycuda.driver as edgeseg uses it. Device memory has the sizes allocated (a copy or a
  kernel past an allocation's end is an error), async copies, kernels and events happen only when
  their stream is synchronised (host memory is read then), freed memory is unusable, and
  CUDA-owned pinned memory is overwritten when freed. Pinned memory allocated or registered with
  DEVICEMAP is the same bytes at its device pointer (get_device_pointer), which is not its host
  address; memory pinned without the flag has no device pointer.
- Execution contexts need scratch of the engine's `device_memory_size(_v2)` (4 KiB per image of
  the profile's largest batch here): their own (mem_alloc'd at creation) or, made without device
  memory (8.x create_execution_context_without_device_memory, 10.x+ USER_MANAGED), the buffer
  given by set_device_memory / the device_memory property; a kernel writes all of it when it runs.
"""
from __future__ import annotations

import base64
import inspect
import itertools
import json
import re
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from check import signatures

# -- signatures ----------------------------------------------------------------------------------------------
_PARAM = re.compile(r"^\s*(\*{0,2}\w+)\s*(?::\s*(.*?))?\s*(=\s*(.*))?$")


class ContractError(TypeError):
    """A call the real bindings would refuse (pybind11 raises TypeError for these too)."""


def _params(obj: Any) -> List[List[Tuple[str, str, bool]]]:
    """Every overload as [(name, type text, has default)], self dropped."""
    overloads = []
    for line in (getattr(obj, "__doc__", None) or "").splitlines():
        match = re.match(r"^(?:\d+\. )?(\w*)\((.*)\)(?: -> (.+))?$", line.strip())
        if not match or match.group(2) == "*args, **kwargs":
            continue
        from check import _split

        params = []
        for part in _split(match.group(2)):
            found = _PARAM.match(part)
            if found and found.group(1) != "self":
                params.append((found.group(1), found.group(2) or "", found.group(3) is not None))
        overloads.append(params)
    return overloads


def _accepts(trt: Any, type_text: str, value: Any) -> bool:
    text = type_text.strip()
    text = re.sub(r"^typing\.", "", text)
    optional = re.match(r"^Optional\[(.+)\]$", text)
    if optional:
        return value is None or _accepts(trt, optional.group(1), value)
    name = text.split("[")[0].split(".")[-1]
    if name in ("int", "SupportsInt"):  # pybind11 converts what has __index__ (a DeviceAllocation), not a Stream
        return hasattr(type(value), "__index__") and not isinstance(value, (bool, np.bool_))
    if name in ("float", "SupportsFloat"):
        return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if name == "bool":
        return isinstance(value, (bool, np.bool_))
    if name == "str":
        return isinstance(value, str)
    if name == "buffer":
        try:
            memoryview(value)
            return True
        except TypeError:
            return False
    if name in ("tuple", "list", "List", "Sequence"):
        return isinstance(value, (tuple, list))
    if name.startswith("Dims"):
        return isinstance(value, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in value)
    cls = getattr(trt, name, None)
    if inspect.isclass(cls):
        if isinstance(value, Mirror):
            return issubclass(value.real_class, cls)
        return isinstance(value, cls)
    return True  # object, capsule, os.PathLike ...: not narrowed here


def check_call(trt: Any, owner: str, member: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    """Raise ContractError unless some overload of `member` takes these arguments."""
    overloads = _params(member)
    if not overloads:
        return
    problems = []
    for params in overloads:
        names = [p[0] for p in params]
        if len(args) > len(params):
            problems.append(f"{len(args)} positional arguments, takes {len(params)}")
            continue
        bound = dict(zip(names, args))
        unknown = [k for k in kwargs if k not in names or k in bound]
        if unknown:
            problems.append(f"no parameter {unknown[0]!r}")
            continue
        bound.update(kwargs)
        missing = [n for n, _, default in params if n not in bound and not default]
        if missing:
            problems.append(f"missing {missing[0]!r}")
            continue
        wrong = [(n, t) for n, t, _ in params if n in bound and not _accepts(trt, t, bound[n])]
        if wrong:
            problems.append(f"{wrong[0][0]} must be {wrong[0][1]}, got {type(bound[wrong[0][0]]).__name__}")
            continue
        return
    raise ContractError(f"{owner}({', '.join(map(_short, args))}): {'; '.join(problems)}")


def _short(value: Any) -> str:
    return type(value).__name__


def neutral(trt: Any, type_text: Optional[str]) -> Any:
    """A value of the annotated return type that changes nothing."""
    text = re.sub(r"^typing\.", "", (type_text or "None").strip())
    name = text.split("[")[0].split(".")[-1]
    if name in ("List", "list"):
        return []
    values = {"bool": True, "int": 0, "float": 0.0, "str": "", "None": None, "buffer": b""}
    if name in values:
        return values[name]
    if name.startswith("Dims"):
        return ()
    cls = getattr(trt, name, None)
    if inspect.isclass(cls) and not hasattr(cls, "__members__"):
        return Mirror(trt, cls)
    return None


class Mirror:
    """An instance of a real binding class; see the module docstring."""

    defaults: Dict[str, Any] = {}

    def __init__(self, trt: Any, real_class: type, **state: Any) -> None:
        object.__setattr__(self, "trt", trt)
        object.__setattr__(self, "real_class", real_class)
        object.__setattr__(self, "state", dict(state))
        object.__setattr__(self, "calls", [])

    def _member(self, name: str) -> Any:
        try:
            return inspect.getattr_static(self.real_class, name)
        except AttributeError:
            raise AttributeError(f"'{self.real_class.__name__}' object has no attribute '{name}' (TensorRT {self.trt.__version__})") from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        member = self._member(name)
        if isinstance(member, property):
            if name in self.state:
                return self.state[name]
            if name in self.defaults:
                return self.defaults[name]
            sigs = signatures(member.fget)
            value = neutral(self.trt, sigs[0][1] if sigs else None)
            return False if value is True else value  # a flag property is off unless set
        if not callable(member):
            return getattr(self.real_class, name)  # enum values, constants
        behaviour = getattr(type(self), "do_" + name, None)
        owner = f"{self.real_class.__name__}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            check_call(self.trt, owner, member, args, kwargs)
            self.calls.append((name, args, kwargs))
            if behaviour is not None:
                return behaviour(self, *args, **kwargs)
            sigs = signatures(member)
            return neutral(self.trt, sigs[0][1] if sigs else None)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        member = self._member(name)
        if not isinstance(member, property) or member.fset is None:
            raise AttributeError(f"{self.real_class.__name__}.{name} cannot be set (TensorRT {self.trt.__version__})")
        sigs = _params(member.fset)
        if sigs and sigs[0] and not _accepts(self.trt, sigs[0][-1][1], value):
            raise ContractError(f"{self.real_class.__name__}.{name} must be {sigs[0][-1][1]}, got {type(value).__name__}")
        self.calls.append(("=" + name, (value,), {}))
        self.state[name] = value


def construct(trt: Any, real_class: type, cls: Callable[..., Mirror], *args: Any, **kwargs: Any) -> Mirror:
    check_call(trt, real_class.__name__, real_class.__init__, args, kwargs)
    return cls(trt, real_class, *args, **kwargs)


# -- the builder side ---------------------------------------------------------------------------------------
class Tensor(Mirror):
    def __init__(self, trt: Any, name: str, shape: Tuple[int, ...], is_input: bool) -> None:
        super().__init__(trt, trt.ITensor, name=name, shape=tuple(shape), dtype=trt.DataType.FLOAT, is_network_input=is_input)


# Execution-context scratch per image of the profile's largest batch (device_memory_size).
SCRATCH_PER_IMAGE = 4096
# ONNX ops the model DLA takes; every other layer falls back to the GPU.
DLA_OPS = {"Conv", "Relu", "MaxPool", "BatchNormalization", "Add", "Concat", "QuantizeLinear", "DequantizeLinear"}


class Layer(Mirror):
    def __init__(self, trt: Any, op_type: str) -> None:
        kinds = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Conv": "CONVOLUTION"}
        kind = getattr(trt.LayerType, kinds.get(op_type, "ELEMENTWISE"))
        super().__init__(trt, trt.ILayer, type=kind, name=op_type, num_inputs=0, num_outputs=0)


class Network(Mirror):
    """Filled by the OnnxParser from the ONNX graph: inputs (batch -1), outputs, one layer per node."""

    def __init__(self, trt: Any, real_class: type, flags: int = 0) -> None:
        super().__init__(trt, real_class, num_inputs=0, num_outputs=0, num_layers=0, flags=flags)
        object.__setattr__(self, "inputs", [])
        object.__setattr__(self, "outputs", [])
        object.__setattr__(self, "layers", [])
        object.__setattr__(self, "onnx", b"")

    def do_get_input(self, index: int) -> Tensor:
        return self.inputs[index]

    def do_get_output(self, index: int) -> Tensor:
        return self.outputs[index]

    def do_get_layer(self, index: int) -> Layer:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __iter__(self) -> Any:
        return iter(self.layers)


class Parser(Mirror):
    def __init__(self, trt: Any, real_class: type, network: Network, logger: Any) -> None:
        super().__init__(trt, real_class, num_errors=0)
        object.__setattr__(self, "network", network)

    def do_parse_from_file(self, model: str) -> bool:
        import onnx

        graph = onnx.load(model).graph
        net = self.network
        initialised = {i.name for i in graph.initializer}

        def dims(value: Any) -> Tuple[int, ...]:
            return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)

        net.inputs.extend(Tensor(self.trt, v.name, dims(v), True) for v in graph.input if v.name not in initialised)
        net.outputs.extend(Tensor(self.trt, v.name, dims(v), False) for v in graph.output)
        net.layers.extend(Layer(self.trt, node.op_type) for node in graph.node)
        net.state.update(num_inputs=len(net.inputs), num_outputs=len(net.outputs), num_layers=len(net.layers))
        with open(model, "rb") as handle:
            object.__setattr__(net, "onnx", handle.read())
        return True


class Profile(Mirror):
    def do_set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self.state.setdefault("shapes", {})[input] = [list(min), list(opt), list(max)]

    def do_get_shape(self, input: str) -> List[Tuple[int, ...]]:
        return [tuple(s) for s in self.state.get("shapes", {}).get(input, [])]


class Config(Mirror):
    """Records what the builder is asked for; the plan carries it."""

    def do_set_flag(self, flag: Any) -> None:
        self.state.setdefault("flags", set()).add(flag.name)

    def do_clear_flag(self, flag: Any) -> None:
        self.state.setdefault("flags", set()).discard(flag.name)

    def do_get_flag(self, flag: Any) -> bool:
        return flag.name in self.state.get("flags", set())

    def do_add_optimization_profile(self, profile: Profile) -> int:
        self.state.setdefault("profiles", []).append(profile.state.get("shapes", {}))
        return len(self.state["profiles"]) - 1

    def do_set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self.state.setdefault("pools", {})[pool.name] = pool_size

    def do_can_run_on_DLA(self, layer: Layer) -> bool:  # noqa: N802 (the real name)
        return layer.state["name"] in DLA_OPS

    def do_create_timing_cache(self, serialized_timing_cache: Any) -> "TimingCache":
        return TimingCache(self.trt, self.trt.ITimingCache, entries=bytes(serialized_timing_cache))

    def do_set_timing_cache(self, cache: "TimingCache", ignore_mismatch: bool) -> bool:
        self.state["timing_cache"] = cache
        return True

    def do_get_timing_cache(self) -> "TimingCache":
        return self.state.get("timing_cache") or TimingCache(self.trt, self.trt.ITimingCache, entries=b"")


class HostMemory(bytes):
    """IHostMemory as Python sees it: a buffer, usable in a `with`."""

    def __enter__(self) -> "HostMemory":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class TimingCache(Mirror):
    """Its entries: the bytes loaded plus one line per build that used it."""

    def do_serialize(self) -> HostMemory:
        return HostMemory(self.state["entries"] + f"timings of TensorRT {self.trt.__version__}\n".encode())

    def do_combine(self, input_cache: "TimingCache", ignore_mismatch: bool) -> bool:
        return True


class Builder(Mirror):
    defaults = {"platform_has_fast_fp16": True, "platform_has_fast_int8": True, "num_DLA_cores": 2, "max_DLA_batch_size": 32}

    def __init__(self, trt: Any, real_class: type, logger: Any) -> None:
        super().__init__(trt, real_class)

    def do_create_network(self, flags: int = 0) -> Network:
        return Network(self.trt, self.trt.INetworkDefinition, flags)

    def do_create_builder_config(self) -> Config:
        return Config(self.trt, self.trt.IBuilderConfig)

    def do_create_optimization_profile(self) -> Profile:
        return Profile(self.trt, self.trt.IOptimizationProfile)

    def do_build_serialized_network(self, network: Network, config: Config) -> bytes:
        state = config.state
        plan = {
            "tensorrt": self.trt.__version__,
            "flags": sorted(state.get("flags", ())),
            "network_flags": network.state["flags"],
            "profiles": state.get("profiles", []),
            "pools": state.get("pools", {}),
            "dla_core": state.get("DLA_core"),
            "device_type": getattr(state.get("default_device_type"), "name", None),
            "calibrator": type(state["int8_calibrator"]).__mro__[1].__name__ if state.get("int8_calibrator") is not None else None,
            "hardware_compatibility_level": getattr(state.get("hardware_compatibility_level"), "name", None),
            "inputs": [[t.state["name"], list(t.state["shape"])] for t in network.inputs],
            "outputs": [[t.state["name"], list(t.state["shape"])] for t in network.outputs],
            "onnx": base64.b64encode(network.onnx).decode(),
        }
        calibrator = state.get("int8_calibrator")
        if calibrator is not None:  # TensorRT calibrates: batches until None, then writes its cache
            plan["calibration_batches"] = calibrate(calibrator, [n for n, _ in plan["inputs"]])
        return json.dumps(plan).encode()


def calibrate(calibrator: Any, names: List[str]) -> int:
    """What TensorRT does with an IInt8 calibrator during a build: read the cache, else ask for
    batches until None (each a list of device pointers), then write the cache."""
    if calibrator.read_calibration_cache() is not None:
        return 0
    fed = 0
    while True:
        pointers = calibrator.get_batch(names)
        if pointers is None:
            break
        if not (isinstance(pointers, list) and all(isinstance(p, int) for p in pointers)):
            raise ContractError(f"get_batch must return a list of ints (device pointers), got {pointers!r}")
        fed += 1
    calibrator.write_calibration_cache(memoryview(b"calibration-table"))
    return fed


# -- the runtime side ----------------------------------------------------------------------------------------
class Runtime(Mirror):
    def __init__(self, trt: Any, real_class: type, logger: Any) -> None:
        super().__init__(trt, real_class)

    def do_deserialize_cuda_engine(self, serialized_engine: Any) -> Optional["Engine"]:
        plan = json.loads(bytes(serialized_engine))
        self.state["deserialised_with_dla_core"] = self.state.get("DLA_core", 0)
        return Engine(self.trt, self.trt.ICudaEngine, plan)


class Engine(Mirror):
    def __init__(self, trt: Any, real_class: type, plan: Dict[str, Any]) -> None:
        scratch = SCRATCH_PER_IMAGE * max(high[0] for _, _, high in plan["profiles"][0].values())
        sizes = {name: scratch for name in ("device_memory_size", "device_memory_size_v2") if hasattr(real_class, name)}
        super().__init__(trt, real_class, num_io_tensors=len(plan["inputs"]) + len(plan["outputs"]), num_optimization_profiles=1, **sizes)
        object.__setattr__(self, "scratch", scratch)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "tensors", [(n, tuple(s), True) for n, s in plan["inputs"]] + [(n, tuple(s), False) for n, s in plan["outputs"]])

    def _tensor(self, name: str) -> Tuple[str, Tuple[int, ...], bool]:
        return next(t for t in self.tensors if t[0] == name)

    def do_get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0]

    def do_get_tensor_mode(self, name: str) -> Any:
        return self.trt.TensorIOMode.INPUT if self._tensor(name)[2] else self.trt.TensorIOMode.OUTPUT

    def do_get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        return self._tensor(name)[1]

    def do_get_tensor_dtype(self, name: str) -> Any:
        return self.trt.DataType.FLOAT

    def do_get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
        return [tuple(s) for s in self.plan["profiles"][profile_index][name]]

    def do_create_execution_context(self, strategy: Any = None, runtime_config: Any = None) -> "Context":
        user_managed = getattr(self.trt, "ExecutionContextAllocationStrategy", None)
        return Context(self.trt, self.trt.IExecutionContext, self, own_scratch=user_managed is None or strategy != user_managed.USER_MANAGED)

    def do_create_execution_context_without_device_memory(self) -> "Context":
        return Context(self.trt, self.trt.IExecutionContext, self, own_scratch=False)


class Context(Mirror):
    """Shapes follow set_input_shape; execute_async_v3 enqueues the ONNX on the stream."""

    def __init__(self, trt: Any, real_class: type, engine: Engine, own_scratch: bool) -> None:
        super().__init__(trt, real_class)
        object.__setattr__(self, "engine", engine)
        if own_scratch:  # TensorRT allocates it with the context
            self.state.update(device_memory=int(trt.cuda.mem_alloc(engine.scratch)), scratch_size=engine.scratch)
        object.__setattr__(self, "shapes", {})
        object.__setattr__(self, "addresses", {})
        object.__setattr__(self, "session", None)

    def do_set_input_shape(self, name: str, shape: Any) -> bool:
        low, _, high = self.engine.plan["profiles"][0][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = shape
        return True

    def _run_onnx(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.session is None:
            import onnxruntime

            object.__setattr__(self, "session", onnxruntime.InferenceSession(base64.b64decode(self.engine.plan["onnx"]), providers=["CPUExecutionProvider"]))
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    def do_get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        _, declared, is_input = self.engine._tensor(name)
        if is_input:
            return self.shapes.get(name, declared)
        inputs = [n for n, _, i in self.engine.tensors if i]
        if any(n not in self.shapes for n in inputs):
            return declared
        feed = {n: np.zeros(self.shapes[n], np.float32) for n in inputs}
        return self._run_onnx(feed)[name].shape

    def do_set_device_memory(self, memory: int, size: int) -> None:
        self.state.update(device_memory=memory, scratch_size=size)

    def do_set_tensor_address(self, name: str, memory: int) -> bool:
        self.engine._tensor(name)
        self.addresses[name] = memory
        return True

    def do_execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self.trt.cuda
        stream = cuda.streams.get(stream_handle)
        if stream is None:
            raise cuda.Error(f"execute_async_v3: {stream_handle} is not a live stream handle")
        tensors = self.engine.tensors
        if set(self.addresses) != {n for n, _, _ in tensors}:
            raise cuda.Error(f"execute_async_v3 before every tensor has an address: {sorted(self.addresses)}")
        shapes = {n: self.shapes.get(n) for n, _, i in tensors if i}
        if any(s is None for s in shapes.values()):
            raise cuda.Error("execute_async_v3 before every input shape was set")
        scratch = self.state.get("device_memory")
        if scratch is None:
            raise cuda.Error("execute_async_v3 on a context created without device memory before its scratch was set")
        if self.state.get("scratch_size", self.engine.scratch) < self.engine.scratch:
            raise cuda.Error(f"scratch of {self.state['scratch_size']} bytes set, the engine needs {self.engine.scratch}")

        def kernel() -> None:
            cuda.write(scratch, b"\xa5" * self.engine.scratch)  # activations: the whole scratch is the engine's while it runs
            feed = {n: cuda.read(self.addresses[n], int(np.prod(s)) * 4).view(np.float32).reshape(s) for n, s in shapes.items()}
            for name, value in self._run_onnx(feed).items():
                cuda.write(self.addresses[name], np.ascontiguousarray(value, np.float32).tobytes())

        stream.enqueue(kernel)
        return True


class FakeTensorRT(types.ModuleType):
    """`import tensorrt` for edgeseg and polygraphy: the real module with Mirror factories."""

    def __init__(self, real: Any, cuda: "CudaModel") -> None:
        super().__init__("tensorrt")
        self.real = real
        self.cuda = cuda
        self.__version__ = real.__version__
        self.__file__ = getattr(real, "__file__", None)
        self.runtimes: List[Runtime] = []
        self.builders: List[Builder] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def Builder(self, *args: Any, **kwargs: Any) -> Builder:  # noqa: N802 (the real name)
        builder = construct(self, self.real.Builder, Builder, *args, **kwargs)
        self.builders.append(builder)  # type: ignore[arg-type]
        return builder  # type: ignore[return-value]

    def Runtime(self, *args: Any, **kwargs: Any) -> Runtime:  # noqa: N802
        runtime = construct(self, self.real.Runtime, Runtime, *args, **kwargs)
        self.runtimes.append(runtime)  # type: ignore[arg-type]
        return runtime  # type: ignore[return-value]

    def OnnxParser(self, *args: Any, **kwargs: Any) -> Parser:  # noqa: N802
        return construct(self, self.real.OnnxParser, Parser, *args, **kwargs)  # type: ignore[return-value]


# -- CUDA ---------------------------------------------------------------------------------------------------
class _Mapped:
    """Page-locked host memory's HostPointer side: with DEVICEMAP, `get_device_pointer()` is an
    address in the model's device memory that is these same bytes (no copy); unmapped when freed."""

    def _map(self, model: "CudaModel", data: Any, mapped: bool) -> None:
        self._model, self._data, self._address = model, data, None
        self._mapped = mapped

    def get_device_pointer(self) -> int:
        if not self._mapped:
            raise self._model.Error("cuMemHostGetDevicePointer failed: invalid value (memory not pinned with DEVICEMAP)")
        if self._address is None:
            self._address = self._model.address_for(len(self._data))
            self._model.memory[self._address] = self._data
        return self._address

    def _unmap(self) -> None:
        if self._address is not None:
            self._model.memory.pop(self._address, None)
            self._address = None


class _Freeable(bytearray, _Mapped):
    """CUDA-owned pinned host memory (pagelocked_empty): free() poisons it, as reuse by CUDA would."""

    def __init__(self, nbytes: int, model: "CudaModel", mapped: bool) -> None:
        super().__init__(nbytes)
        self._map(model, self, mapped)

    def free(self) -> None:
        self._unmap()
        self[:] = b"\xff" * len(self)


class _Registration(_Mapped):
    """register_host_memory's result base: the numpy memory, page-locked until unregister()."""

    def __init__(self, array: np.ndarray, model: "CudaModel", mapped: bool) -> None:
        self.__array_interface__ = array.__array_interface__
        self.base = array
        self.model = model
        model.registered += 1
        self._map(model, memoryview(array).cast("B"), mapped)

    def unregister(self) -> None:
        self._unmap()
        self.model.registered -= 1


class CudaModel(types.ModuleType):
    """pycuda.driver (see the module docstring). `refuse_registration`: cuMemHostRegister fails."""

    class Error(Exception):
        pass

    def __init__(self, refuse_registration: bool = False) -> None:
        super().__init__("pycuda.driver")
        self.refuse_registration = refuse_registration
        self.memory: Dict[int, bytearray] = {}
        self.streams: Dict[int, "CudaModel.Stream"] = {}
        self.registered = 0
        self.allocated: Dict[int, int] = {}  # mem_alloc'd (not mapped host) memory: address -> bytes
        self._next_address = 1 << 20
        self.host_alloc_flags = types.SimpleNamespace(PORTABLE=1, DEVICEMAP=2, WRITECOMBINED=4)
        self.mem_host_register_flags = types.SimpleNamespace(PORTABLE=1, DEVICEMAP=2)
        model = self

        class DeviceAllocation:
            def __init__(self, nbytes: int) -> None:
                self.address = model.address_for(nbytes)
                model.memory[self.address] = bytearray(nbytes)
                model.allocated[self.address] = nbytes

            def __int__(self) -> int:
                return self.address

            __index__ = __int__

            def free(self) -> None:
                model.memory.pop(self.address, None)
                model.allocated.pop(self.address, None)

        class Stream:
            def __init__(self, flags: int = 0) -> None:
                self.handle = id(self)
                self.pending: List[Callable[[], None]] = []
                model.streams[self.handle] = self

            def enqueue(self, work: Callable[[], None]) -> None:
                self.pending.append(work)

            def synchronize(self) -> None:
                work, self.pending = self.pending, []
                for step in work:
                    step()

        class Event:
            def __init__(self, flags: int = 0) -> None:
                self.done: Optional[float] = None
                self.order = 0.0

            def record(self, stream: Optional[Stream] = None) -> "Event":
                self.done = None

                def complete() -> None:
                    self.done = float(next(model._clock))

                (stream.enqueue if stream else lambda w: w())(complete)
                return self

            def time_since(self, event: "Event") -> float:
                if self.done is None or event.done is None:
                    raise model.Error("cuEventElapsedTime failed: device not ready (event not completed)")
                return self.done - event.done

        class Device:
            def __init__(self, number: int) -> None:
                self.number = number

            @staticmethod
            def count() -> int:
                return 1

            def retain_primary_context(self) -> Any:
                return types.SimpleNamespace(push=lambda: None, detach=lambda: None)

        self._clock = itertools.count(1)
        self.DeviceAllocation, self.Stream, self.Event, self.Device = DeviceAllocation, Stream, Event, Device
        self.Context = types.SimpleNamespace(pop=lambda: None)

    # memory
    def address_for(self, nbytes: int) -> int:
        """A fresh device address for `nbytes`, never reused and a 1 MiB gap past the previous
        range: an access through a stale or foreign pointer never lands in another allocation."""
        address = self._next_address
        self._next_address += (int(nbytes) // (1 << 20) + 2) << 20
        return address

    def _locate(self, address: int, nbytes: int) -> Tuple[bytearray, int]:
        for start, block in self.memory.items():
            if start <= address < start + max(len(block), 1):
                if address - start + nbytes > len(block):
                    raise self.Error(f"an access of {nbytes} bytes at offset {address - start} overruns a {len(block)}-byte allocation")
                return block, address - start
        raise self.Error(f"{address:#x} is not allocated device memory (freed, or never allocated)")

    def read(self, address: int, nbytes: int) -> np.ndarray:
        block, offset = self._locate(int(address), nbytes)
        return np.frombuffer(bytes(block[offset : offset + nbytes]), np.uint8).copy()

    def write(self, address: int, data: bytes) -> None:
        block, offset = self._locate(int(address), len(data))
        block[offset : offset + len(data)] = data

    def init(self, flags: int = 0) -> None:
        pass

    def mem_alloc(self, bytesize: int) -> Any:
        if not isinstance(bytesize, (int, np.integer)) or bytesize <= 0:
            raise self.Error(f"mem_alloc({bytesize!r})")
        return self.DeviceAllocation(int(bytesize))

    def pagelocked_empty(self, shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        count = int(np.prod(shape))
        return np.ndarray(shape, dtype, buffer=_Freeable(count * np.dtype(dtype).itemsize, self, bool(mem_flags & self.host_alloc_flags.DEVICEMAP)))

    def aligned_empty(self, shape: Any, dtype: Any = np.float32, order: str = "C", alignment: int = 4096) -> np.ndarray:
        return np.empty(shape, dtype)

    def register_host_memory(self, ary: np.ndarray, flags: int = 0) -> np.ndarray:
        if self.refuse_registration:
            raise self.Error("cuMemHostRegister failed: operation not supported")
        return np.asarray(_Registration(ary, self, bool(flags & self.mem_host_register_flags.DEVICEMAP)))

    @staticmethod
    def _host(value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"host side of a copy must be a numpy array, got {type(value).__name__}")
        return value

    def _device(self, value: Any) -> int:
        if not isinstance(value, (self.DeviceAllocation, int, np.integer)):
            raise TypeError(f"device side of a copy must be a DeviceAllocation or pointer, got {type(value).__name__}")
        return int(value)

    def _enqueue(self, stream: Any, work: Callable[[], None]) -> None:
        """On `stream`, or at once on the legacy default stream (None), which edgeseg's blocking
        streams are ordered with."""
        if stream is None:
            work()
        elif isinstance(stream, self.Stream):
            stream.enqueue(work)
        else:
            raise TypeError(f"stream must be a pycuda Stream, got {type(stream).__name__}")

    def memcpy_htod(self, dest: Any, src: np.ndarray) -> None:
        self.write(self._device(dest), self._host(src).tobytes())

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: Any = None) -> None:
        """The copy reads `src` at some time before its stream is synchronised: a host buffer written
        between enqueue and completion is a race, reported as one."""
        address, host = self._device(dest), self._host(src)
        enqueued = host.tobytes()

        def copy() -> None:
            if host.tobytes() != enqueued:
                raise self.Error("a host buffer was written while an async copy from it was pending (a race)")
            self.write(address, enqueued)

        self._enqueue(stream, copy)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: Any = None) -> None:
        host, address = self._host(dest), self._device(src)

        def copy() -> None:
            host.reshape(-1).view(np.uint8)[:] = self.read(address, host.nbytes)

        self._enqueue(stream, copy)
