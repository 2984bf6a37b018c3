"""Synthetic strips: deterministic, Severstal-like class mix, masks exactly where defects are drawn."""
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.data.severstal import IMAGE_HEIGHT, IMAGE_WIDTH, load_image, scan
from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng, write_synthetic
from edgeseg.errors import EdgesegError


def test_same_seed_same_files_and_other_seed_differs(tmp_path):
    a = write_synthetic(tmp_path / "a", 4, seed=5)
    b = write_synthetic(tmp_path / "b", 4, seed=5)
    write_synthetic(tmp_path / "c", 4, seed=6)
    assert (tmp_path / "a/train.csv").read_text() == (tmp_path / "b/train.csv").read_text()
    for name in sorted(p.name for p in (tmp_path / "a/train_images").iterdir()):
        assert (tmp_path / "a/train_images" / name).read_bytes() == (tmp_path / "b/train_images" / name).read_bytes()
    first_a = sorted((tmp_path / "a/train_images").iterdir())[0].read_bytes()
    first_c = sorted((tmp_path / "c/train_images").iterdir())[0].read_bytes()
    assert first_a != first_c
    assert a.to_dict()["class_counts"] == b.to_dict()["class_counts"]


def test_strip_i_does_not_depend_on_set_size(tmp_path):
    write_synthetic(tmp_path / "two", 2, seed=3)
    write_synthetic(tmp_path / "three", 3, seed=3)
    for name in ("s3_000000.jpg", "s3_000001.jpg"):
        assert (tmp_path / "two/train_images" / name).read_bytes() == (tmp_path / "three/train_images" / name).read_bytes()


def test_class_mix_is_severstal_like():
    draws = [sample_defect_classes(strip_rng(11, i)) for i in range(2000)]
    clean = sum(1 for d in draws if not d) / len(draws)
    counts = Counter(c for d in draws for c in d)
    assert 0.45 < clean < 0.55
    assert set(counts) == {1, 2, 3, 4}
    assert counts[3] == max(counts.values()) and counts[3] > 1.5 * max(counts[c] for c in (1, 2, 4))


@pytest.mark.parametrize("cls", [1, 2, 3, 4])
def test_masks_are_exactly_where_the_defect_is_drawn(cls):
    clean, no_masks = make_strip(strip_rng(21, cls), [])
    image, masks = make_strip(strip_rng(21, cls), [cls])  # same texture, plus one defect
    assert image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and image.dtype == np.uint8
    assert masks.shape == (4, IMAGE_HEIGHT, IMAGE_WIDTH) and no_masks.sum() == 0
    inside = masks[cls - 1].astype(bool)
    assert inside.sum() > 50
    assert all(masks[c].sum() == 0 for c in range(4) if c != cls - 1)
    diff = np.abs(image.astype(int) - clean.astype(int))
    assert diff[~inside].max() == 0  # nothing drawn outside the mask
    assert diff[inside].mean() > 20  # and the defect is visible inside it
    assert np.mean(diff[inside] > 5) > 0.9


def test_classes_have_distinct_shapes():
    areas, widths = {}, {}
    for cls in (1, 2, 3, 4):
        sizes, spans = [], []
        for i in range(6):
            _, masks = make_strip(strip_rng(31, i), [cls])
            ys, xs = np.nonzero(masks[cls - 1])
            sizes.append(ys.size)
            spans.append((xs.max() - xs.min()) / max(ys.max() - ys.min(), 1))
        areas[cls], widths[cls] = np.median(sizes), np.median(spans)
    assert areas[4] > areas[3] and areas[4] > areas[1]  # patches are the large ones
    assert widths[3] > 5 and widths[2] < 2  # scratches run along the strip, cracks across


def test_written_set_reads_back_exactly(tmp_path):
    summary = write_synthetic(tmp_path, 6, seed=9)
    data = scan(tmp_path)
    assert data.problems == [] and len(data.samples) == 6
    assert summary.clean == sum(1 for s in data.samples if not s.has_defect)
    for index, sample in enumerate(data.samples):
        rng = strip_rng(9, index)
        classes = sample_defect_classes(rng)
        image, masks = make_strip(rng, classes)
        assert sample.classes == classes
        assert np.array_equal(sample.masks(), masks)
        jpeg = load_image(sample.path)
        assert np.abs(jpeg.astype(int) - image.astype(int)).mean() < 3  # JPEG q95


def test_cli_synth(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "d"), "--count", "3", "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert '"count": 3' in result.output
    assert len(list((tmp_path / "d/train_images").glob("*.jpg"))) == 3
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "e"), "--count", "0"])
    assert result.exit_code == 2 and "--count" in result.output  # a usage error, refused by the parser


def test_unknown_class_is_rejected():
    with pytest.raises(EdgesegError, match="unknown defect class 5"):
        make_strip(strip_rng(0, 0), [5])
