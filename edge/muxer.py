"""Batches across cameras, formed as DeepStream's stream muxer (Gst-nvstreammux) forms them.

Every camera has its own bounded queue, filled by its capture thread; the inference thread takes
batches of up to `limit` frames. A batch is pushed as soon as it is full, or when `timeout`
seconds have passed since its first frame was taken, so a stalled or lost camera delays the
others by at most that timeout, never longer. The muxer waits only for cameras that have not yet
given a frame to the batch: a second frame of a live camera is a whole frame interval away, but
frames already queued (a file read ahead) fill free places at once.

Places are handed out round-robin: each goes to the camera with the fewest frames in the batch
so far, ties to the camera after the one served last. With `limit` at least the number of
cameras, the oldest frame of every camera that has one goes into the next batch; with fewer
places, a frame at the head of its queue waits at most ceil(cameras / limit) - 1 batches, so no
camera falls more than one batch behind when a batch holds half of them. `Entry.waited` counts
the batches that were formed while the frame was at the head of its queue without it.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, List, Optional, Sequence, Tuple


@dataclass
class Entry:
    """One frame of a batch: which camera, the item its capture thread put, and how many
    batches it waited at the head of its camera's queue."""

    camera: int
    item: Any
    waited: int


class StreamMuxer:
    """Per-camera queues of `capacities[i]` items and the batch formation over them."""

    def __init__(self, capacities: Sequence[int]) -> None:
        if not capacities or min(capacities) < 1:
            raise ValueError(f"every camera queue needs room for at least one frame, got {list(capacities)}")
        self._queues: List[Deque[Tuple[Any, int]]] = [collections.deque() for _ in capacities]
        self._capacities = list(capacities)
        self._finished = [False] * len(capacities)
        self._last_taken = [-1] * len(capacities)  # batch number that took each camera's previous frame
        self._next = 0  # camera first in line for the next batch
        self._cond = threading.Condition()
        self.batches = 0  # batches formed so far: the number of the batch being formed

    def put(self, camera: int, item: Any, timeout: float) -> bool:
        """Queue `item` for `camera`; False when its queue stayed full for `timeout` s."""
        with self._cond:
            queue = self._queues[camera]
            if not self._cond.wait_for(lambda: len(queue) < self._capacities[camera], timeout):
                return False
            queue.append((item, self.batches))
            self._cond.notify_all()
            return True

    def finish(self, camera: int) -> None:
        """`camera` will put nothing more; its queued frames are still delivered."""
        with self._cond:
            self._finished[camera] = True
            self._cond.notify_all()

    def next_batch(self, limit: int, timeout: float, poll: float) -> Optional[List[Entry]]:
        """The next batch (1 to `limit` entries); [] when no frame came within `poll` s (the
        caller checks its stop flags and asks again); None once every camera finished and
        every queue is empty."""
        if limit < 1:
            raise ValueError(f"a batch holds at least one frame, got limit {limit}")
        with self._cond:
            if not self._cond.wait_for(lambda: self._available() or self._drained(), poll):
                return []
            if not self._available():
                return None
            batch: List[Entry] = []
            taken = [0] * len(self._queues)
            deadline = 0.0
            while len(batch) < limit:
                camera = self._pick(taken)
                if camera is not None:
                    batch.append(self._take(camera))
                    taken[camera] += 1
                    if len(batch) == 1:
                        deadline = time.perf_counter() + timeout
                    continue
                missing = any(not done and count == 0 for done, count in zip(self._finished, taken))
                remaining = deadline - time.perf_counter()
                if not missing or remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._next = (batch[-1].camera + 1) % len(self._queues)
            self.batches += 1
            self._cond.notify_all()  # room in the queues for the capture threads
            return batch

    def _available(self) -> bool:
        return any(self._queues)

    def _drained(self) -> bool:
        return all(self._finished) and not self._available()

    def _pick(self, taken: List[int]) -> Optional[int]:
        count = len(self._queues)
        order = [(self._next + k) % count for k in range(count)]
        ready = [c for c in order if self._queues[c]]
        return min(ready, key=lambda c: taken[c]) if ready else None  # min keeps the first of a tie

    def _take(self, camera: int) -> Entry:
        item, enqueued = self._queues[camera].popleft()
        head_since = max(enqueued, self._last_taken[camera] + 1)  # the batch that took its predecessor was not its own
        self._last_taken[camera] = self.batches
        return Entry(camera=camera, item=item, waited=max(0, self.batches - head_since))
