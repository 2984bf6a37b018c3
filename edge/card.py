"""Model cards: the typed, schema-versioned JSON beside every artifact (`model.onnx` ->
`model.json`, `model.fp16.engine` -> `model.fp16.json`), read, validated and written here only.

The card is the contract between export, calibrate, build-engine and the runtime: input/output
tensors, preprocessing, classes and thresholds, what the artifact is (`Artifact`: an ONNX, an
OpenVINO IR or a TensorRT engine, with its hashes and build facts), what it came from
(`Source`), where its outputs were measured (`Measured`: backend, version, device) and its
golden set (`Golden`: a few frames with the outputs it gave, which it must reproduce on the
target before the first frame: edgeseg.edge.golden, edgeseg.edge.verify). Metadata lives here, never in a header prepended to the plan (that breaks trtexec
and C++ loaders).

Every field is checked on load (type, finiteness, range, size): a card whose thresholds are NaN
or whose min_area is 1e18 would otherwise run and find nothing. A failure is one EdgesegError
naming the card file, the field and the fix.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from edgeseg import __version__
from edgeseg.edge.artifacts import card_path, golden_path
from edgeseg.edge.preprocess import CHANNELS, GEOMETRIES, LAYOUTS, Preprocess
from edgeseg.edge.registry import FLAVOURS, FORMATS, LOCAL_BACKENDS, PRECISIONS
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256

CARD_SCHEMA = "edgeseg.card/2"  # 2: `measured` and `golden` (a /1 reader refuses them)
KNOWN_SCHEMAS = (CARD_SCHEMA, "edgeseg.card/1")
TASKS = ("classifier", "segmenter")
ACTIVATIONS = ("sigmoid", "none")  # what turns `output` into probabilities ("none": already are)
MAX_CARD_BYTES = 1 << 20  # a real card is ~2 KB; bigger is not a card
MAX_CLASSES = 256
MAX_SIDE = 1 << 16  # pixels per input side
MAX_MIN_AREA = 1 << 28  # pixels: above a 16384 x 16384 frame, a min_area would drop every defect
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIX = "correct it in the card (or the checkpoint or export flag it came from), or rewrite the card with `edgeseg export` / `edgeseg build-engine`"

__all__ = [
    "Artifact", "CARD_SCHEMA", "Contract", "Golden", "Measured", "ModelCard", "Source", "TASKS", "TensorSpec", "card_path", "output_task", "read_card",
    "write_card",
]


class CardFieldError(EdgesegError):
    """One card field is wrong; `read_card` adds the card's file name."""

    def __init__(self, name: str, expected: str, value: Any) -> None:
        shown = repr(value)
        super().__init__(f"{name} must be {expected}, got {shown[:60] + '...' if len(shown) > 60 else shown}", hint=_FIX)
        self.field = name


# -- checks: each returns the value, typed, or raises CardFieldError naming the field -------------


def _text(value: Any, name: str, choices: Sequence[str] = (), optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (choices and value not in choices) or len(value) > 4096:
        raise CardFieldError(name, f"one of {', '.join(choices)}" if choices else "text", value)
    return value


def _number(value: Any, name: str, low: float, high: float, integer: bool = False, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    kind = numbers.Integral if integer else numbers.Real  # numpy scalars too (checkpoint metadata)
    number = float(value) if isinstance(value, kind) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise CardFieldError(name, f"{'an integer' if integer else 'a finite number'} in [{low:g}, {high:g}]", value)
    return int(value) if isinstance(value, numbers.Integral) else number


def _digest(value: Any, name: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.match(value):
        raise CardFieldError(name, "a sha256 hex digest", value)
    return value


def _texts(value: Any, name: str, count: Optional[int] = None, optional: bool = False) -> Optional[List[str]]:
    if value is None and optional:
        return None
    if not isinstance(value, list) or len(value) > MAX_CLASSES or (count is not None and len(value) != count):
        raise CardFieldError(name, "a list of text" if count is None else f"a list of {count} texts", value)
    return [_text(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _numbers(value: Any, name: str, count: int, low: float, high: float) -> List[float]:
    if not isinstance(value, list) or len(value) != count:
        raise CardFieldError(name, f"a list of {count} finite numbers in [{low:g}, {high:g}] (one per class)", value)
    return [_number(item, f"{name}[{i}]", low, high) for i, item in enumerate(value)]


def _object(value: Any, name: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise CardFieldError(name, "an object", value)
    return value


def _mapping(value: Any, name: str) -> Optional[Dict[str, Any]]:
    return None if value is None else _object(value, name)


def _known(data: Dict[str, Any], name: str, known: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise CardFieldError(f"{name}.{unknown[0]}" if name else unknown[0], f"absent (not a field of {CARD_SCHEMA})", data[unknown[0]])


def _plain(value: Any, name: str, depth: int = 0) -> Any:
    """Free-form JSON (quantization notes, architecture): finite numbers, bounded depth."""
    if depth > 8:
        raise CardFieldError(name, "JSON at most 8 levels deep", "...")
    if isinstance(value, float) and not math.isfinite(value):
        raise CardFieldError(name, "finite", value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{name}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


# -- the card ----------------------------------------------------------------------------------


@dataclass
class TensorSpec:
    """A named I/O tensor; a str dimension (e.g. "batch") is dynamic."""

    name: str
    shape: List[Union[int, str]]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TensorSpec":
        data = _object(data, where)
        _known(data, where, ("name", "shape", "dtype"))
        shape = data.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise CardFieldError(f"{where}.shape", "a list of 1 to 8 dimensions", shape)
        dims = [d if isinstance(d, str) else _number(d, f"{where}.shape[{i}]", 1, MAX_SIDE, integer=True) for i, d in enumerate(shape)]
        return cls(_text(data.get("name"), f"{where}.name"), dims, _text(data.get("dtype", "float32"), f"{where}.dtype"))


@dataclass
class Artifact:
    """What the file beside the card is. `format` says which backend it is made for (an ONNX runs on
    ONNX Runtime and OpenVINO, an IR on OpenVINO, an engine on TensorRT). Fields that do not apply
    to a format stay None and are left out of the JSON."""

    format: str = "onnx"  # one of registry.FORMATS: "onnx" | "openvino" | "tensorrt"
    precision: str = "fp32"  # one of registry.PRECISIONS
    path: Optional[str] = None  # the artifact's file name (write_card stamps it)
    sha256: Optional[str] = None  # of the artifact (write_card stamps it; read_card checks it)
    opset: Optional[int] = None  # ONNX
    flavour: Optional[str] = None  # INT8: registry.FLAVOURS
    calibration: Optional[str] = None  # TensorRT INT8: "qdq" | "implicit"
    calibration_sha256: Optional[str] = None  # INT8: the calibration set's
    calibration_frames: Optional[int] = None  # QDQ
    calibration_method: Optional[str] = None  # QDQ
    quantization: Optional[Dict[str, Any]] = None  # QDQ: activation / weight form, excluded nodes, tweaks
    weight_bits: Optional[int] = None  # INT8: 8, or 7 (reduce_range) for x86 CPUs whose int8 dot products saturate
    float_layers: Optional[List[str]] = None  # INT8: nodes kept in float for accuracy (--exclude, the accuracy search)
    optimized_by: Optional[str] = None  # ONNX Runtime-optimised ONNX: "onnxruntime <version>"
    graph_optimization: Optional[str] = None
    providers: Optional[List[str]] = None
    converted_by: Optional[str] = None  # OpenVINO IR: "openvino <version>"
    weights: Optional[str] = None  # OpenVINO IR: the .bin's name and sha256
    weights_sha256: Optional[str] = None
    tensorrt_version: Optional[str] = None  # engines: what they were built with and for
    gpu_name: Optional[str] = None
    compute_capability: Optional[str] = None
    build_flags: Optional[List[str]] = None
    profile: Optional[Dict[str, List[int]]] = None  # TensorRT: min / opt / max input shapes
    workspace_mib: Optional[int] = None
    platform: Optional[str] = None  # engines: the CPU architecture ("aarch64", "x86_64") they were built on
    jetson_module: Optional[str] = None  # engines built on a Jetson: its module (None: a discrete GPU)
    multiprocessors: Optional[int] = None  # engines: the GPU's SM count (Orin modules all report 8.7)
    dla_layers: Optional[int] = None  # DLA engines: layers placed on the DLA
    gpu_fallback_layers: Optional[List[str]] = None  # DLA engines: layers that fall back to the GPU
    parsed_onnx_sha256: Optional[str] = None

    @property
    def ort_only(self) -> bool:
        """An ONNX that ONNX Runtime optimised offline (its own fused operators inside)."""
        return (self.optimized_by or "").startswith("onnxruntime")

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> "Artifact":
        data = _object(data, "artifact")
        _known(data, "artifact", [f.name for f in fields(cls)])
        g = data.get
        profile = _mapping(g("profile"), "artifact.profile")
        return cls(
            format=_text(g("format", "onnx"), "artifact.format", FORMATS),
            precision=_text(g("precision", "fp32"), "artifact.precision", PRECISIONS),
            path=_text(g("path"), "artifact.path", optional=True),
            sha256=_digest(g("sha256"), "artifact.sha256"),
            opset=_number(g("opset"), "artifact.opset", 1, 1000, integer=True, optional=True),
            flavour=_text(g("flavour"), "artifact.flavour", FLAVOURS, optional=True),
            calibration=_text(g("calibration"), "artifact.calibration", optional=True),
            calibration_sha256=_digest(g("calibration_sha256"), "artifact.calibration_sha256"),
            calibration_frames=_number(g("calibration_frames"), "artifact.calibration_frames", 0, 1e9, integer=True, optional=True),
            calibration_method=_text(g("calibration_method"), "artifact.calibration_method", optional=True),
            quantization=_plain(_mapping(g("quantization"), "artifact.quantization"), "artifact.quantization"),
            weight_bits=_number(g("weight_bits"), "artifact.weight_bits", 7, 8, integer=True, optional=True),
            float_layers=_texts(g("float_layers"), "artifact.float_layers", optional=True),
            optimized_by=_text(g("optimized_by"), "artifact.optimized_by", optional=True),
            graph_optimization=_text(g("graph_optimization"), "artifact.graph_optimization", optional=True),
            providers=_texts(g("providers"), "artifact.providers", optional=True),
            converted_by=_text(g("converted_by"), "artifact.converted_by", optional=True),
            weights=_text(g("weights"), "artifact.weights", optional=True),
            weights_sha256=_digest(g("weights_sha256"), "artifact.weights_sha256"),
            tensorrt_version=_text(g("tensorrt_version"), "artifact.tensorrt_version", optional=True),
            gpu_name=_text(g("gpu_name"), "artifact.gpu_name", optional=True),
            compute_capability=_text(g("compute_capability"), "artifact.compute_capability", optional=True),
            build_flags=_texts(g("build_flags"), "artifact.build_flags", optional=True),
            profile=_plain(profile, "artifact.profile") if profile is not None else None,
            workspace_mib=_number(g("workspace_mib"), "artifact.workspace_mib", 0, 1 << 30, integer=True, optional=True),
            platform=_text(g("platform"), "artifact.platform", optional=True),
            jetson_module=_text(g("jetson_module"), "artifact.jetson_module", optional=True),
            multiprocessors=_number(g("multiprocessors"), "artifact.multiprocessors", 0, 1e6, integer=True, optional=True),
            dla_layers=_number(g("dla_layers"), "artifact.dla_layers", 0, 1e9, integer=True, optional=True),
            gpu_fallback_layers=_texts(g("gpu_fallback_layers"), "artifact.gpu_fallback_layers", optional=True),
            parsed_onnx_sha256=_digest(g("parsed_onnx_sha256"), "artifact.parsed_onnx_sha256"),
        )


@dataclass
class Source:
    """Where the artifact came from: the checkpoint (or factory) and, for a derived artifact, the
    ONNX it was made from (`fp32_onnx` when that was itself derived, e.g. a QDQ model)."""

    checkpoint: Optional[str] = None
    checkpoint_path: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    architecture: Union[str, Dict[str, Any], None] = None  # create_model options, or a class name
    factory: Optional[str] = None  # export --factory module:function
    weights: Optional[str] = None
    onnx: Optional[str] = None
    onnx_sha256: Optional[str] = None
    fp32_onnx: Optional[str] = None
    fp32_onnx_sha256: Optional[str] = None
    layout: Optional[str] = None  # read from older cards; the input layout is preprocess.layout

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> "Source":
        data = _object(data, "source")
        names = [f.name for f in fields(cls)]
        _known(data, "source", names)
        values: Dict[str, Any] = {}
        for name in names:
            value = data.get(name)
            if name.endswith("sha256"):
                values[name] = _digest(value, f"source.{name}")
            elif name == "architecture":
                values[name] = _plain(value, "source.architecture") if isinstance(value, dict) else _text(value, "source.architecture", optional=True)
            else:
                values[name] = _text(value, f"source.{name}", optional=True)
        return cls(**values)


@dataclass
class Measured:
    """Where an artifact's outputs were measured: the backend ("onnxruntime", "openvino",
    "tensorrt"), its version, the device (CPU model or GPU name) and, on a CPU, its ISA class
    (envinfo.isa_class: "avx2", "avx512_vnni", "amx", "neon"...), which INT8 kernels differ by."""

    backend: str
    version: str
    device: str
    isa: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> "Measured":
        data = _object(data, "measured")
        _known(data, "measured", [f.name for f in fields(cls)])
        return cls(
            backend=_text(data.get("backend"), "measured.backend", LOCAL_BACKENDS),
            version=_text(data.get("version"), "measured.version"),
            device=_text(data.get("device"), "measured.device"),
            isa=_text(data.get("isa"), "measured.isa", optional=True),
        )


@dataclass
class Golden:
    """The artifact's golden set: `file` (`<artifact stem>.golden.npz`, sha256 `sha256`) holds
    the `frames` (named here) and the outputs the artifact gave on them (probabilities; a
    segmenter's masks as RLE). `tolerance`: the largest probability difference and the largest
    fraction of mask pixels that may differ on any frame when the artifact runs them again."""

    file: str
    sha256: str
    frames: List[str]
    tolerance: Dict[str, float]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Golden":
        data = _object(data, "golden")
        _known(data, "golden", [f.name for f in fields(cls)])
        tolerance = _object(data.get("tolerance"), "golden.tolerance")
        _known(tolerance, "golden.tolerance", ("probability", "mask"))
        return cls(
            file=_text(data.get("file"), "golden.file"),
            sha256=str(_digest(_text(data.get("sha256"), "golden.sha256"), "golden.sha256")),
            frames=_texts(data.get("frames"), "golden.frames") or [],
            tolerance={key: float(_number(tolerance.get(key), f"golden.tolerance.{key}", 0, 1)) for key in ("probability", "mask")},
        )


def output_task(shape: Sequence[Union[int, str]]) -> Optional[str]:
    """The task an output shape says: one score per image (N,) or (N, 1) is a classifier's, maps
    (N, C, H, W) a segmenter's; None for anything else."""
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return "classifier"
    return "segmenter" if len(shape) == 4 else None


@dataclass(frozen=True)
class Contract:
    """The deployment meaning of a model, the part of its card no ONNX graph says: the task, how
    frames become its input, its class names, default thresholds and output activation
    ("none": the model already outputs probabilities). `ModelCard.contract` is this view of a
    card; export writes a card from it. Checked like a card's fields."""

    task: str
    preprocess: Preprocess
    classes: List[str]
    thresholds: Dict[str, Any]
    output_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        _text(self.task, "task", TASKS)
        _text(self.output_activation, "output_activation", ACTIVATIONS)
        _classes(self.classes)
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds, self.task, len(self.classes)))

    def check_output(self, shape: Sequence[int], where: str) -> None:
        """The model's output must be what the runtime post-processes for this task."""
        if self.task == "classifier":
            if output_task(shape) != "classifier":
                raise EdgesegError(
                    f"{where}: a classifier must output one defect score per image (N, 1), got {tuple(shape)}",
                    hint="export a single-logit head, or use --task segmenter for per-pixel maps",
                )
            return
        if len(shape) != 4 or shape[1] != len(self.classes):
            scores = output_task(shape) == "classifier"
            raise EdgesegError(
                f"{where}: a segmenter must output (N, {len(self.classes)}, H, W) maps for classes "
                f"{', '.join(self.classes)}, got {tuple(shape)}",
                hint="it outputs one score per image: use --task classifier" if scores
                else f"give --classes with one name per output map ({shape[1]} names)" if len(shape) == 4
                else "export a model that outputs (N, classes, H, W) maps",
            )


@dataclass
class ModelCard:
    """Everything needed to run and to trust one artifact.

    thresholds: classifier {"defect": p}; segmenter {"probability": [p per class],
    "min_area": [pixels per class]} (Kaggle-style post-processing).
    """

    task: str
    input: TensorSpec
    output: TensorSpec
    preprocess: Preprocess
    classes: List[str]
    thresholds: Dict[str, Any]
    output_activation: str = "sigmoid"
    artifact: Artifact = field(default_factory=Artifact)
    source: Source = field(default_factory=Source)
    edgeseg_version: str = __version__
    schema: str = CARD_SCHEMA
    measured: Optional[Measured] = None  # where `golden` was measured
    golden: Optional[Golden] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise EdgesegError(f"unknown task {self.task!r} in model card", hint=f"use one of {', '.join(TASKS)}")

    @property
    def contract(self) -> Contract:
        return Contract(self.task, self.preprocess, list(self.classes), dict(self.thresholds), self.output_activation)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "task": self.task,
            "input": asdict(self.input),
            "output": asdict(self.output),
            "preprocess": self.preprocess.to_dict(),
            "classes": list(self.classes),
            "thresholds": dict(self.thresholds),
            "output_activation": self.output_activation,
            "artifact": self.artifact.to_dict(),
            "source": self.source.to_dict(),
            "edgeseg_version": self.edgeseg_version,
            "schema": self.schema,
            **({"measured": self.measured.to_dict()} if self.measured is not None else {}),
            **({"golden": self.golden.to_dict()} if self.golden is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "ModelCard":
        """The card in `data`, every field checked (CardFieldError names the first bad one)."""
        data = _object(data, "card")
        schema = data.get("schema")
        if schema not in KNOWN_SCHEMAS:
            raise EdgesegError(
                f"schema {schema!r} is not one this edgeseg {__version__} reads ({', '.join(KNOWN_SCHEMAS)})",
                hint="use the edgeseg version that wrote the card, or rewrite it with `edgeseg export` / `edgeseg build-engine`",
            )
        _known(data, "", [f.name for f in fields(cls)])
        task = _text(data.get("task"), "task", TASKS)
        classes = _classes(data.get("classes"))
        return cls(
            task=task,
            input=TensorSpec.from_dict(data.get("input"), "input"),
            output=TensorSpec.from_dict(data.get("output"), "output"),
            preprocess=_preprocess(data.get("preprocess")),
            classes=classes,
            thresholds=_thresholds(data.get("thresholds"), task, len(classes)),
            output_activation=_text(data.get("output_activation", "sigmoid"), "output_activation", ACTIVATIONS),
            artifact=Artifact.from_dict(data.get("artifact", {})),
            source=Source.from_dict(data.get("source", {})),
            edgeseg_version=_text(data.get("edgeseg_version", "unknown"), "edgeseg_version"),
            schema=schema,
            measured=Measured.from_dict(data["measured"]) if data.get("measured") is not None else None,
            golden=Golden.from_dict(data["golden"]) if data.get("golden") is not None else None,
        )


def _classes(value: Any) -> List[str]:
    classes = _texts(value, "classes") or []
    if not classes or any(not name for name in classes) or len(set(classes)) != len(classes):
        raise CardFieldError("classes", "a list of distinct, non-empty class names", value)
    return classes


def _preprocess(data: Any) -> Preprocess:
    data = _object(data, "preprocess")
    _known(data, "preprocess", ("height", "width", "mean", "std", "geometry", "channels", "layout"))
    channels = _number(data.get("channels", 1), "preprocess.channels", 1, 3, integer=True)
    if channels not in CHANNELS:
        raise CardFieldError("preprocess.channels", "1 (gray) or 3 (RGB)", channels)
    return Preprocess(
        height=_number(data.get("height"), "preprocess.height", 1, MAX_SIDE, integer=True),
        width=_number(data.get("width"), "preprocess.width", 1, MAX_SIDE, integer=True),
        mean=float(_number(data.get("mean", 0.0), "preprocess.mean", -1e6, 1e6)),
        std=float(_number(data.get("std", 1.0), "preprocess.std", 1e-12, 1e6)),
        geometry=_text(data.get("geometry", "resize"), "preprocess.geometry", GEOMETRIES),
        channels=channels,
        layout=_text(data.get("layout", "NCHW"), "preprocess.layout", LAYOUTS),
    )


def _thresholds(data: Any, task: str, classes: int) -> Dict[str, Any]:
    data = _object(data, "thresholds")
    if task == "classifier":
        _known(data, "thresholds", ("defect",))
        return {"defect": _number(data.get("defect"), "thresholds.defect", 0, 1)}
    _known(data, "thresholds", ("probability", "min_area"))
    return {
        "probability": _numbers(data.get("probability"), "thresholds.probability", classes, 0, 1),
        "min_area": _numbers(data.get("min_area"), "thresholds.min_area", classes, 0, MAX_MIN_AREA),
    }


def write_card(artifact: PathLike, card: ModelCard) -> Path:
    """Write the card beside `artifact` atomically, stamping the artifact's name and sha256 and
    the current schema. A card that described other bytes (a build's or QDQ model's source, a
    changed model) drops its golden set and measurement: they were measured on the other file."""
    artifact = Path(artifact)
    digest = sha256(artifact)
    if card.golden is not None and (card.artifact.sha256 != digest or card.golden.file != golden_path(artifact).name):
        card.golden = card.measured = None
    card.artifact.path = artifact.name
    card.artifact.sha256 = digest
    card.schema = CARD_SCHEMA
    target = card_path(artifact)
    with atomic_output(target) as tmp:
        tmp.write_text(card_json(card) + "\n")
    return target


def load_card(path: PathLike) -> ModelCard:
    """The card in the JSON file `path` (a card file itself, not the artifact beside it), validated:
    any problem is one EdgesegError naming the file, the field and the fix."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise EdgesegError(f"model card {path} is {size} bytes, not a model card (a card is a few KB)", hint=_FIX)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgesegError(f"cannot read model card {path}: {exc.strerror or exc}") from exc
    return parse_card(text, str(path))


def parse_card(text: str, where: str) -> ModelCard:
    """The card in the JSON `text`, validated; an error names `where` it came from (a card file,
    a Triton model config's parameter) with the field and the fix."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise EdgesegError(f"model card {where} is not valid JSON ({reason[:120]})", hint=_FIX) from None
    try:
        return ModelCard.from_dict(data)
    except EdgesegError as exc:
        raise EdgesegError(f"model card {where}: {exc.message}", hint=exc.hint) from None


def card_json(card: ModelCard, indent: Optional[int] = 2) -> str:
    """The card as JSON text (strict: a NaN cannot be written)."""
    return json.dumps(card.to_dict(), indent=indent, separators=None if indent else (",", ":"), allow_nan=False)


def is_card_file(path: PathLike) -> bool:
    """Whether the JSON file `path` is an edgeseg model card of any schema version (export refuses
    to overwrite one that is not, e.g. a training metrics file beside a checkpoint)."""
    try:
        if Path(path).stat().st_size > MAX_CARD_BYTES:
            return False
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and str(data.get("schema", "")).startswith("edgeseg.card/")


def read_card(artifact: PathLike, verify: bool = True) -> ModelCard:
    """Load the card beside `artifact`; with `verify`, refuse one whose sha256 is stale."""
    artifact = Path(artifact)
    path = card_path(artifact)
    if not path.is_file():
        raise EdgesegError(
            f"no model card {path} beside {artifact}",
            hint="export with `edgeseg export`, or describe an outside ONNX with `edgeseg export --onnx ... --task ...`",
        )
    card = load_card(path)
    if verify and artifact.is_file():
        expected = card.artifact.sha256
        if expected and expected != sha256(artifact):
            raise EdgesegError(
                f"{artifact} does not match its card {path} (sha256 differs: the file changed after the card was written)",
                hint="re-run `edgeseg export` / `edgeseg build-engine` for this model",
            )
    return card
