"""The environment a result came from: versions, GPU, Jetson board — what a bug report needs.

`collect()` is used by `edgeseg info` and by benchmarks for their machine block. Every probe
fails soft: a missing package reads None, a broken one "unavailable: <reason>", and nothing here
initialises CUDA contexts or imports torch.
"""
from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edgeseg import __version__

try:  # Python 3.8+
    from importlib import metadata as _metadata
except ImportError:  # pragma: no cover
    _metadata = None  # type: ignore[assignment]

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def _soft(probe: Callable[[], Any]) -> Any:
    """Run one probe; a missing module reads None, any other failure a short reason."""
    try:
        return probe()
    except ModuleNotFoundError:
        return None
    except Exception as exc:  # a broken install (missing libnvinfer, bad driver) is still reported
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"unavailable: {reason[:160]}"


def distribution_version(name: str) -> Optional[str]:
    """Installed version of a distribution without importing it (torch is slow to import)."""
    if _metadata is None:
        return None
    try:
        return _metadata.version(name)
    except _metadata.PackageNotFoundError:
        return None


def _module_version(name: str) -> str:
    return str(getattr(importlib.import_module(name), "__version__"))


def opencv_gstreamer(build_information: str) -> Optional[str]:
    """"YES (1.20.3)" / "NO" from cv2.getBuildInformation(); None when the line is absent."""
    match = re.search(r"GStreamer:\s*(.+)", build_information)
    return match.group(1).strip() if match else None


def tegra_release(text: str) -> Optional[str]:
    """L4T release from /etc/nv_tegra_release: "# R35 (release), REVISION: 3.1, ..." -> "R35.3.1"."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def nvpmodel_mode(text: str) -> Optional[str]:
    """Power mode name from `nvpmodel -q` ("NV Power Mode: MAXN")."""
    match = re.search(r"NV Power Mode:\s*(.+)", text)
    return match.group(1).strip() if match else None


def cpu_info(cpuinfo: str = "") -> Dict[str, Any]:
    """CPU model, logical cores and the SIMD features inference speed depends on (AVX2, AVX-512,
    VNNI for INT8, AMX; NEON/asimd on ARM), from /proc/cpuinfo where there is one."""
    if not cpuinfo and Path("/proc/cpuinfo").is_file():
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = ""
    flags: List[str] = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = value.split()
    model = model or platform.processor() or platform.machine()
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "asimd", "sve", "neon")) or "vnni" in f or f == "i8mm")
    return {"model": model, "logical_cores": os.cpu_count(), "simd": simd}


# The CPU classes INT8 and FP32 kernels differ by (best first): oneDNN / MLAS pick their kernels by
# these, so an artifact measured on one class may compute differently on another.
ISA_CLASSES = (
    ("amx", ("amx_int8", "amx_tile")),
    ("avx512_vnni", ("avx512_vnni", "avx512vnni")),
    ("avx_vnni", ("avx_vnni",)),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
    ("sve", ("sve",)),
    ("neon_dotprod", ("asimddp",)),
    ("neon", ("asimd", "neon")),
)


def isa_class(simd: List[str]) -> str:
    """The best CPU class of ISA_CLASSES that `simd` (cpu_info()["simd"]) has, e.g. "avx2";
    "generic" when none."""
    return next((name for name, flags in ISA_CLASSES if any(flag in simd for flag in flags)), "generic")


def _opencv() -> Dict[str, Any]:
    import cv2

    return {"version": cv2.__version__, "gstreamer": opencv_gstreamer(cv2.getBuildInformation())}


def _onnxruntime() -> Dict[str, Any]:
    import onnxruntime

    return {"version": onnxruntime.__version__, "providers": list(onnxruntime.get_available_providers())}


def _openvino() -> Dict[str, Any]:
    import openvino  # noqa: F401  (not installed: ModuleNotFoundError, reported as such)

    from edgeseg.edge.backends.openvino import devices, version

    return {"version": version(), "devices": devices()}


def _gpus() -> List[Dict[str, Any]]:
    from edgeseg.edge.cuda_context import list_gpus

    return [
        {"index": g.index, "name": g.name, "compute_capability": g.compute_capability, "memory_gib": round(g.total_memory / 2**30, 1)}
        for g in list_gpus()
    ]


def _pycuda() -> Optional[str]:
    """pycuda's version, or why its driver module does not load (a build without CUDA, no libcuda):
    the package alone being installed is not a usable pycuda."""
    version = distribution_version("pycuda")
    if version is None:
        return None
    try:
        importlib.import_module("pycuda.driver")  # loads libcuda; creates no context
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{version} (unavailable: {reason[:120]})"
    return version


def _cuda_driver() -> Optional[str]:
    from edgeseg.edge.cuda_context import driver_version

    return driver_version()


def _cuda_runtime() -> Optional[str]:
    from edgeseg.edge.cuda_context import runtime_version

    return runtime_version()


def _jetson() -> Optional[Dict[str, Any]]:
    if not TEGRA_RELEASE.is_file() and not DEVICE_TREE_MODEL.is_file():
        return None
    info: Dict[str, Any] = {}
    if DEVICE_TREE_MODEL.is_file():
        info["model"] = _soft(lambda: DEVICE_TREE_MODEL.read_bytes().rstrip(b"\0").decode(errors="replace"))
    if TEGRA_RELEASE.is_file():
        info["l4t"] = _soft(lambda: tegra_release(TEGRA_RELEASE.read_text()))
    info["power_mode"] = _soft(_power_mode)
    return info


def _power_mode() -> Optional[str]:
    try:
        result = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5)
    except FileNotFoundError:
        return None
    return nvpmodel_mode(result.stdout)


def benchmark_environment() -> Dict[str, Any]:
    """collect() plus the 1-minute load average when a benchmark starts: a busy machine skews figures."""
    info = collect()
    info["load_average_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return info


def collect() -> Dict[str, Any]:
    """Everything `edgeseg info` shows, as plain JSON-able data."""
    return {
        "edgeseg": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.platform()} {platform.machine()}",
        "cpu": _soft(cpu_info),
        "numpy": _soft(lambda: _module_version("numpy")),
        "opencv": _soft(_opencv),
        "onnxruntime": _soft(_onnxruntime),
        "openvino": _soft(_openvino),
        "tensorrt": _soft(lambda: _module_version("tensorrt")),
        "pycuda": _soft(_pycuda),
        "polygraphy": _soft(lambda: distribution_version("polygraphy")),
        "torch": _soft(lambda: distribution_version("torch")),
        "cuda_driver": _soft(_cuda_driver),
        "cuda_runtime": _soft(_cuda_runtime),
        "gpus": _soft(_gpus),
        "jetson": _soft(_jetson),
    }
