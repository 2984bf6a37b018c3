"""The one vocabulary of backends, precisions and INT8 flavours, their typed options, and the one
`auto` rule every command uses (run, build-engine, deploy, bench).

Nothing here imports a runtime: the CLI derives its `Literal` choices from these tuples, the card
validates against them, and `open_backend` (backends/__init__.py) maps a name to its class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

from edgeseg.lazy import available

AUTO = "auto"
ONNXRUNTIME, OPENVINO, TENSORRT, TRITON = "onnxruntime", "openvino", "tensorrt", "triton"
LOCAL_BACKENDS = (ONNXRUNTIME, OPENVINO, TENSORRT)  # each runs one model in this process
# --backend of build-engine, deploy, bench and open_backend; `run` alone also offers triton (the
# whole cascade on a Triton server: backends/triton.py).
MODEL_BACKENDS = (AUTO,) + LOCAL_BACKENDS
BACKENDS = MODEL_BACKENDS + (TRITON,)
DISPLAY_NAMES = {ONNXRUNTIME: "ONNX Runtime", OPENVINO: "OpenVINO", TENSORRT: "TensorRT", TRITON: "Triton"}

PRECISIONS = ("fp32", "fp16", "int8")
# INT8 QDQ flavours: trt = symmetric int8 activations (the only form TensorRT parses); cpu =
# asymmetric uint8 activations, 7-bit weights (fast on x86 ONNX Runtime and OpenVINO).
FLAVOURS = ("trt", "cpu")
# The flavour each backend runs best (first) and the one it falls back to when only that exists.
# OpenVINO turns either flavour's Q/DQ pairs into int8 kernels. Its `cpu` figure leads where it
# counts: default-width ResUNet on a 2-core AVX2 EPYC 2.27x ONNX Runtime FP32 against 1.43x for
# `trt` (issue #12); on the AMX Xeon of benchmarks/results/openvino_qdq_demo.md the two are
# within that run's noise (demo width 8: 2.05x / 2.27x, same Dice). So `trt` does not serve
# OpenVINO as well as `cpu` does, and a TensorRT + OpenVINO site keeps both files. ONNX Runtime's
# S8S8 `trt` runs at 0.57x FP32 (same run): its backend names the `cpu` file when given `trt`.
BACKEND_FLAVOURS: Dict[str, Tuple[str, ...]] = {TENSORRT: ("trt",), ONNXRUNTIME: ("cpu", "trt"), OPENVINO: ("cpu", "trt")}

# A card's artifact format and the backend the artifact is made for (an ONNX runs on OpenVINO too).
FORMATS = ("onnx", "openvino", "tensorrt")
FORMAT_BACKEND = {"onnx": ONNXRUNTIME, "openvino": OPENVINO, "tensorrt": TENSORRT}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """OnnxRuntimeBackend's constructor options (edge/backends/onnxruntime.py)."""

    providers: Optional[Sequence[str]] = None  # None: CUDA when present, else CPU
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    allow_spinning: bool = False


@dataclass(frozen=True)
class OpenVINOOptions:
    """OpenVINOBackend's constructor options (edge/backends/openvino.py)."""

    device: str = "CPU"
    hint: str = "LATENCY"
    threads: int = 0
    streams: Optional[int] = None
    cache_dir: Union[str, Path, None] = "default"  # "default": the user cache; None: compile every time
    precision: Optional[str] = None  # INFERENCE_PRECISION_HINT; None: by the card's precision
    profiling: bool = False


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRTBackend's constructor options (edge/backends/tensorrt.py)."""

    device: int = 0


@dataclass(frozen=True)
class BackendOptions:
    """Options for every backend at once, so a caller can pass them without knowing which backend
    `auto` will pick for the artifact it was given; only the picked backend's part is used."""

    onnxruntime: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)
    openvino: OpenVINOOptions = field(default_factory=OpenVINOOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    @classmethod
    def with_threads(cls, threads: int) -> "BackendOptions":
        """CPU threads per model for both CPU runtimes (0: the runtime's default)."""
        return cls(OnnxRuntimeOptions(intra_op_threads=threads), OpenVINOOptions(threads=threads))

    @classmethod
    def cpu(cls) -> "BackendOptions":
        """CPU only, whatever the machine has (reference measurements)."""
        return cls(OnnxRuntimeOptions(providers=["CPUExecutionProvider"]), OpenVINOOptions(device="CPU"))


def onnxruntime_has_cuda() -> bool:
    if not available("onnxruntime"):
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def auto_backend(made_for: Optional[str] = None, ort_only: bool = False, *, build: bool = False, openvino_exact: bool = True) -> str:
    """The one `auto` rule, for running an artifact and for choosing a build target.

    An artifact made for one backend runs there: a TensorRT engine on tensorrt, an OpenVINO IR on
    openvino, an ONNX that ONNX Runtime optimised offline (`ort_only`: its fused com.microsoft
    nodes are ONNX Runtime's own) on onnxruntime. Otherwise (an ONNX, or a build target) it is the
    fastest runtime this machine has:
      tensorrt     building only, where tensorrt imports (it runs engines, not ONNX);
      onnxruntime  where its CUDA provider is there (a GPU machine);
      openvino     where installed (the faster CPU runtime on x86, INT8 especially:
                   benchmarks/results/bench_cpu.md) and it computes the model right here
                   (`openvino_exact`: not the `trt` INT8 flavour on a CPU without VNNI);
      onnxruntime  otherwise.
    `made_for` is FORMAT_BACKEND of the card's format (None for a build target).
    """
    if made_for in (TENSORRT, OPENVINO) or (made_for == ONNXRUNTIME and ort_only):
        return made_for
    if build and available("tensorrt"):
        return TENSORRT
    if onnxruntime_has_cuda():
        return ONNXRUNTIME
    return OPENVINO if available("openvino") and openvino_exact else ONNXRUNTIME
