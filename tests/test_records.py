"""The record schema: what frame_record / header_record say, what validate_record refuses, and
every line of real `edgeseg run` outputs (video file, folder with a corrupt file) traceable."""
import copy
import json
import math
import time
from datetime import datetime

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg import __version__
from edgeseg.cli import app
from edgeseg.edge.backends import open_backend
from edgeseg.edge.card import ModelCard, TensorSpec
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.postprocess import FrameResult, MaskPostprocess
from edgeseg.edge.preprocess import Preprocess
from edgeseg.edge.records import SCHEMA, frame_record, header_record, to_json, validate_record
from edgeseg.edge.rle import decode
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import sha256

CLIP_FRAMES = 6


def _card():
    return ModelCard(
        task="segmenter",
        input=TensorSpec("image", ["batch", 1, 32, 160]),
        output=TensorSpec("logits", ["batch", 2, 32, 160]),
        preprocess=Preprocess(32, 160),
        classes=["scratch", "patch"],
        thresholds={"probability": [0.5, 0.5], "min_area": [0, 0]},
    )


def _frame_and_result():
    maps = np.full((1, 2, 32, 160), -10.0, np.float32)
    maps[0, 0, 4:14, 10:30] = math.log(0.8 / 0.2)
    maps[0, 0, 20:24, 100:104] = math.log(0.6 / 0.4)
    segmentation = MaskPostprocess(_card())(maps, (32, 160))
    frame = Frame(7, np.zeros((32, 160), np.uint8), 500.25, "strips", 0.002, item="b.png", captured_at=1.7e9 + 0.5)
    result = FrameResult(7, "strips", 500.25, 32, 160, 0.93, True, segmentation, {"capture": 0.002}, gate=0.4, completed=500.30)
    return frame, result


def test_frame_record_traces_the_frame_and_what_the_models_said():
    frame, result = _frame_and_result()
    record = frame_record(frame, result)
    validate_record(record)
    assert record["schema"] == SCHEMA and record["type"] == "frame"
    assert (record["source"], record["item"], record["frame"], record["position_ms"]) == ("strips", "b.png", 7, None)
    assert datetime.fromisoformat(record["captured_at"]).timestamp() == pytest.approx(1.7e9 + 0.5)
    assert record["monotonic_s"] == 500.25 and record["size"] == [32, 160]
    assert (record["gate"], record["defect_probability"], record["gated"]) == (0.4, 0.93, True)
    assert record["latency_ms"] == {"glass_to_glass": pytest.approx(50.0), "capture": 2.0}
    scratch, patch = record["classes"]["scratch"], record["classes"]["patch"]
    assert scratch["area"] == 216 and scratch["boxes"] == [[10, 4, 20, 10], [100, 20, 4, 4]]
    assert scratch["mean_probability"] == pytest.approx((200 * 0.8 + 16 * 0.6) / 216, abs=1e-6)
    assert np.array_equal(decode(scratch["rle"], (32, 160)), result.segmentation.masks["scratch"])
    assert patch == {"area": 0, "boxes": [], "mean_probability": None, "rle": ""}
    assert json.loads(json.dumps(record)) == record


def _broken(change):
    frame, result = _frame_and_result()
    record = copy.deepcopy(frame_record(frame, result))
    change(record)
    return record


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("item"), "missing keys \\['item'\\]"),
        (lambda r: r.update(extra=1), "unknown keys \\['extra'\\]"),
        (lambda r: r.update(schema="edgeseg.record/0"), "record schema"),
        (lambda r: r.update(type="log"), "record type"),
        (lambda r: r.update(frame=True), "frame.frame must be int, got a boolean"),
        (lambda r: r.update(frame="7"), "frame.frame must be int"),
        (lambda r: r.update(captured_at="yesterday"), "captured_at must be an ISO 8601 UTC time"),
        (lambda r: r.update(captured_at="2026-12-01T22:00:00+01:00"), "ISO 8601 UTC"),
        (lambda r: r.update(defect_probability=1.5), "outside \\[0, 1\\]"),
        (lambda r: r.update(defect_probability=None), "null but the frame has no error"),
        (lambda r: r.update(error=3), "frame.error must be str or null"),
        (lambda r: r.update(gate=float("nan")), "gate must be finite"),
        (lambda r: r["latency_ms"].pop("glass_to_glass"), "no glass_to_glass"),
        (lambda r: r["latency_ms"].update(sink=-1), "latency_ms.sink"),
        (lambda r: r["classes"]["scratch"].update(area=215), "disagrees with its RLE"),
        (lambda r: r["classes"]["scratch"].update(rle="5 3 1 2"), "unsorted"),
        (lambda r: r["classes"]["scratch"].update(boxes=[[150, 0, 20, 5]]), "outside the 160x32 frame"),
        (lambda r: r["classes"]["scratch"].update(boxes=[[1, 2, 3]]), "expected \\[x, y, w, h\\]"),
        (lambda r: r["classes"]["patch"].update(mean_probability=0.5), "null exactly when the area is 0"),
        (lambda r: r.update(size=[32]), "size must be \\[height, width\\]"),
    ],
)
def test_validate_record_names_what_breaks_the_schema(change, message):
    with pytest.raises(EdgesegError, match=message):
        validate_record(_broken(change))


def test_header_record_names_the_models_by_hash(tiny_models):
    classifier, segmenter = (open_backend(tiny_models[role], "onnxruntime") for role in ("classifier", "segmenter"))
    header = header_record(LocalCascade(classifier, segmenter, gate=0.5), "line.mp4", started=(1.7e9, 42.0))
    validate_record(header)
    assert header["started_at"] == "2023-11-14T22:13:20.000+00:00" and header["monotonic_s"] == 42.0
    assert header["edgeseg_version"] == __version__ and header["host"] and header["gate"] == 0.5
    assert header["classes"] == segmenter.card.classes
    for role in ("classifier", "segmenter"):
        model = header["models"][role]
        assert model["path"] == str(tiny_models[role]) and model["sha256"] == sha256(tiny_models[role])
        assert model["format"] == "onnx" and model["backend"].startswith("onnxruntime")
    with pytest.raises(EdgesegError, match="header.models.segmenter.sha256"):
        broken = copy.deepcopy(header)
        broken["models"]["segmenter"]["sha256"] = "abc"
        validate_record(broken)


# -- real runs: every line valid, every frame traceable ------------------------------------------------
def _run(tiny_models, source, tmp_path, *extra):
    jsonl = tmp_path / "frames.jsonl"
    args = ["run", "--source", str(source), "--classifier", str(tiny_models["classifier"])]
    args += ["--segmenter", str(tiny_models["segmenter"]), "--jsonl", str(jsonl), "--gate", "0", "--json", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        validate_record(record)
    header, rest = records[0], records[1:]
    assert header["type"] == "header" and all(r["type"] == "frame" for r in rest)
    report = json.loads(result.stdout)
    assert len(rest) == report["frames"]
    assert header["gate"] == 0.0 == report["gate"]
    assert header["models"]["segmenter"]["sha256"] == sha256(tiny_models["segmenter"])
    return header, rest


def _check_clocks(header, records):
    """Wall-clock and monotonic times tell the same story: frames after the start, in order,
    and the wall-clock gaps match the monotonic ones."""
    start_wall = datetime.fromisoformat(header["started_at"]).timestamp()
    walls = [datetime.fromisoformat(r["captured_at"]).timestamp() - start_wall for r in records]
    monos = [r["monotonic_s"] - header["monotonic_s"] for r in records]
    assert all(m > 0 for m in monos) and monos == sorted(monos)
    for wall, mono in zip(walls, monos):
        assert wall == pytest.approx(mono, abs=0.01)


def test_video_run_records_name_the_file_frame_and_position(tiny_models, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames(CLIP_FRAMES), fps=25.0)
    header, records = _run(tiny_models, clip, tmp_path)
    assert header["source"] == str(clip)
    assert [r["frame"] for r in records] == list(range(CLIP_FRAMES))
    assert all(r["item"] == "clip.mp4" and r["source"] == "clip.mp4" for r in records)
    assert [r["position_ms"] for r in records] == pytest.approx([40.0 * i for i in range(CLIP_FRAMES)])
    assert all(r["gated"] and "segmenter" in r["latency_ms"] for r in records)
    _check_clocks(header, records)


def test_folder_run_names_each_file_after_a_corrupt_one(tiny_models, tmp_path):
    folder = tmp_path / "strips"
    folder.mkdir()
    names = [f"strip_{i:02d}.png" for i in range(5)]
    for name, image in zip(names, frames(5, height=64, width=320)):
        cv2.imwrite(str(folder / name), image)
    (folder / names[2]).write_bytes(b"not a png")  # unreadable, in the middle
    header, records = _run(tiny_models, folder, tmp_path)
    assert header["source"] == str(folder)
    assert [r["item"] for r in records] == [names[0], names[1], names[3], names[4]]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert all(r["position_ms"] is None and r["size"] == [64, 320] for r in records)
    _check_clocks(header, records)


def test_a_model_output_that_is_not_a_number_makes_an_error_record_in_strict_json():
    frame, _ = _frame_and_result()
    post = MaskPostprocess(_card())
    maps = np.zeros((1, 2, 32, 160), np.float32)
    maps[0, 1, 5, 5] = np.nan
    frame.timestamp = time.perf_counter()  # its result completes now: the latency counts from a capture just before
    for probability, segmenter_maps, message in ((math.nan, None, "classifier output is not a number"), (0.9, maps, "segmenter output is not a number for class(es) ['patch']")):
        result = post.frame_result(frame, segmenter_maps, probability, True, {}, 0.5)
        assert message in result.error and not any(result.segmentation.areas.values())
        record = json.loads(to_json(frame_record(frame, result)), parse_constant=lambda c: pytest.fail(f"bare {c}"))
        validate_record(record)
        assert record["error"] == result.error
    assert record["defect_probability"] == 0.9  # the classifier's own output was a number
    with pytest.raises(EdgesegError, match="not a number"):
        to_json({"type": "frame", "defect_probability": math.nan})
