"""Batch formation across cameras (edge/muxer.py): round-robin fairness, the batch timeout, the end."""
import threading
import time

import pytest

from edgeseg.edge.muxer import StreamMuxer


def _steady_run(cameras, limit, fast, slow_every, batches):
    """Cameras in `fast` always have a full queue; the others get one frame every `slow_every`
    batches. Returns every entry taken, batch by batch."""
    muxer = StreamMuxer([3] * cameras)
    taken = []
    for n in range(batches):
        for camera in range(cameras):
            if camera in fast:
                while muxer.put(camera, (camera, n), timeout=0):
                    pass
            elif n % slow_every == 0:
                muxer.put(camera, (camera, n), timeout=0)
        taken.append(muxer.next_batch(limit, timeout=0, poll=0))
    return taken


def test_a_fast_camera_never_starves_a_slow_one_with_one_place_per_batch():
    batches = _steady_run(cameras=2, limit=1, fast={0}, slow_every=3, batches=60)
    slow = [e for batch in batches for e in batch if e.camera == 1]
    assert len(slow) == 20  # every slow frame was taken, each within a batch of its arrival
    assert max(e.waited for batch in batches for e in batch) <= 1
    assert max(e.item[1] for e in slow) >= 57


def test_with_a_place_per_camera_every_waiting_camera_is_in_the_next_batch():
    batches = _steady_run(cameras=4, limit=4, fast={0, 2}, slow_every=2, batches=30)
    assert all(e.waited == 0 for batch in batches for e in batch)
    for n, batch in enumerate(batches):
        assert sorted(e.camera for e in batch) == ([0, 1, 2, 3] if n % 2 == 0 else [0, 0, 2, 2])  # queued frames fill free places


def test_half_the_cameras_per_batch_keeps_every_camera_within_one_batch():
    batches = _steady_run(cameras=4, limit=2, fast={0, 1, 2, 3}, slow_every=1, batches=40)
    assert max(e.waited for batch in batches for e in batch) == 1
    counts = [sum(e.camera == c for batch in batches for e in batch) for c in range(4)]
    assert counts == [20, 20, 20, 20]


def test_queued_frames_fill_free_places_and_keep_each_camera_in_order():
    muxer = StreamMuxer([4, 4])
    for i in range(4):
        muxer.put(0, i, timeout=0)
    muxer.put(1, "b", timeout=0)
    batch = muxer.next_batch(4, timeout=0, poll=0)
    assert [(e.camera, e.item) for e in batch] == [(0, 0), (1, "b"), (0, 1), (0, 2)]


def test_a_stalled_camera_delays_a_batch_by_the_timeout_only():
    muxer = StreamMuxer([1, 1])
    muxer.put(0, "a", timeout=0)
    started = time.perf_counter()
    batch = muxer.next_batch(2, timeout=0.2, poll=1.0)
    waited = time.perf_counter() - started
    assert [e.item for e in batch] == ["a"] and 0.15 <= waited < 1.0


def test_a_frame_arriving_within_the_timeout_joins_the_batch():
    muxer = StreamMuxer([1, 1])
    muxer.put(0, "a", timeout=0)
    threading.Timer(0.05, muxer.put, args=(1, "b", 0)).start()
    batch = muxer.next_batch(2, timeout=2.0, poll=1.0)
    assert sorted(e.item for e in batch) == ["a", "b"]


def test_finished_cameras_are_not_waited_for_and_the_end_is_none():
    muxer = StreamMuxer([2, 2])
    muxer.put(0, "a", timeout=0)
    muxer.finish(1)
    started = time.perf_counter()
    assert [e.item for e in muxer.next_batch(2, timeout=5.0, poll=1.0)] == ["a"]
    assert time.perf_counter() - started < 1.0
    assert muxer.next_batch(2, timeout=0, poll=0.01) == []  # camera 0 may still deliver
    muxer.finish(0)
    assert muxer.next_batch(2, timeout=0, poll=0.01) is None


def test_a_full_camera_queue_refuses_after_the_timeout():
    muxer = StreamMuxer([1])
    assert muxer.put(0, 1, timeout=0)
    assert not muxer.put(0, 2, timeout=0.01)
    with pytest.raises(ValueError):
        StreamMuxer([0])
