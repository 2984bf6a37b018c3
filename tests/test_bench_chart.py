"""The bench bar chart: bars scaled to their values, one colour per backend, n/a rows bare."""
import math

import cv2
import numpy as np
import pytest

from edgeseg.bench.chart import WIDTH, Bar, bar_chart
from edgeseg.errors import EdgesegError


def _bars(image):
    """[(length in px, BGR colour)] of the filled bars, top to bottom: bands of rows holding
    saturated pixels (text, grid and whiskers are grey), each bar's length its longest row run."""
    saturated = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
    rows = np.flatnonzero(saturated.any(axis=1))
    found = []
    for band in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
        lengths = saturated[band].sum(axis=1)
        row = band[int(np.argmax(lengths))]
        columns = np.flatnonzero(saturated[row])
        assert columns[-1] - columns[0] + 1 == len(columns), "a bar is one solid run"
        found.append((len(columns), tuple(int(c) for c in image[row, columns[0]])))
    return found


def test_bar_lengths_follow_values_and_colours_follow_backends(tmp_path):
    groups = {
        "segmenter": [
            Bar("tensorrt fp16", 2.0, low=1.8, high=2.6),
            Bar("onnxruntime fp32", 10.0),
            Bar("pytorch fp32", math.nan),
            Bar("onnxruntime int8", 7.0, low=6.5, high=9.0),
        ],
        "classifier": [Bar("tensorrt fp16", 0.5), Bar("onnxruntime fp32", 1.5, low=1.2, high=1.9), Bar("pytorch fp32", -1.0)],
    }
    path = bar_chart(tmp_path / "latency.png", "latency per backend", groups)
    assert path == tmp_path / "latency.png" and sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] == WIDTH and image.shape[0] > 300
    assert (image < 200).any(axis=2).mean() > 0.01  # text, bars and axes, not a blank page

    bars = _bars(image)
    assert len(bars) == 5, bars  # the two n/a rows draw nothing
    (trt, _), (ort, _), (ort_int8, _), (trt_cls, _), (ort_cls, _) = bars
    assert trt / ort == pytest.approx(2.0 / 10.0, rel=0.03)
    assert ort_int8 / ort == pytest.approx(7.0 / 10.0, rel=0.03)
    assert trt_cls / ort_cls == pytest.approx(0.5 / 1.5, rel=0.03)
    colours = [colour for _, colour in bars]
    assert colours[0] == colours[3] and colours[1] == colours[2] == colours[4] and colours[0] != colours[1]


def test_chart_grows_with_bars(tmp_path):
    one = cv2.imread(str(bar_chart(tmp_path / "one.png", "t", {"g": [Bar("onnxruntime fp32", 1.0)]})))
    many = cv2.imread(str(bar_chart(tmp_path / "many.png", "t", {"g": [Bar(f"custom{i} fp32", i + 1.0) for i in range(8)]})))
    assert many.shape[0] > one.shape[0] and many.shape[1] == one.shape[1] == WIDTH
    assert len(_bars(many)) == 8 and len({colour for _, colour in _bars(many)}) > 1


def test_nothing_to_chart_is_an_error(tmp_path):
    with pytest.raises(EdgesegError, match="no groups"):
        bar_chart(tmp_path / "c.png", "t", {})
    with pytest.raises(EdgesegError, match="classifier"):
        bar_chart(tmp_path / "c.png", "t", {"segmenter": [Bar("onnxruntime fp32", 1.0)], "classifier": []})
    with pytest.raises(EdgesegError, match="PNG"):
        bar_chart(tmp_path / "c.jpg", "t", {"segmenter": [Bar("onnxruntime fp32", 1.0)]})
    assert list(tmp_path.iterdir()) == []


def test_log_axis_gives_each_decade_the_same_length(tmp_path):
    """2 ms and 2 s bars both readable: on the log axis 10 -> 100 and 100 -> 1000 ms are equally long."""
    groups = {"segmenter": [Bar("tensorrt fp16", 10.0), Bar("onnxruntime fp32", 100.0), Bar("pytorch fp32", 1000.0)]}
    image = cv2.imread(str(bar_chart(tmp_path / "log.png", "t", groups, log=True)))
    (small, _), (middle, _), (large, _) = _bars(image)
    assert middle - small == pytest.approx(large - middle, abs=3)
    assert small > 0  # the smallest bar still shows


def test_bench_chart_title_names_the_date_and_machine_and_gemm_over_100_is_explained(tmp_path):
    from edgeseg.bench.report import GEMM_NOTE, chart, chart_title, markdown, rows

    host = {"median": 5.0, "min": 4.0, "p90": 6.0, "p99": 7.0}
    row = {"name": "s", "backend": "onnxruntime", "precision": "int8", "batch": 1, "throughput": 200.0, "efficiency": 2.5,
           "latency_ms": {"host": host}, "cv": 0.01}
    document = {"date": "2026-12-01T22:00:00+00:00", "environment": {"cpu": {"model": "Test CPU"}, "gpus": []}, "settings": {
        "warmup_s": 0, "min_iterations": 1, "duration_s": 0, "baseline": "onnxruntime fp32"}, "results": [row], "pipeline": []}
    assert "250*" in rows(document)[0]
    assert GEMM_NOTE in markdown(document)
    assert chart(document, tmp_path / "c.png").is_file()
    title = chart_title(document)
    assert "2026-12-01T22:00" in title and "Test CPU" in title


def test_a_long_title_wraps_inside_the_png(tmp_path):
    """The title of a machine with a long CPU and GPU name: every line, measured as drawn, fits
    between the margins, no word is lost, and the PNG's right margin stays blank beside it."""
    from edgeseg.bench.chart import MARGIN, TITLE_LINE, TITLE_SCALE, TITLE_THICKNESS, WIDTH, _text_width, wrap
    from edgeseg.bench.report import chart, chart_title

    host = {"median": 5.0, "min": 4.0, "p90": 6.0, "p99": 7.0}
    row = {"name": "segmenter", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "throughput": 200.0, "latency_ms": {"host": host}}
    gpus = [{"name": "NVIDIA RTX 6000 Ada Generation"}, {"name": "NVIDIA H100 80GB HBM3"}]
    document = {"date": "2026-12-01T22:00:00+00:00", "environment": {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+ Processor"}, "gpus": gpus},
                "results": [row]}
    title = chart_title(document)
    lines = wrap(title, WIDTH - 2 * MARGIN, TITLE_SCALE, TITLE_THICKNESS)
    assert len(lines) > 1 and " ".join(lines) == title
    assert all(_text_width(line, TITLE_SCALE, TITLE_THICKNESS) <= WIDTH - 2 * MARGIN for line in lines)
    image = cv2.imread(str(chart(document, tmp_path / "c.png")))
    title_band = image[: len(lines) * TITLE_LINE]
    assert (title_band[:, WIDTH - MARGIN + 2 :] == 255).all()  # nothing drawn in the right margin
