"""ONNX -> deployable artifact with its card: a TensorRT engine, an ONNX Runtime-optimised ONNX,
or an OpenVINO IR.

`onnx_to_engine` builds `<name>.<precision>.engine` through polygraphy (network_from_onnx_path,
CreateConfig, engine_bytes_from_network), with the version differences decided in trt_compat:
FP16 is the builder flag on 8.5-10 and an FP16 ONNX parsed strongly typed on 11.x (polygraphy's
CreateConfig(fp16=True) raises there, so it is never asked for); INT8 is a QDQ ONNX everywhere,
or implicit calibration on 8.5-10 when asked. `onnx_to_ort` is the same command's CPU path:
`<name>.<precision>.ort.onnx`, the graph ONNX Runtime optimised and serialised
(SessionOptions.optimized_model_filepath), loadable without re-optimising. `onnx_to_openvino`
writes `<name>.<precision>.xml` + `.bin` (openvino.convert_model + save_model): FP32 weights for
fp32 and int8 (the QDQ pairs become OpenVINO FakeQuantize nodes), FP16-compressed weights for
fp16; the input shape is fixed to the build's size and batch range.

Before anything is built the input is checked with ONNX Runtime (corrupt file, card mismatch,
an input size the model cannot take: one line each) and the output folder must be writable.
Artifacts are written atomically, the card (sidecar JSON, never a header in the plan) last; if
the card cannot be written the artifact is removed, so nothing half-made is left.
"""
from __future__ import annotations

import contextlib
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.edge import trt_compat
from edgeseg.edge.artifacts import base_name, built_path, fp16_path, weights_path
from edgeseg.edge.card import Artifact, ModelCard, TensorSpec, read_card, write_card
from edgeseg.export.golden import add_golden
from edgeseg.edge.cuda_context import GpuIdentity, gpu_identity, host_platform
from edgeseg.edge.registry import LOCAL_BACKENDS, ONNXRUNTIME, OPENVINO, PRECISIONS, TENSORRT
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, disk_full_as_error, ensure_writable_dir, sha256
from edgeseg.lazy import require

ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class BuildOptions:
    """Everything `build-engine` can vary, validated once before any work.

    batch: (min, opt, max) of the optimisation profile. size: (height, width) for a model whose
    spatial input is dynamic (fully convolutional), default the card's preprocess size.
    workspace_mib: builder workspace limit; default trt_compat.default_workspace_mib of the device
    (a quarter of a Jetson's shared memory).
    timing_cache: file read before and updated after the build (faster rebuilds), keyed by TensorRT
    version and GPU (keyed_timing_cache) so devices and versions never merge into one file.
    dla_core: run on that DLA core with GPU fallback (Jetson AGX/NX; FP16 or INT8; one batch size).
    calibration: for int8, "qdq" (the model is a QDQ ONNX) or "implicit" (TensorRT 8.5-10 entropy /
    min-max calibration of the FP32 model from `calibration_set`, cache in `calibration_cache`).
    ort_level: ONNX Runtime optimisation baked into the CPU artifact. "extended" is portable across
    CPUs; "all" adds layout transforms tied to this machine's CPU (ONNX Runtime docs: offline-optimised
    models must run on the hardware and options they were optimised with).
    """

    precision: str = "fp16"
    batch: Tuple[int, int, int] = (1, 1, 8)
    size: Optional[Tuple[int, int]] = None
    workspace_mib: Optional[int] = None
    timing_cache: Optional[Path] = None
    dla_core: Optional[int] = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    calibration: str = "qdq"
    calibration_set: Optional[Path] = None
    calibration_cache: Optional[Path] = None
    calibrator: str = "entropy"
    ort_level: str = "extended"

    def check(self, backend: str) -> None:
        """One clear line for every inconsistent combination (before anything slow runs)."""
        if backend not in LOCAL_BACKENDS:
            raise EdgesegError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(LOCAL_BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise EdgesegError(f"unknown precision {self.precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
        if self.calibration not in trt_compat.CALIBRATIONS:
            raise EdgesegError(f"unknown calibration {self.calibration!r}", hint=f"use one of {', '.join(trt_compat.CALIBRATIONS)}")
        low, opt, high = self.batch
        if not 1 <= low <= opt <= high:
            raise EdgesegError(f"batch profile must satisfy 1 <= min <= opt <= max, got {low}/{opt}/{high}")
        if self.size is not None and min(self.size) < 1:
            raise EdgesegError(f"input size must be positive, got {self.size[0]}x{self.size[1]}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise EdgesegError("--workspace must be at least 1 MiB")
        if self.dla_core is not None and self.dla_core < 0:
            raise EdgesegError("--dla-core must be >= 0")
        if self.dla_core is not None and self.precision == "fp32":
            raise EdgesegError("DLA runs FP16 or INT8 networks only", hint="use --precision fp16 or int8 with --dla-core")
        if self.dla_core is not None and not low == opt == high:
            # DLA needs a static shape; with GPU fallback a dynamic profile silently runs on the GPU.
            raise EdgesegError(
                f"DLA needs one batch size (min = opt = max), got {low}/{opt}/{high}",
                hint=f"add --min-batch {opt} --opt-batch {opt} --max-batch {opt} to --dla-core",
            )
        if self.ort_level not in ORT_LEVELS:
            raise EdgesegError(f"unknown ONNX Runtime optimisation {self.ort_level!r}", hint=f"use one of {', '.join(ORT_LEVELS)}")
        if self.calibration == "implicit":
            if self.precision != "int8":
                raise EdgesegError("--calibration implicit only applies to --precision int8")
            if backend != TENSORRT:
                raise EdgesegError(
                    "implicit calibration is a TensorRT 8.5-10 feature; the CPU artifacts use the QDQ model",
                    hint="pass the QDQ ONNX with --calibration qdq",
                )
            if self.calibration_set is None:
                raise EdgesegError("--calibration implicit needs --calibration-set (made by `edgeseg calibrate`)")
        tensorrt_only = {
            "--workspace": self.workspace_mib is not None,
            "--timing-cache": self.timing_cache is not None,
            "--dla-core": self.dla_core is not None,
            "--version-compatible": self.version_compatible,
            "--hardware-compatible": self.hardware_compatible,
        }
        used = [flag for flag, on in tensorrt_only.items() if on]
        if backend != TENSORRT and used:
            raise EdgesegError(f"{', '.join(used)} only apply to TensorRT engines", hint=f"drop them with --backend {backend}")


@dataclass
class BuildResult:
    """One artifact written: where, for what, and how long it took."""

    task: str
    source: Path
    artifact: Path
    card: Path
    backend: str
    precision: str
    seconds: float
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "task": self.task,
            "source": str(self.source),
            "artifact": str(self.artifact),
            "card": str(self.card),
            "backend": self.backend,
            "precision": self.precision,
            "seconds": round(self.seconds, 3),
            "megabytes": round(self.artifact.stat().st_size / 1e6, 3),
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------
# Input checks shared by both backends
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The input shapes an artifact is built for; `size` is (height, width), `layout` the card's."""

    input: str
    channels: int
    size: Tuple[int, int]
    batch: Tuple[int, int, int]
    layout: str = "NCHW"

    def shapes(self) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        item = self.size + (self.channels,) if self.layout == "NHWC" else (self.channels,) + self.size
        return tuple((b,) + item for b in self.batch)  # type: ignore[return-value]


def load_source(onnx: PathLike, precision: str, calibration: str) -> Tuple[Path, ModelCard]:
    """The ONNX and its card, refusing the wrong kind of model for the precision asked."""
    path = Path(onnx)
    if not path.is_file():
        raise EdgesegError(f"model {path} not found", hint="pass an ONNX exported by `edgeseg export` (or a checkpoint)")
    card = read_card(path)
    if card.artifact.format != "onnx":
        raise EdgesegError(f"{path} is not an ONNX model (its card says {card.artifact.format})", hint="pass the ONNX it came from")
    made_as = card.artifact.precision
    wants_qdq = precision == "int8" and calibration == "qdq"
    if wants_qdq and made_as != "int8":
        raise EdgesegError(
            f"--precision int8 builds from a QDQ model, but {path.name} is {made_as}",
            hint="pass the INT8 QDQ ONNX made by `edgeseg calibrate`, or use --calibration implicit (TensorRT 8.5-10)",
        )
    if not wants_qdq and made_as != "fp32":
        raise EdgesegError(f"--precision {precision} builds from the FP32 model, but {path.name} is {made_as}", hint="pass the FP32 ONNX")
    return path, card


def input_profile(path: Path, card: ModelCard, options: BuildOptions) -> Profile:
    """The shapes to build for, checked against what the graph fixes (batch and spatial sizes)."""
    shape = list(card.input.shape)
    pre = card.preprocess
    if len(shape) != 4 or not isinstance(shape[pre.channel_axis], int):
        raise EdgesegError(f"{path}: input {card.input.name!r} must be {pre.layout} with fixed channels, its card says {shape}")
    height, width = options.size or (pre.height, pre.width)
    spatial = shape[1:3] if pre.layout == "NHWC" else shape[2:]
    for axis, (want, have) in enumerate(zip((height, width), spatial)):
        if isinstance(have, int) and have > 0 and have != want:
            fixed = "x".join(str(d) for d in spatial)
            raise EdgesegError(
                f"{path.name} takes {fixed} inputs only (fixed in the graph), not {height}x{width}",
                hint="drop --size, or re-export the model at that size (`edgeseg export -c CHECKPOINT.pt --height H --width W`)",
            )
    if isinstance(shape[0], int) and shape[0] > 0 and options.batch != (shape[0],) * 3:
        raise EdgesegError(
            f"{path.name} has a fixed batch of {shape[0]}",
            hint=f"use --min-batch {shape[0]} --opt-batch {shape[0]} --max-batch {shape[0]}, or re-export with a dynamic batch",
        )
    return Profile(card.input.name, int(shape[pre.channel_axis]), (int(height), int(width)), options.batch, pre.layout)


def probe(path: Path, card: ModelCard, profile: Profile) -> Tuple[int, ...]:
    """Run the model once on ONNX Runtime at the profile's smallest shape: a corrupt file, a card
    that does not match the graph, or a size the model cannot take fails here, in one line.
    Returns the output shape at that input."""
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, card, providers=["CPUExecutionProvider"], intra_op_threads=1, graph_optimization="basic")
    with backend:
        dtype = np.dtype(card.input.dtype)
        try:
            result = backend.infer({profile.input: np.zeros(profile.shapes()[0], dtype)})
        except Exception as exc:  # ONNX Runtime's own error types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            height, width = profile.size
            raise EdgesegError(
                f"{path.name} cannot take a {height}x{width} input: {first_line[:200]}",
                hint="choose a --size the model's downsampling divides (e.g. multiples of 32), or the card's size",
            ) from exc
    return tuple(result[card.output.name].shape)


def derived_card(card: ModelCard, source: Path, profile: Profile, output_shape: Tuple[int, ...], artifact: Artifact) -> ModelCard:
    """The new artifact's card: the source card with this build's shapes, artifact fields and origin."""
    height, width = profile.size
    pre = replace(card.preprocess, height=height, width=width)
    batch = card.input.shape[0] if profile.batch[0] != profile.batch[2] else profile.batch[0]
    origin = card.source
    if origin.onnx is not None:  # the source is itself derived (a QDQ model): keep its FP32 origin too
        origin = replace(origin, fp32_onnx=origin.onnx, fp32_onnx_sha256=origin.onnx_sha256)
    return replace(
        card,
        input=TensorSpec(card.input.name, pre.input_shape(batch), card.input.dtype),
        output=TensorSpec(card.output.name, [batch] + list(output_shape[1:]), card.output.dtype),
        preprocess=pre,
        artifact=artifact,
        source=replace(origin, onnx=source.name, onnx_sha256=sha256(source)),
    )


def _int8_origin(card: ModelCard, options: BuildOptions) -> Dict[str, Any]:
    """What an INT8 CPU artifact keeps from its QDQ source's card: the flavour, calibration set,
    weight range and the layers kept in float."""
    if options.precision != "int8":
        return {}
    made = card.artifact
    return {"flavour": made.flavour, "calibration_sha256": made.calibration_sha256, "weight_bits": made.weight_bits, "float_layers": made.float_layers}


def _write(target: Path, payload: Any, card: ModelCard, source: Path) -> Path:
    """Artifact first (atomic), then its card (no card, no artifact), then its golden set, run
    on the frames of `source`'s (edgeseg.export.golden)."""
    with atomic_output(target) as tmp:
        if isinstance(payload, Path):
            tmp.write_bytes(payload.read_bytes())
        else:
            with open(tmp, "wb") as handle:
                handle.write(payload)
    try:
        written = write_card(target, card)
    except BaseException:
        target.unlink()
        raise
    add_golden(target, source=source)
    return written


@contextlib.contextmanager
def _scratch(out_dir: Path):  # type: ignore[no-untyped-def]
    """A temporary folder beside the output (same filesystem), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=".edgeseg-build-", dir=str(out_dir)) as folder:
        yield Path(folder)


def _fp16_variant(onnx: Path, scratch: Path) -> Path:
    """The FP16 ONNX (FP16 weights and compute, FP32 I/O) the export step makes; what it needs is in
    the `trt` extra (no torch), since strongly typed TensorRT 11 builds FP16 only from it."""
    for module in ("onnx", "onnxslim", "packaging"):
        require(module, "the FP16 ONNX that FP16 engines are built from here", extra="trt")
    from edgeseg.export.fp16 import onnx_to_fp16

    return Path(onnx_to_fp16(onnx, fp16_path(scratch / f"{base_name(onnx)}.onnx")).onnx)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime: the CPU artifact
# ---------------------------------------------------------------------------------------------


def _cpu_build_inputs(
    onnx: PathLike, out_dir: PathLike, options: BuildOptions, backend: str
) -> Tuple[Path, Path, ModelCard, Profile, Tuple[int, ...]]:
    """What every CPU artifact build starts from, checked before anything is written: the output
    folder, the source ONNX and its card, the input profile and the output shape it gives."""
    options.check(backend)
    out = ensure_writable_dir(out_dir)
    source, card = load_source(Path(onnx), options.precision, options.calibration)
    profile = input_profile(source, card, options)
    return out, source, card, profile, probe(source, card, profile)


def onnx_to_ort(onnx: PathLike, out_dir: PathLike, options: BuildOptions) -> BuildResult:
    """`<name>.<precision>.ort.onnx`: the model with ONNX Runtime's graph optimisations applied and
    serialised, plus its card. fp16 optimises the FP16 variant, int8 the QDQ model."""
    started = time.perf_counter()
    out, source, card, profile, output_shape = _cpu_build_inputs(onnx, out_dir, options, ONNXRUNTIME)
    ort = require("onnxruntime", "the ONNX Runtime build")
    target = built_path(source, out, options.precision, ONNXRUNTIME)
    with _scratch(out) as scratch:
        model = _fp16_variant(source, scratch) if options.precision == "fp16" else source
        optimised = scratch / "optimised.onnx"
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[options.ort_level])
        session_options.optimized_model_filepath = str(optimised)
        with disk_full_as_error(target, writing=optimised):  # ORT reports it as "Protobuf serialization failed"
            ort.InferenceSession(str(model), sess_options=session_options, providers=["CPUExecutionProvider"])
        artifact = Artifact(
            format="onnx",
            precision=options.precision,
            optimized_by=f"onnxruntime {ort.__version__}",
            graph_optimization=options.ort_level,
            providers=["CPUExecutionProvider"],
            **_int8_origin(card, options),
        )
        new_card = derived_card(card, source, profile, output_shape, artifact)
        card_file = _write(target, optimised, new_card, source)
    return BuildResult(card.task, source, target, card_file, ONNXRUNTIME, options.precision, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# OpenVINO: the IR
# ---------------------------------------------------------------------------------------------


def onnx_to_openvino(onnx: PathLike, out_dir: PathLike, options: BuildOptions) -> BuildResult:
    """`<name>.<precision>.xml` + `.bin`, the OpenVINO IR of the model, plus its card (which
    records the .bin's sha256: the runtime refuses an IR whose weights changed). fp16 compresses
    the FP32 model's weights to FP16 (OpenVINO's own FP16 IR), int8 converts the QDQ model."""
    started = time.perf_counter()
    out, source, card, profile, output_shape = _cpu_build_inputs(onnx, out_dir, options, OPENVINO)
    ov = require("openvino", "the OpenVINO IR build")
    target = built_path(source, out, options.precision, OPENVINO)
    with _scratch(out) as scratch:
        model = ov.convert_model(str(source))
        low, _, high = profile.batch
        batch = ov.Dimension(low) if low == high else ov.Dimension(low, high)
        model.reshape({profile.input: ov.PartialShape([batch, *map(ov.Dimension, profile.shapes()[0][1:])])})
        xml = scratch / target.name
        with disk_full_as_error(target, writing=xml):  # OpenVINO reports it as "basic_ios::clear"
            ov.save_model(model, str(xml), compress_to_fp16=options.precision == "fp16")
        weights = xml.with_suffix(".bin")
        artifact = Artifact(
            format="openvino",
            precision=options.precision,
            converted_by=f"openvino {ov.__version__.split('-')[0]}",
            weights=weights_path(target).name,
            weights_sha256=sha256(weights),
            **_int8_origin(card, options),
        )
        new_card = derived_card(card, source, profile, output_shape, artifact)
        with atomic_output(target.with_suffix(".bin")) as tmp:
            tmp.write_bytes(weights.read_bytes())
        card_file = _write(target, xml, new_card, source)
    return BuildResult(card.task, source, target, card_file, OPENVINO, options.precision, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# TensorRT
# ---------------------------------------------------------------------------------------------


def keyed_timing_cache(path: Path, tensorrt_version: str, gpu: GpuIdentity) -> Path:
    """The timing cache file for one TensorRT build on one GPU, beside the one asked for:
    `timing.cache` -> `timing.trt10.3.0.nvidia-jetson-orin-cc8.7-sm16.cache`. Tactic timings from another
    version or device are useless there, and merged into one file they only grow it."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-")
    return path.with_name(f"{path.stem}.trt{tensorrt_version}.{slug}-cc{gpu.compute_capability}-sm{gpu.multiprocessors}{path.suffix}")


def tensorrt_or_advice() -> Any:
    """The tensorrt module, or one line saying it is missing and what works instead."""
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        raise EdgesegError(
            f"TensorRT is not available on this machine ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            hint="build CPU artifacts with --backend onnxruntime, or install TensorRT (JetPack, or pip install tensorrt-cu12)",
        ) from exc
    return tensorrt


def onnx_to_engine(onnx: PathLike, out_dir: PathLike, options: BuildOptions) -> BuildResult:
    """`<name>.<precision>.engine` + card for the GPU in this machine (device 0)."""
    started = time.perf_counter()
    options.check(TENSORRT)
    trt = tensorrt_or_advice()
    feats = trt_compat.features(trt.__version__)
    plan = trt_compat.plan_precision(options.precision, feats, options.calibration)
    gpu = gpu_identity(0)
    if gpu is None:
        raise EdgesegError("TensorRT needs a CUDA GPU to build engines and none is visible", hint="build CPU artifacts with --backend onnxruntime")
    here = host_platform(gpu)
    trt_compat.check_portability_options(feats, options.version_compatible, options.hardware_compatible, gpu.compute_capability, here.jetson)
    options = replace(
        options,
        workspace_mib=options.workspace_mib or trt_compat.default_workspace_mib(gpu.total_memory, gpu.integrated),
        timing_cache=options.timing_cache and keyed_timing_cache(options.timing_cache, trt.__version__, gpu),
    )
    out = ensure_writable_dir(out_dir)
    source, card = load_source(Path(onnx), options.precision, options.calibration)
    if plan.onnx == "qdq" and (card.artifact.flavour or "trt") != "trt":
        raise EdgesegError(
            f"{source.name} is the {card.artifact.flavour!r} INT8 flavour; TensorRT parses only the symmetric 'trt' flavour",
            hint="pass the .int8.trt.qdq.onnx (edgeseg calibrate --flavour trt)",
        )
    profile = input_profile(source, card, options)
    output_shape = probe(source, card, profile)
    target = built_path(source, out, options.precision, TENSORRT)
    with _scratch(out) as scratch:
        model = _fp16_variant(source, scratch) if plan.onnx == "fp16" else source
        placement: Dict[str, Any] = {}  # DLA builds: which layers fall back to the GPU
        with _calibrator(options, card, model, profile, target) as calibrator:
            if calibrator is None:
                plan_bytes = _build(trt, feats, plan, model, profile, options, None, placement)
            else:  # reports a callback's error, else the build's own, else an empty calibration
                plan_bytes = calibrator.run_build(lambda: _build(trt, feats, plan, model, profile, options, calibrator.trt_object, placement))
        calibration_sha256 = calibrator.header["calibration_sha256"] if calibrator else card.artifact.calibration_sha256
        flags = ["version_compatible"] * options.version_compatible + ["hardware_compatible"] * options.hardware_compatible
        if options.dla_core is not None:
            flags.append(f"dla_core={options.dla_core}")
        artifact = Artifact(
            format="tensorrt",
            precision=options.precision,
            tensorrt_version=trt.__version__,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            **here.card_fields(),  # platform, jetson_module, multiprocessors
            build_flags=trt_compat.builder_flag_names(plan, flags),
            calibration=options.calibration if options.precision == "int8" else None,
            calibration_sha256=calibration_sha256,
            profile={name: list(shape) for name, shape in zip(("min", "opt", "max"), profile.shapes())},
            workspace_mib=options.workspace_mib,
            **placement,  # dla_layers, gpu_fallback_layers (DLA builds only)
            parsed_onnx_sha256=sha256(model),
        )
        new_card = derived_card(card, source, profile, output_shape, artifact)
        card_file = _write(target, plan_bytes, new_card, source)
    notes = [f"timing cache: {options.timing_cache}"] if options.timing_cache else []
    return BuildResult(card.task, source, target, card_file, TENSORRT, options.precision, time.perf_counter() - started, notes)


@contextlib.contextmanager
def _calibrator(options: BuildOptions, card: ModelCard, model: Path, profile: Profile, target: Path):  # type: ignore[no-untyped-def]
    """The implicit-INT8 calibrator for this build (None otherwise); its errors surface after the build."""
    if options.calibration != "implicit":
        yield None
        return
    from edgeseg.calibration.calibration_set import load_calibration_set
    from edgeseg.calibration.trt_calibrator import TrtCalibrator

    assert options.calibration_set is not None  # BuildOptions.check
    dataset = load_calibration_set(options.calibration_set)
    spec = replace(card.preprocess, height=profile.size[0], width=profile.size[1])
    batch = profile.batch[1]  # TensorRT calibrates at the calibration profile's OPT shape
    with TrtCalibrator(
        lambda: dataset.batches(batch, spec, drop_last=True),
        input_name=profile.input,
        batch_shape=profile.shapes()[1],
        cache=options.calibration_cache or target.with_suffix(".calib"),
        dataset_sha256=dataset.sha256,
        model_sha256=sha256(model),
        algorithm=options.calibrator,
    ) as calibrator:
        yield calibrator


def _build(
    trt: Any, feats: trt_compat.Features, plan: trt_compat.PrecisionPlan, model: Path, profile: Profile, options: BuildOptions,
    calibrator: Any, placement: Dict[str, Any],
) -> Any:
    """Parse and build with polygraphy; its log goes to stderr (stdout stays for results). For a DLA
    build, `placement` receives the layer placement (dla_placement).

    Only options actually used are passed to polygraphy, so an older polygraphy (JetPack 5's
    Python 3.8) works for everything it supports."""
    require("polygraphy", "building TensorRT engines")
    from polygraphy.backend.trt import CreateConfig
    from polygraphy.backend.trt import Profile as TrtProfile
    from polygraphy.backend.trt import engine_bytes_from_network, network_from_onnx_path
    from polygraphy.logger import G_LOGGER

    network_args: Dict[str, Any] = {}
    if plan.strongly_typed:  # ignored but accepted on 11.x, where networks are always strongly typed
        network_args["strongly_typed"] = True
    portable = options.version_compatible or options.hardware_compatible
    if portable and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "NATIVE_INSTANCENORM"):
        # Portable plans cannot embed the InstanceNorm plugin (polygraphy CreateConfig's own advice).
        network_args["flags"] = [trt.OnnxParserFlag.NATIVE_INSTANCENORM]
    low, opt, high = profile.shapes()
    config_args: Dict[str, Any] = {"profiles": [TrtProfile().add(profile.input, min=low, opt=opt, max=high)]}
    if "FP16" in plan.builder_flags:  # never on 11.x: CreateConfig(fp16=True) raises there
        config_args["fp16"] = True
    if "INT8" in plan.builder_flags:
        config_args["int8"] = True
    if calibrator is not None:  # polygraphy attaches it only to networks without Q/DQ layers
        config_args["calibrator"] = calibrator
    if options.workspace_mib is not None:  # IBuilderConfig.set_memory_pool_limit(WORKSPACE, bytes)
        config_args["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: options.workspace_mib << 20}
    if options.timing_cache is not None:
        config_args["load_timing_cache"] = str(options.timing_cache)
    if options.version_compatible:
        config_args["version_compatible"] = True
    if options.hardware_compatible:
        config_args["hardware_compatibility_level"] = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    create_config = CreateConfig(**config_args)

    def config(builder: Any, network: Any) -> Any:
        """polygraphy's config plus DLA on the core asked for (its own use_dla always picks core 0)."""
        builder_config: "trt.IBuilderConfig" = create_config(builder, network)  # typed for the API suite
        if options.dla_core is not None:
            builder_config.default_device_type = trt.DeviceType.DLA
            builder_config.DLA_core = options.dla_core
            builder_config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            placement.update(dla_placement(builder_config, network))
        return builder_config

    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.WARNING
    try:
        with contextlib.redirect_stdout(sys.stderr):
            network = network_from_onnx_path(str(model), **network_args)
            builder = network[0]
            trt_compat.check_platform_precision(builder, feats, plan)
            if options.dla_core is not None:
                _check_dla(builder, options.dla_core)
            return engine_bytes_from_network(
                network, config=config, save_timing_cache=str(options.timing_cache) if options.timing_cache else None
            )
    except EdgesegError:
        raise
    except Exception as exc:  # PolygraphyException / TensorRT errors, already logged in full above
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(f"TensorRT could not build {model.name}: {first_line[:240]}", hint="see the TensorRT log above") from exc
    finally:
        G_LOGGER.module_severity = severity


def dla_placement(config: Any, network: Any) -> Dict[str, Any]:
    """Where a DLA build (`config`: tensorrt.IBuilderConfig, `network`: its INetworkDefinition)
    puts each layer: IBuilderConfig.can_run_on_DLA per layer; the others run
    on the GPU under GPU_FALLBACK, silently unless the card says so."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    return {"dla_layers": len(layers) - len(gpu), "gpu_fallback_layers": gpu}


def _check_dla(builder: Any, core: int) -> None:
    cores = int(getattr(builder, "num_DLA_cores", 0))
    if core >= cores:
        raise EdgesegError(f"no DLA core {core} on this platform (it has {cores})", hint="drop --dla-core, or pick one below the count")
