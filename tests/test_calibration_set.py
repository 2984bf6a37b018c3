"""Calibration sets: from folders, Severstal data and video; stable hashes; runtime preprocessing; bad input."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.calibration.calibration_set import (
    MIN_FRAMES,
    images_to_calibration_set,
    load_calibration_set,
    severstal_to_calibration_set,
    source_to_calibration_set,
    video_to_calibration_set,
)
from edgeseg.cli import app
from edgeseg.data.severstal import scan
from edgeseg.data.synth import write_synthetic
from edgeseg.edge.preprocess import Preprocess, preprocess
from edgeseg.errors import EdgesegError

GEOMETRY = Preprocess(64, 320, mean=0.5, std=0.25)


@pytest.fixture(scope="module")
def severstal(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("severstal")
    write_synthetic(root, 40, seed=3)
    return root


def _write_images(folder: Path, count: int, size=(48, 240), seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), rng.integers(0, 256, size, dtype=np.uint8))
    return folder


def test_severstal_set_is_stratified_with_every_class(severstal, tmp_path):
    data = scan(severstal)
    in_data = {c for s in data.samples for c in s.classes}
    calib = severstal_to_calibration_set(severstal, tmp_path / "c.npz", GEOMETRY, count=16, seed=0)
    assert len(calib) == 16 and calib.frames.shape == (16, 64, 320) and calib.frames.dtype == np.uint8
    present = {c for labels in calib.labels for c in labels}
    assert present == in_data == {1, 2, 3, 4}
    clean = sum(not labels for labels in calib.labels)
    assert 6 <= clean <= 10  # about half clean, half defective
    # labels agree with the CSV for the strips chosen
    truth = {s.image_id: list(s.classes) for s in data.samples}
    assert all(truth[name] == labels for name, labels in zip(calib.names, calib.labels))
    # the CSV path works as the source too, with the same result
    again = severstal_to_calibration_set(severstal / "train.csv", tmp_path / "d.npz", GEOMETRY, count=16, seed=0)
    assert again.names == calib.names


def test_same_input_same_sha256_and_different_input_different(severstal, tmp_path):
    a = severstal_to_calibration_set(severstal, tmp_path / "a" / "c.npz", GEOMETRY, count=12, seed=1)
    b = severstal_to_calibration_set(severstal, tmp_path / "b" / "c.npz", GEOMETRY, count=12, seed=1)
    c = severstal_to_calibration_set(severstal, tmp_path / "c" / "c.npz", GEOMETRY, count=12, seed=2)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert a.sha256 != c.sha256
    assert load_calibration_set(tmp_path / "a" / "c.npz").sha256 == a.sha256


def test_batches_are_the_runtime_preprocess_of_the_source_frames(severstal, tmp_path):
    calib = severstal_to_calibration_set(severstal, tmp_path / "c.npz", GEOMETRY, count=10, seed=0)
    frames = {s.image_id: cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE) for s in scan(severstal).samples}
    batches = list(calib.batches(4, GEOMETRY))
    assert [b.shape[0] for b in batches] == [4, 4, 2] and batches[0].dtype == np.float32
    stacked = np.concatenate(batches)
    expected = np.concatenate([preprocess(frames[name], GEOMETRY) for name in calib.names])
    np.testing.assert_array_equal(stacked, expected)  # bit for bit: the set is uint8 after the runtime's resize
    # a second card (classifier-like, smaller, other normalisation) is served from the same set
    small = Preprocess(32, 160, mean=0.1, std=0.5)
    np.testing.assert_array_equal(
        np.concatenate(list(calib.batches(3, small))), np.concatenate([preprocess(f, small) for f in calib.frames])
    )
    assert calib.batch_count(4, GEOMETRY) == 3 and calib.batch_count(4, GEOMETRY, drop_last=True) == 2
    assert [b.shape[0] for b in calib.batches(4, GEOMETRY, drop_last=True)] == [4, 4]


def test_tile_geometry_keeps_native_frames_and_cuts_tiles_per_batch(tmp_path):
    folder = _write_images(tmp_path / "imgs", MIN_FRAMES, size=(64, 400))
    tile = Preprocess(64, 160, geometry="tile")
    calib = images_to_calibration_set(folder, tmp_path / "c.npz", tile, count=MIN_FRAMES)
    assert calib.frames.shape == (MIN_FRAMES, 64, 400)
    assert calib.tensors_per_frame(tile) == 3 and calib.tensor_count(tile) == 3 * MIN_FRAMES
    assert sum(b.shape[0] for b in calib.batches(5, tile)) == 3 * MIN_FRAMES


def test_image_folder_skips_unreadable_files_and_counts_them(tmp_path):
    folder = _write_images(tmp_path / "imgs", 12)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    calib = images_to_calibration_set(folder, tmp_path / "c.npz", GEOMETRY, count=20, seed=0)
    assert len(calib) == 12 and calib.frames.shape[1:] == (64, 320)
    skipped = [n for n in calib.notes if n.startswith("skipped 2 unreadable")]
    assert len(skipped) == 1 and "broken.png" in skipped[0] and "empty.jpg" in skipped[0]
    assert any("only 12 frames" in n for n in calib.notes)  # the under-100 warning


def test_video_frames_are_evenly_spaced(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 64))
    assert writer.isOpened()
    for i in range(30):
        writer.write(np.full((64, 320, 3), i * 8, dtype=np.uint8))
    writer.release()
    calib = video_to_calibration_set(path, tmp_path / "c.npz", GEOMETRY, count=10)
    assert len(calib) == 10 and calib.source == "video"
    indices = [int(name.split("#")[1]) for name in calib.names]
    assert indices[0] == 0 and indices[-1] == 29 and all(b > a for a, b in zip(indices, indices[1:]))
    # frame i is grey level 8*i: the stored frames are the frames at those indices
    np.testing.assert_allclose([f.mean() for f in calib.frames], [8 * i for i in indices], atol=3)
    assert source_to_calibration_set(path, tmp_path / "d.npz", GEOMETRY, count=10).sha256 == calib.sha256


def _mixed(folder: Path) -> None:
    _write_images(folder, 6, (48, 240), seed=1)
    rng = np.random.default_rng(2)
    for i in range(6):
        cv2.imwrite(str(folder / f"big{i}.png"), rng.integers(0, 256, (64, 320), dtype=np.uint8))


def _unreadable(folder: Path) -> None:
    for i in range(MIN_FRAMES + 2):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8 truncated")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "holds no images"),
        (lambda d: _write_images(d, MIN_FRAMES - 1), "at least"),
        (_mixed, "mixed sizes"),
        (_unreadable, "0 frame"),
    ],
    ids=["empty", "too-small", "mixed-sizes", "all-unreadable"],
)
def test_bad_folders_fail_with_one_error_and_write_nothing(tmp_path, make, message):
    folder = tmp_path / "imgs"
    folder.mkdir()
    make(folder)
    out = tmp_path / "out"
    with pytest.raises(EdgesegError, match=message):
        images_to_calibration_set(folder, out / "c.npz", None, count=64)
    assert not out.exists() or not any(out.iterdir())  # no file, no temporary left behind


def test_not_a_calibration_set_is_one_clear_error(tmp_path):
    bogus = tmp_path / "x.npz"
    bogus.write_bytes(b"garbage")
    with pytest.raises(EdgesegError, match="not an edgeseg calibration set"):
        load_calibration_set(bogus)
    np.savez(tmp_path / "other.npz", frames=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(EdgesegError, match="not an edgeseg calibration set"):
        load_calibration_set(tmp_path / "other.npz")


def test_cli_builds_a_set_and_reports_bad_input_in_one_line(severstal, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(severstal), "--out", str(tmp_path / "o"), "--count", "12", "--json"])
    assert result.exit_code == 0, result.output
    assert load_calibration_set(tmp_path / "o" / "calibration.npz").source == "severstal"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["calibrate", str(empty), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "holds no images" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p" / "calibration.npz").exists()
