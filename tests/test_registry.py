"""One vocabulary, one `auto` rule, one file-name grammar (edge/registry.py, edge/artifacts.py)."""
import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.commands import common
from edgeseg.edge import registry
from edgeseg.edge.artifacts import backend_of_name, base_name, built_path, flavour_sibling, qdq_flavour, qdq_path
from edgeseg.edge.backends import artifact_backend, auto_backend
from edgeseg.edge.card import read_card
from edgeseg.lazy import available


def test_cli_choices_are_the_registry_vocabulary():
    assert typing.get_args(common.Backend) == registry.MODEL_BACKENDS
    assert typing.get_args(common.RunBackend) == registry.BACKENDS
    assert typing.get_args(common.Precision) == registry.PRECISIONS
    assert common.FLAVOURS == registry.FLAVOURS
    assert set(registry.BACKEND_FLAVOURS) == set(registry.LOCAL_BACKENDS) == set(registry.FORMAT_BACKEND.values())


def test_qdq_names_parse_back():
    onnx = Path("m/seg.onnx")
    for flavour in registry.FLAVOURS:
        assert qdq_flavour(qdq_path(onnx, flavour)) == flavour and base_name(qdq_path(onnx, flavour)) == "seg"
    trt = qdq_path(onnx, "trt")
    assert flavour_sibling(trt, "cpu") == Path("m/seg.int8.cpu.qdq.onnx")
    assert flavour_sibling(onnx, "cpu") == onnx and qdq_flavour(onnx) is None
    assert qdq_flavour(Path("int8.trt.qdq.onnx")) is None  # no model name in front


def test_every_built_name_says_its_backend():
    for backend in registry.LOCAL_BACKENDS:
        assert backend_of_name(built_path(Path("seg.int8.cpu.qdq.onnx"), Path("o"), "int8", backend)) == backend


@pytest.mark.skipif(available("tensorrt"), reason="with TensorRT, build-engine's auto builds an engine (run cannot run the ONNX on it)")
def test_build_engine_auto_builds_for_the_backend_run_auto_picks(tiny_models, tmp_path):
    """One rule: on a machine without TensorRT, build-engine's `auto` target is the backend `run`'s
    `auto` picks for the same ONNX (before, build-engine chose ONNX Runtime and run OpenVINO)."""
    onnx = tiny_models["classifier"]
    result = CliRunner().invoke(app, ["build-engine", str(onnx), "--precision", "fp32", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    built = Path(json.loads(result.stdout)[0]["artifact"])
    assert artifact_backend(built, read_card(built)) == auto_backend(onnx, read_card(onnx)) == registry.auto_backend(build=True)
