"""A bench document (suite.SCHEMA) as tables for people: rich, markdown, and a PNG chart.

One row model: `rows()` lists the cells once, and both the terminal and the markdown table are
made from it, so they never disagree.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgeseg.edge.latency import UNSTABLE_CV

COLUMNS = (
    "model", "backend", "precision", "batch", "host p50 ms", "p90", "p99", "compute p50 ms", "h2d ms", "d2h ms",
    "images/s", "x base", "GFLOP/s", "% GEMM", "cv", "accuracy",
)  # fmt: skip
# The terminal shows these, under shorter headers (the markdown and JSON keep everything).
TERMINAL = {
    "model": "model", "backend": "backend", "precision": "precision", "batch": "b", "host p50 ms": "p50 ms", "p99": "p99 ms",
    "compute p50 ms": "compute", "h2d ms": "h2d", "d2h ms": "d2h", "images/s": "img/s", "x base": "x base", "% GEMM": "%GEMM",
    "cv": "cv", "accuracy": "accuracy",
}  # fmt: skip
KEY_COLUMNS = ("model", "backend", "precision", "batch")  # name a row: repeated when a narrow terminal folds the table
PIPELINE_COLUMNS = ("backend", "precision", "frames", "FPS", "gate pass", "glass-to-glass p50 ms", "p99 ms", "segmenter mean ms")


def _num(value: Optional[float], digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text  # never "-0.00"


def _gemm(efficiency: Optional[float]) -> str:
    """% GEMM; above 100 marked `*` (GEMM_NOTE says why that can happen)."""
    if efficiency is None:
        return "-"
    return _num(efficiency * 100, 0) + ("*" if efficiency > 1.0 else "")


GEMM_NOTE = (
    "% GEMM above 100 (*): the model ran more FLOP/s than the FP32 GEMM measured on this device, because INT8/FP16 "
    "or Winograd/fused kernels do more work per second than FP32 GEMM, or the GEMM was measured while the machine was busy"
)


def gemm_note(document: Dict[str, Any]) -> Optional[str]:
    """GEMM_NOTE when some row shows more than 100 % GEMM, else None."""
    over = any((r.get("efficiency") or 0.0) > 1.0 for r in document["results"] if "throughput" in r)
    return GEMM_NOTE if over else None


def _accuracy(acc: Optional[Dict[str, Any]], per_class: bool = True) -> str:
    if not acc:
        return "-"
    if "mean_dice" in acc:
        classes = " (" + " ".join(f"{v:.3f}" for v in acc["dice_per_class"].values()) + ")" if per_class else ""
        return f"Dice {acc['mean_dice']:.3f}{classes}"
    accuracy = f" acc {acc.get('accuracy', float('nan')):.3f}" if per_class else ""
    return f"recall {acc.get('recall', float('nan')):.3f}{accuracy}"


def rows(document: Dict[str, Any], per_class: bool = True) -> List[List[str]]:
    """Table cells (strings, COLUMNS order) of every measured row."""
    ratios = document.get("ratios", {})
    table = []
    for r in document["results"]:
        if "throughput" not in r:
            continue
        lat = r["latency_ms"]
        part = lambda key: _num(lat[key]["median"], 3) if key in lat else "-"  # noqa: E731
        ratio = ratios.get(f"{r['name']} b{r['batch']}", {}).get(f"{r['backend']} {r['precision']}")
        efficiency = r.get("efficiency")
        cv = r.get("cv")
        table.append(
            [
                r["name"],
                r["backend"],
                r["precision"] + (f" ({r['flavour']})" if r.get("flavour") else ""),
                str(r["batch"]),
                _num(lat["host"]["median"]),
                _num(lat["host"]["p90"]),
                _num(lat["host"]["p99"]),
                part("compute"),
                part("h2d"),
                part("d2h"),
                _num(r["throughput"], 1),
                _num(ratio),
                _num(r.get("gflops_per_s"), 1),
                _gemm(efficiency),
                _num(cv, 3) + (" !" if cv is not None and cv > UNSTABLE_CV else ""),
                _accuracy(r.get("accuracy"), per_class),
            ]
        )
    return table


def pipeline_rows(document: Dict[str, Any]) -> List[List[str]]:
    table = []
    for p in document.get("pipeline", []):
        lat = p["latency_ms"]
        g2g = lat.get("glass_to_glass", {})
        table.append(
            [
                p["backend"],
                p["precision"],
                str(p["frames"]),
                _num(p["fps"], 1),
                f"{p['gate_pass_rate']:.0%}",
                _num(g2g.get("median")),
                _num(g2g.get("p99")),
                _num(lat.get("segmenter", {}).get("mean")),
            ]
        )
    return table


def skipped(document: Dict[str, Any]) -> List[str]:
    """"segmenter tensorrt fp16: <why and how to fill it>" for every cell that did not run."""
    return [f"{r['name']} {r['backend']} {r['precision']}: {r['skipped']}" for r in document["results"] if "skipped" in r]


def unstable(document: Dict[str, Any]) -> List[str]:
    return [f"{r['name']} {r['backend']} {r['precision']} b{r['batch']} (cv {r['cv']:.2f})" for r in document["results"] if r.get("unstable")]


def summary_line(document: Dict[str, Any]) -> str:
    env = document["environment"]
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    gpus = env.get("gpus") if isinstance(env.get("gpus"), list) else []
    ort = env.get("onnxruntime") if isinstance(env.get("onnxruntime"), dict) else {}
    s = document["settings"]
    parts = [
        document["date"],
        f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} cores)",
        (", ".join(g["name"] for g in gpus) + f" (CUDA {env.get('cuda_runtime') or '?'}, driver {env.get('cuda_driver') or '?'})") if gpus else "no GPU",
        f"TensorRT {env.get('tensorrt') or 'n/a'}",
        f"onnxruntime {ort.get('version', 'n/a')}",
        f"torch {env.get('torch') or 'n/a'}",
        f"warm-up {s['warmup_s']} s, >= {s['min_iterations']} iterations and >= {s['duration_s']} s per cell",
        f"baseline {s['baseline']}",
    ]
    jetson = env.get("jetson")
    if isinstance(jetson, dict):
        parts.insert(2, f"{jetson.get('model')} L4T {jetson.get('l4t')} power mode {jetson.get('power_mode')}")
    for device, rate in (document.get("matmul") or {}).items():
        if rate:
            parts.append(f"{device} GEMM {rate['gflops']:.0f} GFLOP/s ({rate['dtype']})")
    return " · ".join(parts)


def rich_tables(document: Dict[str, Any]) -> List[Any]:
    """The terminal view (rich renderables, edgeseg.edge.tables.Fit): the TERMINAL columns that
    some row fills (no copies on a CPU backend, no accuracy without --validation), mean Dice and
    recall only; folded under the row's model, backend, precision and batch where the terminal is
    narrow."""
    from rich import box
    from rich.table import Table

    from edgeseg.edge.tables import Fit

    cells = rows(document, per_class=False)
    keep = [i for i, column in enumerate(COLUMNS) if column in TERMINAL and any(row[i] != "-" for row in cells)]
    table = Table(title="edgeseg bench", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i in keep:
        text = COLUMNS[i] in ("model", "backend", "precision", "accuracy")
        table.add_column(TERMINAL[COLUMNS[i]], justify="left" if text else "right", no_wrap=COLUMNS[i] != "accuracy")
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    tables = [Fit(table, keys=sum(COLUMNS[i] in KEY_COLUMNS for i in keep))]
    if document.get("pipeline"):
        pipe = Table(title=_pipeline_title(document), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in PIPELINE_COLUMNS:
            pipe.add_column(column, justify="left" if column in ("backend", "precision") else "right")
        for row in pipeline_rows(document):
            pipe.add_row(*row)
        tables.append(Fit(pipe, keys=2))
    return tables


def _pipeline_title(document: Dict[str, Any]) -> str:
    p = document["settings"]["pipeline"]
    return f"end to end: classifier -> gate -> ResUNet over {p['frames']} synthetic strips, {p['prevalence']:.0%} defective"


def markdown(document: Dict[str, Any]) -> str:
    lines = ["# edgeseg bench", "", summary_line(document), ""]
    lines += _md_table(COLUMNS, rows(document))
    if document.get("pipeline"):
        lines += ["", f"## {_pipeline_title(document)}", ""] + _md_table(PIPELINE_COLUMNS, pipeline_rows(document))
    notes = [f"- not run: {line}" for line in skipped(document)]
    notes += [f"- unstable (cv > {UNSTABLE_CV}): {line}" for line in unstable(document)]
    notes += [f"- {key}: {value}" for key, value in (document.get("notes") or {}).items()]
    if gemm_note(document):
        notes.append(f"- {gemm_note(document)}")
    if document.get("interrupted"):
        notes.append("- interrupted: the run was stopped before every cell was measured")
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += [
        "",
        "host: wall time of one inference call (input copy to numpy outputs); compute: the model alone "
        "(CUDA events on GPU backends); x base: throughput over the baseline row of the same model and batch; "
        "% GEMM: achieved FLOP/s (FP32-graph FLOPs / median compute) over the measured FP32 GEMM rate of the device.",
    ]
    return "\n".join(lines) + "\n"


def _md_table(columns: Sequence[str], cells: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(row) + " |" for row in cells]


def chart(document: Dict[str, Any], path: Path) -> Optional[Path]:
    """Host latency (median, whisker min..p99) by backend and precision, one panel per model and
    batch; None when nothing was measured."""
    from edgeseg.bench.chart import Bar, bar_chart

    groups: Dict[str, List[Any]] = {}
    for r in document["results"]:
        if "throughput" in r:
            host = r["latency_ms"]["host"]
            groups.setdefault(f"{r['name']} batch {r['batch']}", []).append(
                Bar(f"{r['backend']} {r['precision']}", host["median"], host["min"], host["p99"])
            )
    if not groups:
        return None
    return bar_chart(path, chart_title(document), groups, unit="ms", log=True)


def chart_title(document: Dict[str, Any]) -> str:
    """What, when and where: a chart shared without its JSON still says which machine it measured."""
    env = document.get("environment")
    env = env if isinstance(env, dict) else {}
    cpu = env.get("cpu")
    cpu = cpu if isinstance(cpu, dict) else {}
    gpus = [g.get("name", "?") for g in env.get("gpus") or [] if isinstance(g, dict)]
    machine = " + ".join([str(cpu.get("model", "unknown CPU"))] + gpus)
    return f"edgeseg bench {str(document.get('date', ''))[:16]} on {machine}: host latency per inference (median, min-p99)"


def write_results(folder: Path, name: str, result: Dict[str, Any], text: str) -> Dict[str, Path]:
    """Every benchmark's output: <folder>/<name>.json for machines and .md for people, both atomic."""
    import json

    from edgeseg.files import atomic_output, ensure_writable_dir

    target = ensure_writable_dir(folder)
    files = {"json": target / f"{name}.json", "markdown": target / f"{name}.md"}
    with atomic_output(files["json"]) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    with atomic_output(files["markdown"]) as tmp:
        tmp.write_text(text)
    return files


def write_files(document: Dict[str, Any], folder: Path, name: str, appendix: str = "") -> Dict[str, Path]:
    """A bench document as <folder>/<name>.json, .md (+ `appendix`) and .png."""
    files = write_results(folder, name, document, markdown(document) + appendix)
    png = chart(document, files["json"].parent / f"{name}.png")
    if png is not None:
        files["chart"] = png
    return files
