"""OpenVINO backend: the fast CPU path on x86 (and Intel GPU / NPU where present).

One model (FP32 / FP16 ONNX, either QDQ flavour, or an OpenVINO IR .xml + .bin) compiled once
per device by `openvino.Core.compile_model`, run through one infer request whose input tensors
share the caller's arrays (no copy). OpenVINO's low-precision transformations turn the QDQ
pairs of both flavours into int8 kernels, so the same file edgeseg writes for TensorRT runs int8
here too (benchmarks/results/openvino_qdq_demo.md).

Settings, defaults from benchmarks/results/openvino_qdq_demo.md (shared 2-core machine): hint
LATENCY (one stream on every core: the pipeline infers one frame at a time; THROUGHPUT with an
AsyncInferQueue keeping 2 requests in flight was 1.10x there, inside that run's noise, and only
a batching caller could use it), threads 0 (OpenVINO's choice: every core), streams left to the
hint. Float precision follows the card (`_CARD_PRECISION`). The compiled model is cached in
`cache_dir` (OpenVINO's CACHE_DIR; default the user cache folder, see `default_cache_dir`), so a
restart imports the compiled blob instead of compiling again.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.artifacts import weights_path
from edgeseg.edge.card import Artifact, ModelCard, TensorSpec
from edgeseg.edge.registry import OPENVINO
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import require

HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values
# INFERENCE_PRECISION_HINT per card precision (None: the device's own default). OpenVINO's CPU
# default is bf16 wherever the CPU has bf16 (AVX512-BF16, AMX), f32 elsewhere (AVX2): an FP32
# model would silently run in bf16, so fp32 asks for f32. fp16 and the float layers between an
# int8 model's Q/DQ pairs take the device default, as TensorRT runs INT8 with FP16 enabled: on
# the AMX Xeon of benchmarks/results/openvino_qdq_demo.md the demo INT8 `cpu` segmenter ran
# 3.74x ONNX Runtime FP32 with bf16 float layers against 2.05x with f32, mean Dice 0.9175 vs
# 0.9172 (FP32 0.9175), classifier recall 1.0 either way.
_CARD_PRECISION = {"fp32": "f32", "int8": None, "fp16": None}
DEFAULT_HINT = "LATENCY"
CACHE_ENV = "EDGESEG_OPENVINO_CACHE"  # a folder, or "" / "off" to compile every time
# CPU features whose int8 dot products do not saturate (VNNI's vpdpbusd, AMX tiles).
_EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# OpenVINO element type names -> numpy names used in cards
_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
}


def _openvino() -> Any:
    return require("openvino", "the OpenVINO backend")


def default_cache_dir() -> Optional[Path]:
    """Where compiled models are cached: $EDGESEG_OPENVINO_CACHE when set ("" or "off": no
    cache), else $XDG_CACHE_HOME/edgeseg/openvino (~/.cache/edgeseg/openvino)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "none") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeseg" / "openvino"


def version() -> str:
    """"2026.4.1": the release, without the build hash OpenVINO's __version__ carries."""
    return str(_openvino().__version__).split("-")[0]


def devices() -> List[Dict[str, str]]:
    """[{"device": "CPU", "name": "<full device name>"}, ...] that this OpenVINO can run on."""
    core = _openvino().Core()
    found = []
    for device in core.available_devices:
        try:
            name = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except Exception:  # a device whose plugin cannot answer still counts as present
            name = "?"
        found.append({"device": device, "name": name})
    return found


def symmetric_int8_exact(simd: Optional[Sequence[str]] = None) -> bool:
    """Whether this CPU's int8 dot products are exact for 8-bit weights, i.e. OpenVINO computes
    the `trt` INT8 flavour (symmetric int8 activations) right, and 8-bit `cpu` weights need no
    7-bit range; `simd` defaults to this machine's flags (envinfo.cpu_info).

    An x86 CPU without VNNI or AMX multiplies int8 with AVX2's vpmaddubsw (u8 x s8), whose int16
    pair sums saturate past 255 x 127 x 2. OpenVINO shifts s8 activations to u8 (+128) to use it,
    so large products clip: on an AVX2 EPYC the demo classifier's `trt` QDQ was rel L2 0.39 from
    ONNX Runtime, the tests' tiny model 0.73 (the `cpu` flavour, u8 activations and 7-bit
    weights: 0.017). ARM CPUs and x86 CPUs with AVX512-VNNI, AVX-VNNI or AMX are exact (rel L2 <
    0.02 on the AMX Xeon).
    """
    if simd is None:
        from edgeseg.envinfo import cpu_info

        simd = cpu_info()["simd"]
    return "avx2" not in simd or any(flag in simd for flag in _EXACT_INT8_FLAGS)


def weight_bits(artifact: Artifact) -> int:
    """The weight range an INT8 artifact was quantised to: its card's, else its flavour's
    before cards recorded it (`trt` 8, `cpu` 7)."""
    return artifact.weight_bits or (8 if artifact.flavour == "trt" else 7)


def saturates_here(artifact: Artifact, device: str = "CPU") -> bool:
    """Whether OpenVINO on `device` computes this INT8 artifact wrongly here: 8-bit weights on a
    CPU whose int8 products saturate (7-bit weights cannot: 255 x 64 x 2 fits in int16)."""
    if not device.upper().startswith("CPU") or artifact.precision != "int8" or weight_bits(artifact) < 8:
        return False
    return not symmetric_int8_exact()


def inexact_int8_reason(card: ModelCard, device: str = "CPU") -> str:
    """Why OpenVINO on `device` would compute this model wrongly here (`saturates_here`); "" when it will not."""
    if not saturates_here(card.artifact, device):
        return ""
    form = "its `trt` INT8 flavour (symmetric int8 activations, 8-bit weights)" if card.artifact.flavour == "trt" else "its 8-bit INT8 weights"
    return f"{form}: the int8 dot product saturates in OpenVINO's kernels on a CPU without VNNI or AMX, such as this one (AVX2): the outputs would be wrong"


class OpenVINOBackend(Backend):
    """One model compiled for one OpenVINO device, run through one infer request.

    device: "CPU", "GPU", "NPU", "AUTO"... (what `openvino.Core().available_devices` lists).
    hint: PERFORMANCE_HINT, one of HINTS. threads: INFERENCE_NUM_THREADS (0: OpenVINO's choice).
    streams: NUM_STREAMS (None: what the hint picks). cache_dir: CACHE_DIR for compiled models
    ("default": `default_cache_dir()`; None or "": no cache).
    precision: INFERENCE_PRECISION_HINT, one of INFERENCE_PRECISIONS (None: by the card's precision, see
    _CARD_PRECISION). profiling: PERF_COUNT, for `profile()` (per-layer times).

    Outputs are the infer request's own tensors (no copy): valid until the next `infer`.
    """

    kind = OPENVINO
    reuses_output_buffers = True

    def __init__(
        self,
        artifact: PathLike,
        card: ModelCard,
        device: str = "CPU",
        hint: str = DEFAULT_HINT,
        threads: int = 0,
        streams: Optional[int] = None,
        cache_dir: Union[PathLike, None, str] = "default",
        precision: Optional[str] = None,
        profiling: bool = False,
    ) -> None:
        super().__init__(artifact, card)
        if hint not in HINTS:
            raise EdgesegError(f"unknown OpenVINO performance hint {hint!r}", hint=f"use one of {', '.join(HINTS)}")
        if threads < 0:
            raise EdgesegError("thread counts must be >= 0 (0 lets OpenVINO choose)")
        if streams is not None and streams < 1:
            raise EdgesegError("OpenVINO streams must be >= 1 (or left to the performance hint)")
        if precision is not None and precision not in INFERENCE_PRECISIONS:
            raise EdgesegError(f"unknown OpenVINO inference precision {precision!r}", hint=f"use one of {', '.join(INFERENCE_PRECISIONS)}")
        self.device = device
        self.hint = hint
        self.precision = precision if precision is not None else _CARD_PRECISION.get(card.artifact.precision, "f32")
        self.threads = threads
        self.streams = streams
        if cache_dir == "default":
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir) if cache_dir else None
        self.profiling = profiling
        self.compiled: Any = None  # openvino.CompiledModel, public for benchmarks (AsyncInferQueue)
        self._request: Any = None
        self._output_ports: List[Any] = []

    def _cache_folder(self) -> Path:
        """The cache folder of these model files as they are now: OpenVINO keys a blob compiled
        from a path by the path, so a model rewritten in place (new weights, same name) would
        import the old blob; a folder per files' size and mtime makes it compile again."""
        from edgeseg.files import model_files

        assert self.cache_dir is not None
        stamp = "|".join(f"{f}:{s.st_size}:{s.st_mtime_ns}" for f in model_files(self.artifact) if f.exists() for s in [f.stat()])
        return Path(self.cache_dir) / hashlib.sha256(stamp.encode()).hexdigest()[:16]

    def config(self) -> Dict[str, Any]:
        """The compile_model properties these settings make."""
        config: Dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            config["NUM_STREAMS"] = self.streams
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self._cache_folder())
        if self.profiling:
            config["PERF_COUNT"] = True
        return config

    def describe(self) -> str:
        if self.compiled is None:
            return f"openvino {version()} ({self.device}, inactive)"
        threads = _property(self.compiled, "INFERENCE_NUM_THREADS")
        streams = _property(self.compiled, "NUM_STREAMS")
        precision = _property(self.compiled, "INFERENCE_PRECISION_HINT")
        precision = getattr(precision, "get_type_name", lambda: precision)()
        return f"openvino {version()} ({self.device}, {self.hint}, {streams} stream(s), {threads} threads, {precision} float)"

    @property
    def runs_on(self) -> str:
        return "cpu" if self.device.upper().startswith("CPU") else self.device.lower()

    def _activate_impl(self) -> None:
        ov = _openvino()
        core = ov.Core()
        if self.device.split(":")[0].split(".")[0] not in ("AUTO", "MULTI", "HETERO") and self.device not in core.available_devices:
            raise EdgesegError(
                f"OpenVINO has no device {self.device!r} here (available: {', '.join(core.available_devices)})",
                hint="pick one of those (edgeseg info lists them), or leave the device to the default CPU",
            )
        _check_weights(self.artifact, self.card)
        reason = inexact_int8_reason(self.card, self.device)
        if reason:
            raise EdgesegError(
                f"OpenVINO cannot run {self.artifact} on this CPU: {reason}",
                hint="calibrate on this machine for OpenVINO (`edgeseg calibrate --flavour cpu`: 7-bit weights here), or run this model with --backend onnxruntime",
            )
        if self.cache_dir is not None:
            try:
                self._cache_folder().mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EdgesegError(
                    f"cannot create the OpenVINO cache folder {self.cache_dir} ({exc.strerror})",
                    hint=f"set {CACHE_ENV} to a writable folder, or to 'off'",
                ) from exc
        try:
            # A path (not a read Model) lets a cache hit import the compiled blob without reading the model.
            self.compiled = core.compile_model(str(self.artifact), self.device, self.config())
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            text = str(exc).strip()
            first_line = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
            raise EdgesegError(
                f"OpenVINO cannot load {self.artifact}: {first_line[:300]}",
                hint="the file is corrupt or not a model OpenVINO reads: re-export it, or rebuild the IR with `edgeseg build-engine --backend openvino`",
            ) from exc
        self._request = self.compiled.create_infer_request()
        self._output_ports = list(self.compiled.outputs)

    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        wanted = (self.card.input.name, self.card.output.name)
        inputs = [_spec(port, wanted) for port in self.compiled.inputs]
        outputs = [_spec(port, wanted) for port in self._output_ports]
        batch = self.compiled.inputs[0].get_partial_shape()[0] if inputs and inputs[0].shape else None
        # an IR built for a batch range (build-engine --max-batch) has an upper bound: -1 when unbounded
        bound = batch.get_length() if batch is not None and batch.is_static else batch.get_max_length() if batch is not None else -1
        self.max_batch = bound if bound > 0 else None
        return inputs, outputs

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        start = time.perf_counter()
        # share_inputs: the request reads the caller's (contiguous) arrays in place.
        self._request.infer(feed, share_inputs=True)
        values = {spec.name: self._request.get_tensor(port).data for spec, port in zip(self.outputs, self._output_ports)}
        self.timings = {"compute": time.perf_counter() - start}
        return values

    def _deactivate_impl(self) -> None:
        self._request = None
        self._output_ports = []
        self.compiled = None

    def profile(self) -> Dict[str, float]:
        """Milliseconds of the last `infer` by layer type (OpenVINO's get_profiling_info, the
        executed graph after fusion; needs profiling=True)."""
        if not self.profiling or self._request is None:
            raise RuntimeError("profile() needs an active backend made with profiling=True")
        totals: Dict[str, float] = {}
        for info in self._request.get_profiling_info():
            ms = info.real_time.total_seconds() * 1000.0
            if ms > 0:
                key = f"{info.node_type} ({info.exec_type})"
                totals[key] = totals.get(key, 0.0) + ms
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _check_weights(artifact: Path, card: ModelCard) -> None:
    """An IR's card hashes its .xml (read_card checks it) and its .bin: refuse changed weights."""
    expected = card.artifact.weights_sha256
    if card.artifact.format != OPENVINO or not expected:
        return
    from edgeseg.files import sha256

    weights = weights_path(artifact)
    if not weights.is_file():
        raise EdgesegError(f"{artifact}: its weights {weights.name} are missing", hint="rebuild the IR with `edgeseg build-engine --backend openvino`")
    if sha256(weights) != expected:
        raise EdgesegError(
            f"{weights} does not match the card of {artifact.name} (sha256 differs: the weights changed after the IR was built)",
            hint="rebuild the IR with `edgeseg build-engine --backend openvino`",
        )


def _property(compiled: Any, name: str) -> Any:
    try:
        return compiled.get_property(name)
    except Exception:  # not every device reports every property
        return "?"


def _spec(port: Any, wanted: Tuple[str, ...]) -> TensorSpec:
    """The port as a TensorSpec, named by the card's name when the tensor carries it (an
    OpenVINO tensor can have several names)."""
    names = port.get_names()
    name = next((n for n in wanted if n in names), port.get_any_name() if names else "")
    shape: List[Union[int, str]] = []
    for dim in port.get_partial_shape():
        shape.append(dim.get_length() if dim.is_static else "?")
    element = port.get_element_type().get_type_name()
    return TensorSpec(name=name, shape=shape, dtype=_DTYPES.get(element, element))
