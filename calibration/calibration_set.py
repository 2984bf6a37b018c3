"""The calibration set: N frames from images, a Severstal folder or a video, stored once as .npz.

What is stored: uint8 grayscale frames after the model's geometry (resized to the model input for
geometry "resize"; native frames for "tile", whose tiles are cut at batch time). Not float tensors:
uint8 is 1 byte per pixel against 2 (float16) or 4 (float32), it is lossless, and `batches` turns
it into float32 with the runtime's own `preprocess`, so the tensors calibration sees are the ones
an engine sees, bit for bit, for ANY model card (classifier and segmenter from one set). float16
storage would be both bigger and lossy (it rounds the normalised pixel values).

The file's sha256 identifies the set in every artifact made from it (card `calibration_sha256`),
so it is written deterministically: fixed zip timestamps and no paths or times in the metadata,
so the same input gives the same bytes and the same hash.

Runtime code (the TensorRT calibrator consumes `batches`): Python 3.8-compatible, no torch.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np

from edgeseg.edge.preprocess import Preprocess, preprocess, resize_to_model, to_gray
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256

SCHEMA = "edgeseg.calibration/1"
DEFAULT_COUNT = 512
WARN_BELOW = 100  # fewer frames than this: ranges are noisy, say so
MIN_FRAMES = 8  # fewer than this: refuse, the ranges would be meaningless
SOURCES = ("images", "severstal", "video")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: no wall-clock time in the file, stable sha256

Progress = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class CalibrationSet:
    """Frames ready for `batches`, what they came from, and the sha256 of the file holding them.

    frames: uint8 (N, H, W). geometry: the Preprocess whose geometry was applied before storing
    (None: frames kept at native size). labels: per frame the 1-based defect classes (Severstal
    sources only). notes: one line per thing a user should know (skipped files, small set).
    """

    frames: np.ndarray
    names: List[str]
    source: str
    geometry: Optional[Preprocess] = None
    labels: Optional[List[List[int]]] = None
    notes: List[str] = field(default_factory=list)
    path: Optional[Path] = None
    sha256: str = ""

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def tensors_per_frame(self, spec: Preprocess) -> int:
        """1 for geometry "resize", the tile count for "tile"."""
        return len(spec.tile_origins(*self.frames.shape[1:]))

    def tensor_count(self, spec: Preprocess) -> int:
        return len(self) * self.tensors_per_frame(spec)

    def batch_count(self, batch_size: int, spec: Preprocess, drop_last: bool = False) -> int:
        whole, rest = divmod(self.tensor_count(spec), batch_size)
        return whole + (1 if rest and not drop_last else 0)

    def batches(self, batch_size: int, spec: Preprocess, drop_last: bool = False) -> Iterator[np.ndarray]:
        """float32 batches of `spec`'s input (its channels and layout), made by the runtime's `preprocess`.

        Each batch is a fresh array (consumers may keep it). drop_last: yield only full batches
        (a TensorRT calibrator's device buffer has one fixed batch size).
        """
        if batch_size < 1:
            raise EdgesegError(f"batch size must be at least 1, got {batch_size}")
        buffer = np.empty((batch_size,) + spec.item_shape, dtype=np.float32)
        filled = 0
        for frame in self.frames:
            tensors = preprocess(frame, spec)
            for tensor in tensors:
                buffer[filled] = tensor
                filled += 1
                if filled == batch_size:
                    yield buffer.copy()
                    filled = 0
        if filled and not drop_last:
            yield buffer[:filled].copy()

    def describe(self) -> Dict[str, Any]:
        """What `edgeseg calibrate --json` prints about the set."""
        described: Dict[str, object] = {
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "source": self.source,
            "frames": len(self),
            "frame_size": [int(self.frames.shape[1]), int(self.frames.shape[2])],
            "megabytes": round(self.path.stat().st_size / 1e6, 2) if self.path else None,
            "notes": list(self.notes),
        }
        if self.labels is not None:
            counts = {str(c): sum(c in labels for labels in self.labels) for c in sorted({c for ls in self.labels for c in ls})}
            described["clean"] = sum(not labels for labels in self.labels)
            described["class_counts"] = counts
        return described


# -- storage ------------------------------------------------------------------------------------
def save_calibration_set(
    out: PathLike,
    frames: Sequence[np.ndarray],
    names: Sequence[str],
    source: str,
    geometry: Optional[Preprocess] = None,
    labels: Optional[Sequence[Sequence[int]]] = None,
    notes: Sequence[str] = (),
) -> CalibrationSet:
    """Check and write frames as a deterministic .npz (all or nothing); return the loaded set."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    notes = list(notes)
    if len(frames) < MIN_FRAMES:
        raise EdgesegError(
            f"calibration set would hold {len(frames)} frame(s); at least {MIN_FRAMES} are needed",
            hint=f"point at more images (about {DEFAULT_COUNT} recommended)",
        )
    sizes = sorted({frame.shape for frame in frames})
    if len(sizes) > 1:
        raise EdgesegError(
            f"calibration frames have mixed sizes {', '.join(f'{s[1]}x{s[0]}' for s in sizes[:4])}",
            hint="use images of one size, or pass --model so that every frame is fitted to the model input",
        )
    if len(frames) < WARN_BELOW:
        notes.append(f"only {len(frames)} frames: calibration ranges may be noisy (about {DEFAULT_COUNT} recommended)")
    stacked = np.stack(frames).astype(np.uint8, copy=False)
    meta = {
        "schema": SCHEMA,
        "source": source,
        "names": list(names),
        "geometry": geometry.to_dict() if geometry is not None else None,
        "labels": [sorted(int(c) for c in ls) for ls in labels] if labels is not None else None,
        "notes": notes,
    }
    target = Path(out)
    with atomic_output(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            _write_member(archive, "frames.npy", stacked)
            _write_member(archive, "meta.npy", np.array(json.dumps(meta, sort_keys=True)))
    return load_calibration_set(target)


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, array, allow_pickle=False)


def load_calibration_set(path: PathLike) -> CalibrationSet:
    """Read a set written by `save_calibration_set`; a wrong or damaged file is one clear error."""
    path = Path(path)
    hint = "build one with `edgeseg calibrate SOURCE --out DIR`"
    if not path.is_file():
        raise EdgesegError(f"calibration set {path} not found", hint=hint)
    try:
        with np.load(str(path), allow_pickle=False) as archive:
            frames = archive["frames"]
            meta = json.loads(str(archive["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgesegError(f"{path} is not an edgeseg calibration set ({type(exc).__name__}: {exc})", hint=hint) from exc
    if meta.get("schema") != SCHEMA or frames.dtype != np.uint8 or frames.ndim != 3 or len(meta.get("names", [])) != len(frames):
        raise EdgesegError(f"{path} is not an edgeseg calibration set of schema {SCHEMA}", hint=hint)
    geometry = meta.get("geometry")
    return CalibrationSet(
        frames=frames,
        names=list(meta["names"]),
        source=str(meta["source"]),
        geometry=Preprocess.from_dict(geometry) if geometry else None,
        labels=meta.get("labels"),
        notes=list(meta.get("notes", [])),
        path=path,
        sha256=sha256(path),
    )


# -- frames -------------------------------------------------------------------------------------
def fit_frame(frame: np.ndarray, geometry: Optional[Preprocess]) -> np.ndarray:
    """Gray uint8 frame after `geometry` (the runtime's own resize), or native when None / "tile"."""
    gray = to_gray(frame)
    if geometry is None or geometry.geometry == "tile":
        return np.ascontiguousarray(gray)
    return np.ascontiguousarray(resize_to_model(gray, geometry))


def _skipped_note(skipped: List[str], what: str) -> List[str]:
    if not skipped:
        return []
    shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return [f"skipped {len(skipped)} unreadable {what}: {shown}"]


def _check_count(count: int) -> None:
    if count < MIN_FRAMES:
        raise EdgesegError(f"--count must be at least {MIN_FRAMES}, got {count}", hint=f"about {DEFAULT_COUNT} is recommended")


# -- sources ------------------------------------------------------------------------------------
def images_to_calibration_set(
    folder: PathLike,
    out: PathLike,
    geometry: Optional[Preprocess] = None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    progress: Progress = None,
) -> CalibrationSet:
    """`count` images from a folder (a seeded random choice when it holds more), read like the runtime."""
    from edgeseg.edge.sources import IMAGE_SUFFIXES, read_image

    _check_count(count)
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgesegError(f"calibration folder {folder} not found")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EdgesegError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})", hint="pass a folder of images, a Severstal folder or a video")
    order = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
    frames: List[np.ndarray] = []
    names: List[str] = []
    skipped: List[str] = []
    for path in order:  # unreadable files are replaced by the next candidates
        if len(frames) == count:
            break
        image = read_image(path)
        if progress is not None:
            progress(1)
        if image is None:
            skipped.append(path.name)
            continue
        frames.append(fit_frame(image, geometry))
        names.append(path.name)
    ranked = sorted(range(len(names)), key=names.__getitem__)  # stable order, independent of the seed's shuffle
    return save_calibration_set(
        out, [frames[i] for i in ranked], [names[i] for i in ranked], "images", geometry, notes=_skipped_note(skipped, "image(s)")
    )


def video_to_calibration_set(
    video: PathLike,
    out: PathLike,
    geometry: Optional[Preprocess] = None,
    count: int = DEFAULT_COUNT,
    progress: Progress = None,
) -> CalibrationSet:
    """`count` frames evenly spaced over a video (all of them when it is shorter)."""
    _check_count(count)
    video = Path(video)
    if not video.is_file():
        raise EdgesegError(f"video {video} not found")
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise EdgesegError(f"{video} is not a video OpenCV can read", hint="pass a video (mp4, avi, mkv), an image folder or a Severstal folder")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(_evenly_spaced(total, count)) if total > 0 else None
        last = max(wanted) if wanted else 0
        frames: List[np.ndarray] = []
        names: List[str] = []
        index = 0
        while wanted is None or index <= last:
            if wanted is not None and index not in wanted:
                if not capture.grab():
                    break
            else:
                ok, frame = capture.read()
                if not ok:
                    break
                frames.append(fit_frame(frame, geometry))
                names.append(f"{video.name}#{index}")
                if progress is not None:
                    progress(1)
                if wanted is None and len(frames) == count:
                    break
            index += 1
    finally:
        capture.release()
    if not frames:
        raise EdgesegError(f"{video}: no frame could be decoded", hint="check the file plays, or re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4)")
    return save_calibration_set(out, frames, names, "video", geometry)


def _evenly_spaced(total: int, count: int) -> List[int]:
    if total <= count:
        return list(range(total))
    return sorted({int(round(i * (total - 1) / (count - 1))) for i in range(count)})


def severstal_to_calibration_set(
    data: PathLike,
    out: PathLike,
    geometry: Optional[Preprocess] = None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    clean_fraction: float = 0.5,
    progress: Progress = None,
) -> CalibrationSet:
    """`count` strips of a Severstal-layout folder (or its train.csv), stratified.

    About `clean_fraction` clean strips (the gate's negatives), the rest defective, drawn round-robin
    over the classes rarest first, so every class the data holds is in the set even when it is rare.
    An unreadable image is replaced by the next candidate of its stratum.
    """
    from edgeseg.data.severstal import CSV_NAME, NUM_CLASSES, load_image, scan

    _check_count(count)
    if not 0.0 <= clean_fraction <= 1.0:
        raise EdgesegError(f"clean fraction must be within 0..1, got {clean_fraction}")
    root = Path(data)
    if root.is_file():
        if root.name != CSV_NAME:
            raise EdgesegError(f"{root}: a Severstal source is a folder holding {CSV_NAME}, or that {CSV_NAME} itself")
        root = root.parent
    scanned = scan(root)
    rng = np.random.default_rng(seed)
    order = _stratified_order(scanned.samples, rng, clean_fraction, NUM_CLASSES)
    frames: List[np.ndarray] = []
    names: List[str] = []
    labels: List[List[int]] = []
    skipped: List[str] = []
    for sample in order:
        if len(frames) == count:
            break
        if progress is not None:
            progress(1)
        try:
            image = load_image(sample.path, shape=None)
        except EdgesegError:
            skipped.append(sample.image_id)
            continue
        frames.append(fit_frame(image, geometry))
        names.append(sample.image_id)
        labels.append(list(sample.classes))
    notes = _skipped_note(skipped, "image(s)")
    if scanned.problems:
        notes.append(f"{len(scanned.problems)} problem(s) in {CSV_NAME}, e.g. {scanned.problems[0]}")
    present = {c for ls in labels for c in ls}
    missing = [c for c in range(1, NUM_CLASSES + 1) if c not in present]
    if missing:
        notes.append(f"no strip of class {', '.join(map(str, missing))} in {root}: the set cannot cover it")
    return save_calibration_set(out, frames, names, "severstal", geometry, labels=labels, notes=notes)


def _stratified_order(samples: Sequence, rng: np.random.Generator, clean_fraction: float, num_classes: int) -> List:
    """Every sample once, in the order to take them: clean and defective interleaved to hit
    `clean_fraction`; defective ones round-robin over classes, rarest class first."""
    clean = [s for s in samples if not s.classes]
    clean = [clean[i] for i in rng.permutation(len(clean))]
    queues: Dict[int, List] = {}
    for c in range(1, num_classes + 1):
        members = [s for s in samples if c in s.classes]
        queues[c] = [members[i] for i in rng.permutation(len(members))]
    rarest_first = sorted((c for c in queues if queues[c]), key=lambda c: (len(queues[c]), c))
    defective: List = []
    taken = set()
    while any(queues[c] for c in rarest_first):
        for c in rarest_first:
            while queues[c] and queues[c][0].image_id in taken:
                queues[c].pop(0)
            if queues[c]:
                sample = queues[c].pop(0)
                taken.add(sample.image_id)
                defective.append(sample)
    order: List = []
    n_clean = n_defect = 0
    while n_clean < len(clean) or n_defect < len(defective):
        want_clean = n_defect >= len(defective) or (
            n_clean < len(clean) and n_clean < clean_fraction * (n_clean + n_defect + 1)
        )
        if want_clean:
            order.append(clean[n_clean])
            n_clean += 1
        else:
            order.append(defective[n_defect])
            n_defect += 1
    return order


def source_kind(source: PathLike) -> str:
    """"severstal" (a folder with train.csv, or the CSV), "images" (another folder) or "video"."""
    from edgeseg.data.severstal import CSV_NAME

    path = Path(source)
    if path.is_dir():
        return "severstal" if (path / CSV_NAME).is_file() else "images"
    if path.suffix.lower() == ".csv":
        return "severstal"
    if path.is_file():
        return "video"
    raise EdgesegError(f"calibration source {path} not found", hint="pass an image folder, a Severstal folder (train.csv), or a video")


def source_to_calibration_set(
    source: PathLike,
    out: PathLike,
    geometry: Optional[Preprocess] = None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    progress: Progress = None,
) -> CalibrationSet:
    """Dispatch on what `source` is (see `source_kind`)."""
    kind = source_kind(source)
    if kind == "severstal":
        return severstal_to_calibration_set(source, out, geometry, count, seed, progress=progress)
    if kind == "images":
        return images_to_calibration_set(source, out, geometry, count, seed, progress=progress)
    return video_to_calibration_set(source, out, geometry, count, progress=progress)
