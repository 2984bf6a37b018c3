"""One consistent command line: choices checked by the parser, shared names, -V/-v/-q everywhere."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.commands import common
from edgeseg.edge.card import read_card

runner = CliRunner()
COMMANDS = [["info"], ["data", "synth"], ["data", "check"], ["train", "classifier"], ["train", "segmenter"], ["train", "evaluate"],
            ["export"], ["calibrate"], ["build-engine"], ["deploy"], ["run"], ["bench"]]


def test_commands_are_listed_in_flow_order():
    text = runner.invoke(app, ["--help"]).output
    positions = [text.index(f"│ {name} ") for name in ("info", "data", "train", "export", "calibrate", "build-engine", "deploy", "run", "bench")]
    assert positions == sorted(positions)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_lists_verbose_quiet_and_no_bool_noise(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--verbose" in result.output and "--quiet" in result.output


def test_version_short_and_long():
    for flag in ("-V", "--version"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.output.startswith("edgeseg ")


@pytest.mark.parametrize(
    "args, listed",
    [
        (["build-engine", "--precision", "fp8"], "fp16"),
        (["build-engine", "--backend", "cuda"], "onnxruntime"),
        (["run", "--backend", "cuda"], "tensorrt"),
        (["bench", "-b", "cuda"], "pytorch"),
        (["bench", "-p", "bf16"], "int8"),
        (["calibrate", "x", "--flavour", "gpu"], "trt"),
        (["calibrate", "x", "--method", "mse"], "percentile"),
        (["export", "--onnx", "x.onnx", "--geometry", "crop"], "tile"),
        (["train", "segmenter", "--loss", "l1"], "focal-tversky"),
        (["deploy", "a.pt", "--precision", "int4"], "fp32"),
    ],
)
def test_bad_choices_exit_2_naming_the_choices(args, listed):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert listed in result.output


def test_choice_tuples_agree_with_their_definitions():
    from edgeseg.bench.variants import PRECISIONS
    from edgeseg.calibration.qdq import FLAVOURS, METHODS
    from edgeseg.commands.bench import BENCH_BACKENDS
    from edgeseg.edge.backends import BACKENDS, MODEL_BACKENDS

    assert common.PRECISIONS == PRECISIONS and common.FLAVOURS == FLAVOURS and common.METHODS == METHODS
    assert set(BENCH_BACKENDS) == (set(MODEL_BACKENDS) - {"auto"}) | {"pytorch"}
    assert set(BACKENDS) - set(MODEL_BACKENDS) == {"triton"}  # the cascade on a server: run only


def test_triton_is_offered_by_run_only():
    assert "triton" in runner.invoke(app, ["run", "--help"]).output
    for command in (["bench"], ["build-engine", "x.onnx"], ["deploy", "x.pt"]):
        result = runner.invoke(app, [*command, "--backend", "triton"])
        assert result.exit_code == 2 and "triton" in result.output, command


def test_quiet_hides_notes_and_verbose_adds_the_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    plain = runner.invoke(app, ["data", "check", "--data", str(missing)])
    verbose = runner.invoke(app, ["data", "check", "--data", str(missing), "-v"])
    assert plain.exit_code == verbose.exit_code == 1
    assert "Traceback" not in plain.output and "Traceback" in verbose.output
    assert "Traceback" not in runner.invoke(app, ["data", "check", "--data", str(missing)]).output  # -v does not stick


def test_number_cells_never_show_negative_zero():
    assert common.number(-0.00001) == "0.0000" and common.number(-0.5) == "-0.5000"
    assert common.number(float("nan")) == "n/a" and common.number(3) == "3"


def test_cpu_build_defaults_to_its_fastest_precision_and_int8_finds_the_calibrated_model(tiny_models, tiny_calibration, tmp_path):
    from edgeseg.calibration.qdq import onnx_to_qdq

    folder = tmp_path / "models"
    folder.mkdir()
    for path in (tiny_models["classifier"], tiny_models["classifier"].with_suffix(".json")):
        shutil.copy(path, folder / path.name)
    onnx = folder / "classifier.onnx"
    plain = runner.invoke(app, ["build-engine", str(onnx), "--backend", "onnxruntime", "-o", str(tmp_path / "a"), "--json"])
    assert plain.exit_code == 0, plain.output
    assert [row["precision"] for row in json.loads(plain.stdout)] == ["fp32"]  # not fp16: no FP16 kernels on the CPU
    onnx_to_qdq(onnx, tiny_calibration, folder / "classifier.int8.cpu.qdq.onnx", flavour="cpu")
    fastest = runner.invoke(app, ["build-engine", str(onnx), "--backend", "onnxruntime", "-o", str(tmp_path / "b"), "--json"])
    assert fastest.exit_code == 0, fastest.output
    row = json.loads(fastest.stdout)[0]
    assert row["precision"] == "int8" and row["source"].endswith("classifier.int8.cpu.qdq.onnx")
    assert read_card(tmp_path / "b" / "classifier.int8.ort.onnx").artifact.precision == "int8"
    assert "classifier.int8.cpu.qdq.onnx" in fastest.stderr  # it says which model it built from


def test_off_a_terminal_no_progress_frames_reach_the_log(tmp_path):
    """CI logs and pipes get results and notes, not the frames of a spinner or a progress bar."""
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "d"), "--count", "4"])
    assert result.exit_code == 0, result.output
    spinner = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏━")
    assert not spinner & set(result.stderr), result.stderr  # progress goes to stderr: none of it here
    assert "synthetic strips" in result.stdout  # the result table itself
