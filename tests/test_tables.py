"""Every table the CLI prints stays whole in an 80-column terminal: folded, never cut (issue 23).

Each table is made by the function its command prints it with, from real data: a run of the
demo models over two cameras, the committed benchmark results, the bundled INT8 accuracy report
and metrics, and export / calibrate / build-engine / data synth run here.
"""
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.tables import Fit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "edgeseg" / "assets"
WIDTH = 80


def render(renderable, width=WIDTH):
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def plain(cell):
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def assert_whole(fit, width=WIDTH):
    """Rendered at `width`: no line wider, no ellipsis, and every word of every shown header and cell
    present as a word of the output (rich cuts a cell it cannot fit with an ellipsis)."""
    assert isinstance(fit, Fit)
    text = render(fit, width)
    assert "…" not in text, text
    assert max(map(len, text.splitlines())) <= width, text
    words = set(re.split(r"[\s│┃║|]+", text))
    for column in fit.table.columns:
        for cell in [column.header] * fit.table.show_header + column._cells:
            for word in plain(cell).split():
                assert word in words, f"{word!r} of {plain(cell)!r} is cut:\n{text}"
    return text


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_table_that_fits_prints_as_it_is_and_a_wide_one_folds_under_its_key_columns():
    from rich.table import Table

    table = Table(title="t")
    for name in ("model", "backend", *(f"metric {i}" for i in range(12))):
        table.add_column(name)
    table.add_row("segmenter", "onnxruntime", *(f"{1000 + i}.25" for i in range(12)))
    wide = render(Fit(table, keys=2), width=200)
    assert wide.count("segmenter") == 1  # one table where it fits
    narrow = assert_whole(Fit(table, keys=2))
    assert narrow.count("segmenter") == narrow.count("onnxruntime") > 1  # the keys repeat in every part
    assert narrow.count("metric 0") == 1


def test_a_cell_wider_than_the_terminal_is_printed_one_cell_per_line():
    from rich.table import Table

    table = Table()
    for name in ("camera", "source", "frames"):
        table.add_column(name)
    uri = "rtsp://camera-top.line-7.plant.example.com:8554/" + "x" * 20
    table.add_row("0", uri, "40")
    text = assert_whole(Fit(table), width=len(uri) + 12)
    assert any(line.split() == ["source", uri] for line in text.splitlines())


@pytest.fixture(scope="module")
def run_report():
    clip = ASSETS / "demo_clip.mp4"
    return json.loads(invoke("run", "--source", clip, "--source", clip, "--max-frames", 2, "--json"))


def test_run_latency_and_camera_tables(run_report):
    from edgeseg.edge.latency import camera_table, latency_table

    assert_whole(latency_table(run_report, title=f"edgeseg run · {run_report['source']['uri']}"))
    assert_whole(camera_table(run_report))


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("bench_cpu*.json")))
def test_bench_tables_of_the_committed_results(name):
    from edgeseg.bench.report import rich_tables

    tables = rich_tables(json.loads((RESULTS / name).read_text()))
    assert tables
    for table in tables:
        assert_whole(table)


def test_bench_compare_table():
    from edgeseg.bench.compare import compare, load
    from edgeseg.commands.bench import compare_table

    a, b = RESULTS / "bench_cpu.json", RESULTS / "bench_cpu_openvino.json"
    assert_whole(compare_table(compare(load(a), load(b)), (a, b), 0.05))


def test_calibrate_accuracy_table_of_the_bundled_report():
    from edgeseg.calibration.accuracy import AccuracyReport
    from edgeseg.commands.calibrate import accuracy_table

    data = json.loads((ASSETS / "int8_accuracy.json").read_text())["accuracy"]
    report = AccuracyReport(data["images"], data["defective"], data["results"], data["models"], {"openvino fp16": "FP16 reference kernels only"})
    assert_whole(accuracy_table(report))


def test_train_metrics_tables_of_the_bundled_metrics():
    from edgeseg.commands.train import metrics_table

    for name, metrics in json.loads((ASSETS / "demo_metrics.json").read_text()).items():
        assert_whole(metrics_table(f"{name} on heldout ({metrics['images']} images)", metrics["task"], metrics, "value"))


def test_info_table():
    from edgeseg.commands.info import info_table
    from edgeseg.envinfo import collect

    assert_whole(info_table(collect()))


def test_tables_of_the_flow_steps(tiny_checkpoints, tiny_calibration, tmp_path, monkeypatch):
    """data synth, export, calibrate and build-engine, each on real files made here."""
    from edgeseg.calibration.qdq import onnx_to_qdq
    from edgeseg.commands.calibrate import models_table
    from edgeseg.commands.data import synth_table
    from edgeseg.commands.engine import build_table
    from edgeseg.commands.export import export_table
    from edgeseg.data.synth import write_synthetic
    from edgeseg.export.torch_onnx import torch_to_onnx

    monkeypatch.chdir(tmp_path)  # relative paths in the cells, as a user's
    assert_whole(synth_table(write_synthetic(Path("data/train"), 4, 0), 4, Path("data/train")))
    exported = torch_to_onnx(tiny_checkpoints["classifier"], Path("models/classifier.onnx"))
    assert_whole(export_table([exported]))
    qdq = onnx_to_qdq(exported.onnx, tiny_calibration, Path("models/classifier.int8.cpu.qdq.onnx"), flavour="cpu")
    assert_whole(models_table([qdq]))
    from edgeseg.steps import build

    assert_whole(build_table(build([exported.onnx], Path("models"), backend="onnxruntime", precision="fp32")))
