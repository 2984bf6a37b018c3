"""The threaded cascade on real encoded video and real (tiny) ONNX models."""
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edge_media import count_video_frames, frames, write_video
from edgeseg.edge.backends import open_backend
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.card import read_card
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.postprocess import MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import preprocess
from edgeseg.edge.records import validate_record
from edgeseg.edge.sinks import JsonlSink, Sink, VideoSink
from edgeseg.edge.sources import SourceOptions, open_source
from edgeseg.errors import EdgesegError

FRAMES = 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    return write_video(folder / "clip.avi", frames(FRAMES))


def _cascade(models, classifier=None, segmenter=None, gate=None):
    """The local cascade of the tiny models, or of the backends given in their place."""
    return LocalCascade(classifier or open_backend(models["classifier"]), segmenter or open_backend(models["segmenter"]), gate=gate)


def _run(models, uri, sinks=(), options=None, gate=None, **kwargs):
    with open_source(uri, options or SourceOptions()) as source:
        pipeline = Pipeline(source, _cascade(models, gate=gate), sinks, **kwargs)
        return pipeline.run()


def _records(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validate_record(record)
    return records


def test_every_frame_reaches_jsonl_and_video_with_the_card_gate(tiny_models, clip, tmp_path):
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    sinks = [JsonlSink(jsonl), VideoSink(video, read_card(tiny_models["segmenter"]).classes, fps=25)]
    try:
        report = _run(tiny_models, clip, sinks)
    finally:
        for sink in sinks:
            sink.close()
    records = _records(jsonl)
    assert report["frames"] == len(records) == FRAMES == count_video_frames(video)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    gate = read_card(tiny_models["classifier"]).thresholds["defect"]
    assert report["gate"] == gate
    assert all(r["gated"] == (r["defect_probability"] >= gate) for r in records)
    assert report["gated"] == sum(r["gated"] for r in records)
    assert report["source"]["dropped"] == 0 and report["stopped_by"] == "end of source"
    assert set(report["backends"]) == {"classifier", "segmenter"}
    for stage in ("glass_to_glass", "capture", "preprocess", "classifier", "postprocess", "sink"):
        assert report["latency_ms"][stage]["count"] == FRAMES
    assert report["fps"] > 0


def test_results_equal_a_bare_loop_over_the_same_frames(tiny_models, clip, tmp_path):
    """Threads change nothing: same probabilities and masks as calling the models in order."""
    jsonl = tmp_path / "out.jsonl"
    with JsonlSink(jsonl) as sink:
        _run(tiny_models, clip, [sink], gate=0.0)
    records = _records(jsonl)
    cls_card, seg_card = read_card(tiny_models["classifier"]), read_card(tiny_models["segmenter"])
    post = MaskPostprocess(seg_card)
    with open_backend(tiny_models["classifier"]) as classifier, open_backend(tiny_models["segmenter"]) as segmenter:
        with open_source(clip) as source:
            for frame, record in zip(source, records):
                scores = classifier.infer({cls_card.input.name: preprocess(frame.image, cls_card.preprocess)})
                assert record["defect_probability"] == pytest.approx(defect_probability(scores[cls_card.output.name]), abs=1e-6)
                maps = segmenter.infer({seg_card.input.name: preprocess(frame.image, seg_card.preprocess)})
                areas = {name: entry["area"] for name, entry in record["classes"].items()}
                assert areas == post(maps[seg_card.output.name], frame.image.shape[:2]).areas


@pytest.mark.parametrize("gate, expected", [(1.01, 0), (0.0, FRAMES)])
def test_gate_decides_whether_the_segmenter_runs(tiny_models, clip, tmp_path, gate, expected):
    jsonl = tmp_path / "out.jsonl"
    with JsonlSink(jsonl) as sink:
        report = _run(tiny_models, clip, [sink], gate=gate)
    records = _records(jsonl)
    assert report["gated"] == sum(r["gated"] for r in records) == expected
    assert report["latency_ms"].get("segmenter", {"count": 0})["count"] == expected
    assert all(("segmenter" in r["latency_ms"]) == r["gated"] for r in records)


def test_max_frames_and_stop_end_the_run_with_complete_output(tiny_models, clip, tmp_path):
    report = _run(tiny_models, clip, options=SourceOptions(loop=True), max_frames=4)
    assert report["frames"] == 4 and report["stopped_by"] == "max frames"

    jsonl = tmp_path / "out.jsonl"
    with open_source(clip, SourceOptions(loop=True)) as source, JsonlSink(jsonl) as sink:
        holder = []

        def on_result(result):
            if result.index == 5:
                holder[0].stop("test stop")

        pipeline = Pipeline(source, _cascade(tiny_models), [sink], on_result=on_result)
        holder.append(pipeline)
        report = pipeline.run()
    records = _records(jsonl)
    assert report["stopped_by"] == "test stop"
    assert 6 <= report["frames"] == len(records) <= 6 + 6  # only frames already queued finish
    assert [r["frame"] for r in records] == list(range(len(records)))


def test_a_second_stop_abandons_the_queued_frames(tiny_models, clip, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    with open_source(clip, SourceOptions(loop=True)) as source, JsonlSink(jsonl) as sink:
        holder = []

        def on_result(result):
            if result.index == 2:
                holder[0].stop("first")
                holder[0].stop("second")

        pipeline = Pipeline(source, _cascade(tiny_models), [sink], on_result=on_result)
        holder.append(pipeline)
        report = pipeline.run()
    assert report["frames"] == len(_records(jsonl)) == 3 and report["stopped_by"] == "first"


class _SlowSink(Sink):
    def __init__(self, seconds):
        self.seconds = seconds

    def write(self, frame, result):
        time.sleep(self.seconds)


def test_live_source_drops_frames_a_slow_pipeline_cannot_take(tiny_models, tmp_path):
    clip = write_video(tmp_path / "live.avi", frames(30))
    report = _run(tiny_models, clip, [_SlowSink(0.05)], options=SourceOptions(live=True, rate=100.0))
    assert report["source"]["live"] and report["source"]["dropped"] > 0
    assert report["frames"] + report["source"]["dropped"] <= 30
    assert report["frames"] < 30


class _SlowBackend(OnnxRuntimeBackend):
    """The real ONNX Runtime backend taking `delay` s longer per run (a heavier model)."""

    def __init__(self, *args, delay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay

    def _infer_impl(self, feed):
        time.sleep(self.delay)
        return super()._infer_impl(feed)


def test_queue_wait_is_reported_apart_from_processing(tiny_models, clip, tmp_path):
    """A file read ahead of a slow classifier: its frames wait in the queue, and that wait is
    the `queue` stage, not processing; glass-to-glass stays the whole time."""
    delay = 0.06
    classifier = _SlowBackend(tiny_models["classifier"], read_card(tiny_models["classifier"]), delay=delay)
    jsonl = tmp_path / "out.jsonl"
    with open_source(clip) as source, JsonlSink(jsonl) as sink:
        report = Pipeline(source, _cascade(tiny_models, classifier, gate=1.01), [sink], queue_size=2).run()
    latency = report["latency_ms"]
    assert latency["queue"]["count"] == latency["processing"]["count"] == FRAMES
    # a full queue of two frames ahead of a 60 ms classifier: later frames wait >= one run
    assert latency["queue"]["median"] >= delay * 1000
    assert latency["processing"]["max"] < latency["glass_to_glass"]["median"]
    records = _records(jsonl)
    assert all("queue" in r["latency_ms"] for r in records)
    assert all(r["latency_ms"]["classifier"] >= delay * 1000 for r in records)


def test_paced_file_counts_every_unprocessed_frame_as_dropped(tiny_models, tmp_path):
    """--rate over a short clip: the frames that came while the models warmed up are dropped
    too, so processed + dropped is the whole clip."""
    clip = write_video(tmp_path / "paced.avi", frames(30))
    classifier = _SlowBackend(tiny_models["classifier"], read_card(tiny_models["classifier"]), delay=0.3)  # slow warm-up
    with open_source(clip, SourceOptions(live=True, rate=60.0)) as source:
        report = Pipeline(source, _cascade(tiny_models, classifier)).run()
    stats = report["source"]
    assert report["frames"] + stats["dropped"] + stats["corrupt"] == 30
    assert stats["dropped_warmup"] > 0 and stats["dropped"] >= stats["dropped_warmup"]


class _ThreadRecordingBackend(OnnxRuntimeBackend):
    """The real ONNX Runtime backend, noting which thread makes each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = {"activate": set(), "infer": set(), "deactivate": set()}

    def _activate_impl(self):
        self.threads["activate"].add(threading.get_ident())
        super()._activate_impl()

    def _infer_impl(self, feed):
        self.threads["infer"].add(threading.get_ident())
        return super()._infer_impl(feed)

    def _deactivate_impl(self):
        self.threads["deactivate"].add(threading.get_ident())
        super()._deactivate_impl()


def test_one_worker_thread_activates_runs_and_deactivates_the_backends(tiny_models, clip):
    """The contract TensorRT + pycuda rely on: one thread owns each backend for its lifetime."""
    backends = [_ThreadRecordingBackend(tiny_models[t], read_card(tiny_models[t])) for t in ("classifier", "segmenter")]
    with open_source(clip) as source:
        Pipeline(source, LocalCascade(backends[0], backends[1], gate=0.0)).run()
    owners = set().union(*(ids for b in backends for ids in b.threads.values()))
    assert len(owners) == 1 and threading.get_ident() not in owners
    assert all(not b.is_active for b in backends)


def test_a_backend_failure_stops_every_thread_and_is_raised(tiny_models, clip, tmp_path):
    broken = tmp_path / "segmenter.onnx"
    broken.write_bytes(b"not onnx")
    segmenter = OnnxRuntimeBackend(broken, read_card(tiny_models["segmenter"]))
    jsonl = tmp_path / "out.jsonl"
    jsonl.write_text("earlier run\n")
    before = threading.active_count()
    with open_source(clip) as source, JsonlSink(jsonl) as sink:
        with pytest.raises(EdgesegError, match="ONNX Runtime cannot load"):
            Pipeline(source, _cascade(tiny_models, segmenter=segmenter), [sink]).run()
    assert jsonl.read_text() == "earlier run\n"  # no frame came: the earlier output stays
    assert threading.active_count() <= before


def test_models_given_in_the_wrong_roles_are_refused(tiny_models):
    with pytest.raises(EdgesegError, match="segmenter model but was given as the classifier"):
        LocalCascade(open_backend(tiny_models["segmenter"]), open_backend(tiny_models["segmenter"]))


def test_tiled_frames_are_batched_and_stitched(tiny_models, tmp_path):
    """A classifier card with tile geometry: each wide frame becomes a batch of tiles."""
    import shutil

    from edgeseg.edge.card import card_path, write_card
    from edgeseg.edge.preprocess import Preprocess

    target = tmp_path / "classifier.onnx"
    shutil.copy(tiny_models["classifier"], target)
    card = read_card(tiny_models["classifier"])
    spec = card.preprocess
    card.preprocess = Preprocess(spec.height, spec.width, spec.mean, spec.std, geometry="tile")
    write_card(target, card)
    assert card_path(target).is_file()
    clip = write_video(tmp_path / "wide.avi", frames(3, height=2 * spec.height, width=3 * spec.width))
    with open_source(clip) as source:
        report = Pipeline(source, _cascade(tiny_models, open_backend(target), gate=0.0)).run()
    assert report["frames"] == 3 and report["gated"] == 3


def test_runtime_modules_do_not_import_torch():
    modules = ["sources", "pipeline", "postprocess", "sinks", "latency", "backends", "backends.onnxruntime"]
    code = (
        "import sys\n"
        + "".join(f"import edgeseg.edge.{m}\n" for m in modules)
        + "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_latency_summary_statistics():
    from edgeseg.edge.latency import summarize

    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["count"] == 5 and stats["median"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["mean"] == pytest.approx(22.0) and stats["p99"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 99))
    assert stats["cv"] == pytest.approx(np.std([1, 2, 3, 4, 100]) / 22.0)
    assert summarize([]) == {"count": 0}


class _StuckSegmenter(OnnxRuntimeBackend):
    """The real segmenter, except that from its `stuck_from`-th frame on a run blocks until
    `release` is set: an inference call that no stop can interrupt."""

    stuck_from = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def _infer_impl(self, feed):
        self.calls += 1
        if self.calls > self.stuck_from:  # the first call is the warm-up
            self.entered.set()
            self.release.wait(60)
        return super()._infer_impl(feed)


def test_a_second_stop_returns_at_once_even_while_inference_is_stuck(tiny_models, clip, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    segmenter = _StuckSegmenter(tiny_models["segmenter"], read_card(tiny_models["segmenter"]))
    stopped = []
    with open_source(clip) as source, JsonlSink(jsonl) as sink:
        written = threading.Semaphore(0)
        pipeline = Pipeline(source, _cascade(tiny_models, segmenter=segmenter, gate=0.0), [sink], on_result=lambda _r: written.release())

        def stop_twice():
            segmenter.entered.wait(60)
            for _ in range(segmenter.stuck_from - 1):  # the frames inferred before the stuck call are out
                written.acquire(timeout=60)
            pipeline.stop("first")
            pipeline.stop("second")
            stopped.append(time.perf_counter())

        timer = threading.Thread(target=stop_twice)
        timer.start()
        report = pipeline.run()
        returned = time.perf_counter()
        timer.join()
    segmenter.release.set()
    assert segmenter.entered.is_set() and returned - stopped[0] < 15  # the stuck call would hold it 60 s
    frames = [r for r in _records(jsonl) if r["type"] == "frame"]
    assert report["frames"] == segmenter.stuck_from - 1 == len(frames)
