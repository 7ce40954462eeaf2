"""Render independent frames in parallel: a drive's once tracking is done, an exported animation's keyframes.

Worker *processes* (forked after the target and the track exist, so they inherit both without pickling; each runs
torch and OpenCV on one thread) render frame indices handed out in turn; the parent yields the images in frame
order to the writers. At most ``2 x workers`` frames are in flight, so memory stays bounded on long clips.
A photo target's renderer serialises its frames behind a lock and keeps per-frame caches, so threads would not
help; processes do, and a frame costs the same in a worker as in the parent.

Each worker has its own pipe and nothing else in common with the parent or the other workers: no shared queue lock,
no handler threads (``multiprocessing.Pool`` has both, and its ``terminate`` hung when a worker had inherited the
CLI's SIGTERM handler — the handler ran while the worker waited on the queue lock the parent held). A worker
resets SIGTERM to its default and ignores SIGINT (Ctrl+C is the parent's to handle); the parent ends the workers
with SIGKILL, so closing never waits on a worker. A worker that dies or raises is reported, not waited for.

``workers``: ``$DISCOFACE_RENDER_WORKERS`` or one per core (at most 4; 1 inside the editor, which never forks its Qt
process); 1 — or a platform without ``fork``, or a clip shorter than :data:`MIN_FRAMES` — renders in the calling
process as before.
"""
from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import signal
import sys
import traceback
from collections import deque
from typing import Callable, Iterator

import numpy as np

ENV = "DISCOFACE_RENDER_WORKERS"
MAX_WORKERS = 4
MIN_FRAMES = 8
AHEAD = 2  # frames queued per worker
MAX_WAITING = 512  # render_stream: jobs made and not sent yet (small: a frame's coefficients) before it waits
# an image comes back through memory shared with its worker (made before the fork: AHEAD + 1 slots a worker, taken
# in turn; only the pages a frame touches are ever allocated) instead of pickled down the pipe: a 1 MP frame's
# pickling, pipe copies and unpickling cost ~5 ms of CPU (worker + parent) against two copies of 0.3 ms. Larger
# images (or where the mapping fails) go down the pipe as before.
SLOT_BYTES = 48 << 20
SHARED = True  # False: every image pickled down the pipe (the reference, for tests and benches)


class RenderWorkerError(RuntimeError):
    """A render worker raised (the message carries its traceback) or stopped without an answer."""


def default_workers() -> int:
    v = os.environ.get(ENV, "").strip()
    if v:
        try:
            return max(1, int(v))
        except ValueError:
            raise ValueError(f"{ENV}={v!r} is not a whole number of workers") from None
    if "PySide6.QtCore" in sys.modules:  # the editor: never fork a process that runs Qt (and GL) threads
        return 1
    from engine.runtime import cpu_count

    return min(MAX_WORKERS, cpu_count())


class _Slots:
    """A worker's shared image slots: ``n`` x :data:`SLOT_BYTES` of anonymous shared memory mapped before the fork
    (the worker writes an image into slot k % n, the parent copies it out when it receives it: at most ``AHEAD``
    of a worker's images are unread at once, so a slot is read before it is written again)."""

    def __init__(self, n: int):
        self.n = n
        self.mem = mmap.mmap(-1, n * SLOT_BYTES)  # MAP_SHARED | MAP_ANONYMOUS: shared with the forked worker
        self.count = 0  # (in the worker) images written

    def put(self, img):
        """(in the worker) ``img`` written into the next slot: the message that stands for it, or None (not an
        image that fits a slot: sent as it is)."""
        if not isinstance(img, np.ndarray) or img.dtype.hasobject or img.nbytes > SLOT_BYTES:
            return None
        k = self.count % self.n
        self.count += 1
        dst = np.frombuffer(self.mem, img.dtype, img.size, k * SLOT_BYTES).reshape(img.shape)
        dst[...] = img
        return _InSlot(k, img.shape, img.dtype.str)

    def take(self, msg: "_InSlot") -> np.ndarray:
        """(in the parent) a copy of the image the worker wrote into slot ``msg.slot``."""
        dt = np.dtype(msg.dtype)
        n = int(np.prod(msg.shape))
        return np.frombuffer(self.mem, dt, n, msg.slot * SLOT_BYTES).reshape(msg.shape).copy()

    def close(self) -> None:
        try:
            self.mem.close()
        except (BufferError, ValueError):  # a view still exported (an error path): the mapping goes with the process
            pass


class _InSlot:
    """A worker's answer: the image is in its shared slot ``slot``."""
    __slots__ = ("slot", "shape", "dtype")

    def __init__(self, slot: int, shape: tuple, dtype: str):
        self.slot, self.shape, self.dtype = slot, shape, dtype

    def __reduce__(self):
        return _InSlot, (self.slot, self.shape, self.dtype)


def _worker(conn, render: Callable[[int], np.ndarray], parent_ends=(), slots: _Slots | None = None) -> None:
    """The loop in a forked worker: ``(index, argument)`` in, ``(index, image, None)`` or ``(index, None, error
    text)`` out (``render(argument)``: the argument is the frame's index, or :func:`render_stream`'s job; an image
    that fits ``slots`` is written there and stands as an :class:`_InSlot` in the answer).
    ``parent_ends``: the parent's ends of the pipes (this worker's and the earlier workers'), inherited by the fork:
    closed here, so that the parent's death closes this worker's pipe and the worker ends (held open, a parent
    killed by SIGTERM or SIGKILL left its workers waiting for ever)."""
    for c in parent_ends:
        c.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # never an inherited Python handler (the CLI's cleanup)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)  # (OpenCV's pool is already at one thread: set in the parent before the fork)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        i, arg = msg
        try:
            img = render(arg)
            out = (i, (slots.put(img) if slots is not None else None) or img, None)
        except BaseException as e:  # reported to the parent, which raises it there
            out = (i, None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        try:
            conn.send(out)
        except OSError:  # the parent is gone
            return


def render_frames(render: Callable[[int], np.ndarray], n: int, workers: int | None = None) -> Iterator[np.ndarray]:
    """``render(i)`` for i in 0..n-1, yielded in order; computed by ``workers`` forked processes when worth it.

    The workers are forked here, at the call (call it before opening the writers: a forked worker would otherwise
    hold the encoder's pipe open); close the returned generator (or let it finish) to stop them. A worker's error
    is raised here as :class:`RenderWorkerError`."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers <= 1 or n < MIN_FRAMES or "fork" not in mp.get_all_start_methods():
        return (render(i) for i in range(n))
    workers = min(workers, n)
    procs, conns = _fork(render, workers)
    return _ordered(procs, conns, n)


def render_stream(render: Callable[[object], np.ndarray], jobs: Iterator, workers: int | None = None
                  ) -> Iterator[np.ndarray]:
    """``render(job)`` for each job ``jobs`` yields (picklable: it goes down a worker's pipe), the images yielded
    in the jobs' order, while ``jobs`` is still producing: pulling on it may do a step of other work (a drive's
    tracking) and yield ``None`` when no job came of it. This process pulls on ``jobs`` whenever the next image is
    not ready yet (the workers render meanwhile) and waits only when ``jobs`` is exhausted; at most ``AHEAD x
    workers`` images are in flight. With one worker (or no ``fork``) everything runs here, in order.

    The workers are forked at the call (before ``jobs`` starts: nothing it opens is inherited)."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        return (render(j) for j in jobs if j is not None)
    procs, conns = _fork(render, workers)
    return _streamed(procs, conns, jobs)


def _fork(render, workers: int):
    from engine.render import fast_raster

    fast_raster.warm_up()  # loaded (or its loader thread joined) before the fork: no thread holds a lock then
    import cv2

    ctx = mp.get_context("fork")
    # OpenCV's thread pool does not survive a fork (a worker calling cv2.setNumThreads hung on the parent's pool
    # lock): shrink it to the calling thread before forking, restore it after
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    procs, conns = [], []
    try:
        for _ in range(workers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            slots = None
            if SHARED:
                try:
                    slots = _Slots(AHEAD + 1)
                except (OSError, ValueError):  # no shared mapping here: the pipe
                    slots = None
            p = ctx.Process(target=_worker, args=(child_end, render, conns + [parent_end], slots), daemon=True)
            p._discoface_slots = slots
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
    except BaseException:
        _stop(procs, conns)
        raise
    finally:
        cv2.setNumThreads(cv_threads)
    return procs, conns


def _stopped(p, i: int) -> RenderWorkerError:
    p.join(5.0)  # its pipe closes as it exits, a moment before it can be reaped: wait for the exit code
    return RenderWorkerError(f"render worker {p.pid} stopped (exit code {p.exitcode}) before frame {i}")


def _receive(p, conn, i: int):
    while not conn.poll(1.0):
        if not p.is_alive():
            raise _stopped(p, i)
    try:
        j, img, err = conn.recv()
    except (EOFError, OSError):
        raise _stopped(p, i) from None
    if err is not None:
        raise RenderWorkerError(f"frame {i} failed in a render worker: {err}")
    assert j == i, (j, i)
    if isinstance(img, _InSlot):
        img = p._discoface_slots.take(img)
    return img


def _ordered(procs, conns, n: int) -> Iterator[np.ndarray]:
    w = len(procs)
    try:
        sent = 0
        for i in range(n):
            while sent < n and sent < i + AHEAD * w:  # frame k always goes to worker k % w: answers come in order
                conns[sent % w].send((sent, sent))
                sent += 1
            yield _receive(procs[i % w], conns[i % w], i)
        for c in conns:
            c.send(None)
        for p in procs:
            p.join(5.0)
    finally:
        _stop(procs, conns)


_END = object()


def _streamed(procs, conns, jobs: Iterator) -> Iterator[np.ndarray]:
    w = len(procs)
    waiting = deque()  # jobs made, not sent yet
    sent = received = 0
    exhausted = False

    def pull() -> None:
        nonlocal exhausted
        j = next(jobs, _END)
        if j is _END:
            exhausted = True
        elif j is not None:
            waiting.append(j)

    try:
        while True:
            while waiting and sent < received + AHEAD * w:  # frame k always goes to worker k % w: in order
                conns[sent % w].send((sent, waiting.popleft()))
                sent += 1
            if received < sent and (exhausted or len(waiting) >= MAX_WAITING or conns[received % w].poll(0)):
                yield _receive(procs[received % w], conns[received % w], received)
                received += 1
            elif not exhausted and len(waiting) < MAX_WAITING:
                pull()  # the next image is not ready: do a step of the jobs' own work meanwhile
            elif received == sent and not waiting:
                break
        for c in conns:
            c.send(None)
        for p in procs:
            p.join(5.0)
    finally:
        close = getattr(jobs, "close", None)
        if close is not None:
            close()
        _stop(procs, conns)


def _stop(procs, conns) -> None:
    for p in procs:
        if p.exitcode is None:
            p.kill()  # SIGKILL: cannot be caught or blocked by anything the worker inherited
    for p in procs:
        p.join()
        slots = getattr(p, "_discoface_slots", None)
        if slots is not None:
            slots.close()
    for c in conns:
        c.close()
