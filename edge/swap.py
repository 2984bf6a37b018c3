"""Model update without stopping: a new classifier + segmenter pair is loaded beside the running
one, verified on this machine, optionally shadow-run on live frames, then swapped in between two
batches, and rolled back when it fails.

  slot = ModelSlot(cascade)               # the pair a run infers with (Pipeline, Inspector)
  event = slot.offer(new_cascade, 8)      # any thread: check, load, verify; the run goes on
  producer, inferred = slot.infer(batch)  # the inference thread: the swap happens here

Why this shape: the running pair never pauses. The new pair is checked against the running one
(`check_compatible`: frames already prepared for the running pair must suit it), activated and
verified (`ModelSlot.verify`) on the offering thread while the inference thread goes on; only
the handover happens on the inference thread, between two batches, so each frame is inferred
by exactly one pair and its record names that pair (`Cascade.finish` stamps `model_sha256`).
A backend may therefore be activated on one thread and run on another: ONNX Runtime and
OpenVINO sessions allow it, and the TensorRT backend makes its CUDA calls on its own CudaThread.

With `shadow` N the new pair first runs beside the running one on the next N live frames (the
running pair's results are the ones kept) and the swap event reports their agreement: the share
of frames both pairs gated alike, and the mean mask Dice over all classes (1 where both found
nothing). After the swap the old pair stays loaded for the new one's first PROBATION_FRAMES
frames: an exception there re-runs that batch on the old pair and rolls back. A pair that cannot
be loaded, is incompatible, fails verification or fails while shadowing is never swapped in.
Every step is an `UpdateEvent` (slot.events, the offer's `on_event`, the "edgeseg" logger: a
warning for a rollback), never an error that stops the run.

`ModelWatcher` offers the pair found under two paths (a folder a deployment writes into) once
its files changed and then stayed unchanged for `settle` seconds. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.edge.cascade import ROLES, Cascade, Inferred, Prepared
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import iso_utc
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import model_files

PROBATION_FRAMES = 8  # frames the swapped-in pair runs while the old one stays loaded
SWAPPED, VERIFIED, ROLLED_BACK, SUPERSEDED = "swapped", "verified", "rolled_back", "superseded"
Verify = Callable[[Cascade, Frame], None]
log = logging.getLogger("edgeseg")

__all__ = ["PROBATION_FRAMES", "ModelSlot", "ModelWatcher", "UpdateEvent", "Verify", "check_compatible", "verify_on_frame"]


@dataclass
class UpdateEvent:
    """One step of a model update. kind: "verified" (loaded and verified, swapped in after its
    shadow frames), "swapped" (its frames start now), "rolled_back" (never used, or no longer:
    `reason` says why) or "superseded" (a newer update came before the swap). models: the new
    pair's sha256 per role ({} when it could not be read); paths: its files; shadow: the
    agreement with the running pair on the shadowed frames ({"frames", "gate_agreement", "dice"})."""

    kind: str
    models: Dict[str, str]
    paths: Dict[str, str]
    reason: str = ""
    shadow: Optional[Dict[str, Any]] = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> Dict[str, Any]:
        """JSON form for a run's report (`at` as ISO 8601 UTC)."""
        return {"kind": self.kind, "models": dict(self.models), "paths": dict(self.paths), "reason": self.reason, "shadow": self.shadow, "at": iso_utc(self.at)}

    def describe(self) -> str:
        """One line for people, e.g. "model update swapped in: classifier 1a2b3c4d, segmenter ..."."""
        names = ", ".join(f"{role} {self.models[role][:12]}" for role in ROLES if role in self.models) or " + ".join(self.paths.values())
        text = f"model update {self.kind.replace('_', ' ')}: {names}"
        if self.shadow is not None:
            dice = self.shadow["dice"]
            text += f" (shadow {self.shadow['frames']} frames: gate agreement {self.shadow['gate_agreement']:.1%}, mask Dice {dice:.3f})"
        return text + (f": {self.reason}" if self.reason else "")


def check_compatible(running: Cascade, candidate: Cascade) -> None:
    """Refuse a pair that cannot take over mid-run: frames are prepared for the running
    classifier before the swap and inferred by the new one after it, so the classifiers must
    preprocess alike and take the same input; the outputs were opened for the running classes."""
    old, new = running.classifier_card, candidate.classifier_card
    if new.preprocess != old.preprocess or new.input.dtype != old.input.dtype:
        raise EdgesegError(
            f"the new classifier takes its input otherwise ({new.preprocess}, {new.input.dtype}) than the running one ({old.preprocess}, {old.input.dtype})",
            hint="a pair with other preprocessing needs a restart of the run",
        )
    if list(candidate.segmenter_card.classes) != list(running.segmenter_card.classes):
        raise EdgesegError(
            f"the new segmenter's classes {candidate.segmenter_card.classes} differ from the running {running.segmenter_card.classes}",
            hint="the run's outputs were opened for the running classes: restart the run for other classes",
        )


def verify_on_frame(cascade: Cascade, frame: Frame) -> None:
    """The default verification: the new pair runs on `frame` (the newest live frame) with the
    segmenter forced on (gate 0), and both models must answer numbers the post-processing
    takes. Raises EdgesegError (or the runtime's error) naming what failed."""
    result = cascade.results([frame], gate=0.0)[0]
    if result.error:
        raise EdgesegError(f"on frame {frame.index} of {frame.source}: {result.error}")


@dataclass
class _Candidate:
    cascade: Cascade
    shadow: int
    on_event: Optional[Callable[[UpdateEvent], None]]
    frames: int = 0  # shadowed so far
    gate_agree: int = 0
    dice_sum: float = 0.0

    def agreement(self) -> Dict[str, Any]:
        return {"frames": self.frames, "gate_agreement": self.gate_agree / self.frames, "dice": self.dice_sum / self.frames}


class ModelSlot:
    """The pair a run infers with (`active`) and the update that may replace it.

    verify: how an offered pair is verified on this machine before use (default
    `verify_on_frame`; e.g. a golden-frame check): called on the offering thread with the
    activated pair and the newest live frame (a mid-grey frame before the first), it raises to
    refuse the pair. `events` keeps every UpdateEvent, in order.
    """

    def __init__(self, cascade: Cascade, verify: Verify = verify_on_frame) -> None:
        self.active = cascade
        self.verify = verify
        self.events: List[UpdateEvent] = []
        self.last_frame: Optional[Frame] = None  # newest frame inferred: what verification runs on
        self._lock = threading.Lock()
        self._offered: Optional[_Candidate] = None  # verified, for the inference thread to take
        self._shadowing: Optional[_Candidate] = None
        self._trial: Optional[_Candidate] = None  # swapped in, on probation
        self._previous: Optional[Cascade] = None  # the pair before it, kept for a rollback
        self._probation = 0

    # -- any thread -------------------------------------------------------------------------------
    def offer(self, candidate: Cascade, shadow: int = 0, on_event: Optional[Callable[[UpdateEvent], None]] = None) -> UpdateEvent:
        """Check, activate and verify `candidate` here, while the running pair goes on; then
        hand it to the inference thread, which swaps it in before its next batch (after
        `shadow` frames run by both). Returns the "verified" or "rolled_back" event; the later
        ones go to `on_event` too."""
        if shadow < 0:
            raise EdgesegError(f"shadow frames must be >= 0, got {shadow}")
        step = "is not compatible with the running pair"
        try:
            check_compatible(self.active, candidate)
            step = "could not be loaded"
            candidate.activate()
            step = "failed verification"
            try:
                self.verify(candidate, self.last_frame or _blank_frame(candidate))
            except BaseException:
                candidate.deactivate()
                raise
        except Exception as exc:  # noqa: B902 - any failure of the new pair is a rollback, not the run's end
            return self._emit(_Candidate(candidate, shadow, on_event), ROLLED_BACK, f"{step}: {_reason(exc)}")
        offered = _Candidate(candidate, shadow, on_event)
        with self._lock:
            replaced, self._offered = self._offered, offered
        if replaced is not None:
            replaced.cascade.deactivate()
            self._emit(replaced, SUPERSEDED, "a newer update came before the swap")
        return self._emit(offered, VERIFIED)

    def reject(self, paths: Dict[str, Any], reason: str, on_event: Optional[Callable[[UpdateEvent], None]] = None) -> UpdateEvent:
        """Report a pair that could not even be opened (paths per role) as rolled back."""
        return self._publish(UpdateEvent(ROLLED_BACK, {}, {role: str(path) for role, path in paths.items()}, reason), on_event)

    def close(self) -> None:
        """Free every pair the slot holds; safe to call twice."""
        with self._lock:
            offered, self._offered = self._offered, None
        pairs = (offered.cascade if offered else None, self._shadowing.cascade if self._shadowing else None, self._previous, self.active)
        for pair in pairs:
            if pair is not None:
                pair.deactivate()
        self._shadowing = self._trial = self._previous = None

    # -- the inference thread -------------------------------------------------------------------
    def infer(self, batch: Sequence[Prepared], gate: Optional[float] = None) -> Tuple[Cascade, List[Inferred]]:
        """`Cascade.infer` on the pair in use, and that pair (whose `finish` makes the results):
        takes an offered pair first, shadows it, swaps it in or rolls it back."""
        self.last_frame = batch[-1].frame
        with self._lock:
            offered, self._offered = self._offered, None
        if offered is not None:
            self._take(offered)
        producer = self.active
        if self._shadowing is not None:
            inferred = producer.infer(batch, gate)
            self._shadow(self._shadowing, inferred, batch, gate)
            return producer, inferred
        if self._previous is None:
            return producer, producer.infer(batch, gate)
        try:
            inferred = producer.infer(batch, gate)
        except Exception as exc:  # noqa: B902 - the old pair takes this batch over
            self._roll_back(f"failed on its first live frames: {_reason(exc)}")
            return self.active, self.active.infer(batch, gate)
        self._probation -= len(batch)
        if self._probation <= 0:
            self.settle()
        return producer, inferred

    def settle(self) -> None:
        """End the probation now: the swapped-in pair stays, the old one is freed (the end of a
        run calls it)."""
        previous, self._previous, self._trial = self._previous, None, None
        if previous is not None:
            previous.deactivate()

    def _take(self, offered: _Candidate) -> None:
        if self._shadowing is not None:
            self._shadowing.cascade.deactivate()
            self._emit(self._shadowing, SUPERSEDED, "a newer update came before the swap")
            self._shadowing = None
        self.settle()
        if offered.shadow > 0:
            self._shadowing = offered
        else:
            self._swap(offered)

    def _shadow(self, candidate: _Candidate, inferred: List[Inferred], batch: Sequence[Prepared], gate: Optional[float]) -> None:
        try:
            theirs = candidate.cascade.infer(batch, gate)
            for ours, new in zip(inferred, theirs):
                kept = self.active.finish(replace(ours, stages=dict(ours.stages)))  # the pipeline finishes `ours` itself
                _agree(candidate, kept, candidate.cascade.finish(new))
        except Exception as exc:  # noqa: B902 - the running pair goes on
            self._shadowing = None
            candidate.cascade.deactivate()
            self._emit(candidate, ROLLED_BACK, f"failed while shadowing: {_reason(exc)}")
            return
        if candidate.frames >= candidate.shadow:
            self._shadowing = None
            self._swap(candidate)

    def _swap(self, candidate: _Candidate) -> None:
        self._previous, self.active = self.active, candidate.cascade
        self._trial, self._probation = candidate, PROBATION_FRAMES
        self._emit(candidate, SWAPPED)

    def _roll_back(self, reason: str) -> None:
        failed, trial = self.active, self._trial
        self.active, self._previous, self._trial = self._previous, None, None  # type: ignore[assignment]
        failed.deactivate()
        self._emit(trial, ROLLED_BACK, reason)  # type: ignore[arg-type]  # set with _previous

    def _emit(self, candidate: _Candidate, kind: str, reason: str = "") -> UpdateEvent:
        models, paths = _identify(candidate.cascade)
        shadow = candidate.agreement() if candidate.frames and kind in (SWAPPED, ROLLED_BACK) else None
        return self._publish(UpdateEvent(kind, models, paths, reason, shadow), candidate.on_event)

    def _publish(self, event: UpdateEvent, on_event: Optional[Callable[[UpdateEvent], None]]) -> UpdateEvent:
        with self._lock:
            self.events.append(event)
        log.log(logging.WARNING if event.kind == ROLLED_BACK else logging.INFO, "%s", event.describe())
        if on_event is not None:
            on_event(event)
        return event


def _identify(cascade: Cascade) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(sha256, path) per role of a pair, as far as they can be read."""
    try:
        entries = cascade.models()
    except Exception:  # noqa: B902 - an unreadable artifact is what the event reports
        return {}, {}
    return {role: e["sha256"] for role, e in entries.items()}, {role: e["path"] for role, e in entries.items()}


def _agree(candidate: _Candidate, ours: FrameResult, theirs: FrameResult) -> None:
    """Add one shadowed frame: gate decision alike? mask Dice over all classes."""
    candidate.frames += 1
    candidate.gate_agree += ours.gated == theirs.gated
    a, b = ours.segmentation, theirs.segmentation
    total = sum(a.areas.values()) + sum(b.areas.values())
    common = sum(int(np.count_nonzero(a.masks[name] & b.masks[name])) for name in a.masks if name in b.masks)
    candidate.dice_sum += 1.0 if total == 0 else 2.0 * common / total


def _blank_frame(cascade: Cascade) -> Frame:
    """A mid-grey frame of the classifier's input size, to verify on before any live frame."""
    spec = cascade.classifier_card.preprocess
    return Frame(0, np.full((spec.height, spec.width), 128, np.uint8), time.perf_counter(), "verification", captured_at=time.time())


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and not isinstance(exc, EdgesegError) else (text[0] if text else type(exc).__name__)


class ModelWatcher:
    """Offers the pair at `classifier` / `segmenter` (e.g. in a folder a deployment writes into)
    whenever its files changed and then stayed unchanged for `settle` seconds, unless it is the
    pair running already; `reload()` offers it at once (SIGHUP).

    update: called with the two paths on the watcher's thread (Inspector.update); running:
    the sha256 per role of the running pair. A pair whose files are missing or do not match
    their cards is reported by `update` (rolled back) and tried again once they change.
    poll: check the files every `interval` seconds; False: only on `reload()`.
    """

    def __init__(
        self,
        classifier: Path,
        segmenter: Path,
        update: Callable[[Path, Path], Any],
        running: Callable[[], Dict[str, str]],
        *,
        interval: float = 0.5,
        settle: float = 1.0,
        poll: bool = True,
    ) -> None:
        self.paths = (Path(classifier), Path(segmenter))
        self.update = update
        self.running = running
        self.interval = interval
        self.settle = settle
        self.poll = poll
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="edgeseg-models", daemon=True)

    def start(self) -> "ModelWatcher":
        self._thread.start()
        return self

    def reload(self) -> None:
        """Offer the pair now, even unchanged (safe from a signal handler)."""
        self._reload.set()
        self._wake.set()

    def close(self) -> None:
        """Stop watching; an update in progress finishes first."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "ModelWatcher":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _fingerprint(self) -> Tuple[Tuple[str, int, int], ...]:
        """Name, size and mtime of every file of the pair ((name, -1, -1) for a missing one)."""
        entries = []
        for path in (f for artifact in self.paths for f in model_files(artifact)):
            try:
                stat = path.stat()
                entries.append((str(path), stat.st_size, stat.st_mtime_ns))
            except OSError:
                entries.append((str(path), -1, -1))
        return tuple(entries)

    def _watch(self) -> None:
        seen, since, tried = self._fingerprint(), time.monotonic(), None
        while not self._closed.is_set():
            self._wake.wait(self.interval if self.poll else None)
            self._wake.clear()
            if self._closed.is_set():
                return
            forced = self._reload.is_set()
            self._reload.clear()
            now = self._fingerprint()
            if now != seen:
                seen, since = now, time.monotonic()
            complete = all(size >= 0 for _, size, _ in now)  # a card is written after its artifact
            if forced or (self.poll and complete and now != tried and time.monotonic() - since >= self.settle):
                tried = now
                self._offer(forced)

    def _offer(self, forced: bool) -> None:
        from edgeseg.edge.card import read_card

        try:
            shas = {role: read_card(path, verify=False).artifact.sha256 for role, path in zip(ROLES, self.paths)}
        except Exception:  # noqa: B902 - `update` reports an unreadable pair
            shas = {}
        if shas == self.running():
            if forced:
                log.info("model reload: %s and %s are the running pair already", *self.paths)
            return
        try:
            self.update(*self.paths)
        except Exception as exc:  # noqa: B902 - the watcher outlives one bad update
            log.warning("model update from %s failed: %s", self.paths[0].parent, _reason(exc))
