"""Classifier + segmenter artifacts -> a Triton model repository that serves the cascade.

    <repository>/classifier/config.pbtxt, 1/model.onnx | 1/model.plan
    <repository>/segmenter/config.pbtxt,  1/model.onnx | 1/model.plan
    <repository>/cascade/config.pbtxt,    1/model.py   (BLS on the Python backend)

The two models are plain `onnxruntime_onnx` / `tensorrt_plan` models a stock Triton loads, each
with dynamic batching up to the largest batch its artifact accepts (the engine's profile maximum,
`max_batch` for an ONNX with a dynamic batch). The cascade receives grayscale frames, runs the
classifier, calls the segmenter only for gated frames and answers one record per frame; both cards
travel in its config parameters, so a client needs nothing but the server's address.

`stand_in=True` replaces the two models by Python-backend models that run edgeseg's ONNX Runtime
backend on the ONNX (for a server without the onnxruntime backend, e.g. pytriton's `tritonserver`);
the configs keep the same names, tensors and batching, so the cascade cannot tell them apart.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from edgeseg.edge.backends import artifact_backend
from edgeseg.edge.card import ModelCard, card_json, card_path, read_card
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

CASCADE = "cascade"
IMAGE_INPUT = "IMAGE"  # uint8 [batch, height, width] grayscale frames
RECORD_OUTPUT = "RECORD"  # one JSON record (BYTES) per frame
REQUEST_PARAMETER = "edgeseg"  # request parameter: JSON {"frame": {...Frame fields}, "gate": p}
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


@dataclass(frozen=True)
class RepositoryOptions:
    """How Triton schedules the models.

    max_batch: batch limit for an ONNX whose batch dimension is dynamic (an engine's limit is its
    profile maximum, a fixed-batch ONNX's its batch). queue_delay_us: how long the dynamic batcher
    may hold a request to fill a batch. instances: model instances per GPU (CPU for stand-ins).
    cascade_instances: BLS processes; two or more let the models' batchers merge their requests.
    kind: instance kind of the two models on a stock server: "gpu" or "cpu".
    """

    max_batch: int = 8
    queue_delay_us: int = 2000
    instances: int = 1
    cascade_instances: int = 2
    kind: str = "gpu"
    stand_in: bool = False

    def check(self) -> None:
        if self.max_batch < 1:
            raise EdgesegError(f"max batch must be >= 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise EdgesegError(f"queue delay must be >= 0 microseconds, got {self.queue_delay_us}")
        if self.instances < 1 or self.cascade_instances < 1:
            raise EdgesegError("instance counts must be >= 1")
        if self.kind not in ("gpu", "cpu"):
            raise EdgesegError(f"unknown instance kind {self.kind!r}", hint="use gpu or cpu")


def onnx_to_triton_repository(
    classifier: PathLike, segmenter: PathLike, repository: PathLike, options: RepositoryOptions = RepositoryOptions()
) -> Path:
    """Write a repository serving two ONNX models (onnxruntime_onnx, or Python stand-ins)."""
    return _write_repository(Path(classifier), Path(segmenter), Path(repository), options, "onnx")


def engines_to_triton_repository(
    classifier: PathLike, segmenter: PathLike, repository: PathLike, options: RepositoryOptions = RepositoryOptions()
) -> Path:
    """Write a repository serving two TensorRT engines (tensorrt_plan). The engines must have been
    built with the server's TensorRT version on its GPU model (their cards say which)."""
    if options.stand_in:
        raise EdgesegError("stand-in models run ONNX on ONNX Runtime, not TensorRT engines", hint="pass the ONNX models the engines were built from")
    return _write_repository(Path(classifier), Path(segmenter), Path(repository), options, "tensorrt")


def _write_repository(classifier: Path, segmenter: Path, repository: Path, options: RepositoryOptions, fmt: str) -> Path:
    options.check()
    cards: Dict[str, Tuple[Path, ModelCard]] = {}
    for path, task in ((classifier, "classifier"), (segmenter, "segmenter")):
        if not path.is_file():
            raise EdgesegError(f"model {path} not found", hint="pass an exported .onnx or a built .engine (with its .json card)")
        card = read_card(path)
        if card.task != task:
            raise EdgesegError(f"{path} is a {card.task} model but was given as the {task}", hint="pass the classifier first, then the ResUNet")
        made_for = artifact_backend(path, card)
        if made_for not in ("tensorrt", "onnxruntime"):
            raise EdgesegError(f"{path} is a {made_for} model; Triton serves ONNX models and TensorRT engines here", hint="pass the ONNX it was made from")
        needed = "tensorrt" if made_for == "tensorrt" else "onnx"
        if needed != fmt:
            raise EdgesegError(
                f"{path} is {'a TensorRT engine' if needed == 'tensorrt' else 'an ONNX model'}, but the other model is not",
                hint="serve two ONNX models or two engines",
            )
        cards[task] = (path, card)
    if repository.exists() and (not repository.is_dir() or any(repository.iterdir())):
        raise EdgesegError(f"{repository} exists and is not an empty folder", hint="pass a new folder for the model repository")
    repository.parent.mkdir(parents=True, exist_ok=True)
    # Built in a sibling folder and renamed into place: a failed write leaves no half repository.
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.", dir=repository.parent))
    try:
        batches = {}
        for task, (path, card) in cards.items():
            batches[task] = max_batch_size(card, options)
            _write_model(staging / task, task, path, card, batches[task], options, fmt)
        _write_cascade(staging / CASCADE, {task: card for task, (_, card) in cards.items()}, batches, options)
        if repository.exists():
            repository.rmdir()
        staging.rename(repository)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise EdgesegError(f"cannot write the model repository {repository}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return repository


def max_batch_size(card: ModelCard, options: RepositoryOptions) -> int:
    """Largest batch the artifact accepts: an engine's profile maximum, a fixed ONNX batch, or
    `options.max_batch` for a dynamic ONNX batch."""
    profile = card.artifact.profile or {}
    if profile.get("max"):
        return int(profile["max"][0])
    first = card.input.shape[0] if card.input.shape else None
    return int(first) if isinstance(first, int) and first > 0 else options.max_batch


def _preferred_sizes(limit: int) -> List[int]:
    """Powers of two from 2 up to the limit, and the limit itself."""
    sizes = [size for size in (2, 4, 8, 16, 32, 64) if size < limit]
    return sizes + [limit] if limit > 1 else []


def _write_model(folder: Path, task: str, artifact: Path, card: ModelCard, batch: int, options: RepositoryOptions, fmt: str) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    filename = "model.plan" if fmt == "tensorrt" else "model.onnx"
    shutil.copyfile(artifact, version / filename)
    fields: Dict[str, Any] = {"name": task}
    if options.stand_in:
        # The stand-in reads the ONNX and its card (renamed with the file, as read_card expects).
        shutil.copyfile(card_path(artifact), card_path(version / filename))
        (version / "model.py").write_text(_python_model("edgeseg.serve.stand_in"))
        fields["backend"] = "python"
    else:
        fields["platform"] = "tensorrt_plan" if fmt == "tensorrt" else "onnxruntime_onnx"
        fields["default_model_filename"] = filename
    fields["max_batch_size"] = batch
    fields["input"] = [_tensor(card.input.name, card.input.dtype, card.input.shape[1:])]
    fields["output"] = [_tensor(card.output.name, card.output.dtype, card.output.shape[1:])]
    fields["dynamic_batching"] = _batching(batch, options)
    kind = "KIND_CPU" if options.stand_in or options.kind == "cpu" else "KIND_GPU"
    fields["instance_group"] = [{"kind": _Enum(kind), "count": options.instances}]
    (folder / "config.pbtxt").write_text(to_pbtxt(fields))


def _write_cascade(folder: Path, cards: Dict[str, ModelCard], batches: Dict[str, int], options: RepositoryOptions) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(_python_model("edgeseg.serve.cascade"))
    parameters = {
        "classifier_card": card_json(cards["classifier"], indent=None),
        "segmenter_card": card_json(cards["segmenter"], indent=None),
        "classifier_max_batch": str(batches["classifier"]),
        "segmenter_max_batch": str(batches["segmenter"]),
    }
    fields: Dict[str, Any] = {
        "name": CASCADE,
        "backend": "python",
        "max_batch_size": options.max_batch,
        "input": [_tensor(IMAGE_INPUT, "uint8", [-1, -1])],
        "output": [_tensor(RECORD_OUTPUT, "bytes", [1])],
        "dynamic_batching": _batching(options.max_batch, options),
        "instance_group": [{"kind": _Enum("KIND_CPU"), "count": options.cascade_instances}],
        "parameters": [{"key": key, "value": {"string_value": value}} for key, value in parameters.items()],
    }
    (folder / "config.pbtxt").write_text(to_pbtxt(fields))


def _python_model(module: str) -> str:
    """A model.py that takes its TritonPythonModel from the installed edgeseg, so the server runs
    the same, tested code as `edgeseg run`."""
    return f'"""Written by edgeseg: the model is {module}.TritonPythonModel (edgeseg must be importable in the server\'s Python)."""\nfrom {module} import TritonPythonModel  # noqa: F401\n'


def _tensor(name: str, dtype: str, dims: Sequence[Any]) -> Dict[str, Any]:
    data_type = "TYPE_STRING" if dtype == "bytes" else _TYPES.get(dtype)
    if data_type is None:
        raise EdgesegError(f"tensor {name!r} has dtype {dtype}, which Triton's config has no type for here")
    return {"name": name, "data_type": _Enum(data_type), "dims": [d if isinstance(d, int) and d > 0 else -1 for d in dims]}


def _batching(batch: int, options: RepositoryOptions) -> Dict[str, Any]:
    return {"preferred_batch_size": _preferred_sizes(batch), "max_queue_delay_microseconds": options.queue_delay_us}


class _Enum(str):
    """An enum value: written bare in the text format (KIND_GPU, TYPE_FP32)."""


def to_pbtxt(fields: Dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format for a config made of dicts, lists and scalars (ModelConfig's shape)."""
    pad = "  " * indent
    lines = []
    for key, value in fields.items():
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and (not value or not isinstance(value[0], dict)):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
            continue
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{\n{to_pbtxt(item, indent + 1)}{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, _Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes (\" \\ \n) are text-format escapes too

