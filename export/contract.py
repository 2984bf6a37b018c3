"""What an ONNX graph does not say about itself (a `Contract`, the card's view defined in
edge/card.py), and the model card and report built from it.

Checkpoints carry the contract; for a user's own model it comes from command-line flags or an
existing card.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import onnx

from edgeseg.edge.card import Artifact, Contract, ModelCard, Source, card_path, is_card_file, load_card, write_card
from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.export.graph import opset_of, tensor_spec
from edgeseg.export.parity import Parity

def default_thresholds(task: str, classes: int) -> Dict[str, Any]:
    """Card-convention thresholds for a model that came without any."""
    if task == "classifier":
        return {"defect": 0.5}
    return {"probability": [0.5] * classes, "min_area": [0] * classes}


def user_contract(
    task: str,
    size: Tuple[int, int],
    *,
    mean: float = 0.0,
    std: float = 1.0,
    geometry: str = "resize",
    classes: Optional[Sequence[str]] = None,
    thresholds: Optional[Dict[str, Any]] = None,
    activation: str = "sigmoid",
    channels: int = 1,
    layout: str = "NCHW",
) -> Contract:
    """The contract of a model that does not come with one (flags of `edgeseg export`)."""
    names = list(classes) if classes else (["defect"] if task == "classifier" else ["1", "2", "3", "4"])
    return Contract(
        task,
        Preprocess(size[0], size[1], mean, std, geometry, channels, layout),
        names,
        thresholds or default_thresholds(task, len(names)),
        activation,
    )


def contract_from_card(path: Path) -> Tuple[Contract, Dict[str, str]]:
    """(contract, {"input": name, "output": name}) from an existing card JSON (e.g. one written for
    the same model elsewhere)."""
    card = load_card(path)
    return card.contract, {"input": card.input.name, "output": card.output.name}


@dataclass
class ExportReport:
    """What one export step wrote and measured."""

    task: str
    onnx: Path
    card: Path
    precision: str  # "fp32" | "fp16"
    opset: int
    seconds: float
    parity: List[Parity] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "task": self.task,
            "onnx": str(self.onnx),
            "card": str(self.card),
            "precision": self.precision,
            "opset": self.opset,
            "seconds": round(self.seconds, 3),
            "parity": [p.to_dict() for p in self.parity],
        }


def guard_card_path(onnx_path: Path) -> None:
    """Refuse to overwrite a JSON beside the ONNX that is not an edgeseg model card (e.g. a training
    metrics file called segmenter.json next to segmenter.pt)."""
    target = card_path(onnx_path)
    if target.exists() and not is_card_file(target):
        raise EdgesegError(
            f"{target} exists and is not an edgeseg model card; exporting {onnx_path.name} would overwrite it",
            hint="choose another --out or --name",
        )


def write_model_card(
    onnx_path: Path,
    model: onnx.ModelProto,
    contract: Contract,
    *,
    precision: str,
    source: Source,
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
) -> Path:
    """The card beside `onnx_path`: real tensor names and shapes read from the graph itself."""
    card = ModelCard(
        task=contract.task,
        input=tensor_spec(model, input_name, "input"),
        output=tensor_spec(model, output_name, "output"),
        preprocess=contract.preprocess,
        classes=list(contract.classes),
        thresholds=dict(contract.thresholds),
        output_activation=contract.output_activation,
        artifact=Artifact(format="onnx", opset=opset_of(model), precision=precision),
        source=source,
    )
    return write_card(onnx_path, card)
