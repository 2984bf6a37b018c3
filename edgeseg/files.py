"""File helpers shared by every stage: hashes, the one staging of outputs (StagedOutput; its
all-or-nothing form atomic_output), the one file of whole lines (LineFile), the files a model
is read from and the output-path checks against them, and the one translation of a full disk
into a line a user can act on."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import mmap
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from edgeseg.errors import EdgesegError, UsageError

PathLike = Union[str, "os.PathLike[str]"]

# errno values that mean "no room": the disk, or the user's quota on it.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Below this much free space a library's failed write (ONNX Runtime, protobuf, TensorRT report
# it without errno) is taken to be the full disk.
_NEARLY_FULL_BYTES = 1 << 20


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


# -- full disks -------------------------------------------------------------------------------------
def free_bytes(path: PathLike) -> Optional[int]:
    """Bytes an unprivileged user may still write on the filesystem holding `path` (or its
    nearest existing parent); None when it cannot be asked."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def free_space_text(path: PathLike) -> str:
    """"12.3 MiB free" for the filesystem holding `path`, for messages."""
    return f"{_human(free_bytes(path))} free"


def _human(size: Optional[int]) -> str:
    if size is None:
        return "unknown space"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop returns at GiB


def disk_full_error(path: PathLike, exc: Optional[BaseException] = None) -> EdgesegError:
    """The one message for a write that ran out of room: the file and the space left."""
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno == errno.EDQUOT else "disk full"
    return EdgesegError(
        f"{reason} writing {path} ({free_space_text(path)} there)",
        hint="free some space or write to another disk; nothing partial was kept",
    )


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` or an exception it was raised from is ENOSPC / EDQUOT."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def nearly_full(path: PathLike) -> bool:
    """Whether the filesystem holding `path` has (almost) no room left: how a library's failed
    write that carries no errno is recognised as a full disk."""
    free = free_bytes(path)
    return free is not None and free < _NEARLY_FULL_BYTES


@contextlib.contextmanager
def disk_full_as_error(path: PathLike, writing: Optional[PathLike] = None) -> Iterator[None]:
    """Re-raise a full disk inside the block as `disk_full_error(path)`.

    writing: the file the block writes (default `path`); when given, a failure of any kind
    while its filesystem is (nearly) full counts too, for libraries that swallow the errno.
    """
    try:
        yield
    except EdgesegError:
        raise
    except Exception as exc:
        if is_disk_full(exc) or (writing is not None and nearly_full(writing)):
            raise disk_full_error(path, exc) from exc
        raise


def json_ready(value: Any) -> Any:
    """`value` with every NaN / infinity replaced by None: JSON has no NaN (Python writes a bare
    `NaN` that strict parsers, jq and browsers refuse), and "not measurable" reads as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def write_json(path: PathLike, data: Any) -> Path:
    """Strict JSON (NaN -> null), all or nothing (atomic_output), a full disk as one line."""
    target = Path(path)
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(json_ready(data), indent=2, allow_nan=False, default=str) + "\n")
    return target


# -- staged outputs: what sinks write -----------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


class StagedOutput:
    """A sink's output file (or folder), written under a hidden temporary name and put in place
    only by `commit()`: a run that fails before producing anything leaves the previous result
    byte for byte, and a half-written one never takes its name.

    Constructing creates nothing; it only checks that the folder is (or can be made) writable.
    A symlinked target is staged beside the file it points to; a device or FIFO (/dev/stdout,
    /dev/full, a pipe) is `direct`: written as it is, commit and discard do nothing.
    `temp` is `.<stem>.<token>.part<suffix>` beside the target: the same suffix, so writers
    that choose a container by extension (OpenCV) still do; asking for it creates the folder.
    `commit()` renames it onto the target (LineFile is how a file is added to instead);
    `discard()` removes it.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        # a symlink stays a symlink: stage beside, and replace, the file it points to
        self._target = Path(os.path.realpath(self.path))
        # a device, FIFO or socket (/dev/stdout, /dev/null, a pipe) cannot be staged: written directly
        self.direct = self._target.exists() and not (self._target.is_file() or self._target.is_dir())
        existing = _nearest_existing(self._target.parent)
        if not existing.is_dir():
            raise EdgesegError(f"cannot create output folder {self.path.parent}: {existing} is not a folder", hint="choose another path")
        if not self.direct and not os.access(existing, os.W_OK | os.X_OK):
            raise EdgesegError(f"output folder {existing} is not writable", hint="choose a writable path")
        if self.direct:  # the name given: a symlink like out.avi -> /dev/full keeps its suffix
            self._temp = self.path
        else:
            self._temp = self._target.with_name(f".{self._target.stem}.{secrets.token_hex(4)}.part{self._target.suffix}")
        self.committed = False

    @property
    def temp(self) -> Path:
        """Where to write; its folder exists once this is asked for."""
        if not self.direct:
            ensure_writable_dir(self._target.parent)
        return self._temp

    def commit(self) -> Path:
        """Put what was written in place; returns the target."""
        with disk_full_as_error(self.path):
            if self.direct:
                pass
            elif self._temp.is_dir():
                self._merge_folder()
            else:
                os.replace(self._temp, self._target)
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Remove what was written; the target is left as it was. Safe to call twice."""
        if self.direct:
            return
        if self._temp.is_dir() and not self._temp.is_symlink():
            shutil.rmtree(self._temp, ignore_errors=True)
        elif os.path.lexists(self._temp):
            self._temp.unlink()

    def _merge_folder(self) -> None:
        if not self._target.exists():
            os.replace(self._temp, self._target)
            return
        for entry in sorted(self._temp.iterdir()):
            os.replace(entry, self._target / entry.name)
        self._temp.rmdir()

    def __repr__(self) -> str:
        return f"StagedOutput({str(self.path)!r})"


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield the path to write `path`'s new content to (a StagedOutput's `temp`, same suffix);
    put it in place only if the block succeeds.

    A crash, Ctrl-C or error leaves the previous file (or none), never a half-written one; a
    full disk is reported as one line naming `path` and the space left once the partial file
    is gone.
    """
    staged = StagedOutput(path)
    try:
        yield staged.temp
        staged.commit()
    except EdgesegError:
        raise
    except Exception as exc:
        full = is_disk_full(exc) or nearly_full(staged.temp)  # asked before the partial file goes
        staged.discard()
        if full:
            raise disk_full_error(staged.path, exc) from exc
        raise
    finally:
        if not staged.committed:
            staged.discard()


class LineFile:
    """A file that grows by whole lines: each `write` puts all of its bytes on disk or, when it
    fails part way (a full disk), cuts the file back so no partial line stays. Unbuffered: a
    line is on disk (page cache) once `write` returns, so `tail -f` sees it and a power loss
    keeps it. Opened by the first `write`: nothing is created before.

    append: add after what the file holds, starting on a fresh line when its last line was cut
    off (a power loss mid-line), instead of truncating it. A device or FIFO (/dev/stdout, a pipe)
    is written as it is. name: the path errors name (default `path`), e.g. the target of a
    staged file.
    """

    def __init__(self, path: PathLike, append: bool = False, name: Optional[PathLike] = None) -> None:
        self.path = Path(path)
        self.append = append
        self.name = Path(name) if name is not None else self.path
        self._fd: Optional[int] = None
        self._regular = True
        self._size = 0  # bytes of whole lines in the file
        self._pending = b""  # goes before the first line: the newline a cut-off last line lacks

    def write(self, data: bytes) -> None:
        """Write `data` (whole lines) entirely, or raise and leave the file as it was."""
        with disk_full_as_error(self.name):
            try:
                if self._fd is None:
                    self._fd = self._open()
                self._write_all(self._fd, self._pending + data)
            except OSError as exc:
                if is_disk_full(exc):
                    raise
                raise EdgesegError(f"cannot write {self.name}: {exc.strerror}", hint="choose a writable path") from exc
        self._pending = b""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self.append else os.O_TRUNC)
        fd = os.open(self.path, flags, 0o666)
        info = os.fstat(fd)
        self._regular = stat.S_ISREG(info.st_mode)
        if self._regular and self.append and info.st_size:
            self._size = info.st_size
            with open(self.path, "rb") as existing:
                existing.seek(info.st_size - 1)
                if existing.read(1) != b"\n":
                    self._pending = b"\n"
        return fd

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            if self._regular:
                os.ftruncate(fd, self._size)  # no partial line
                os.lseek(fd, self._size, os.SEEK_SET)
            raise
        self._size += len(data)


# -- output paths against inputs and each other -------------------------------------------------------
def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts, case-insensitive filesystems
    except OSError:
        return False


def _within(inner: Path, outer: Path) -> bool:
    return outer in inner.parents


# protobuf bytes of an ONNX TensorProto.external_data entry {key: "location", value: <file>}
_EXTERNAL_LOCATION = re.compile(rb"\n\x08location\x12")


def _names_golden(card: Path) -> bool:
    """The card (when readable) names a golden set: then it is one of the model's files."""
    try:
        return json.loads(card.read_text(encoding="utf-8")).get("golden") is not None
    except (OSError, ValueError, AttributeError):
        return False


def model_files(artifact: PathLike) -> List[Path]:
    """The files a model is read from: the artifact, its card, its golden set, an OpenVINO IR's
    .bin and an ONNX's external data files (found in the protobuf without the onnx package,
    which the runtime does not need). What a run's outputs must never overwrite."""
    from edgeseg.edge.artifacts import card_path, golden_path

    path = Path(artifact)
    files = [path, card_path(path)]
    if golden_path(path).exists() or _names_golden(card_path(path)):
        files.append(golden_path(path))
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    elif path.suffix == ".onnx" and path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for match in _EXTERNAL_LOCATION.finditer(data):
                length, start = _varint(data, match.end())
                location = bytes(data[start : start + length]).decode("utf-8", "replace")
                files.append(path.parent / location)
    return sorted(set(files), key=files.index)


def _varint(data: Any, at: int) -> Tuple[int, int]:
    """A protobuf varint at `at`: (value, offset after it)."""
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return value, at


def check_output_paths(inputs: Iterable[PathLike], outputs: Mapping[str, Optional[PathLike]]) -> None:
    """Refuse an output that would overwrite what is read or another output.

    inputs: the local files the run reads (the source's files, a folder's or glob's items, a
    list of sources, each model's `model_files`); outputs: option name
    -> path (None: not given), e.g. {"--jsonl": ..., "--video": ...}; an output folder (like
    --save-defects) must not hold an input or another output either. Raises UsageError
    (an EdgesegError the CLI reports with exit code 2).
    """
    given = {name: Path(os.path.abspath(os.path.expanduser(p))) for name, p in outputs.items() if p is not None}
    resolved = {name: path.resolve() for name, path in given.items()}
    sources = [Path(os.path.abspath(os.path.expanduser(p))).resolve() for p in inputs]
    for name, path in resolved.items():
        for source in sources:
            if _same(path, source):
                raise UsageError(f"{name} {given[name]} is an input of this run", hint=f"write {name} somewhere else")
            if _within(source, path):
                raise UsageError(f"{name} {given[name]} holds the input {source}", hint=f"write {name} somewhere else")
    names = list(resolved)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = resolved[first], resolved[second]
            if _same(a, b):
                raise UsageError(f"{first} and {second} are the same file {given[first]}", hint="give each output its own path")
            if _within(a, b) or _within(b, a):
                outer, inner = (second, first) if _within(a, b) else (first, second)
                raise UsageError(f"{inner} {given[inner]} lies inside the {outer} folder {given[outer]}", hint="give each output its own path")
