"""Sinks: JSONL flushed per line, annotated video playable, paths checked up front, window advice,
nothing on disk before the first frame and the previous output kept until a run produced one."""
import json
import os
import sys
import threading

import cv2
import numpy as np
import pytest

from edge_media import count_video_frames, frames, write_video
from edgeseg.edge.backends import open_backend
from edgeseg.edge.outputs import OutputOptions, open_outputs
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.postprocess import FrameResult, Segmentation
from edgeseg.edge.annotate import annotate, labels
from edgeseg.edge.records import RunHeader, validate_record
from edgeseg.edge.rle import encode
from edgeseg.edge.sinks import JsonlSink, VideoSink, WindowSink
from edgeseg.edge.sources import Frame, open_source
from edgeseg.files import model_files
from edgeseg.errors import EdgesegError

CLASSES = ["1", "2", "3", "4"]


def _pair(index, image, with_mask=True):
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    if with_mask:
        mask[10:30, 40:120] = 1
    segmentation = Segmentation(
        areas={"1": int(mask.sum()), "2": 0, "3": 0, "4": 0},
        rle={"1": encode(mask)} if with_mask else {},
        masks={"1": mask} if with_mask else {},
        boxes=[{"class": "1", "box": [40, 10, 80, 20], "area": int(mask.sum())}] if with_mask else [],
        mean_probability={"1": 0.75} if with_mask else {},
    )
    frame = Frame(index=index, image=image, timestamp=100.0 + index, source="test", captured_at=1.7e9 + index)
    result = FrameResult(
        index, "test", frame.timestamp, height, width, 0.9, with_mask, segmentation, {"preprocess": 0.001},
        gate=0.5, completed=frame.timestamp + 0.25,
    )
    return frame, result


def test_jsonl_lines_are_flushed_as_written(tmp_path):
    path = tmp_path / "out" / "frames.jsonl"
    sink = JsonlSink(path)
    assert not path.parent.exists()  # nothing before the first frame
    for i, image in enumerate(frames(3)):
        sink.write(*_pair(i, image))
        lines = path.read_text().splitlines()  # under its name from the first line on, line by line
        assert len(lines) == i + 1
    sink.close()
    assert sink.written == path and sorted(os.listdir(path.parent)) == ["frames.jsonl"]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validate_record(record)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert [r["monotonic_s"] for r in records] == [100.0, 101.0, 102.0]
    assert records[0]["latency_ms"] == {"glass_to_glass": 250.0, "preprocess": 1.0}
    assert records[0]["classes"]["1"]["boxes"] == [[40, 10, 80, 20]] and records[0]["classes"]["2"]["area"] == 0


def test_jsonl_writes_the_header_it_was_given_with_its_first_frame(tmp_path):
    path = tmp_path / "frames.jsonl"
    with JsonlSink(path) as sink:
        sink.start({"type": "header"})
        assert not path.exists()  # a header alone is no output
        for i, image in enumerate(frames(2)):
            sink.write(*_pair(i, image))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"type": "header"} and [r["frame"] for r in lines[1:]] == [0, 1]


def test_outputs_give_every_sink_the_header_made_at_the_first_frame(tiny_models, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames(3))
    classifier, segmenter = (open_backend(tiny_models[task], "onnxruntime") for task in ("classifier", "segmenter"))
    jsonl, review = tmp_path / "out" / "run.jsonl", tmp_path / "out" / "review"
    reads = [path for backend in (classifier, segmenter) for path in model_files(backend.artifact)]
    with open_source(str(clip)) as source:
        outputs = open_outputs(OutputOptions(jsonl=jsonl, save_defects=review), [source], segmenter.card, reads)
        cascade = LocalCascade(classifier, segmenter, gate=0.0)
        outputs.header = RunHeader(cascade, "clip.avi")
        with outputs:
            assert not (tmp_path / "out").exists()  # nothing before the first frame
            report = Pipeline(source, cascade, [outputs]).run()
    header = json.loads(jsonl.read_text().splitlines()[0])
    assert json.loads((review / "index.jsonl").read_text().splitlines()[0]) == header
    validate_record(header)
    assert header["gate"] == 0.0 and header["source"] == "clip.avi"
    assert "CPUExecutionProvider" in header["models"]["classifier"]["backend"]  # made once the backends were active
    assert outputs.report() == {
        "outputs": {"jsonl": str(jsonl), "defects": str(review)},
        "output_frames": {"jsonl": report["frames"], "defects": report["frames"]},
        "frame_errors": 0,
    }
    assert outputs.lines() == [f"jsonl: {jsonl} (3 frames)", f"defects: {review} (3 frames)"] and not outputs.failures()


def test_video_sink_writes_a_playable_annotated_video(tmp_path):
    images = frames(6)
    path = tmp_path / "annotated.mp4"
    with VideoSink(path, CLASSES, fps=12) as sink:
        for i, image in enumerate(images):
            sink.write(*_pair(i, image, with_mask=i % 2 == 0))
    assert count_video_frames(path) == 6
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12)
    ok, first = capture.read()
    assert ok and first.shape == images[0].shape
    # the masked region is tinted red (BGR) where no label covers it, the rest stays gray
    frame, result = _pair(0, images[0])
    free = np.ones(first.shape[:2], bool)
    for label in labels(first.shape[:2], result, CLASSES):
        x0, y0, x1, y1 = label.rect
        free[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = False
    inside = free & (result.segmentation.masks["1"] > 0)
    inside[10:30, 40:120] &= np.pad(np.ones((16, 76), bool), 2)  # away from the outline and codec bleed
    assert inside.sum() >= 50, "the labels cover the masked region: the test frame is too small for them"
    pixels = first.astype(int)
    assert (pixels[..., 2] - pixels[..., 0])[inside].mean() > 40
    outside = free.copy()
    outside[:, :140] = False  # right of the mask (columns 40-119), its outline and its box
    assert abs((pixels[..., 2] - pixels[..., 0])[outside].mean()) < 10


def test_video_sink_scales_frames_of_another_size(tmp_path):
    path = tmp_path / "mixed.avi"
    with VideoSink(path, CLASSES) as sink:
        sink.write(*_pair(0, frames(1)[0]))
        sink.write(*_pair(1, frames(1, height=48, width=240)[0]))
    assert count_video_frames(path) == 2


def test_unwritable_outputs_fail_before_any_frame(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(EdgesegError, match="cannot create output folder"):
        JsonlSink(blocker / "frames.jsonl")
    with pytest.raises(EdgesegError, match="cannot create output folder"):
        VideoSink(blocker / "out.mp4", CLASSES)
    with pytest.raises(EdgesegError, match="video format"):
        VideoSink(tmp_path / "out.gif", CLASSES)


def test_video_without_frames_leaves_no_empty_file(tmp_path):
    path = tmp_path / "never.mp4"
    VideoSink(path, CLASSES).close()
    assert not path.exists()


def test_sinks_without_frames_leave_the_previous_outputs_byte_for_byte(tmp_path):
    jsonl, video = tmp_path / "run.jsonl", tmp_path / "run.mp4"
    jsonl.write_bytes(b'{"frame":0}\n')
    video.write_bytes(b"previous video")
    for sink in (JsonlSink(jsonl), VideoSink(video, CLASSES), JsonlSink(jsonl, append=True)):
        sink.close()
        assert sink.written is None
    assert jsonl.read_bytes() == b'{"frame":0}\n' and video.read_bytes() == b"previous video"
    assert sorted(os.listdir(tmp_path)) == ["run.jsonl", "run.mp4"]


def test_video_is_written_under_a_hidden_name_and_replaces_the_old_one_on_close(tmp_path):
    path = tmp_path / "run.avi"
    path.write_bytes(b"previous video")
    sink = VideoSink(path, CLASSES)
    for i, image in enumerate(frames(3)):
        sink.write(*_pair(i, image))
    assert path.read_bytes() == b"previous video" and sink.staged.temp.suffix == ".avi"
    sink.close()
    assert sink.written == path and sink.readable == 3 and not sink.problem
    assert count_video_frames(path) == 3 and sorted(os.listdir(tmp_path)) == ["run.avi"]


def test_jsonl_append_adds_this_runs_lines(tmp_path):
    path = tmp_path / "run.jsonl"
    for _ in range(2):
        with JsonlSink(path, append=True) as sink:
            for i, image in enumerate(frames(2)):
                sink.write(*_pair(i, image))
    assert [json.loads(line)["frame"] for line in path.read_text().splitlines()] == [0, 1, 0, 1]


def test_annotate_marks_the_header_and_keeps_the_input():
    image = frames(1)[0]
    before = image.copy()
    frame, result = _pair(0, image)
    canvas = annotate(image, result, CLASSES)
    assert np.array_equal(image, before) and canvas.shape == image.shape
    assert not np.array_equal(canvas[:20, :200], image[:20, :200])  # header text drawn


def test_window_sink_on_headless_opencv_says_what_to_install():
    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has a GUI (and maybe no display to test on)")
    except cv2.error:
        pass
    with pytest.raises(EdgesegError, match="pip install opencv-python"):
        WindowSink(CLASSES, on_quit=lambda: None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value belongs to a thread only on Linux")
def test_an_output_worker_thread_stands_back_from_inference_alone():
    """background_thread lowers its own thread's priority by BACKGROUND_NICE (capped at 19) and
    leaves the rest of the process, the inference threads among them, where they were."""
    from edgeseg.edge.sinks import BACKGROUND_NICE, background_thread

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def worker():
        background_thread()
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] == min(19, main_before + BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
