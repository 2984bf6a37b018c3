"""Sources: real encoded videos, image folders, corrupt and truncated input, live pacing and drops."""
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest

from edge_media import frames, write_video
from edgeseg.edge.sources import Reader, Source, SourceOptions, has_gstreamer, open_source
from edgeseg.errors import EdgesegError


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", frames(12))


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_file_delivers_every_frame_in_order(tmp_path, suffix):
    images = frames(10)
    path = write_video(tmp_path / f"clip{suffix}", images)
    with open_source(str(path)) as source:
        got = list(source)
    assert [f.index for f in got] == list(range(10))
    assert all(f.source == path.name for f in got)
    assert all(f.image.shape == images[0].shape for f in got)
    stamps = [f.timestamp for f in got]
    assert stamps == sorted(stamps)
    assert source.stats.frames == 10 and source.stats.dropped == 0 and source.stats.corrupt == 0
    assert not source.live and source.fps == pytest.approx(25.0)
    # decoded content matches what was encoded (lossy codecs: loose bound)
    assert np.abs(got[3].image.astype(int) - images[3].astype(int)).mean() < 8


def test_video_frames_carry_the_file_wall_clock_and_position(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames(5), fps=20.0)
    with open_source(str(path), SourceOptions(loop=True)) as source:
        got = [f for f, _ in zip(source, range(8))]
    assert all(f.item == "clip.mp4" for f in got)
    assert [f.position_ms for f in got] == pytest.approx([50.0 * (i % 5) for i in range(8)])  # restarts with the loop
    for frame in got:  # wall-clock and perf_counter stamps of the same instant
        assert abs((time.time() - frame.captured_at) - (time.perf_counter() - frame.timestamp)) < 0.01


def test_loop_restarts_a_file(clip):
    with open_source(clip, SourceOptions(loop=True)) as source:
        got = [f for f, _ in zip(source, range(30))]
    assert [f.index for f in got] == list(range(30))
    assert np.array_equal(got[12].image, got[0].image)


def test_image_folder_and_glob_skip_and_count_unreadable_images(tmp_path):
    images = frames(5, height=64, width=320)
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"strip_{i:02d}.png"), image)
    (tmp_path / "strip_02.png").write_bytes(b"not a png at all")  # corrupt frame mid-stream
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(tmp_path) as source:
        got = list(source)
    assert len(got) == 4 and source.stats.corrupt == 1
    assert np.array_equal(got[2].image, images[3])
    assert [f.item for f in got] == ["strip_00.png", "strip_01.png", "strip_03.png", "strip_04.png"]  # not the counter
    assert all(f.position_ms is None for f in got)
    with open_source(str(tmp_path / "strip_0[34].png")) as source:
        assert len(list(source)) == 2


def test_truncated_video_ends_cleanly_and_counts_the_lost_frames(tmp_path):
    path = write_video(tmp_path / "full.avi", frames(20))
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(cut) as source:
        got = list(source)
    assert 0 < len(got) < 20
    assert source.stats.corrupt == 20 - len(got)


def test_corrupt_frames_mid_stream_are_skipped_and_counted(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames(30))
    data = bytearray(path.read_bytes())
    vops = [i for i in range(len(data) - 4) if data[i : i + 4] == b"\x00\x00\x01\xb6"]  # MPEG-4 frame headers
    assert len(vops) == 30
    for k in (10, 11):
        data[vops[k] + 4 : vops[k] + 12] = b"\xff" * 8  # damage two frames' headers
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with open_source(damaged) as source:
        got = list(source)
    assert 20 < len(got) < 30  # the frames after the damage still arrive
    assert source.stats.corrupt == 30 - len(got)
    assert [f.index for f in got] == list(range(len(got)))


def _destroy_mjpg_frames(path: Path, first: int, last: int) -> Path:
    """Overwrite the JPEG payload of frames first..last (inclusive) of an MJPG AVI with noise,
    keeping every chunk's size, so the container is intact and those frames cannot decode."""
    import struct

    data = bytearray(path.read_bytes())
    payloads = []
    at = data.find(b"00dc")
    while at != -1:
        size = struct.unpack("<I", data[at + 4 : at + 8])[0]
        if data[at + 8 : at + 10] == b"\xff\xd8":
            payloads.append((at + 8, size))
        at = data.find(b"00dc", at + 4)
    noise = np.random.default_rng(0)
    for offset, size in payloads[first : last + 1]:
        data[offset : offset + size] = noise.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_a_long_corrupt_stretch_is_read_through_to_the_good_frames_after_it(tmp_path):
    originals = frames(200, height=48, width=160)
    path = _destroy_mjpg_frames(write_video(tmp_path / "clip.avi", originals), 60, 139)
    plain, capture = [], cv2.VideoCapture(str(path))  # what a bare OpenCV loop gets back
    for _ in range(400):
        ok, image = capture.read()
        if ok:
            plain.append(image)
    capture.release()
    with open_source(path) as source:
        got = [frame.image for frame in source]
    assert len(plain) == 120 and len(got) == len(plain)
    assert all(np.array_equal(a, b) for a, b in zip(got, plain))

    def which(image):  # the original frame an image decodes to
        return int(np.argmin([np.mean((image.astype(np.float32) - o) ** 2) for o in originals]))

    assert [which(image) for image in got[58:62]] == [58, 59, 140, 141]
    assert source.stats.corrupt == 80 and source.stats.frames == 120


@pytest.mark.parametrize(
    "uri, message",
    [
        ("999", "no camera at index 999"),
        ("/dev/video999", "no camera at /dev/video999"),
        ("nowhere/clip.mp4", "not found"),
        ("nothing_matches_*.png", "no images match"),
    ],
)
def test_bad_uris_give_one_clear_error(uri, message):
    with pytest.raises(EdgesegError, match=message):
        open_source(uri)


def test_csi_uri_becomes_an_argus_pipeline():
    from edgeseg.edge.sources import _csi_pipeline

    pipeline = _csi_pipeline("csi://1", SourceOptions(width=1280, height=720, fps=60))
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ")
    assert "width=1280, height=720, framerate=60/1" in pipeline and pipeline.endswith("appsink drop=true max-buffers=1 sync=false")
    with pytest.raises(EdgesegError, match="bad CSI camera URI"):
        _csi_pipeline("csi://left", SourceOptions())


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer: the pipelines would really start")
@pytest.mark.parametrize("uri", ["csi://0", "videotestsrc ! videoconvert ! appsink"])
def test_gstreamer_uris_without_gstreamer_say_what_to_install(uri):
    with pytest.raises(EdgesegError, match="needs OpenCV built with GStreamer"):
        open_source(uri)


def test_a_file_that_is_not_a_video_is_refused(tmp_path):
    fake = tmp_path / "clip.mp4"
    fake.write_text("this is text, not a video")
    with pytest.raises(EdgesegError, match="not a video OpenCV can read"):
        open_source(fake)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(EdgesegError, match="holds no images"):
        open_source(tmp_path)


def test_options_are_validated():
    with pytest.raises(EdgesegError, match="rate"):
        SourceOptions(rate=0)


def test_live_source_keeps_the_newest_frame_and_counts_drops(clip):
    """A paced 'camera' at 100 fps read by a consumer that takes a frame every 35 ms."""
    with open_source(clip, SourceOptions(live=True, rate=100.0)) as source:
        assert source.live
        got = []
        for frame in source:
            got.append(frame)
            time.sleep(0.035)
    indices = [f.index for f in got]
    assert indices == sorted(indices) and len(indices) < 12
    assert [f.position_ms for f in got] == pytest.approx([40.0 * i for i in indices])  # the frame kept is the one named
    assert source.stats.dropped > 0
    assert source.stats.frames + source.stats.dropped == 12  # every captured frame is accounted for
    assert indices[-1] == 11  # the newest frame is the one kept


def test_live_source_does_not_drop_for_a_fast_consumer(clip):
    with open_source(clip, SourceOptions(live=True, rate=50.0)) as source:
        got = list(source)
    assert len(got) == 12 and source.stats.dropped == 0


class _StallingCamera(Reader):
    """A real producer that delivers `good` frames, then nothing (an unplugged camera)."""

    def __init__(self, good: int) -> None:
        self.name = "stalling"
        self.good = good
        self.reopened = 0

    def read(self) -> Optional[np.ndarray]:
        if self.good > 0:
            self.good -= 1
            return np.zeros((8, 8), np.uint8)
        time.sleep(0.01)
        return None

    def reopen(self) -> bool:
        self.reopened += 1
        return True


def test_camera_that_stops_delivering_times_out_reconnects_then_ends():
    reader = _StallingCamera(good=3)
    source = Source(reader, SourceOptions(timeout=0.2, reconnects=2), live=True)
    started = time.perf_counter()
    got = list(source)
    source.close()
    assert len(got) >= 1
    assert reader.reopened == 2 and source.stats.reconnects == 2
    assert "delivered no frame for 0.2 s" in source.stats.error
    assert time.perf_counter() - started < 5.0
