"""Checkpoint I/O: one .pt file that rebuilds the model and carries its deployment contract.

Layout (plain dicts, lists, numbers, strings and tensors, so `torch.load(weights_only=True)` reads
it and no pickled code ever runs):
    {"schema": "edgeseg.checkpoint/1", "task": "classifier"|"segmenter",
     "model": {"name": ..., **create_model options}, "preprocess": Preprocess.to_dict(),
     "classes": [...], "thresholds": {...model card convention...}, "state_dict": {...},
     "metrics": {...}, "extra": {...}}
Export copies preprocess, classes and thresholds into the model card, so they are defined once.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256
from edgeseg.models.registry import create_model, task_of

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # the refused object, as torch's message names it
_CORRUPT = "the file is truncated or corrupt; re-save it with save_checkpoint"

CHECKPOINT_SCHEMA = "edgeseg.checkpoint/1"
_REQUIRED = ("task", "model", "preprocess", "classes", "thresholds", "state_dict")


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint except the weights, plus the file's sha256 (recorded in model cards)."""

    path: Path
    sha256: str
    task: str
    model: Dict[str, Any]  # {"name": ..., **options}: create_model(**model) rebuilds the architecture
    preprocess: Preprocess
    classes: List[str]
    thresholds: Dict[str, Any]
    metrics: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    task: str,
    model_config: Mapping[str, Any],
    preprocess: Union[Preprocess, Mapping[str, Any]],
    classes: Sequence[str],
    thresholds: Mapping[str, Any],
    metrics: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write `model`'s weights and contract to `path` atomically (never a half-written file).

    model_config is {"name": ..., **options} as create_model takes it; it is checked against the
    weights now, so a checkpoint that cannot be rebuilt is never written. `extra` holds anything
    else weights_only-loadable (epoch, optimizer state for resuming).
    """
    config = dict(model_config)
    name = config.pop("name", None)
    if name is None:
        raise EdgesegError("model_config needs a 'name' (e.g. 'resunet' or 'classifier')")
    if task_of(name) != task:
        raise EdgesegError(f"model {name!r} is a {task_of(name)}, not a {task}")
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    check_state_dict(create_model(name, **config), state, f"model passed to save_checkpoint({path})")
    spec = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(dict(preprocess))
    classes = [str(c) for c in classes]
    _check_contract(task, name, config, classes, dict(thresholds), str(path))
    payload = {
        "schema": CHECKPOINT_SCHEMA,
        "task": task,
        "model": {"name": name, **config},
        "preprocess": spec.to_dict(),
        "classes": classes,
        "thresholds": dict(thresholds),
        "state_dict": state,
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
    }
    target = Path(path)
    with atomic_output(target) as tmp:
        torch.save(payload, tmp)
    return target


def load_checkpoint(path: PathLike) -> Tuple[nn.Module, CheckpointMeta]:
    """(model in eval mode, meta) from an edgeseg checkpoint; EdgesegError with one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"checkpoint {path} not found", hint="pass the .pt file written by `edgeseg train`")
    payload = read_payload(path)
    if not isinstance(payload, dict) or payload.get("schema") != CHECKPOINT_SCHEMA:
        found = payload.get("schema") if isinstance(payload, dict) else type(payload).__name__
        raise EdgesegError(
            f"{path} is not an edgeseg checkpoint (schema {found!r}, expected {CHECKPOINT_SCHEMA!r})",
            hint="write it with `edgeseg train` / edgeseg.models.save_checkpoint; for your own model's state dict "
            "use `edgeseg export --factory module:function --weights FILE`",
        )
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise EdgesegError(f"checkpoint {path} lacks {', '.join(missing)}", hint="re-save it with save_checkpoint")
    config = dict(payload["model"])
    name = config.pop("name", None)
    if name is None:
        raise EdgesegError(f"checkpoint {path} does not name its model architecture")
    model = create_model(name, **config)
    check_state_dict(model, payload["state_dict"], f"checkpoint {path}")
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = CheckpointMeta(
        path=path,
        sha256=sha256(path),
        task=payload["task"],
        model={"name": name, **config},
        preprocess=Preprocess.from_dict(payload["preprocess"]),
        classes=list(payload["classes"]),
        thresholds=dict(payload["thresholds"]),
        metrics=dict(payload.get("metrics") or {}),
        extra=dict(payload.get("extra") or {}),
    )
    return model, meta


def read_payload(path: Path) -> Any:
    """torch.load(weights_only=True) with a one-line error for a truncated, corrupt or code-carrying file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise EdgesegError(f"cannot read checkpoint {path}: {_first_line(exc)}", hint=_CORRUPT) from exc
        # An object the weights-only loader refuses. None of torch's text is quoted: it suggests
        # weights_only=False, i.e. running the file's code, as the way out.
        found = _GLOBAL.search(str(exc))
        what = f"a pickled Python object ({found.group(1)})" if found else "pickled Python objects"
        raise EdgesegError(
            f"refused checkpoint {path}: it holds {what}, and loading it could run code",
            hint="edgeseg loads tensors and plain data only; re-save the model from a source you trust with save_checkpoint",
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors...
        raise EdgesegError(f"cannot read checkpoint {path}: {_first_line(exc)}", hint=_CORRUPT) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """Raise EdgesegError naming the missing/unexpected keys and shape mismatches between the weights
    in `source` and `model`'s architecture."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    raise EdgesegError(
        f"weights in {source} do not fit the {type(model).__name__} architecture: " + "; ".join(parts),
        hint="the weights come from another architecture or width; check the model config saved with them",
    )


def _check_contract(task: str, name: str, config: Dict[str, Any], classes: List[str], thresholds: Dict[str, Any], where: str) -> None:
    """Classes and thresholds must match what the model outputs (model card convention)."""
    if task == "classifier":
        if "defect" not in thresholds:
            raise EdgesegError(f"classifier thresholds for {where} need a 'defect' probability, got {thresholds}")
        return
    count = int(config.get("num_classes", 4))
    if len(classes) != count:
        raise EdgesegError(f"{name} outputs {count} classes but {len(classes)} class names were given for {where}")
    for key in ("probability", "min_area"):
        if len(thresholds.get(key, [])) != count:
            raise EdgesegError(f"segmenter thresholds[{key!r}] for {where} need {count} values, got {thresholds.get(key)}")
