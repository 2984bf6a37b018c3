"""File helpers shared by every stage: hashes and all-or-nothing writes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from edgeseg.errors import EdgesegError

PathLike = Union[str, "os.PathLike[str]"]


def sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_writable_dir(path: PathLike) -> Path:
    """Create `path` (and parents) or fail with one line naming it."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesegError(f"cannot create output folder {directory}: {exc.strerror}", hint="choose a writable --out") from exc
    if not os.access(directory, os.W_OK):
        raise EdgesegError(f"output folder {directory} is not writable", hint="choose a writable --out")
    return directory


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A crash, Ctrl-C or error leaves the previous file (or none), never a half-written one.
    """
    target = Path(path)
    ensure_writable_dir(target.parent)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=str(target.parent))
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; artifacts get the umask's usual mode so services can read them
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
