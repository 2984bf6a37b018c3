"""Files for the tests: a tiny tmpfs mounted on the spot (root only) and filled to the brim, and
the hidden file a running command stages its output in."""
import contextlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def tiny_tmpfs(parent: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of `size` mounted under `parent`, unmounted afterwards; skips where mounting
    is not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    mount_point = parent / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(folder: Path, leave: int = 0) -> None:
    """Write a filler file into `folder` until at most `leave` bytes remain free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / ".filler", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave))
            handle.flush()
        except OSError:
            pass


def jsonl_lines(target: Path) -> int:
    """Lines a running `edgeseg run` wrote so far to the JSONL `target` (staged until its first
    line, then under its own name); 0 before the first."""
    for path in (target, *target.parent.glob(f".{target.stem}.*.part{target.suffix}")):
        with contextlib.suppress(OSError):
            return len(path.read_text().splitlines())
    return 0
