"""The editing state as pure data: immutable snapshots, the undo/redo history, keyframes and their interpolation.

A :class:`Snapshot` is everything one frame and one undo step need: the face (coefficients, noise, identity seed,
an embedding's per-layer style offsets and truncation), the keyframes, and the photo the face was fitted to (photo
mode). Snapshots are never changed in place: an edit makes a new one (:meth:`Snapshot.edited` clones the tensors
before the edit function touches them), so a snapshot handed to the render thread stays valid while the user keeps
editing, and the history can keep references instead of copies.

:class:`History` holds the current snapshot and the undo/redo stacks. ``commit=False`` edits (a slider drag) keep
one undo entry open until :meth:`History.commit` (the release), so a drag of a hundred ticks is one undo step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from engine.face.model import Coefficients

DEFAULT_PSI = 0.7


@dataclass(frozen=True)
class Keyframe:
    time: float
    coeffs: Coefficients
    noise: torch.Tensor  # (1, noise_dim)


@dataclass(frozen=True)
class Snapshot:
    coeffs: Coefficients  # batch 1
    noise: torch.Tensor  # (1, noise_dim)
    seed: int = 0
    w_offsets: torch.Tensor | None = None  # (1, num_ws, w_dim) of an embedded photo
    psi: float = DEFAULT_PSI
    keyframes: tuple = ()  # of Keyframe, sorted by time
    photo: object | None = None  # engine.editing.photo_import.PhotoSource in photo mode

    def edited(self, fn: Callable[[Coefficients], None] | None = None, **changes) -> "Snapshot":
        """A new snapshot: ``fn`` edits a *copy* of the coefficients in place; ``changes`` replace fields."""
        if fn is not None:
            c = changes.get("coeffs", self.coeffs).clone()
            fn(c)
            changes["coeffs"] = c
        return dataclasses.replace(self, **changes)

    def same_as(self, other: "Snapshot") -> bool:
        if other is self:
            return True
        if (self.seed, self.psi) != (other.seed, other.psi) or self.photo is not other.photo:
            return False
        if len(self.keyframes) != len(other.keyframes) or any(a is not b for a, b in zip(self.keyframes,
                                                                                          other.keyframes)):
            return False
        if not torch.equal(self.coeffs.as_vector(), other.coeffs.as_vector()) or not torch.equal(self.noise,
                                                                                                   other.noise):
            return False
        if (self.w_offsets is None) != (other.w_offsets is None):
            return False
        return self.w_offsets is None or torch.equal(self.w_offsets, other.w_offsets)

    @property
    def duration(self) -> float:
        return self.keyframes[-1].time - self.keyframes[0].time if self.keyframes else 0.0


class History:
    """The current snapshot with undo/redo; ``limit`` undo entries at most."""

    def __init__(self, start: Snapshot, limit: int = 200):
        self.current = start
        self.limit = int(limit)
        self.undo_stack: list[Snapshot] = []
        self.redo_stack: list[Snapshot] = []
        self._pending: Snapshot | None = None  # the state before an open (commit=False) edit

    def apply(self, new: Snapshot, commit: bool = True) -> Snapshot:
        before = self._pending if self._pending is not None else self.current
        self.current = new
        if commit:
            self._pending = None
            self._push(before)
        else:
            self._pending = before
        return new

    def replace_silently(self, new: Snapshot) -> None:
        """Set the current snapshot without an undo entry (a fresh session, an embedding as the start)."""
        self.current, self._pending = new, None

    def _push(self, before: Snapshot) -> None:
        if before.same_as(self.current):
            return
        self.undo_stack.append(before)
        del self.undo_stack[:-self.limit]
        self.redo_stack.clear()

    def commit(self) -> bool:
        if self._pending is None:
            return False
        before, self._pending = self._pending, None
        n = len(self.undo_stack)
        self._push(before)
        return len(self.undo_stack) > n

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack) or (self._pending is not None and not self._pending.same_as(self.current))

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack) and self._pending is None

    def undo(self) -> bool:
        self.commit()
        if not self.undo_stack:
            return False
        self.redo_stack.append(self.current)
        self.current = self.undo_stack.pop()
        return True

    def redo(self) -> bool:
        self.commit()
        if not self.redo_stack:
            return False
        self.undo_stack.append(self.current)
        self.current = self.redo_stack.pop()
        return True


def smoothstep(u: float) -> float:
    u = min(1.0, max(0.0, float(u)))
    return u * u * (3.0 - 2.0 * u)


def interpolate(keyframes: tuple, t: float) -> tuple[Coefficients, torch.Tensor]:
    """(coefficients, noise) at time ``t``: smoothstep-eased blend of the two surrounding keyframes, clamped to the
    first / last keyframe outside their span. ``keyframes`` must not be empty."""
    ks = keyframes
    if t <= ks[0].time:
        return ks[0].coeffs.clone(), ks[0].noise.clone()
    if t >= ks[-1].time:
        return ks[-1].coeffs.clone(), ks[-1].noise.clone()
    for a, b in zip(ks, ks[1:]):
        if a.time <= t <= b.time:
            s = smoothstep((t - a.time) / max(b.time - a.time, 1e-9))
            return a.coeffs.lerp(b.coeffs, s), torch.lerp(a.noise, b.noise, s)
    raise AssertionError("unreachable")


def frame_times(keyframes: tuple, n_frames: int) -> list[float]:
    t0, t1 = keyframes[0].time, keyframes[-1].time
    if n_frames == 1:
        return [t0]
    return [t0 + (t1 - t0) * i / (n_frames - 1) for i in range(n_frames)]
