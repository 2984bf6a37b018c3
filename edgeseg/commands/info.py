"""`edgeseg info`: versions, GPU, Jetson board and power mode — paste it into a bug report."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from rich.table import Table

from edgeseg.commands.common import JsonOption, QuietOption, VerboseOption, cli_errors, out, print_json

MISSING = "not installed"


def rows(info: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(component, value) lines for the table; None reads "not installed" / "none"."""
    lines: List[Tuple[str, str]] = [(key, _text(info[key])) for key in ("edgeseg", "python", "platform")]
    cpu = info["cpu"]
    lines.append(("cpu", f"{cpu['model']}, {cpu['logical_cores']} logical cores, {' '.join(cpu['simd']) or 'no SIMD flags read'}" if isinstance(cpu, dict) else _text(cpu)))
    lines.append(("numpy", _text(info["numpy"])))
    opencv = info["opencv"]
    lines.append(("opencv", f"{opencv['version']} (GStreamer: {opencv['gstreamer'] or 'unknown'})" if isinstance(opencv, dict) else _text(opencv)))
    ort = info["onnxruntime"]
    lines.append(("onnxruntime", f"{ort['version']} ({', '.join(ort['providers'])})" if isinstance(ort, dict) else _text(ort)))
    openvino = info.get("openvino")
    if isinstance(openvino, dict):
        found = ", ".join(f"{d['device']}: {d['name']}" for d in openvino["devices"]) or "no device"
        lines.append(("openvino", f"{openvino['version']} ({found})"))
    else:
        lines.append(("openvino", _text(openvino)))
    lines += [(key, _text(info[key])) for key in ("tensorrt", "pycuda", "polygraphy", "torch")]
    lines.append(("cuda driver", _text(info["cuda_driver"], none="no NVIDIA driver")))
    lines.append(("cuda runtime", _text(info["cuda_runtime"], none="no libcudart found")))
    gpus = info["gpus"]
    if isinstance(gpus, list) and gpus:
        lines += [(f"gpu {g['index']}", f"{g['name']} (compute {g['compute_capability']}, {g['memory_gib']} GiB)") for g in gpus]
    else:
        lines.append(("gpu", _text(gpus or None, none="none visible")))
    jetson = info["jetson"]
    if isinstance(jetson, dict):
        lines += [(f"jetson {key.replace('_', ' ')}", _text(value, none="unreadable")) for key, value in jetson.items()]
    else:
        lines.append(("jetson", _text(jetson, none="not a Jetson")))
    return lines


def _text(value: Any, none: str = MISSING) -> str:
    return none if value is None else str(value)


@cli_errors
def info(json_output: JsonOption = False, verbose: VerboseOption = False, quiet: QuietOption = False) -> None:
    """Show edgeseg's environment: Python, CPU and its SIMD features, numpy, OpenCV (+GStreamer), ONNX Runtime providers,
    OpenVINO devices (CPU, Intel GPU / NPU), TensorRT, pycuda, CUDA driver, GPUs and compute capability, Jetson model, L4T and power mode.

    Every probe fails soft: a missing or broken component is reported, never fatal."""
    from edgeseg.envinfo import collect

    data = collect()
    if json_output:
        print_json(data)
        return
    out.print(info_table(data))


def info_table(data: Dict[str, Any]) -> Any:
    """The environment for people: one line per component (values wrap at spaces where narrow)."""
    from edgeseg.edge.tables import Fit

    table = Table(title="edgeseg environment", show_header=False)
    table.add_column("component", style="bold")
    table.add_column("value")
    for name, value in rows(data):
        table.add_row(name, value)
    return Fit(table)
