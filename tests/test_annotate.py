"""Annotated frames an operator can read: names, legend, gate decision, labels apart, specks unboxed."""
import itertools

import numpy as np
import pytest

from edge_media import frames
from edgeseg.edge.annotate import SPECK_PX, Annotator, annotate, gate_text, labels
from edgeseg.edge.postprocess import FrameResult, Segmentation

CLASSES = ["1", "2", "3", "4"]


def _result(boxes, probability=0.9, gated=True, shape=(96, 480), gate=0.5):
    areas = {name: sum(b["area"] for b in boxes if b["class"] == name) for name in CLASSES}
    return FrameResult(7, "test", 0.0, shape[0], shape[1], probability, gated, Segmentation(areas=areas, boxes=boxes), gate=gate)


def _overlap(a, b):
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def test_gate_decision_reads_as_a_comparison():
    assert gate_text(0.25, 0.05, True) == "p=0.25 >= 0.05 -> segmented"
    assert gate_text(0.01, 0.05, False) == "p=0.01 < 0.05 -> clean, not segmented"


def test_header_legend_and_names_are_all_present():
    result = _result([{"class": "2", "box": [100, 40, 60, 30], "area": 900}], gate=0.05)
    texts = [label.text for label in labels((96, 480), result, CLASSES)]
    assert texts[0] == "#7  p=0.90 >= 0.05 -> segmented"
    assert "class 2 900px" in texts and "class 4 0px" in texts  # legend: every class, its area
    assert texts[-1] == "class 2"  # the name beside its box


def test_labels_never_cover_each_other_even_when_boxes_coincide():
    same = [{"class": name, "box": [30, 20, 40, 20], "area": 800} for name in CLASSES]
    for shape in ((96, 480), (256, 1600), (64, 200)):
        placed = labels(shape, _result(same, shape=shape), CLASSES)
        names = [label.text for label in placed if label.text.startswith("class ") and not label.text.endswith("px")]
        assert len(names) == (len(CLASSES) if shape[0] >= 96 else len(names))  # a tiny frame may drop some
        for a, b in itertools.combinations(placed, 2):
            assert not _overlap(a.rect, b.rect), (shape, a.text, b.text)
        assert all(0 <= label.rect[0] and label.rect[2] < shape[1] + 4 for label in placed)
        legend = [label.text for label in placed if label.swatch is not None]
        assert legend == [f"class {name} 800px" for name in CLASSES]  # every class, in order
        if shape[0] >= 96:  # the header, legend and names all fit on a frame of a strip's proportions
            assert all(0 <= label.rect[1] and label.rect[3] < shape[0] + 4 for label in placed)


def test_specks_under_the_class_min_area_get_no_box_and_no_label():
    boxes = [
        {"class": "1", "box": [10, 50, 3, 3], "area": SPECK_PX - 1},  # a speck
        {"class": "3", "box": [200, 30, 20, 20], "area": 300},  # under class 3's min-area (400)
        {"class": "3", "box": [300, 30, 30, 20], "area": 500},
    ]
    image = frames(1)[0]
    result = _result(boxes)
    names = [label.text for label in labels(image.shape[:2], result, CLASSES, min_area=[0, 0, 400, 0])]
    assert "class 1" not in names and names.count("class 3") == 1
    canvas = annotate(image, result, CLASSES, min_area=[0, 0, 400, 0])
    # the kept box's outline is drawn in class 3's colour (BGR 255,120,0); the small one is not
    assert tuple(canvas[49, 315]) == (255, 120, 0)  # bottom edge of the kept box
    assert tuple(canvas[49, 210]) != (255, 120, 0)


def test_annotator_shows_the_gate_the_result_carries():
    image = frames(1)[0]
    unknown = Annotator(CLASSES)(image, _result([], probability=0.01, gated=False, gate=float("nan")))
    known = Annotator(CLASSES)(image, _result([], probability=0.01, gated=False, gate=0.05))
    assert not np.array_equal(unknown[:20, :300], known[:20, :300])  # the threshold is written
    assert labels(image.shape[:2], _result([], probability=0.01, gated=False, gate=0.05), CLASSES)[0].text.endswith("p=0.01 < 0.05 -> clean, not segmented")


@pytest.mark.parametrize("names", [["pits", "crack"], [str(i) for i in range(1, 9)]])
def test_real_names_stay_and_many_classes_wrap(names):
    boxes = [{"class": n, "box": [20 + 40 * i, 40, 30, 20], "area": 600} for i, n in enumerate(names)]
    areas = {n: 600 for n in names}
    result = FrameResult(0, "t", 0.0, 96, 480, 0.9, True, Segmentation(areas=areas, boxes=boxes))
    placed = labels((96, 480), result, names)
    for a, b in itertools.combinations(placed, 2):
        assert not _overlap(a.rect, b.rect), (a.text, b.text)
    assert all(label.rect[2] <= 480 + 2 for label in placed)
    if names[0] == "pits":
        assert "pits" in [label.text for label in placed]
