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
