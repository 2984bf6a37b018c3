"""`edgeseg run` end to end: outputs, usage and input errors, and a clean stop on SIGINT / SIGTERM."""
import json
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edge_media import count_video_frames, frames, write_video
from full_disk import jsonl_lines
from edgeseg.cli import app
from edgeseg.commands import run as run_command

FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("cli") / "clip.mp4", frames(FRAMES))


def _models(tiny_models):
    return ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]


def test_source_with_jsonl_video_and_json_report(tiny_models, clip, tmp_path):
    jsonl, video = tmp_path / "frames.jsonl", tmp_path / "annotated.avi"
    args = ["run", "--source", str(clip), *_models(tiny_models), "--jsonl", str(jsonl), "--video", str(video), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == FRAMES == len(jsonl.read_text().splitlines()) - 1 == count_video_frames(video)  # + header
    assert report["outputs"] == {"jsonl": str(jsonl), "video": str(video)}
    for key in ("fps", "gate_pass_rate", "latency_ms", "source", "backends"):
        assert key in report


def test_table_report_and_gate_override(tiny_models, clip):
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(tiny_models), "--gate", "1.01", "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    assert "glass-to-glass" in result.stdout and "3 frames" in result.stdout and "gate pass rate 0%" in result.stdout


def test_no_arguments_runs_the_bundled_demo(tiny_models, clip, monkeypatch):
    monkeypatch.setattr(run_command, "DEMO_CLASSIFIER", tiny_models["classifier"])
    monkeypatch.setattr(run_command, "DEMO_SEGMENTER", tiny_models["segmenter"])
    monkeypatch.setattr(run_command, "DEMO_CLIP", clip)
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert f"{FRAMES} frames" in result.stdout and "p99 ms" in result.stdout


@pytest.mark.skipif(
    not (run_command.DEMO_CLASSIFIER.is_file() and run_command.DEMO_SEGMENTER.is_file() and run_command.DEMO_CLIP.is_file()),
    reason="bundled demo models / clip not in edgeseg/assets yet",
)
def test_bundled_demo_assets_run():
    result = CliRunner().invoke(app, ["run", "--max-frames", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 2


def test_camera_and_source_together_is_a_usage_error(tiny_models, clip):
    result = CliRunner().invoke(app, ["run", "--camera", "0", "--source", str(clip), *_models(tiny_models)])
    assert result.exit_code == 2


def test_missing_camera_is_one_line_and_exit_1(tiny_models):
    result = CliRunner().invoke(app, ["run", "--camera", "999", *_models(tiny_models)])
    assert result.exit_code == 1
    assert "no camera at index 999" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_unwritable_output_fails_before_the_first_frame(tiny_models, clip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    video = tmp_path / "annotated.mp4"
    result = CliRunner().invoke(
        app, ["run", "--source", str(clip), *_models(tiny_models), "--video", str(video), "--jsonl", str(blocker / "x.jsonl")]
    )
    assert result.exit_code == 1 and "cannot create output folder" in result.stderr
    assert not video.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_complete_jsonl_playable_video_and_a_summary(tiny_models, clip, tmp_path, signum):
    jsonl, video = tmp_path / "frames.jsonl", tmp_path / "annotated.mp4"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", str(clip), "--loop"]
    command += [*_models(tiny_models), "--jsonl", str(jsonl), "--video", str(video), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if jsonl_lines(jsonl) >= 2 * FRAMES:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == (130 if signum == signal.SIGINT else 0), stderr
    report = json.loads(stdout)
    assert report["stopped_by"] == f"stopped by {signal.Signals(signum).name}"
    records = [json.loads(line) for line in jsonl.read_text().splitlines()][1:]  # every line complete; header first
    assert len(records) == report["frames"] >= 2 * FRAMES
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert count_video_frames(video) == report["frames"]
