"""Shape contracts at the public boundaries, checked — as ``torch_utils.misc.assert_shape`` does in
stylegan2-ada-pytorch. A module directly in ``engine/`` that imports nothing of the project, so every package may
use it without an import cycle.

>>> assert_shape(torch.zeros(2, 68, 2), [None, 68, 2], "landmarks")   # None: any size
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ShapeError", "assert_shape"]


class ShapeError(ValueError):
    """A tensor whose shape breaks a documented contract; the message names it and both shapes."""


def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(int(s)) for s in shape) + ")"


def assert_shape(tensor: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has ``len(shape)`` dimensions of the given sizes (``None``: any
    size)."""
    have = tuple(tensor.shape)
    if len(have) != len(shape):
        raise ShapeError(f"{name}: expected {len(shape)} dimensions {_fmt(shape)}, got shape {have}")
    for i, (h, want) in enumerate(zip(have, shape)):
        if want is not None and h != int(want):
            raise ShapeError(f"{name}: dimension {i} is {h}, expected {int(want)} (shape {have}, contract "
                             f"{_fmt(shape)})")
