"""`create_model(name, **config)`, the model names and the default input sizes, in one place."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Tuple

from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.classifier import Classifier
from edgeseg.models.resunet import ResUNet

# Default model input (height, width); both use geometry "resize" of the whole 256x1600 strip.
# The classifier sees the strip at half resolution per side (1/4 of the pixels): defects stay
# visible, and its cost is ~7% of the ResUNet's (test_models checks <= 25%).
DEFAULT_INPUT: Dict[str, Tuple[int, int]] = {"segmenter": (256, 1600), "classifier": (128, 800)}

# name -> (constructor, task)
MODELS: Dict[str, Tuple[Callable[..., nn.Module], str]] = {
    "resunet": (ResUNet, "segmenter"),
    "classifier": (Classifier, "classifier"),
}
MODEL_FOR_TASK: Dict[str, str] = {task: name for name, (_, task) in MODELS.items()}


def model_options(name: str) -> Dict[str, Any]:
    """The keyword arguments `name` accepts, with their defaults."""
    constructor = _constructor(name)
    return {
        key: p.default for key, p in inspect.signature(constructor).parameters.items() if p.default is not p.empty
    }


def task_of(name: str) -> str:
    """"segmenter" or "classifier" for a model name."""
    _constructor(name)
    return MODELS[name][1]


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a model by name; `model.config` (plus "name") is what checkpoints store to rebuild it."""
    constructor = _constructor(name)
    unknown = sorted(set(config) - set(model_options(name)))
    if unknown:
        raise EdgesegError(
            f"model {name!r} has no option {', '.join(unknown)}", hint=f"valid options: {', '.join(model_options(name))}"
        )
    try:
        return constructor(**config)
    except (TypeError, ValueError) as exc:
        raise EdgesegError(f"cannot build model {name!r} with {config}: {exc}") from exc


def _constructor(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise EdgesegError(f"unknown model {name!r}", hint=f"valid names: {', '.join(MODELS)}")
    return MODELS[name][0]
