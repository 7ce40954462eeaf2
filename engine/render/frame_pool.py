"""Render independent frames in parallel: a drive's once tracking is done, an exported animation's keyframes.

Worker *processes* (forked after the target and the track exist, so they inherit both without pickling; each runs
torch and OpenCV on one thread) render frame indices handed out in order; the parent yields the images in frame
order to the writers. At most ``2 x workers`` frames are in flight, so memory stays bounded on long clips.
A photo target's renderer serialises its frames behind a lock and keeps per-frame caches, so threads would not
help; processes do, and a frame costs the same in a worker as in the parent.

``workers``: ``$DISCOFACE_RENDER_WORKERS`` or one per core (at most 4; 1 inside the editor, which never forks its Qt
process); 1 — or a platform without ``fork``, or a clip shorter than :data:`MIN_FRAMES` — renders in the calling
process as before.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import deque
from typing import Callable, Iterator

import numpy as np

ENV = "DISCOFACE_RENDER_WORKERS"
MAX_WORKERS = 4
MIN_FRAMES = 8

_job: Callable[[int], np.ndarray] | None = None  # set in the parent just before the fork, inherited by workers


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


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # (OpenCV's pool is already at one thread: set in the parent before the fork)


def _render_one(i: int) -> tuple[int, np.ndarray]:
    return i, _job(i)


def render_frames(render: Callable[[int], np.ndarray], n: int, workers: int | None = None) -> Iterator[np.ndarray]:
    """``render(i)`` for i in 0..n-1, yielded in order; computed by ``workers`` forked processes when worth it.

    The workers are forked here, at the call (call it before opening the writers: a forked worker would otherwise
    hold the encoder's pipe open); close the returned generator (or let it finish) to stop them."""
    global _job
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers <= 1 or n < MIN_FRAMES or "fork" not in mp.get_all_start_methods():
        return (render(i) for i in range(n))
    from engine.render import fast_raster

    fast_raster.warm_up()  # loaded (or its loader thread joined) before the fork: no thread holds a lock then
    import cv2

    _job = render
    # OpenCV's thread pool does not survive a fork (a worker calling cv2.setNumThreads hung on the parent's pool
    # lock): shrink it to the calling thread before forking, restore it after
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker)
    finally:
        cv2.setNumThreads(cv_threads)
        _job = None  # the workers have their copy
    return _ordered(pool, n, workers)


def _ordered(pool, n: int, workers: int) -> Iterator[np.ndarray]:
    try:
        pending: deque = deque()
        nxt = 0
        for i in range(n):
            while nxt < n and len(pending) < 2 * workers:
                pending.append(pool.apply_async(_render_one, (nxt,)))
                nxt += 1
            j, img = pending.popleft().get()
            assert j == i
            yield img
    finally:
        pool.terminate()
        pool.join()
