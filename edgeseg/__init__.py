"""edgeseg: trained PyTorch defect inspector -> measured streaming deployment on Jetson and GPUs.

Importing the package is cheap and torch-free; heavy dependencies load where they are used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeseg.steps import build, calibrate, deploy  # noqa: F401

__version__ = "0.1.0"

# Deploy steps of edgeseg.steps, imported on first use. Its `export` stays there: `edgeseg.export`
# is the export package.
_STEPS = ("calibrate", "build", "deploy")


def __getattr__(name: str) -> Any:
    if name in _STEPS:
        from edgeseg import steps

        return getattr(steps, name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
