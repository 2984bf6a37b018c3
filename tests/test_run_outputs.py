"""`edgeseg run` loses nothing: a failed start keeps earlier results, outputs never overwrite the
source or each other, failed and full-disk writes are reported with exit 1, usage errors exit 2,
a run without frames fails, SIGINT exits 130."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edge_media import count_video_frames, frames, write_video
from edgeseg.cli import app
from edgeseg.commands.run import usable_cores
from edgeseg.edge.card import card_path
from edgeseg.edge.records import validate_record
from full_disk import fill, tiny_tmpfs

FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("outputs") / "clip.avi", frames(FRAMES))


def _models(tiny_models):
    return ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]


def _run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def _frames(jsonl):
    """The frame records of a JSONL (each run also writes a header record)."""
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return [r for r in records if r["type"] == "frame"]


def _one_error_line(result, text):
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]  # e.g. no golden set
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def earlier_run(tiny_models, clip, tmp_path):
    """Results of an earlier run that a failed start must leave byte for byte."""
    jsonl, video = tmp_path / "run.jsonl", tmp_path / "run.avi"
    result = _run("--source", clip, *_models(tiny_models), "--jsonl", jsonl, "--video", video)
    assert result.exit_code == 0, result.output
    return jsonl, video, jsonl.read_bytes(), video.read_bytes()


def test_a_failed_start_keeps_the_earlier_results_byte_for_byte(tiny_models, clip, tmp_path, earlier_run):
    jsonl, video, jsonl_bytes, video_bytes = earlier_run
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_models["segmenter"].read_bytes()[:500])  # truncated, beside a valid card
    shutil.copy(card_path(tiny_models["segmenter"]), card_path(bad))
    starts = [
        ["--source", clip, "--classifier", tiny_models["classifier"], "--segmenter", bad],
        ["--source", tmp_path / "missing.avi", *_models(tiny_models)],
        ["--camera", 999, *_models(tiny_models)],
    ]
    for start in starts:
        result = _run(*start, "--jsonl", jsonl, "--video", video)
        assert result.exit_code == 1, result.output
        assert jsonl.read_bytes() == jsonl_bytes and video.read_bytes() == video_bytes
        assert sorted(os.listdir(tmp_path)) == sorted(["bad.onnx", "bad.json", "run.jsonl", "run.avi"])


def test_append_adds_to_the_jsonl(tiny_models, clip, earlier_run):
    jsonl, _, jsonl_bytes, _ = earlier_run
    result = _run("--source", clip, *_models(tiny_models), "--jsonl", jsonl, "--append", "--max-frames", 3)
    assert result.exit_code == 0, result.output
    assert jsonl.read_bytes().startswith(jsonl_bytes)
    kinds = [json.loads(line)["type"] for line in jsonl.read_text().splitlines()]
    assert kinds == ["header"] + ["frame"] * FRAMES + ["header"] + ["frame"] * 3  # each run starts with its header


def test_outputs_that_are_the_source_or_each_other_are_refused(tiny_models, clip, tmp_path):
    source = tmp_path / "source.avi"
    shutil.copy(clip, source)
    before = source.read_bytes()
    folder = tmp_path / "strips"
    folder.mkdir()
    for i, image in enumerate(frames(2)):
        import cv2

        cv2.imwrite(str(folder / f"{i}.png"), image)
    cases = [
        (["--source", source, "--video", source], "--video"),
        (["--source", source, "--jsonl", tmp_path / "." / "source.avi"], "--jsonl"),
        (["--source", folder, "--video", folder / "1.png"], "--video"),
        (["--source", str(folder / "*.png"), "--jsonl", folder / "0.png"], "--jsonl"),
        (["--source", source, "--jsonl", tmp_path / "x", "--video", tmp_path / "x"], "--jsonl and --video are the same file"),
        (["--source", source, "--jsonl", card_path(tiny_models["segmenter"])], "is an input of this run"),
    ]
    for args, text in cases:
        result = _run(*args, *_models(tiny_models))
        assert result.exit_code == 2, result.output
        _one_error_line(result, text)
    assert source.read_bytes() == before and count_video_frames(source) == FRAMES
    assert sorted(os.listdir(folder)) == ["0.png", "1.png"] and not (tmp_path / "x").exists()


def test_a_video_the_disk_cannot_hold_is_reported_not_claimed(tiny_models, clip, tmp_path):
    with tiny_tmpfs(tmp_path, "96k") as disk:
        jsonl, video, avi = tmp_path / "run.jsonl", disk / "run.mp4", disk / "run.avi"
        avi.write_bytes(b"earlier video")
        fill(disk, leave=40_000)
        result = _run("--source", clip, *_models(tiny_models), "--loop", "--max-frames", 60, "--jsonl", jsonl, "--video", video, "--json")
        assert result.exit_code == 1, result.output
        report = json.loads(result.stdout)
        assert "video" not in report["outputs"] and report["outputs"]["jsonl"] == str(jsonl)
        assert f"{video} was not written: none of its 60 frames can be read back (disk full" in result.stderr
        assert not video.exists() and sorted(os.listdir(disk)) == [".filler", "run.avi"]
        assert len(jsonl.read_text().splitlines()) == 1 + 60  # header + frames

        result = _run("--source", clip, *_models(tiny_models), "--loop", "--max-frames", 60, "--video", avi)
        assert result.exit_code == 1, result.output
        kept = count_video_frames(avi)
        assert 0 < kept < 60, "a partial MJPG AVI stays playable"
        assert f"{avi} holds {kept} of the 60 frames written (disk full" in result.stderr
        assert f"video: {avi} ({kept} frames)" in result.stdout


def test_a_video_into_dev_full_is_reported_not_claimed(tiny_models, clip, tmp_path):
    video = tmp_path / "run.avi"
    video.symlink_to("/dev/full")
    result = _run("--source", clip, *_models(tiny_models), "--video", video, "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["outputs"] == {}
    _one_error_line(result, f"{video} was not written: none of its {FRAMES} frames can be read back")
    assert video.is_symlink() and os.path.realpath(video) == "/dev/full" and not os.path.isfile("/dev/full")


def test_a_full_disk_stops_the_run_with_one_line_and_only_complete_lines(tiny_models, clip, tmp_path):
    result = _run("--source", clip, *_models(tiny_models), "--jsonl", "/dev/full")
    assert result.exit_code == 1, result.output
    _one_error_line(result, "disk full writing /dev/full")
    with tiny_tmpfs(tmp_path, "64k") as disk:
        jsonl = disk / "run.jsonl"
        fill(disk, leave=6_000)
        result = _run("--source", clip, *_models(tiny_models), "--loop", "--max-frames", 200, "--jsonl", jsonl)
        assert result.exit_code == 1, result.output
        _one_error_line(result, f"disk full writing {jsonl} (")
        text = jsonl.read_text()
        header, *records = [json.loads(line) for line in text.splitlines()]
        assert text.endswith("\n") and header["type"] == "header" and [r["frame"] for r in records] == list(range(len(records)))
        assert sorted(os.listdir(disk)) == [".filler", "run.jsonl"]


@pytest.mark.parametrize("value", ["nan", "-5", "inf"])
def test_a_gate_that_is_not_a_probability_threshold_is_a_usage_error(tiny_models, clip, value):
    result = _run("--source", clip, *_models(tiny_models), "--gate", value)
    assert result.exit_code == 2, result.output
    _one_error_line(result, "--gate must be a defect probability >= 0")


def test_threads_beyond_the_cores_are_a_usage_error(tiny_models, clip):
    result = _run("--source", clip, *_models(tiny_models), "--threads", usable_cores() + 1)
    assert result.exit_code == 2, result.output
    _one_error_line(result, f"--threads {usable_cores() + 1} is more than the {usable_cores()} cores")
    assert _run("--source", clip, *_models(tiny_models), "--threads", usable_cores(), "--max-frames", 1).exit_code == 0


def test_a_run_without_frames_fails_with_the_reason(tiny_models, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"not a png")
    jsonl = tmp_path / "run.jsonl"
    result = _run("--source", folder, *_models(tiny_models), "--jsonl", jsonl)
    assert result.exit_code == 1, result.output
    _one_error_line(result, "no frame was processed (end of source; 2 unreadable frame(s) skipped)")
    assert not jsonl.exists()


def _start(tiny_models, clip, jsonl, *extra):
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", str(clip), "--loop"]
    command += [*_models(tiny_models), "--jsonl", str(jsonl), "--json", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigint_exits_130_with_the_results_written(tiny_models, clip, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    process = _start(tiny_models, clip, jsonl, "--rate", "50")
    try:
        deadline = time.monotonic() + 60  # until frames flow: the JSONL appears with the first one
        while time.monotonic() < deadline and process.poll() is None and not jsonl.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["stopped_by"] == "stopped by SIGINT" and report["frames"] > 0
    assert len(jsonl.read_text().splitlines()) == 1 + report["frames"]  # header + frames


def test_a_card_preprocess_size_the_model_cannot_take_is_refused_at_load(tiny_models, clip, tmp_path):
    model = tmp_path / "classifier.onnx"
    shutil.copy(tiny_models["classifier"], model)
    card = json.loads(card_path(tiny_models["classifier"]).read_text())
    card["preprocess"]["height"] = 48  # the ONNX takes 32 rows
    card_path(model).write_text(json.dumps(card))
    result = _run("--source", clip, "--classifier", model, "--segmenter", tiny_models["segmenter"])
    assert result.exit_code == 1, result.output
    _one_error_line(result, f"{model}: its card preprocesses frames to 1x48x160 (NCHW) but input 'image' takes")


def _rewrite(source, target, change):
    """Save the ONNX `source` changed by `change(model)` (and any external data) as `target`, with
    a card for it (the source's, restamped): a real model a run accepts."""
    import onnx

    from edgeseg.edge.card import read_card, write_card

    model = onnx.load(str(source))
    save = change(model) or {}
    onnx.save_model(model, str(target), **save)
    write_card(target, read_card(source))
    return target


def test_outputs_onto_any_file_the_run_reads_are_refused(tiny_models, clip, tmp_path):
    cameras = tmp_path / "cameras.txt"
    cameras.write_text(f"{clip}\n")
    external = _rewrite(
        tiny_models["segmenter"],
        tmp_path / "segmenter.onnx",
        lambda model: {"save_as_external_data": True, "location": "segmenter.weights", "size_threshold": 0},
    )
    weights = tmp_path / "segmenter.weights"
    ir = tmp_path / "ir"
    built = CliRunner().invoke(app, ["build-engine", str(tiny_models["segmenter"]), "--backend", "openvino", "--precision", "fp32", "-o", str(ir)])
    assert built.exit_code == 0, built.output
    classifier = ["--classifier", tiny_models["classifier"]]
    cases = [
        (["--sources", cameras, *_models(tiny_models), "--jsonl", cameras], cameras),
        (["--source", clip, *classifier, "--segmenter", external, "--backend", "onnxruntime", "--jsonl", weights], weights),
        (["--source", clip, *classifier, "--segmenter", ir / "segmenter.fp32.xml", "--video", ir / "segmenter.fp32.bin"], ir / "segmenter.fp32.bin"),
    ]
    for args, read in cases:
        before = read.read_bytes()
        result = _run(*args)
        assert result.exit_code == 2, result.output
        _one_error_line(result, f"{read} is an input of this run")
        assert read.read_bytes() == before


def test_a_model_output_that_is_not_a_number_is_an_error_for_that_frame_never_bare_nan(tiny_models, clip, tmp_path):
    import onnx
    from onnx import helper

    def nan_scores(model):
        """The classifier's logits times NaN: a model broken the way a bad conversion breaks one."""
        output = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{name}_raw" if name == output else name for name in node.output]
        model.graph.initializer.append(helper.make_tensor("nan", onnx.TensorProto.FLOAT, [], [float("nan")]))
        model.graph.node.append(helper.make_node("Mul", [f"{output}_raw", "nan"], [output]))

    broken = _rewrite(tiny_models["classifier"], tmp_path / "classifier.onnx", nan_scores)
    jsonl = tmp_path / "run.jsonl"
    result = _run("--source", clip, "--classifier", broken, "--segmenter", tiny_models["segmenter"], "--jsonl", jsonl, "--json")
    assert result.exit_code == 1, result.output
    _one_error_line(result, f"{FRAMES} frame(s) could not be inspected, the first frame 0 of clip.avi: the classifier output is not a number")
    assert json.loads(result.stdout)["frame_errors"] == FRAMES

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSONL")

    header, *records = [json.loads(line, parse_constant=refuse) for line in jsonl.read_text().splitlines()]
    assert len(records) == FRAMES
    for record in records:
        validate_record(record)
        assert record["defect_probability"] is None and not record["gated"] and "not a number" in record["error"]


def test_append_after_a_cut_off_last_line_starts_on_a_fresh_line(tiny_models, clip, earlier_run):
    jsonl, _, jsonl_bytes, _ = earlier_run
    cut = jsonl_bytes[:-10]  # a power loss in the middle of the last record
    jsonl.write_bytes(cut)
    result = _run("--source", clip, *_models(tiny_models), "--jsonl", jsonl, "--append", "--max-frames", 3)
    assert result.exit_code == 0, result.output
    data = jsonl.read_bytes()
    assert data.startswith(cut + b"\n")
    kinds = [json.loads(line)["type"] for line in data[len(cut) + 1 :].decode().splitlines()]
    assert kinds == ["header", "frame", "frame", "frame"]  # this run's header whole, on its own line
