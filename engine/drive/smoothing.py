"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over coefficients.

A first-order low-pass whose cutoff rises with the signal's speed: ``fc = min_cutoff + beta * |dx/dt|`` (the speed
itself low-passed at ``d_cutoff``). At rest the cutoff is ``min_cutoff`` (strong smoothing: low jitter); when the
value moves fast the cutoff opens up (little lag). Each coefficient has its own state; ``min_cutoff`` and ``beta``
may be scalars or per-coefficient arrays (pose in radians and expression weights live on different scales).

A whole recorded sequence can be smoothed without the filter's lag (:meth:`OneEuroFilter.filter_sequence_centred`):
the mean of the forward pass and the pass over the reversed sequence (the one lags, the other leads by as much).
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    def __init__(self, fps: float, min_cutoff=1.0, beta=0.0, d_cutoff: float = 1.0):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.dt = 1.0 / float(fps)
        self.min_cutoff = np.asarray(min_cutoff, np.float64)
        self.beta = np.asarray(beta, np.float64)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return self._x.copy()
        dx = (x - self._x) / self.dt
        a_d = _alpha(self.d_cutoff, self.dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, self.dt)
        self._x = self._x + a * (x - self._x)
        return self._x.copy()

    def filter_sequence(self, xs) -> np.ndarray:
        """Filter a whole (T, D) sequence from a fresh state."""
        self.reset()
        xs = np.asarray(xs, np.float64)
        return np.stack([self(x) for x in xs]) if len(xs) else xs.copy()

    def filter_sequence_centred(self, xs) -> np.ndarray:
        """Filter a whole (T, D) sequence without lag: the mean of the forward pass and the backward pass (each from
        a fresh state). For offline use (a recorded video), where the causal filter's lag would shift and flatten
        every motion. The first sample stays the forward pass's (the input's own: a drive's motion is measured from
        it), the backward pass fading in over the filter's time constant at ``min_cutoff``."""
        xs = np.asarray(xs, np.float64)
        if not len(xs):
            return xs.copy()
        fwd = self.filter_sequence(xs)
        bwd = self.filter_sequence(xs[::-1])[::-1]
        tau = 1.0 / (2.0 * math.pi * float(np.min(self.min_cutoff)) * self.dt)  # frames
        w = 0.5 + 0.5 * np.exp(-np.arange(len(xs)) / max(tau, 1e-6))
        w = w.reshape((-1,) + (1,) * (xs.ndim - 1))
        return w * fwd + (1.0 - w) * bwd


def settle_frames(fps: float, min_cutoff, d_cutoff: float, tol: float = 1e-9) -> int:
    """Frames after which a One-Euro pass has forgotten its starting state to within ``tol`` (relative): each step
    keeps at most ``1 - alpha`` of the value's state (alpha at the lowest cutoff, ``min(min_cutoff)``: a faster
    signal only opens the cutoff and forgets sooner) and ``1 - alpha(d_cutoff)`` of the speed's state."""
    dt = 1.0 / float(fps)
    a = min(float(_alpha(float(np.min(min_cutoff)), dt)), float(_alpha(float(d_cutoff), dt)))
    return int(math.ceil(math.log(tol) / math.log(1.0 - a)))


class CentredStream:
    """:meth:`OneEuroFilter.filter_sequence_centred` over a sequence that arrives one sample at a time, for work
    that may start before the sequence ends (a drive renders frames while the video is still being tracked).

    The forward pass is causal: the same as the whole sequence's. The backward pass of a sample needs the samples
    after it: a sample is given out once ``window`` samples after it have arrived, its backward pass started fresh
    at the newest sample (in blocks of ``block`` samples: one backward run per block). A fresh start differs from
    the whole sequence's backward state there, and the difference shrinks by at least the factor of
    :func:`settle_frames` per step: with the default ``window`` (``tol`` 1e-9) an early sample is within ~1e-9 of
    the whole-sequence filter's (the bound is the linear part's; tests/test_smoothing.py checks it on noisy, jumping
    signals, where the difference stays near 1e-14); the samples :meth:`finish` gives out (at least the last
    ``window``: their backward pass starts at the true end) are bit-identical. Only the last ``window + block``
    samples are held."""

    def __init__(self, filt: OneEuroFilter, window: int | None = None, block: int | None = None):
        fps = 1.0 / filt.dt
        self.fwd = OneEuroFilter(fps, filt.min_cutoff, filt.beta, filt.d_cutoff)
        self.bwd = OneEuroFilter(fps, filt.min_cutoff, filt.beta, filt.d_cutoff)
        self.window = int(window if window is not None else settle_frames(fps, filt.min_cutoff, filt.d_cutoff))
        self.block = max(1, int(block if block is not None else max(8, self.window // 2)))
        # the centred weight of the forward pass, as filter_sequence_centred computes it
        self.tau = 1.0 / (2.0 * math.pi * float(np.min(filt.min_cutoff)) * filt.dt)
        self.n = 0  # samples pushed
        self.done = 0  # samples given out
        self._xs: list[np.ndarray] = []  # samples done..n-1
        self._fw: list[np.ndarray] = []  # their forward pass

    def push(self, x) -> np.ndarray:
        """Add the next sample; returns the samples now final, ``(k, D)`` (``k`` may be 0), in order."""
        x = np.asarray(x, np.float64)
        self._fw.append(self.fwd(x))
        self._xs.append(x)
        self.n += 1
        if self.n - self.done >= self.window + self.block:
            return self._emit(self.n - self.window)
        return np.zeros((0,) + x.shape)

    def finish(self) -> np.ndarray:
        """The remaining samples (the backward pass from the sequence's true end)."""
        if self.n == self.done:
            return np.zeros((0,) + (self._xs[0].shape if self._xs else (0,)))
        return self._emit(self.n)

    def _emit(self, stop: int) -> np.ndarray:
        self.bwd.reset()
        bwd = [self.bwd(x) for x in reversed(self._xs)][::-1]
        k = stop - self.done
        w = 0.5 + 0.5 * np.exp(-np.arange(self.done, stop) / max(self.tau, 1e-6))
        w = w.reshape((-1,) + (1,) * self._xs[0].ndim)
        out = w * np.stack(self._fw[:k]) + (1.0 - w) * np.stack(bwd[:k])
        del self._xs[:k], self._fw[:k]
        self.done = stop
        return out
