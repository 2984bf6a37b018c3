"""Optional heavy dependencies, imported on first use with install advice when missing.

`edgeseg --help` and the ONNX Runtime path work without torch, tensorrt or pycuda; the module
that needs one calls `require(...)` inside the function that uses it (Polygraphy's lazy_import
idea). Nothing is ever pip-installed at run time.
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType

from edgeseg.errors import EdgesegError

# Always a pinned torch (README): the version the project is tested with, from PyTorch's CPU index,
# before the extra, so pip does not pull the multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
TORCH_ADVICE = (
    f"pip install {TORCH_PIN} --index-url https://download.pytorch.org/whl/cpu && pip install 'edgeseg[train]' "
    "(Jetson: NVIDIA's JetPack torch wheel instead of the first command)"
)
# onnx alone (reading, converting, quantising ONNX): the export extra would also pull an unpinned torch.
ONNX_ADVICE = "pip install 'onnx>=1.14' 'onnxslim>=0.1.40'"
# module -> what to install
_ADVICE = {
    "torch": TORCH_ADVICE,
    "onnx": ONNX_ADVICE,
    "onnxslim": ONNX_ADVICE,
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "onnxruntime.quantization": "pip install onnxruntime",
    "tensorrt": "use JetPack's python3-libnvinfer on Jetson, or pip install tensorrt-cu12 / tensorrt-cu13 on a dGPU host",
    "pycuda": "export PATH=/usr/local/cuda/bin:$PATH && pip install pycuda (needs cuda.h and nvcc)",
    "pycuda.driver": "export PATH=/usr/local/cuda/bin:$PATH && pip install pycuda (needs cuda.h and nvcc)",
    "polygraphy": "pip install 'edgeseg[trt]'",
    "matplotlib": "pip install matplotlib",
}


def require(name: str, purpose: str = "", extra: str = "") -> ModuleType:
    """Import `name` or raise EdgesegError naming what needs it and how to install it; `extra`
    names the edgeseg extra that brings it for this purpose (e.g. "trt" for the FP16 converter
    on a TensorRT host), when that is the advice to give instead of the module's usual one."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        advice = _ADVICE.get(name, f"pip install {name.split('.')[0]}")
        if extra:
            wanted = f"'edgeseg[{extra}]'"
            advice = re.sub(r"'edgeseg\[\w+\]'", wanted, advice) if "'edgeseg[" in advice else f"pip install {wanted}"
        raise EdgesegError(f"{name} is needed{what} but cannot be imported ({exc})", hint=advice) from exc


def available(name: str) -> bool:
    """True when `name` imports; never raises."""
    try:
        importlib.import_module(name)
    except Exception:  # a broken install (missing libnvinfer, CUDA) counts as unavailable
        return False
    return True
