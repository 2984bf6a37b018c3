"""Video codecs asked of the installed OpenCV: H.264 where it exists, said up front where not."""
import pytest
from typer.testing import CliRunner

from edge_media import count_video_frames, frames, write_video
from edgeseg.cli import app
from edgeseg.edge.videocodec import can_encode, choose_fourcc
from edgeseg.errors import EdgesegError


def test_container_defaults_and_refusals(tmp_path):
    assert choose_fourcc(tmp_path / "a.mp4") == "mp4v"
    assert choose_fourcc(tmp_path / "a.avi") == "MJPG"
    with pytest.raises(EdgesegError, match="cannot hold h264"):
        choose_fourcc(tmp_path / "a.avi", "h264")
    with pytest.raises(EdgesegError, match="video format"):
        choose_fourcc(tmp_path / "a.gif")


def test_h264_is_used_where_the_build_has_it_and_refused_with_advice_where_not(tmp_path):
    if can_encode("avc1", ".mp4") or can_encode("H264", ".mp4"):
        assert choose_fourcc(tmp_path / "a.mp4", "h264") in ("avc1", "H264")
    else:
        with pytest.raises(EdgesegError, match="no H.264 encoder") as info:
            choose_fourcc(tmp_path / "a.mp4", "h264")
        assert ".webm" in str(info.value)


def test_run_writes_a_browser_playable_webm_and_checks_the_codec_choice(tiny_models, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames(4))
    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    video = tmp_path / "annotated.webm"
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *models, "--video", str(video), "--json"])
    assert result.exit_code == 0, result.output
    assert count_video_frames(video) == 4
    bad = CliRunner().invoke(app, ["run", "--source", str(clip), *models, "--video", str(video), "--codec", "h265"])
    assert bad.exit_code == 2 and "h264" in bad.output  # the parser lists the choices
