"""A full disk is one line naming the file and the free space, exit 1, and no partial artifact,
in export, build-engine (ONNX Runtime and OpenVINO) and calibrate (tiny tmpfs, filled on the spot)."""
import os

import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from full_disk import fill, tiny_tmpfs


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _fails_with_one_line(args, artifact):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"disk full writing {artifact} (" in errors[0] and " free there)" in errors[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def disk(tmp_path):
    with tiny_tmpfs(tmp_path, "2m") as mount:
        yield mount


def test_export_on_a_full_disk(tiny_checkpoints, tiny_models, disk):
    fill(disk, leave=tiny_models["segmenter"].stat().st_size // 2)
    _fails_with_one_line(["export", "-c", tiny_checkpoints["segmenter"], "--out", disk / "out"], disk / "out" / "segmenter.onnx")
    assert _files(disk) == [".filler"]


def test_build_engine_on_a_full_disk(tiny_models, disk):
    fill(disk, leave=tiny_models["segmenter"].stat().st_size // 2)
    args = ["build-engine", "--backend", "onnxruntime", "--precision", "fp32", tiny_models["segmenter"], "--out", disk / "out"]
    _fails_with_one_line(args, disk / "out" / "segmenter.fp32.ort.onnx")
    assert _files(disk) == [".filler"]


def test_build_engine_openvino_on_a_full_disk(tiny_models, disk):
    pytest.importorskip("openvino")
    fill(disk, leave=tiny_models["segmenter"].stat().st_size // 2)
    args = ["build-engine", "--backend", "openvino", "--precision", "fp32", tiny_models["segmenter"], "--out", disk / "out"]
    _fails_with_one_line(args, disk / "out" / "segmenter.fp32.xml")
    assert _files(disk) == [".filler"]


def test_calibrate_on_a_full_disk(tiny_models, disk, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames(8, height=64, width=320))
    fill(disk, leave=4_000)
    args = ["calibrate", clip, "-m", tiny_models["classifier"], "--flavour", "cpu", "--count", 8, "--out", disk / "out"]
    _fails_with_one_line(args, disk / "out" / "calibration.npz")
    assert _files(disk) == [".filler"]
    os.unlink(disk / ".filler")
    reference = tmp_path / "reference"
    assert CliRunner().invoke(app, [str(a) for a in args[:-1]] + [str(reference)]).exit_code == 0
    room = (reference / "calibration.npz").stat().st_size + 8192 + (reference / "classifier.int8.cpu.qdq.onnx").stat().st_size // 2
    fill(disk, leave=room)  # the set fits, the INT8 model does not
    _fails_with_one_line(args, disk / "out" / "classifier.int8.cpu.qdq.onnx")
    assert _files(disk) == [".filler", "out/calibration.npz"]  # complete: `calibrate out/calibration.npz` reuses it
