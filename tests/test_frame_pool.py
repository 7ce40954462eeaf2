"""Parallel rendering of a drive's frames: same frames, in order, bounded, workers stopped on close."""
import os

import numpy as np
import pytest

from engine.render import frame_pool as render_pool

BIG = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)


def _frame(i):
    return np.roll(BIG, i, axis=1) ^ np.uint8(i), os.getpid()


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_workers_render_every_frame_in_order():
    n = 23
    seq = [f for f, _ in render_pool.render_frames(_frame, n, workers=1)]
    out = list(render_pool.render_frames(_frame, n, workers=2))
    assert len(out) == n
    for i, (img, pid) in enumerate(out):
        assert np.array_equal(img, seq[i]), i
    assert os.getpid() not in {pid for _, pid in out}  # drawn by the workers, not here


def test_short_clips_and_one_worker_stay_in_process(monkeypatch):
    out = list(render_pool.render_frames(_frame, render_pool.MIN_FRAMES - 1, workers=4))
    assert {pid for _, pid in out} == {os.getpid()}
    monkeypatch.setenv(render_pool.ENV, "1")
    assert render_pool.default_workers() == 1
    monkeypatch.setenv(render_pool.ENV, "two")
    with pytest.raises(ValueError, match="DISCOFACE_RENDER_WORKERS"):
        render_pool.default_workers()


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_closing_early_stops_the_workers():
    it = render_pool.render_frames(_frame, 1000, workers=2)
    first = [next(it) for _ in range(3)]
    assert [np.array_equal(f, _frame(i)[0]) for i, (f, _) in enumerate(first)] == [True] * 3
    pool = it.gi_frame.f_locals["pool"]
    it.close()
    assert all(not p.is_alive() for p in pool._pool)


def _cv_frame(i):
    import cv2

    img = cv2.GaussianBlur(np.roll(BIG, i, axis=0), (0, 0), 2.0)
    return cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC), os.getpid()


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_workers_survive_opencv_used_with_threads_before_the_fork():
    import cv2

    cv2.setNumThreads(2)
    for i in range(20):  # the parent's OpenCV pool has been busy
        _cv_frame(i)
    import signal

    def hung(*_):
        raise TimeoutError("the render workers hung after the fork")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        out = list(render_pool.render_frames(_cv_frame, 12, workers=2))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert all(np.array_equal(img, _cv_frame(i)[0]) for i, (img, _) in enumerate(out))
    assert cv2.getNumThreads() == 2  # restored in the parent


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_session_export_frames_from_workers_match(face_model):
    from engine.editing.session import Session

    sess = Session(model=face_model, generator=None)
    for t, yaw in ((0.0, -20.0), (1.0, 20.0)):
        sess.set_controls({"yaw": yaw, "smile": 0.5 * t})
        sess.add_keyframe(t)
    one = list(sess.iter_frames(10, 64, workers=1))
    two = sess.iter_frames(10, 64, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0], one[-1])
