"""Synthetic strip clips: exact defect prevalence, reproducible, readable by the runtime's sources."""
import numpy as np
import pytest

from edge_media import count_video_frames
from edgeseg.data.clip import strip_frames, write_clip
from edgeseg.errors import EdgesegError


def test_prevalence_is_exact_and_the_clip_reproducible(tmp_path):
    images, defective = strip_frames(10, 0.3, seed=5)
    assert sum(defective) == 3 and len(images) == 10
    assert images[0].shape == (256, 1600, 3) and images[0].dtype == np.uint8
    again, same = strip_frames(10, 0.3, seed=5)
    assert same == defective and all(np.array_equal(a, b) for a, b in zip(images, again))
    assert not np.array_equal(strip_frames(1, 0.0, seed=6)[0][0], strip_frames(1, 0.0, seed=5)[0][0])


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_written_clip_plays_back_every_frame(tmp_path, suffix):
    images, _ = strip_frames(4, 0.5, seed=1)
    path = write_clip(images, tmp_path / f"clip{suffix}", fps=5)
    assert count_video_frames(path) == 4
    assert not list(tmp_path.glob(".*part*"))  # the atomic write left no temporary file


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(EdgesegError, match="defect rate"):
        strip_frames(4, 1.5, seed=0)
    with pytest.raises(EdgesegError, match="video format"):
        write_clip(strip_frames(1, 0.0, seed=0)[0], tmp_path / "clip.gif")
