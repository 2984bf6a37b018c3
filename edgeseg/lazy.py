"""Optional heavy dependencies, imported on first use with install advice when missing.

`edgeseg --help` and the ONNX Runtime path work without torch, tensorrt or pycuda; the module
that needs one calls `require(...)` inside the function that uses it (Polygraphy's lazy_import
idea). Nothing is ever pip-installed at run time.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from edgeseg.errors import EdgesegError

TORCH_ADVICE = (
    "pip install 'edgeseg[train]' (a CPU-only torch first: pip install torch --index-url https://download.pytorch.org/whl/cpu; "
    "Jetson: NVIDIA's JetPack wheel)"
)
# module -> what to install
_ADVICE = {
    "torch": TORCH_ADVICE,
    "onnx": "pip install 'edgeseg[export]'",
    "onnxslim": "pip install 'edgeseg[export]'",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "onnxruntime.quantization": "pip install onnxruntime",
    "tensorrt": "use JetPack's python3-libnvinfer on Jetson, or pip install tensorrt-cu12 / tensorrt-cu13 on a dGPU host",
    "pycuda": "export PATH=/usr/local/cuda/bin:$PATH && pip install pycuda (needs cuda.h and nvcc)",
    "pycuda.driver": "export PATH=/usr/local/cuda/bin:$PATH && pip install pycuda (needs cuda.h and nvcc)",
    "polygraphy": "pip install 'edgeseg[trt]'",
    "matplotlib": "pip install matplotlib",
}


def require(name: str, purpose: str = "", advice: Optional[str] = None) -> ModuleType:
    """Import `name` or raise EdgesegError naming what needs it and how to install it (`advice`
    when the purpose has its own install, e.g. the `trt` extra, else the module's default)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise EdgesegError(
            f"{name} is needed{what} but could not be imported ({exc})",
            hint=advice or _ADVICE.get(name, f"pip install {name.split('.')[0]}"),
        ) from exc


def available(name: str) -> bool:
    """True when `name` imports; never raises."""
    try:
        importlib.import_module(name)
    except Exception:  # a broken install (missing libnvinfer, CUDA) counts as unavailable
        return False
    return True
