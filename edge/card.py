"""Model cards: the JSON beside every ONNX model and engine (`model.onnx` -> `model.json`,
`model.fp16.engine` -> `model.fp16.json`).

The card is the contract between export, build-engine and the runtime: input/output tensors,
preprocessing, classes and thresholds, hashes of the artifact and of what it came from, and for
engines the TensorRT version and GPU they were built for. Metadata lives here, never in a header
prepended to the plan (that breaks trtexec and C++ loaders).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

from edgeseg import __version__
from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256

CARD_SCHEMA = "edgeseg.card/1"
TASKS = ("classifier", "segmenter")


@dataclass
class TensorSpec:
    """A named I/O tensor; a str dimension (e.g. "batch") is dynamic."""

    name: str
    shape: List[Union[int, str]]
    dtype: str = "float32"


@dataclass
class ModelCard:
    """Everything needed to run and to trust one artifact.

    thresholds: classifier {"defect": p}; segmenter {"probability": [p per class],
    "min_area": [pixels per class]} (Kaggle-style post-processing).
    artifact: {"format": "onnx"|"tensorrt", "path": file name, "sha256": ..., plus
    "opset" for ONNX; "precision", "tensorrt_version", "gpu_name", "compute_capability",
    "build_flags", "calibration_sha256" for engines}.
    source: where the artifact came from: {"checkpoint_sha256", "architecture", "onnx_sha256"}.
    """

    task: str
    input: TensorSpec
    output: TensorSpec
    preprocess: Preprocess
    classes: List[str]
    thresholds: Dict[str, Any]
    output_activation: str = "sigmoid"  # what turns `output` into probabilities: "sigmoid" | "none"
    artifact: Dict[str, Any] = field(default_factory=dict)
    source: Dict[str, Any] = field(default_factory=dict)
    edgeseg_version: str = __version__
    schema: str = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise EdgesegError(f"unknown task {self.task!r} in model card", hint=f"use one of {', '.join(TASKS)}")

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelCard":
        return cls(
            task=data["task"],
            input=TensorSpec(**data["input"]),
            output=TensorSpec(**data["output"]),
            preprocess=Preprocess.from_dict(data["preprocess"]),
            classes=list(data["classes"]),
            thresholds=dict(data["thresholds"]),
            output_activation=data.get("output_activation", "sigmoid"),
            artifact=dict(data.get("artifact", {})),
            source=dict(data.get("source", {})),
            edgeseg_version=data.get("edgeseg_version", "unknown"),
            schema=data.get("schema", CARD_SCHEMA),
        )


def card_path(artifact: PathLike) -> Path:
    """`model.onnx` -> `model.json`; `model.fp16.engine` -> `model.fp16.json`."""
    return Path(artifact).with_suffix(".json")


def write_card(artifact: PathLike, card: ModelCard) -> Path:
    """Write the card beside `artifact` atomically, stamping the artifact's name and sha256."""
    artifact = Path(artifact)
    card.artifact["path"] = artifact.name
    card.artifact["sha256"] = sha256(artifact)
    target = card_path(artifact)
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    return target


def read_card(artifact: PathLike, verify: bool = True) -> ModelCard:
    """Load the card beside `artifact`; with `verify`, refuse one whose sha256 is stale."""
    artifact = Path(artifact)
    path = card_path(artifact)
    if not path.is_file():
        raise EdgesegError(
            f"no model card {path} beside {artifact}",
            hint="export with `edgeseg export`, or describe an outside ONNX with `edgeseg export --onnx ... --task ...`",
        )
    try:
        card = ModelCard.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgesegError(f"model card {path} is not valid ({exc!r})", hint="re-export the model to rewrite it") from exc
    if verify and artifact.is_file():
        expected = card.artifact.get("sha256")
        if expected and expected != sha256(artifact):
            raise EdgesegError(
                f"{artifact} does not match its card {path} (sha256 differs: the file changed after the card was written)",
                hint="re-run `edgeseg export` / `edgeseg build-engine` for this model",
            )
    return card
