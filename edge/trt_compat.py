"""Every TensorRT version difference edgeseg depends on, decided in one place.

Supported: 8.5/8.6 (JetPack 5 / 6.0), 10.x (JetPack 6.1+, dGPU), 11.x (dGPU; strongly typed only).
The decisions are pure functions of the version string, so they are tested without TensorRT; the
few helpers that touch a `tensorrt` module take it as an argument and only probe attributes.

Sources (checked per version):
- TensorRT 11 migration guide, "Removed Python APIs": BuilderFlag.FP16/INT8, IBuilderConfig.
  int8_calibrator / set_calibration_profile, platform_has_fast_fp16/int8 and all weak typing are
  gone; networks are always strongly typed (docs.nvidia.com/deeplearning/tensorrt/11.4.0/api/
  migration/tensorrt-10x-to-11x-python-api-reference.html).
- Explicit batch (needed on 8.x, deprecated on 10.x, absent on 11.x) is left to polygraphy 0.53,
  whose CreateNetwork sets it only below 10.0 (polygraphy/backend/trt/loader.py).
- Named-tensor I/O (set_input_shape, set_tensor_address, execute_async_v3) from 8.5: TensorRT
  8.5.2 C++ IExecutionContext reference; polygraphy 0.53 requires tensorrt>=8.5 and calls them
  unconditionally (polygraphy/mod/trt_importer.py, backend/trt/runner.py).
- Version compatibility from 8.6, build and runtime both >= 8.6; a version-compatible plan runs on
  later runtimes (8 -> 9/10, 10 -> 11), never older ones (TensorRT developer guide, "Version
  Compatibility"; 11.1 "Engine Compatibility"). Hardware compatibility (AMPERE_PLUS) from 8.6.
- Without either, a plan only loads on the exact TensorRT build and GPU it was made on
  (TensorRT support matrix, "Engine Portability").
- Execution-context scratch supplied by the caller (checked on the 8.6.1, 10.3, 10.16, 11.0 and
  11.4 bindings): 8.x `ICudaEngine.create_execution_context_without_device_memory()`,
  `device_memory_size`, the write-only `IExecutionContext.device_memory` property; 10.x
  `create_execution_context(ExecutionContextAllocationStrategy.USER_MANAGED)` (the 8.x call is
  deprecated there and gone in 11.0), `device_memory_size_v2`, `set_device_memory(memory, size)`;
  11.x has only the 10.x names.
- STRONGLY_TYPED network flag: opt-in on 10.x (weak typing deprecated in 10.12), "deprecated,
  retained for API compatibility but ignored" on 11.0 (11.0 Python API, Builder page), so asking
  for it on 11.x is harmless. builder.num_DLA_cores remains on 11.x.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from edgeseg.edge.registry import PRECISIONS
from edgeseg.errors import EdgesegError

if TYPE_CHECKING:
    from edgeseg.edge.card import Artifact

MIN_VERSION = (8, 5)
CALIBRATIONS = ("qdq", "implicit")
# Compute capability of Ampere, the oldest architecture HardwareCompatibilityLevel.AMPERE_PLUS covers.
AMPERE = (8, 0)
# Newest TensorRT major that loads a version-compatible plan built with a given major: 8.x -> 9/10
# and 10.x -> 11.x only, never 8.x -> 11.x (TensorRT 11.4 support matrix, "Engine Compatibility").
NEWEST_RUNTIME_MAJOR = {8: 10, 9: 10, 10: 11}

Version = Tuple[int, int, int]


def parse_version(text: str) -> Version:
    """"8.5.2.2" -> (8, 5, 2); "10.3.0" -> (10, 3, 0); "11.4" -> (11, 4, 0)."""
    numbers = [int(part) for part in re.findall(r"\d+", str(text))[:3]]
    if not numbers:
        raise EdgesegError(f"cannot read a TensorRT version from {text!r}")
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


@dataclass(frozen=True)
class Features:
    """What the installed TensorRT can do, from its version alone."""

    version: str
    weak_typing: bool  # BuilderFlag.FP16 / INT8 exist (< 11)
    implicit_int8: bool  # IInt8*Calibrator + config.int8_calibrator (< 11; deprecated since 10.1)
    platform_queries: bool  # builder.platform_has_fast_fp16 / _int8 (< 11)
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE (>= 8.6)
    hardware_compatible: bool  # config.hardware_compatibility_level (>= 8.6)


def features(version: str) -> Features:
    """Features of TensorRT `version`; refuses versions older than 8.5 (no named-tensor API)."""
    parsed = parse_version(version)
    if parsed[:2] < MIN_VERSION:
        raise EdgesegError(
            f"TensorRT {version} is too old: edgeseg needs 8.5 or newer (named-tensor API)",
            hint="upgrade JetPack to 5.1+ or install tensorrt-cu12 >= 8.6",
        )
    return Features(
        version=str(version),
        weak_typing=parsed[0] < 11,
        implicit_int8=parsed[0] < 11,
        platform_queries=parsed[0] < 11,
        version_compatible=parsed[:2] >= (8, 6),
        hardware_compatible=parsed[:2] >= (8, 6),
    )


@dataclass(frozen=True)
class PrecisionPlan:
    """How one precision is obtained on one TensorRT version.

    onnx: which ONNX variant to parse — "fp32" (the exported model), "fp16" (FP16 weights and
    compute, FP32 I/O) or "qdq" (explicit INT8). builder_flags: BuilderFlag names to set (weakly
    typed builds only). strongly_typed: parse with the STRONGLY_TYPED network flag (11.x always).
    implicit_calibration: attach an IInt8 calibrator (8.5-10 only).
    """

    precision: str
    onnx: str
    strongly_typed: bool
    builder_flags: Tuple[str, ...]
    implicit_calibration: bool


def plan_precision(precision: str, feats: Features, calibration: str = "qdq") -> PrecisionPlan:
    """Decide how to build `precision` on this TensorRT, or say clearly why it cannot be built."""
    if precision not in PRECISIONS:
        raise EdgesegError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if calibration not in CALIBRATIONS:
        raise EdgesegError(f"unknown calibration {calibration!r}", hint=f"use one of {', '.join(CALIBRATIONS)}")
    if precision != "int8" and calibration == "implicit":
        raise EdgesegError("--calibration implicit only applies to --precision int8")
    strong = not feats.weak_typing
    if precision == "fp32":
        return PrecisionPlan("fp32", "fp32", strong, (), False)
    if precision == "fp16":
        if strong:  # 11.x: no FP16 flag; FP16 comes from the model's own tensor types
            return PrecisionPlan("fp16", "fp16", True, (), False)
        return PrecisionPlan("fp16", "fp32", False, ("FP16",), False)
    if calibration == "implicit":
        if not feats.implicit_int8:
            raise EdgesegError(
                f"TensorRT {feats.version} has no implicit INT8 calibration (removed in 11.0)",
                hint="build from the QDQ model instead: --precision int8 --calibration qdq",
            )
        return PrecisionPlan("int8", "fp32", False, ("INT8",), True)
    if strong:
        return PrecisionPlan("int8", "qdq", True, (), False)
    # A weakly typed network still needs the INT8 flag for its Q/DQ layers to run in INT8.
    return PrecisionPlan("int8", "qdq", False, ("INT8",), False)


def check_portability_options(
    feats: Features, version_compatible: bool, hardware_compatible: bool, compute_capability: Optional[str], jetson: Optional[str] = None
) -> None:
    """Refuse version/hardware-compatible builds where they cannot be made: TensorRT 8.5 (JetPack 5)
    has neither; hardware compatibility (AMPERE_PLUS) also needs an Ampere or newer discrete GPU
    (a dGPU feature, not documented for JetPack)."""
    if hardware_compatible and jetson:
        raise EdgesegError(f"hardware-compatible engines are a discrete-GPU feature, not supported on {jetson}", hint="drop --hardware-compatible")
    if version_compatible and not feats.version_compatible:
        raise EdgesegError(
            f"version-compatible engines need TensorRT 8.6 or newer; this is {feats.version} (JetPack 5)",
            hint="drop --version-compatible, or build on JetPack 6 / TensorRT >= 8.6",
        )
    if hardware_compatible and not feats.hardware_compatible:
        raise EdgesegError(
            f"hardware-compatible engines need TensorRT 8.6 or newer; this is {feats.version} (JetPack 5)",
            hint="drop --hardware-compatible",
        )
    if hardware_compatible and compute_capability is not None and _cc(compute_capability) < AMPERE:
        raise EdgesegError(
            f"hardware-compatible engines need an Ampere or newer GPU (compute 8.0+); this one is {compute_capability}",
            hint="drop --hardware-compatible",
        )


def check_platform_precision(builder: Any, feats: Features, plan: PrecisionPlan) -> None:
    """Stop, rather than silently build FP32, when the GPU lacks fast FP16/INT8 (8.5-10 can ask;
    on 11.x the strongly typed build itself fails on such a GPU and that error is reported)."""
    if not feats.platform_queries:
        return
    if "FP16" in plan.builder_flags and not builder.platform_has_fast_fp16:
        raise EdgesegError("this GPU has no fast FP16: TensorRT would run the engine in FP32", hint="build --precision fp32")
    if "INT8" in plan.builder_flags and not builder.platform_has_fast_int8:
        raise EdgesegError("this GPU has no fast INT8", hint="build --precision fp16 or fp32")


def enable_engine_host_code(runtime: Any) -> None:
    """Version-compatible plans embed a lean runtime that the loader must be allowed to run
    (IRuntime.engine_host_code_allowed, 8.6+)."""
    if not hasattr(runtime, "engine_host_code_allowed"):
        raise EdgesegError("this TensorRT cannot load version-compatible engines (needs 8.6+)")
    runtime.engine_host_code_allowed = True


# ---------------------------------------------------------------------------------------------
# Engine portability: the card written at build time against the machine loading the engine.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """What a plan is tied to besides TensorRT and the GPU model: the CPU architecture ("aarch64",
    "x86_64"), the Jetson module (None on a discrete GPU) and the GPU's SM count (Orin modules all
    report compute 8.7; 0 = unknown)."""

    arch: str
    jetson: Optional[str] = None
    multiprocessors: int = 0

    def card_fields(self) -> Dict[str, Any]:
        return {"platform": self.arch, "jetson_module": self.jetson, "multiprocessors": self.multiprocessors}


def _platform_mismatch(artifact: "Artifact", flags: Set[str], here: Platform) -> Optional[str]:
    """Why a plan cannot load on `here`'s platform; cards written before these fields pass."""
    if artifact.platform and artifact.platform != here.arch:
        return f"it was built on {artifact.platform}, this machine is {here.arch}{f' ({here.jetson})' if here.jetson else ''}"
    if "hardware_compatible" in flags:
        return f"hardware-compatible plans are a discrete-GPU feature, not supported on {here.jetson}" if here.jetson else None
    if artifact.platform and artifact.jetson_module != here.jetson:  # recorded with the platform (None: a discrete GPU)
        return f"it was built on {artifact.jetson_module or 'a discrete GPU'}, this is {here.jetson or 'a discrete GPU'}"
    built_sms = artifact.multiprocessors or 0
    if built_sms and here.multiprocessors and built_sms != here.multiprocessors:
        return f"it was built for a GPU with {built_sms} SMs, this one has {here.multiprocessors}"
    return None


def default_workspace_mib(total_memory: int, integrated: bool) -> int:
    """Builder workspace limit when none is asked for: a quarter of the memory a Jetson's GPU shares
    with the CPU (an 8 GB Orin building the 256x1600 segmenter at batch 8 can otherwise exhaust
    RAM), half of a discrete GPU's."""
    return max(1, (total_memory // (4 if integrated else 2)) >> 20)


def engine_mismatch(
    artifact: "Artifact",
    running_tensorrt: str,
    gpu_name: Optional[str],
    compute_capability: Optional[str],
    platform: Optional[Platform] = None,
) -> Optional[str]:
    """Why an engine described by its card's `artifact` cannot load here, or None when it can.

    Every plan needs the platform it was built on (`platform`: CPU architecture; the Jetson module
    and SM count unless hardware-compatible, which Jetson never loads).
    Plain engines need the same TensorRT build and the same GPU (name and compute capability).
    A version-compatible engine loads on the same or a newer TensorRT up to the next supported
    major (NEWEST_RUNTIME_MAJOR); a hardware-compatible one on any GPU of compute capability 8.0
    (Ampere) or newer.
    """
    flags = set(artifact.build_flags or [])
    reason = _platform_mismatch(artifact, flags, platform) if platform is not None else None
    if reason:
        return reason
    built_trt = artifact.tensorrt_version or "unknown"
    if "version_compatible" in flags:
        built, running = parse_version(built_trt), parse_version(running_tensorrt)
        if running < built:
            return f"it is version-compatible from TensorRT {built_trt} up, but this machine has {running_tensorrt}"
        newest = NEWEST_RUNTIME_MAJOR.get(built[0], built[0])
        if running[0] > newest:
            return (
                f"it was built with TensorRT {built_trt}; version-compatible plans of {built[0]}.x load on "
                f"TensorRT {newest}.x at the newest, this machine has {running_tensorrt}"
            )
    elif built_trt != str(running_tensorrt):
        return f"it was built with TensorRT {built_trt}, this machine has {running_tensorrt}"
    built_gpu = artifact.gpu_name
    built_cc = artifact.compute_capability or "unknown"
    if gpu_name is None or compute_capability is None:
        return "no CUDA GPU is visible on this machine"
    if "hardware_compatible" in flags:
        if _cc(compute_capability) < AMPERE:
            return f"it is hardware-compatible for Ampere (8.0) and newer, this GPU {gpu_name} is {compute_capability}"
        return None
    if built_cc != compute_capability or built_gpu != gpu_name:
        return f"it was built for {built_gpu} (compute {built_cc}), this machine has {gpu_name} (compute {compute_capability})"
    return None


def _cc(text: str) -> Tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def dla_core(artifact: "Artifact") -> Optional[int]:
    """The DLA core an engine was built for (its card's `dla_core=N` build flag), or None (GPU).
    The runtime must be set to it before deserialising (IRuntime.DLA_core): a DLA engine otherwise
    loads onto the default core."""
    for flag in artifact.build_flags or []:
        name, _, value = str(flag).partition("=")
        if name == "dla_core":
            return int(value)
    return None


def context_without_scratch(trt: Any, engine: Any) -> Any:
    """An execution context whose scratch (activation) memory the caller supplies, with
    `bind_scratch`, before it executes: engines run one after another can then share one buffer."""
    if hasattr(trt, "ExecutionContextAllocationStrategy"):  # 10.0+
        return engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
    return engine.create_execution_context_without_device_memory()


def scratch_size(engine: Any) -> int:
    """Bytes of scratch the engine's contexts need, at its largest profile (device_memory_size is
    gone in 11.0; its 64-bit `_v2` exists from 10.x)."""
    return int(engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size)


def bind_scratch(context: Any, address: int, size: int) -> None:
    """Give a context from `context_without_scratch` its scratch: `size` bytes at device `address`."""
    if hasattr(context, "set_device_memory"):  # 10.x+; the device_memory setter is deprecated there
        context.set_device_memory(address, size)
    else:
        context.device_memory = address


def builder_flag_names(plan: PrecisionPlan, extra: List[str]) -> List[str]:
    """The card's build_flags: precision flags in lower case plus the portability/DLA options."""
    return sorted({flag.lower() for flag in plan.builder_flags} | set(extra) | ({"strongly_typed"} if plan.strongly_typed else set()))
