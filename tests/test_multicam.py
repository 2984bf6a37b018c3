"""Many cameras in one pipeline: batched inference, per-camera reports, fairness, independence."""
import threading
import time
from typing import Optional

import numpy as np
import pytest

from edge_media import frames, write_video
from edgeseg.edge.backends import open_backend
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.card import read_card
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.records import validate_record
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Reader, Source, SourceOptions, open_source


class _Recorder(Sink):
    """Keeps (camera, frame index, probability, areas, time) of every result, in arrival order."""

    def __init__(self):
        self.rows = []

    def write(self, frame, result):
        self.rows.append((frame.camera, frame.index, result.defect_probability, dict(result.segmentation.areas), time.perf_counter()))


class _CallCounting(OnnxRuntimeBackend):
    """The real ONNX Runtime backend, keeping the batch size of every run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _infer_impl(self, feed):
        self.batches.append(next(iter(feed.values())).shape[0])
        return super()._infer_impl(feed)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multicam")
    return [write_video(folder / f"cam{i}.avi", frames(8 + 2 * i, seed=i)) for i in range(3)]


def _backend(models, task, cls=OnnxRuntimeBackend):
    return cls(models[task], read_card(models[task]))


def _cascade(models):
    return LocalCascade(open_backend(models["classifier"]), open_backend(models["segmenter"]))


def _alone(models, clip):
    """The single-camera results of `clip`: {frame index: (probability, areas)}."""
    sink = _Recorder()
    with open_source(clip) as source:
        Pipeline(source, LocalCascade(_backend(models, "classifier"), _backend(models, "segmenter"), gate=0.0), [sink]).run()
    return {index: (p, areas) for _, index, p, areas, _ in sink.rows}


def test_three_cameras_are_batched_and_give_the_results_of_three_single_runs(tiny_models, clips):
    sink = _Recorder()
    classifier, segmenter = _backend(tiny_models, "classifier", _CallCounting), _backend(tiny_models, "segmenter", _CallCounting)
    sources = [open_source(clip) for clip in clips]
    try:
        report = Pipeline(sources, LocalCascade(classifier, segmenter, gate=0.0), [sink]).run()
    finally:
        for source in sources:
            source.close()
    assert max(classifier.batches[1:]) == 3 and max(segmenter.batches[1:]) == 3  # [0] is the warm-up
    assert sum(classifier.batches[1:]) == 8 + 10 + 12
    assert report["batching"]["sizes"].get("3", 0) >= 1 and report["batching"]["max_batch"] == 3
    assert report["frames"] == 30 and [c["frames"] for c in report["cameras"]] == [8, 10, 12]
    assert report["source"]["frames"] == 30 and report["source"]["uri"] == ", ".join(s.uri for s in sources)
    for camera, clip in enumerate(clips):
        rows = [r for r in sink.rows if r[0] == camera]
        assert [r[1] for r in rows] == list(range(len(rows)))  # each camera in order
        alone = _alone(tiny_models, clip)
        assert len(rows) == len(alone)
        for _, index, probability, areas, _ in rows:
            assert probability == pytest.approx(alone[index][0], abs=1e-5)
            assert areas == alone[index][1]
    for camera in report["cameras"]:
        assert camera["latency_ms"]["glass_to_glass"]["count"] == camera["frames"]
        assert camera["gate_pass_rate"] == 1.0 and camera["source"]["dropped"] == 0


def test_max_batch_bounds_the_batch(tiny_models, clips):
    classifier = _backend(tiny_models, "classifier", _CallCounting)
    sources = [open_source(clip) for clip in clips]
    try:
        report = Pipeline(sources, LocalCascade(classifier, open_backend(tiny_models["segmenter"])), max_batch=2).run()
    finally:
        for source in sources:
            source.close()
    assert max(classifier.batches) == 2 and set(report["batching"]["sizes"]) <= {"1", "2"}
    assert report["frames"] == 30


def test_a_slow_camera_is_served_within_a_batch_beside_a_fast_one(tiny_models, tmp_path):
    """One place per batch: a file read as fast as possible and a 20 fps camera. None of the
    camera's frames waits more than one batch, and each is processed or counted as dropped
    (how many a live camera drops depends on the machine's speed, so that is not asserted)."""
    fast = open_source(write_video(tmp_path / "fast.avi", frames(10)), SourceOptions(loop=True))
    slow = open_source(write_video(tmp_path / "slow.avi", frames(12, seed=3)), SourceOptions(live=True, rate=20.0))
    sink = _Recorder()
    holder = []

    def on_result(result):
        if len(holder) == 1 and sum(r[0] == 1 for r in sink.rows) + holder[0].cameras[1].source.stats.dropped >= 12:
            holder.append("stopped")  # once: a second stop would abandon the queued frames
            holder[0].stop("slow camera done")

    try:
        pipeline = Pipeline([fast, slow], _cascade(tiny_models), [sink], max_batch=1, on_result=on_result)
        holder.append(pipeline)
        report = pipeline.run()
    finally:
        fast.close()
        slow.close()
    fast_report, slow_report = report["cameras"]
    assert fast_report["frames"] > 0 and slow_report["frames"] > 0
    assert slow_report["frames"] + slow_report["source"]["dropped"] == 12
    assert slow_report["batch_wait_max"] <= 1 and fast_report["batch_wait_max"] <= 1
    assert report["batching"]["sizes"] == {"1": report["frames"]}


class _FlakyCamera(Reader):
    """A real producer: once `plugged` is set, `good` frames at ~100 fps, then nothing until
    reopened, then `good` more and the end (a camera unplugged and plugged back)."""

    def __init__(self, good: int, plugged: threading.Event) -> None:
        self.name = "flaky"
        self.good = good
        self.left = good
        self.plugged = plugged
        self.reopened = 0
        self.stalled_at: Optional[float] = None
        self.resumed_at: Optional[float] = None

    def read(self) -> Optional[np.ndarray]:
        time.sleep(0.01)
        if not self.plugged.is_set():
            return None
        if self.left > 0:
            self.left -= 1
            return np.full((96, 480, 3), 90, np.uint8)
        if self.reopened:
            self.ended = True
        elif self.stalled_at is None:
            self.stalled_at = time.perf_counter()
        return None

    def reopen(self) -> bool:
        if self.stalled_at is None:  # not plugged in yet: nothing to reset
            return True
        self.reopened += 1
        self.left = self.good
        self.resumed_at = time.perf_counter()
        return True


def test_a_stalled_camera_reconnects_while_the_others_keep_going(tiny_models, tmp_path):
    steady = open_source(write_video(tmp_path / "steady.avi", frames(90)), SourceOptions(live=True, rate=50.0))
    plugged = threading.Event()  # the flaky camera starts once the models are warm and frames flow
    reader = _FlakyCamera(good=5, plugged=plugged)
    flaky = Source(reader, SourceOptions(timeout=0.3, reconnects=10), live=True)
    sink = _Recorder()
    try:
        report = Pipeline(
            [steady, flaky], LocalCascade(_backend(tiny_models, "classifier"), _backend(tiny_models, "segmenter")), [sink], on_result=lambda _r: plugged.set()
        ).run()
    finally:
        steady.close()
        flaky.close()
    steady_report, flaky_report = report["cameras"]
    assert reader.reopened == 1 and flaky_report["source"]["reconnects"] >= 1 and not report["source"]["error"]
    assert flaky_report["frames"] + flaky_report["source"]["dropped"] == 10
    during_stall = [r for r in sink.rows if r[0] == 0 and reader.stalled_at < r[4] < reader.resumed_at]
    assert len(during_stall) >= 5  # 0.3 s at 50 fps: the steady camera was served all along
    assert steady_report["frames"] + steady_report["source"]["dropped"] == 90
    assert report["frames"] == steady_report["frames"] + flaky_report["frames"]


def test_a_lost_camera_ends_alone_with_its_error(tiny_models, tmp_path):
    steady = open_source(write_video(tmp_path / "steady.avi", frames(40)), SourceOptions(live=True, rate=50.0))
    plugged = threading.Event()
    plugged.set()
    reader = _FlakyCamera(good=3, plugged=plugged)
    reader.reopen = lambda: False  # never comes back
    lost = Source(reader, SourceOptions(timeout=0.2, reconnects=1), live=True)
    try:
        report = Pipeline([steady, lost], _cascade(tiny_models)).run()
    finally:
        steady.close()
        lost.close()
    steady_report, lost_report = report["cameras"]
    assert "delivered no frame" in lost_report["source"]["error"]
    assert report["source"]["error"].startswith("camera 1 (flaky): ")
    assert steady_report["frames"] + steady_report["source"]["dropped"] == 40 and not steady_report["source"]["error"]


def test_run_cli_takes_several_sources_and_a_sources_file(tiny_models, clips, tmp_path):
    import json

    from typer.testing import CliRunner

    from edgeseg.cli import app

    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    listing = tmp_path / "cameras.txt"
    listing.write_text(f"# line 3\n{clips[1]}\n\n  {clips[2]}\n")
    jsonl = tmp_path / "line.jsonl"
    args = ["run", "--source", str(clips[0]), "--sources", str(listing), *models, "--json", "--max-batch", "2", "--jsonl", str(jsonl)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["frames"] for c in report["cameras"]] == [8, 10, 12] and report["frames"] == 30
    assert report["batching"]["max_batch"] == 2
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        validate_record(record)
    header, frames_ = records[0], records[1:]
    assert header["type"] == "header" and header["source"] == ", ".join(str(c) for c in clips)
    for camera, clip in enumerate(clips):  # each record names its camera; each camera's frames in order
        assert [r["frame"] for r in frames_ if r["camera"] == camera] == list(range(8 + 2 * camera))
        assert {r["item"] for r in frames_ if r["camera"] == camera} == {clip.name}

    result = CliRunner().invoke(app, ["run", "--source", str(clips[0]), "--source", str(clips[1]), *models, "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    assert "per camera" in result.stdout and "6 frames" in result.stdout

    for args, message in (
        (["--source", str(clips[0]), "--source", str(clips[1]), "--video", str(tmp_path / "out.mp4")], "take one source"),
        (["--sources", str(tmp_path / "missing.txt")], "cannot read the sources file"),
        (["--sources", str(tmp_path / "empty.txt")], "lists no source"),
        (["--camera", "0", "--sources", str(listing)], "not both"),
    ):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        result = CliRunner().invoke(app, ["run", *args, *models])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_model_with_a_fixed_batch_of_one_runs_every_camera_frame_by_frame(tiny_models, clips, tmp_path):
    """An ONNX exported with batch 1: ONNX Runtime reports max_batch 1, so the batch holds one
    frame (the segmenter, batch 1 too, is run once per gated frame) and nothing is refused."""
    import onnx

    from edgeseg.edge.card import write_card

    fixed = {}
    for task in ("classifier", "segmenter"):
        model = onnx.load(str(tiny_models[task]))
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = 1
        fixed[task] = tmp_path / f"{task}.b1.onnx"
        onnx.save(model, str(fixed[task]))
        card = read_card(tiny_models[task])
        card.input.shape[0] = 1
        card.output.shape[0] = 1
        write_card(fixed[task], card)
    classifier, segmenter = _backend(fixed, "classifier", _CallCounting), _backend(fixed, "segmenter", _CallCounting)
    sources = [open_source(clip) for clip in clips[:2]]
    try:
        report = Pipeline(sources, LocalCascade(classifier, segmenter, gate=0.0)).run()
    finally:
        for source in sources:
            source.close()
    assert classifier.max_batch == segmenter.max_batch == 1
    assert set(classifier.batches) == set(segmenter.batches) == {1}
    assert report["frames"] == 18 and report["batching"]["max_batch"] == 1 and report["gated"] == 18


def test_one_source_given_twice_is_refused(tiny_models, clips):
    from edgeseg.errors import EdgesegError

    with open_source(clips[0]) as source:
        with pytest.raises(EdgesegError, match="same Source was given twice"):
            Pipeline([source, source], _cascade(tiny_models))
