"""Severstal reader (both CSV forms), bad-input reporting, and the torch datasets."""
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.data.severstal import IMAGE_HEIGHT, IMAGE_WIDTH, load_image, load_images, read_annotations, scan
from edgeseg.data.synth import make_strip, strip_rng
from edgeseg.edge.rle import encode
from edgeseg.errors import EdgesegError


def _folder(root: Path, strips, header, rows_for):
    """Write strips [(image_id, image, masks)] and a train.csv in the given form."""
    (root / "train_images").mkdir(parents=True)
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for image_id, image, masks in strips:
            cv2.imwrite(str(root / "train_images" / image_id), image)
            writer.writerows(rows_for(image_id, masks))
    return root


def _strips(count=3):
    classes = [(3,), (), (1, 4)]
    out = []
    for i in range(count):
        image, masks = make_strip(strip_rng(7, i), classes[i % 3])
        out.append((f"img{i}.jpg", image, masks))
    return out


def _split_rows(image_id, masks):
    return [(image_id, c + 1, encode(m)) for c, m in enumerate(masks) if m.any()]


def _combined_rows(image_id, masks):
    return [(f"{image_id}_{c + 1}", encode(m)) for c, m in enumerate(masks)]


@pytest.mark.parametrize(
    "header,rows_for",
    [(["ImageId", "ClassId", "EncodedPixels"], _split_rows), (["ImageId_ClassId", "EncodedPixels"], _combined_rows)],
    ids=["split-form", "combined-form"],
)
def test_both_csv_forms_give_the_same_samples(tmp_path, header, rows_for):
    strips = _strips()
    data = scan(_folder(tmp_path, strips, header, rows_for))
    assert data.problems == []
    assert [s.image_id for s in data.samples] == [s[0] for s in strips]
    for sample, (_, _, masks) in zip(data.samples, strips):
        assert np.array_equal(sample.masks(), masks)
        assert sample.has_defect == bool(masks.any())
        assert sample.classes == tuple(c + 1 for c in range(4) if masks[c].any())


def test_missing_csv_is_one_line_error_naming_the_folder(tmp_path):
    (tmp_path / "train_images").mkdir()
    with pytest.raises(EdgesegError) as info:
        scan(tmp_path)
    assert "train.csv" in str(info.value) and str(tmp_path) in str(info.value)
    result = CliRunner().invoke(app, ["data", "check", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "train.csv" in result.output and "Traceback" not in result.output


def test_unknown_header_is_fatal(tmp_path):
    (tmp_path / "train.csv").write_text("a,b,c\n")
    with pytest.raises(EdgesegError, match="unknown header"):
        read_annotations(tmp_path / "train.csv")


def test_bad_rows_and_images_are_reported_and_skipped(tmp_path):
    strips = _strips()
    root = _folder(tmp_path, strips, ["ImageId", "ClassId", "EncodedPixels"], _split_rows)
    first_bad = len((root / "train.csv").read_text().splitlines()) + 1  # 1-based file line
    with open(root / "train.csv", "a", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img1.jpg", 2, "10 5 7"])  # odd count: malformed RLE
        writer.writerow(["img1.jpg", 9, "1 1"])  # no such class
        writer.writerow(["ghost.jpg", 1, "1 1"])  # no such image
    cv2.imwrite(str(root / "train_images" / "small.jpg"), np.zeros((100, 200), np.uint8))
    (root / "train_images" / "broken.jpg").write_bytes(b"not a jpeg")

    data = scan(root)
    problems = "\n".join(data.problems)
    assert f"train.csv row {first_bad}: img1.jpg class 2: RLE has an odd number" in problems
    assert f"train.csv row {first_bad + 1}: bad image id 'img1.jpg' or class 9" in problems
    assert "ghost.jpg" in problems
    assert data.left_out == ["img1.jpg"]  # its class-2 defect is unknown, not absent: not a sample

    readable = [s.image_id for s, _ in load_images(data)]
    assert readable == ["img0.jpg", "img2.jpg"]
    assert any("small.jpg" in p and "200x100" in p for p in data.problems)
    assert any("broken.jpg" in p and "unreadable" in p for p in data.problems)
    assert all("\n" not in p for p in data.problems)

    result = CliRunner().invoke(app, ["data", "check", "--data", str(root), "--json"])
    assert result.exit_code == 1 and '"readable": 2' in result.output


def test_an_image_whose_every_row_is_malformed_is_left_out_and_counted(tmp_path):
    strips = _strips()
    root = _folder(tmp_path, strips, ["ImageId", "ClassId", "EncodedPixels"], _split_rows)
    rows = [line for line in (root / "train.csv").read_text().splitlines() if not line.startswith("img0.jpg")]
    rows += ["img0.jpg,3,10 5 7", "img0.jpg,1,-4 10", f"img0.jpg,4,{IMAGE_HEIGHT * IMAGE_WIDTH} 10"]  # odd, negative, past the end
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    data = scan(root)
    assert [s.image_id for s in data.samples] == ["img1.jpg", "img2.jpg"]  # img0 is not a clean strip
    assert data.left_out == ["img0.jpg"] and len(data.problems) == 3
    assert all("img0.jpg" in p and "left out" in p for p in data.problems)
    result = CliRunner().invoke(app, ["data", "check", "--data", str(root), "--json"])
    assert result.exit_code == 1 and '"left_out": [\n    "img0.jpg"\n  ]' in result.output


@pytest.mark.parametrize(
    "header, rows",
    [
        (["ImageId", "ClassId", "EncodedPixels"], ["img0.jpg,7,1 10", "img0.jpg,three,1 10", "img0.jpg,3", "img0.jpg,3,1 10,extra"]),
        (["ImageId_ClassId", "EncodedPixels"], ["img0.jpg_7,1 10", "img0.jpg_x,1 10", "img0.jpg_3", "img0.jpg_4,1 10,extra"]),
    ],
    ids=["split-form", "combined-form"],
)
def test_an_image_whose_rows_have_bad_classes_or_fields_is_left_out_and_counted(tmp_path, header, rows):
    strips = _strips()
    root = _folder(tmp_path, strips, header, _split_rows if len(header) == 3 else _combined_rows)
    kept = [line for line in (root / "train.csv").read_text().splitlines() if not line.startswith("img0.jpg")]
    for row in rows:  # each malformed row alone makes img0 unknown
        (root / "train.csv").write_text("\n".join(kept + [row]) + "\n")
        data = scan(root)
        assert [s.image_id for s in data.samples] == ["img1.jpg", "img2.jpg"], row  # img0 is not a clean strip
        assert data.left_out == ["img0.jpg"] and len(data.problems) == 1 and "left out" in data.problems[0], row


def test_a_train_csv_with_a_utf8_byte_order_mark_reads_like_one_without(tmp_path):
    strips = _strips()
    root = _folder(tmp_path, strips, ["ImageId", "ClassId", "EncodedPixels"], _split_rows)
    plain = scan(root)
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + (root / "train.csv").read_bytes())  # Excel's "CSV UTF-8"
    marked = scan(root)
    assert marked.problems == [] and marked.samples == plain.samples and any(s.has_defect for s in marked.samples)


def test_load_image_names_the_file(tmp_path):
    path = tmp_path / "wide.jpg"
    cv2.imwrite(str(path), np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH + 16), np.uint8))
    with pytest.raises(EdgesegError, match="wide.jpg"):
        load_image(path)
    with pytest.raises(EdgesegError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    assert load_image(path, shape=None).shape == (IMAGE_HEIGHT, IMAGE_WIDTH + 16)


# --- torch datasets -------------------------------------------------------------------------


def _items():
    torch = pytest.importorskip("torch")  # noqa: F841
    from edgeseg.data.severstal import Sample

    samples, images = [], []
    for image_id, image, masks in _strips():
        samples.append(Sample(image_id, Path(image_id), tuple(encode(m) for m in masks)))
        images.append(image)
    return samples, images


def test_segmentation_dataset_full_frames_match_runtime_preprocess():
    from edgeseg.data.datasets import SegmentationDataset
    from edgeseg.edge.preprocess import Preprocess, preprocess

    samples, images = _items()
    spec = Preprocess(IMAGE_HEIGHT, IMAGE_WIDTH, mean=0.5, std=0.2)
    x, y = SegmentationDataset(samples, images, spec)[2]
    assert x.shape == (1, IMAGE_HEIGHT, IMAGE_WIDTH) and y.shape == (4, IMAGE_HEIGHT, IMAGE_WIDTH)
    np.testing.assert_array_equal(x.numpy(), preprocess(images[2], spec)[0])
    np.testing.assert_array_equal(y.numpy(), samples[2].masks().astype(np.float32))


def test_segmentation_crops_keep_image_and_mask_aligned():
    from edgeseg.data.datasets import SegmentationDataset
    from edgeseg.edge.preprocess import Preprocess

    samples, images = _items()
    spec = Preprocess(IMAGE_HEIGHT, IMAGE_WIDTH, mean=0.0, std=1.0)
    dataset = SegmentationDataset(samples, images, spec, crop=(64, 128), defect_crop=1.0, augment=False, seed=3)
    x, y = dataset[0]
    assert x.shape == (1, 64, 128) and y.shape == (4, 64, 128)
    assert y[2].sum() > 0  # crop centred near the scratch
    # locate the crop in the full frame: the pixels must match, and so must the mask
    frame = images[0].astype(np.float32) / 255.0
    crop = x[0].numpy()
    hits = cv2.matchTemplate(frame, crop, cv2.TM_SQDIFF)
    cy, cx = np.unravel_index(np.argmin(hits), hits.shape)
    np.testing.assert_allclose(frame[cy : cy + 64, cx : cx + 128], crop, atol=1e-6)
    np.testing.assert_array_equal(samples[0].masks()[:, cy : cy + 64, cx : cx + 128], y.numpy())


def test_augmentation_is_reproducible_per_epoch_and_flips_both():
    from edgeseg.data.datasets import SegmentationDataset
    from edgeseg.edge.preprocess import Preprocess

    samples, images = _items()
    spec = Preprocess(IMAGE_HEIGHT, IMAGE_WIDTH)
    dataset = SegmentationDataset(samples, images, spec, augment=True, seed=1)
    first = [dataset[0][0].numpy() for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    outputs = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        x, y = dataset[0]
        # whatever flip happened, the mask still covers bright scratch pixels (class 3 is bright)
        assert x[0][y[2] > 0].mean() > x[0][y[2] == 0].mean()
        outputs.add(x.numpy().tobytes())
    assert len(outputs) > 1


def test_resize_geometry_brings_masks_to_model_size():
    from edgeseg.data.datasets import ClassificationDataset, SegmentationDataset
    from edgeseg.edge.preprocess import Preprocess

    samples, images = _items()
    seg = SegmentationDataset(samples, images, Preprocess(64, 400))
    x, y = seg[2]
    assert x.shape == (1, 64, 400) and y.shape == (4, 64, 400) and set(np.unique(y.numpy())) <= {0.0, 1.0}
    cls = ClassificationDataset(samples, images, Preprocess(32, 208, mean=0.5, std=0.25), augment=True)
    labels = [float(cls[i][1]) for i in range(3)]
    assert labels == [1.0, 0.0, 1.0]
    assert cls[0][0].shape == (1, 32, 208)


def test_bad_crop_is_rejected():
    from edgeseg.data.datasets import SegmentationDataset
    from edgeseg.edge.preprocess import Preprocess

    samples, images = _items()
    with pytest.raises(EdgesegError, match="multiples of 16"):
        SegmentationDataset(samples, images, Preprocess(256, 1600), crop=(60, 128))
