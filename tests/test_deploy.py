"""`edgeseg deploy`: export -> calibrate (accuracy gate) -> build-engine in one step, on tiny checkpoints."""
import shlex

from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.card import read_card


def test_deploy_int8_builds_the_cascade_and_prints_a_command_that_runs(tiny_checkpoints, tmp_path):
    from edgeseg.data.synth import write_synthetic

    data = tmp_path / "data"
    write_synthetic(data, 10, seed=3)
    out = tmp_path / "models"
    args = ["deploy", str(tiny_checkpoints["classifier"]), str(tiny_checkpoints["segmenter"]), "--precision", "int8",
            "--data", str(data), "--count", "8", "--backend", "onnxruntime", "--max-dice-drop", "1", "--max-gate-disagreement", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for stage in ("1/3 export", "2/3 calibrate", "3/3 build-engine"):
        assert stage in result.output
    for task in ("classifier", "segmenter"):
        assert (out / f"{task}.onnx").is_file() and (out / f"{task}.int8.cpu.qdq.onnx").is_file()
        assert read_card(out / f"{task}.int8.ort.onnx").artifact.precision == "int8"
    assert (out / "accuracy.json").is_file()  # the gate ran
    line = next(line for line in result.output.splitlines() if "run it:" in line)
    command = shlex.split(line.split("run it:", 1)[1])
    assert command[:2] == ["edgeseg", "run"]
    ran = CliRunner().invoke(app, command[1:] + ["--max-frames", "2", "--json"])
    assert ran.exit_code == 0, ran.output


def test_deploy_int8_without_data_is_a_usage_error(tiny_checkpoints, tmp_path):
    result = CliRunner().invoke(app, ["deploy", str(tiny_checkpoints["classifier"]), "--precision", "int8", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--data" in result.output
    assert not any(tmp_path.iterdir())
