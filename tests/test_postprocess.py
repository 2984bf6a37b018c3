"""Post-processing: gate probability, Kaggle-style thresholds and minimum area, RLE, boxes."""
import math

import numpy as np
import pytest

from edgeseg.edge.card import ModelCard, TensorSpec
from edgeseg.edge.postprocess import MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import Preprocess
from edgeseg.edge.rle import decode
from edgeseg.errors import EdgesegError


def _card(height=32, width=160, geometry="resize", probability=(0.5, 0.5), min_area=(0, 0), activation="sigmoid"):
    return ModelCard(
        task="segmenter",
        input=TensorSpec("image", ["batch", 1, height, width]),
        output=TensorSpec("logits", ["batch", 2, height, width]),
        preprocess=Preprocess(height, width, geometry=geometry),
        classes=["scratch", "patch"],
        thresholds={"probability": list(probability), "min_area": list(min_area)},
        output_activation=activation,
    )


def _logit(p):
    return math.log(p / (1 - p))


def test_defect_probability_takes_the_most_confident_tile():
    assert defect_probability(np.array([[-3.0], [0.0], [2.0]])) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert defect_probability(np.array([[0.2], [0.7]]), activation="none") == pytest.approx(0.7)
    assert defect_probability(np.array([[-800.0]])) == pytest.approx(0.0)  # no overflow


def test_probability_threshold_and_min_area_follow_the_card():
    maps = np.full((1, 2, 32, 160), -10.0, np.float32)
    maps[0, 0, 4:14, 10:30] = _logit(0.8)  # 200 px above 0.5
    maps[0, 0, 20:22, 100:102] = _logit(0.8)  # 4 px: removed by min_area 10
    maps[0, 1, 0:5, 0:5] = _logit(0.55)  # under class 2's 0.6 threshold
    post = MaskPostprocess(_card(probability=(0.5, 0.6), min_area=(10, 0)))
    result = post(maps, (32, 160))
    assert result.areas == {"scratch": 200, "patch": 0}
    assert list(result.masks) == ["scratch"] and list(result.rle) == ["scratch"]
    assert np.array_equal(decode(result.rle["scratch"], (32, 160)), result.masks["scratch"])
    assert result.boxes == [{"class": "scratch", "box": [10, 4, 20, 10], "area": 200}]


def test_overrides_replace_the_card_thresholds():
    maps = np.full((1, 2, 32, 160), -10.0, np.float32)
    maps[0, 1, 0:4, 0:4] = _logit(0.55)
    assert MaskPostprocess(_card(probability=(0.5, 0.6)), probability=[0.5, 0.5])(maps, (32, 160)).areas["patch"] == 16
    assert MaskPostprocess(_card(), min_area=[0, 17])(maps, (32, 160)).areas["patch"] == 0


def test_masks_come_back_in_frame_pixels():
    maps = np.full((1, 2, 32, 160), -10.0, np.float32)
    maps[0, 0, 8:24, 40:80] = 10.0  # a quarter of the height, a quarter of the width
    result = MaskPostprocess(_card())(maps, (64, 320))
    mask = result.masks["scratch"]
    assert mask.shape == (64, 320)
    ys, xs = np.nonzero(mask)
    assert 15 <= ys.min() <= 17 and 46 <= ys.max() <= 48 and 79 <= xs.min() <= 81 and 158 <= xs.max() <= 160


def test_tiles_are_stitched_into_the_frame():
    card = _card(geometry="tile")
    maps = np.full((2, 2, 32, 160), -10.0, np.float32)  # a 32x320 frame = two tiles side by side
    maps[1, 1, 0:8, 0:16] = 10.0  # second tile, starts at x=160
    result = MaskPostprocess(card)(maps, (32, 320))
    assert result.boxes == [{"class": "patch", "box": [160, 0, 16, 8], "area": 128}]


def test_masks_larger_than_16_bit_labels_allow():
    maps = np.full((1, 2, 256, 320), 10.0, np.float32)  # 81920 pixels in one class
    maps[0, 1] = -10.0
    result = MaskPostprocess(_card(height=256, width=320))(maps, (256, 320))
    assert result.areas["scratch"] == 256 * 320 and result.boxes[0]["box"] == [0, 0, 320, 256]


def test_probabilities_without_sigmoid():
    maps = np.zeros((1, 2, 32, 160), np.float32)
    maps[0, 0, :2, :2] = 0.9
    assert MaskPostprocess(_card(activation="none"))(maps, (32, 160)).areas == {"scratch": 4, "patch": 0}


def test_mean_probability_is_taken_over_the_kept_pixels_only():
    maps = np.full((1, 2, 32, 160), -10.0, np.float32)
    maps[0, 0, 4:14, 10:30] = _logit(0.9)
    maps[0, 0, 4:14, 10:20] = _logit(0.7)  # half the component at 0.7, half at 0.9
    maps[0, 0, 30:32, 150:152] = _logit(0.99)  # removed by min_area: must not count
    result = MaskPostprocess(_card(min_area=(10, 0)))(maps, (32, 160))
    assert result.mean_probability == {"scratch": pytest.approx(0.8, abs=1e-6)}
    plain = np.zeros((1, 2, 32, 160), np.float32)
    plain[0, 1, :2, :2] = 0.9
    assert MaskPostprocess(_card(activation="none"))(plain, (32, 160)).mean_probability == {"patch": pytest.approx(0.9)}


def test_a_clean_frame_has_empty_results():
    result = MaskPostprocess(_card())(np.full((1, 2, 32, 160), -5.0, np.float32), (32, 160))
    assert result.areas == {"scratch": 0, "patch": 0} and not result.masks and not result.rle and not result.boxes
    assert not result.mean_probability


def test_mismatched_thresholds_and_outputs_are_refused():
    with pytest.raises(EdgesegError, match="2 classes but 1 probability"):
        MaskPostprocess(_card(probability=(0.5,)))
    with pytest.raises(EdgesegError, match="class maps"):
        MaskPostprocess(_card())(np.zeros((1, 3, 32, 160), np.float32), (32, 160))
