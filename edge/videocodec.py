"""Which fourcc writes an annotated video, asked of the installed OpenCV at run time.

OpenCV builds differ: the pip wheels encode mp4v, MJPG and VP8 but no H.264 (no libx264/openh264
bundled); JetPack's and distribution builds often have it. mp4v does not play in browsers, so
`h264` is offered where the build has it, and its absence is said up front, with the formats
that do play.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Dict, Tuple

from edgeseg.errors import EdgesegError

# codec name -> fourccs to try, in order (OpenCV's FFmpeg backend knows H.264 as avc1 or H264).
CODECS: Dict[str, Tuple[str, ...]] = {"mp4v": ("mp4v",), "mjpg": ("MJPG",), "h264": ("avc1", "H264"), "vp8": ("VP80",)}
# container -> (default codec, codecs it holds)
CONTAINERS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    ".mp4": ("mp4v", ("mp4v", "h264")),
    ".mkv": ("mjpg", ("mjpg", "mp4v", "h264", "vp8")),
    ".avi": ("mjpg", ("mjpg", "mp4v")),
    ".webm": ("vp8", ("vp8",)),
}
CODEC_CHOICES = ("auto",) + tuple(CODECS)  # --codec; cv2 is imported only to probe, so the CLI stays light


@functools.lru_cache(maxsize=None)
def can_encode(fourcc: str, suffix: str) -> bool:
    """Whether this OpenCV opens a writer for `fourcc` in a `suffix` file (a 16x16 trial frame
    in a temporary file, removed; OpenCV's and FFmpeg's complaints are silenced while probing)."""
    import cv2
    import numpy as np

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    handle, name = tempfile.mkstemp(suffix=suffix)
    os.close(handle)
    saved = os.dup(2)  # FFmpeg's encoders log straight to fd 2, past OpenCV's log level
    silent = os.open(os.devnull, os.O_WRONLY)
    os.dup2(silent, 2)
    try:
        writer = cv2.VideoWriter(name, cv2.VideoWriter.fourcc(*fourcc), 10.0, (16, 16))
        ok = writer.isOpened()
        if ok:
            writer.write(np.zeros((16, 16, 3), np.uint8))
        writer.release()
        return ok and os.path.getsize(name) > 0
    except cv2.error:
        return False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(silent)
        os.unlink(name)
        cv2.utils.logging.setLogLevel(level)


def choose_fourcc(path: Path, codec: str = "auto") -> str:
    """The fourcc for `path` with `codec` ("auto": the container's default). Raises EdgesegError
    for an unknown container, a codec the container cannot hold, or one this OpenCV lacks."""
    import cv2

    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        raise EdgesegError(f"cannot tell the video format of {path}", hint=f"end the name with one of {', '.join(CONTAINERS)}")
    default, allowed = CONTAINERS[suffix]
    name = default if codec == "auto" else codec
    if name not in CODECS:
        raise EdgesegError(f"unknown video codec {codec!r}", hint=f"use one of {', '.join(CODEC_CHOICES)}")
    if name not in allowed:
        holders = [s for s, (_, codecs) in CONTAINERS.items() if name in codecs]
        raise EdgesegError(f"a {suffix} file cannot hold {name} video", hint=f"name the output {path.stem}{holders[0]}")
    for fourcc in CODECS[name]:
        if can_encode(fourcc, suffix):
            return fourcc
    if name == "h264":
        raise EdgesegError(
            f"this OpenCV {cv2.__version__} build has no H.264 encoder (tried fourcc {', '.join(CODECS[name])})",
            hint="write .webm (VP8, plays in browsers), or use an OpenCV built with FFmpeg + libx264 "
            "(JetPack's, distribution packages), or re-encode: ffmpeg -i out.mp4 -c:v libx264 -pix_fmt yuv420p out.h264.mp4",
        )
    raise EdgesegError(f"this OpenCV {cv2.__version__} build cannot encode {name} into {suffix}", hint="try an .avi output (MJPG)")
