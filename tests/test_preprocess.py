import numpy as np
import pytest

from edgeseg.edge.preprocess import Preprocess, preprocess, to_frame
from edgeseg.errors import EdgesegError


def test_resize_normalises_with_card_parameters():
    spec = Preprocess(height=32, width=64, mean=0.5, std=0.25)
    frame = np.full((64, 128), 255, dtype=np.uint8)
    batch = preprocess(frame, spec)
    assert batch.shape == (1, 1, 32, 64) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, (1.0 - 0.5) / 0.25, rtol=1e-6)


def test_bgr_and_gray_frames_agree():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (32, 64), dtype=np.uint8)
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    spec = Preprocess(height=32, width=64)
    np.testing.assert_allclose(preprocess(gray, spec), preprocess(bgr, spec), atol=1 / 255)


def test_tiles_cover_frame_and_stitch_back():
    spec = Preprocess(height=32, width=48, geometry="tile")
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (32, 100), dtype=np.uint8)
    batch = preprocess(frame, spec)
    origins = spec.tile_origins(32, 100)
    assert batch.shape[0] == len(origins) == 3
    assert origins[-1] == (0, 100 - 48)
    # identity "model": the stitched output is the normalised frame itself
    stitched = to_frame(batch, spec, (32, 100))
    np.testing.assert_allclose(stitched[0], frame / 255.0, atol=1e-6)


def test_resize_outputs_return_to_frame_size():
    spec = Preprocess(height=16, width=32)
    maps = np.zeros((1, 4, 16, 32), dtype=np.float32)
    maps[0, 2, :, 16:] = 1.0
    full = to_frame(maps, spec, (64, 128))
    assert full.shape == (4, 64, 128)
    assert full[2, :, 100:].min() == 1.0 and full[2, :, :50].max() == 0.0


def test_preprocess_reuses_given_buffer():
    spec = Preprocess(height=8, width=8)
    out = np.empty((1, 1, 8, 8), dtype=np.float32)
    assert preprocess(np.zeros((8, 8), np.uint8), spec, out=out) is out
    with pytest.raises(EdgesegError):
        preprocess(np.zeros((8, 8), np.uint8), spec, out=np.empty((2, 1, 8, 8), np.float32))


def test_bad_specs_are_refused():
    with pytest.raises(EdgesegError):
        Preprocess(height=0, width=8)
    with pytest.raises(EdgesegError):
        Preprocess(height=8, width=8, geometry="crop")
    with pytest.raises(EdgesegError):
        preprocess(np.zeros((4, 4), np.uint8), Preprocess(height=8, width=8, geometry="tile"))
