"""edgeseg: trained PyTorch defect inspector -> measured streaming deployment on Jetson and GPUs.

Importing the package is cheap and torch-free: the public API below is imported on first use
(PEP 562), and heavy dependencies load where they are used.

    from edgeseg import Inspector, assets
    with Inspector(assets.CLASSIFIER, assets.SEGMENTER) as inspector:
        record = inspector(image)
"""
from __future__ import annotations

import importlib
from typing import Any, List

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    # runtime (torch-free): the inspector and its streaming run
    "Inspector": "edgeseg.inspector",
    # deploy steps; `export` stays edgeseg.steps.export: `edgeseg.export` is the export package
    "calibrate": "edgeseg.steps",
    "build": "edgeseg.steps",
    "deploy": "edgeseg.steps",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
