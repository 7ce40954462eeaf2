"""Parallel rendering of a drive's frames: same frames, in order, bounded, workers stopped on close."""
import os
import signal
import time

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
    procs = it.gi_frame.f_locals["procs"]
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    it.close()
    assert all(not p.is_alive() for p in procs)


class _Hung(Exception):
    pass


def _guarded(seconds, fn):
    """Run ``fn()``; a hang fails the test after ``seconds`` instead of stalling the whole suite."""
    import signal

    def hung(*_):
        raise _Hung(f"hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def cli_signal_handlers():
    """The CLI's cleanup handlers installed in this process, as the in-process CLI tests leave them."""
    import signal

    from engine.io import files

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    files.install_cleanup_handlers()
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _plain(i):
    return np.roll(BIG, i, axis=1)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_closing_early_never_hangs_under_the_cli_signal_handlers(cli_signal_handlers):
    # multiprocessing.Pool hung here within a few dozen rounds (CI stalled at this file): the workers had inherited
    # the CLI's SIGTERM handler, Pool.terminate's SIGTERM ran it while they waited on the queue lock the parent held
    def rounds():
        for _ in range(60):
            it = render_pool.render_frames(_plain, 1000, workers=2)
            [next(it) for _ in range(3)]
            it.close()
            assert len(list(render_pool.render_frames(_plain, 12, workers=2))) == 12

    _guarded(150, rounds)


def _signals(i):
    import signal

    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_workers_use_the_default_sigterm_and_leave_ctrl_c_to_the_parent(cli_signal_handlers):
    import signal

    out = list(render_pool.render_frames(_signals, 8, workers=2))
    assert out == [(signal.SIG_DFL, signal.SIG_IGN)] * 8
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the parent keeps its own handler


def _fails_at_5(i):
    if i == 5:
        raise ValueError("bad frame five")
    return _plain(i)


def _dies_at_5(i):
    if i == 5:
        os._exit(3)
    return _plain(i)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_a_failing_or_dying_worker_is_reported_not_waited_for():
    got = []
    with pytest.raises(render_pool.RenderWorkerError, match="frame 5 failed.*ValueError: bad frame five"):
        for img in render_pool.render_frames(_fails_at_5, 20, workers=2):
            got.append(img)
    assert len(got) == 5
    with pytest.raises(render_pool.RenderWorkerError, match=r"stopped \(exit code 3\) before frame 5"):
        _guarded(60, lambda: list(render_pool.render_frames(_dies_at_5, 20, workers=2)))


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


_KILLED_PARENT = """
import sys, time
import numpy as np
from engine.render import frame_pool

def slow(i):
    time.sleep(0.05)
    return np.zeros((4, 4, 3), np.uint8)

it = frame_pool.render_frames(slow, 10000, workers=2)
next(it)
print(" ".join(str(p.pid) for p in it.gi_frame.f_locals["procs"]), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self") or "fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="needs fork and /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_workers_end_when_the_parent_is_killed(sig):
    """A parent killed while its workers render (``kill`` of a drive or an export: nothing of the parent runs) leaves
    no worker behind: each worker closes the parent's pipe ends it inherited, so the parent's death ends its pipe.
    (Before, each worker held its own pipe's other end open and waited on it for ever: ~300 MB each.)"""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    p = subprocess.Popen([sys.executable, "-c", _KILLED_PARENT], cwd=repo, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})
    try:
        pids = [int(v) for v in p.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(q) for q in pids)
        p.send_signal(sig)
        p.wait(30)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(q) for q in pids):
            time.sleep(0.1)
        left = [q for q in pids if _alive(q)]
    finally:
        if p.poll() is None:
            p.kill()
    for q in left:
        os.kill(q, signal.SIGKILL)  # (the old code's orphans: not left running)
    assert left == []


def _job_frame(job):
    i, k = job
    return np.roll(BIG, i, axis=1) ^ np.uint8(k), os.getpid()


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_render_stream_renders_jobs_in_order_while_they_are_still_being_made():
    """A job source that does work between jobs (``None``: a step with no job) is pulled on while the workers render:
    the first images come out long before it is exhausted; every image in order; closing stops workers and source."""
    made = []

    def jobs(n=40):
        for i in range(n):
            made.append(i)
            yield None  # a step of other work (a drive's tracking of one frame)
            if i % 3 == 0:  # jobs come in bunches, as the smoothing gives frames out
                for j in range(i, min(i + 3, n)):
                    yield (j, 7)

    out = list(render_pool.render_stream(_job_frame, jobs(), workers=2))
    assert len(out) == 40 and made == list(range(40))
    for j, (img, _) in enumerate(out):
        assert np.array_equal(img, _job_frame((j, 7))[0]), j
    assert os.getpid() not in {p for _, p in out}
    closed, pulled = [], []

    def endless():  # images come out while the source is still making jobs; it is not pulled on without bound
        try:
            i = 0
            while True:
                pulled.append(i)
                yield (i, 1)
                i += 1
        finally:
            closed.append(True)

    it = render_pool.render_stream(_job_frame, endless(), workers=2)
    first = [next(it) for _ in range(3)]
    assert [np.array_equal(f, _job_frame((i, 1))[0]) for i, (f, _) in enumerate(first)] == [True] * 3
    assert len(pulled) <= render_pool.MAX_WAITING + 2 * render_pool.AHEAD + 3
    procs = it.gi_frame.f_locals["procs"]
    it.close()
    assert closed and all(not p.is_alive() for p in procs)
    seq = [img for img, _ in render_pool.render_stream(_job_frame, jobs(5), workers=1)]  # one worker: in process
    assert len(seq) == 5 and np.array_equal(seq[4], _job_frame((4, 7))[0])


def _image(i):
    """A plain image (no tuple): what a drive's render gives; a worker's frames take different times."""
    if i % 5 == 1:
        time.sleep(0.01)
    return (np.roll(BIG, i, axis=0) ^ np.uint8(3 * i)).astype(np.uint8)


def _image_job(job):
    return _image(job)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_images_come_back_through_shared_slots_unchanged(monkeypatch):
    """A worker's image comes back through its shared slots (not pickled down the pipe): every frame as rendered, in
    order, a copy that stays valid after later frames came (slots are reused in turn); an image larger than a slot
    goes down the pipe."""
    taken = []
    real = render_pool._Slots.take
    monkeypatch.setattr(render_pool._Slots, "take", lambda self, msg: taken.append(msg.slot) or real(self, msg))
    n = 37
    out = list(render_pool.render_frames(_image, n, workers=2))
    assert len(out) == n and all(np.array_equal(img, _image(i)) for i, img in enumerate(out))
    assert len(taken) == n and set(taken) == set(range(render_pool.AHEAD + 1))
    out = list(render_pool.render_stream(_image_job, iter(range(n)), workers=3))
    assert all(np.array_equal(img, _image(i)) for i, img in enumerate(out))
    assert len(taken) == 2 * n
    monkeypatch.setattr(render_pool, "SLOT_BYTES", BIG.nbytes - 1)  # too large for a slot: the pipe
    out = list(render_pool.render_frames(_image, 12, workers=2))
    assert all(np.array_equal(img, _image(i)) for i, img in enumerate(out))
    assert len(taken) == 2 * n
