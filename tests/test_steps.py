"""The deploy steps as a user's Python calls them (edgeseg.export / calibrate / build / deploy), the
README example that shows them, and the one stop/exit policy of the long-running commands."""
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgeseg
from edgeseg.cli import app
from edgeseg.steps import build, calibrate
from edgeseg.edge.card import read_card
from edgeseg.errors import EdgesegError, UsageError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_python(heading):
    """The first ```python block after `heading` in the README."""
    text = README.read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


def test_readme_deploy_from_python_runs(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    from edgeseg.data.synth import write_synthetic

    monkeypatch.chdir(tmp_path)
    for task, path in tiny_checkpoints.items():
        (tmp_path / "runs" / task).mkdir(parents=True)
        shutil.copyfile(path, tmp_path / "runs" / task / f"{task}.pt")
    write_synthetic(tmp_path / "data" / "train", 12, seed=3)
    write_synthetic(tmp_path / "data" / "val", 8, seed=4)
    exec(compile(_readme_python("### Deploy from Python"), str(README), "exec"), {})
    printed = capsys.readouterr().out
    for task in ("classifier", "segmenter"):
        assert read_card(tmp_path / "models" / f"{task}.int8.ort.onnx").artifact.precision == "int8"
    assert "int8-cpu" in printed
    command = next(line for line in printed.splitlines() if line.startswith("edgeseg run "))
    ran = CliRunner().invoke(app, shlex.split(command)[1:] + ["--max-frames", "2", "--json"])
    assert ran.exit_code == 0, ran.output


def test_build_takes_the_fastest_precision_by_the_one_rule(tiny_models, tiny_calibration, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for path in tiny_models.values():
        for file in (path, path.with_suffix(".json")):
            shutil.copyfile(file, folder / file.name)
    onnx = [folder / path.name for path in tiny_models.values()]
    plain = build(onnx, folder, backend="onnxruntime")
    assert plain.precision == "fp32" and all(a.artifact.is_file() for a in plain.artifacts)
    calibrate(tiny_calibration.path, onnx, folder, flavours=["cpu"])
    calibrated = build(onnx, folder, backend="onnxruntime")
    assert calibrated.precision == "int8" and {a.task for a in calibrated.artifacts} == {"classifier", "segmenter"}
    assert calibrated.run_command == f"edgeseg run --classifier {folder / 'classifier.int8.ort.onnx'} --segmenter {folder / 'segmenter.int8.ort.onnx'}"


def test_deploy_refuses_int8_without_data_before_writing(tiny_checkpoints, tmp_path):
    with pytest.raises(UsageError, match="--data"):
        edgeseg.deploy(list(tiny_checkpoints.values()), tmp_path, precision="int8", backend="onnxruntime")
    with pytest.raises(UsageError, match="classifier and the segmenter"):
        edgeseg.deploy([tiny_checkpoints["classifier"]], tmp_path, backend="onnxruntime")
    assert not any(tmp_path.iterdir())


def test_a_missed_budget_raises_with_the_report_and_removes_the_int8_model(tiny_models, tiny_calibration, tmp_path):
    from edgeseg.data.synth import write_synthetic
    from edgeseg.steps import BudgetMissed

    write_synthetic(tmp_path / "val", 6, seed=5)
    with pytest.raises(BudgetMissed) as missed:
        calibrate(tiny_calibration.path, [tiny_models["segmenter"]], tmp_path / "out", flavours=["trt"],
                          validation=tmp_path / "val", max_dice_drop=-1.01, max_float_layers=0)
    result = missed.value.result
    assert result.removed == [tmp_path / "out" / "segmenter.int8.trt.qdq.onnx"] and not result.removed[0].exists()
    assert result.accuracy.misses[0].variant == "int8-trt" and (tmp_path / "out" / "accuracy.json").is_file()
    assert isinstance(missed.value, EdgesegError)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_one_exit_policy_sigint_130_sigterm_0(signum, code):
    """In a process of its own: a real signal sent to the test runner would reach the native
    threads earlier tests left (OpenVINO, ONNX Runtime) too."""
    script = f"""
import os, typer
from edgeseg.commands.common import exit_after_signals, stop_on_signals
reasons, received = [], []
with stop_on_signals(reasons.append, received):
    os.kill(os.getpid(), {int(signum)})
assert reasons == ["stopped by {signal.Signals(signum).name}"], reasons
try:
    exit_after_signals(received)
except typer.Exit as stopped:
    raise SystemExit(stopped.exit_code)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr


def test_serve_refuses_an_unprepared_server_environment_naming_the_step(tmp_path):
    from edgeseg.serve.server import SYSTEM_PYTHON, TritonInstall, server_environment

    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} (what pytriton's stub links) is not installed")
    install = TritonInstall(binary=tmp_path / "tritonserver", backends=tmp_path / "backends", stubs=tmp_path / "stubs")
    with pytest.raises(EdgesegError, match="not prepared") as refused:
        server_environment(install, cache=tmp_path / "cache")
    assert "edgeseg serve --prepare" in str(refused.value) and not (tmp_path / "cache").exists()


def test_demo_assets_are_reachable_as_a_module():
    from edgeseg import assets

    assert read_card(assets.classifier_onnx()).task == "classifier" and read_card(assets.segmenter_onnx()).task == "segmenter"
    assert assets.demo_clip().suffix == ".mp4"
    assert [read_card(path).artifact.flavour for path in assets.models("cpu")] == ["cpu", "cpu"]


def test_serve_without_the_prepared_environment_refuses_before_writing(tiny_models, tmp_path, monkeypatch):
    from edgeseg.serve.server import SYSTEM_PYTHON, find_tritonserver

    try:
        install = find_tritonserver()
    except EdgesegError as exc:
        pytest.skip(f"no Triton server: {exc}")
    if install.stubs is None or not SYSTEM_PYTHON.is_file():
        pytest.skip("only pytriton's server needs a prepared environment")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["serve", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"], "--repository", tmp_path / "repo"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1 and "edgeseg serve --prepare" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "repo").exists() and not (tmp_path / "cache").exists()
