"""What every fit shares: the cancel type, the one renderer cache, crops as tensors."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import FaceModel
from engine.render import FaceRenderer

__all__ = ["FitCancelled", "renderer_for", "crops_to_tensor", "resize_crops"]


class FitCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asks the fit to stop."""


_RENDERERS: dict[int, FaceRenderer] = {}


def renderer_for(model: FaceModel) -> FaceRenderer:
    """One FaceRenderer per face model (its camera is what the landmark geometry projects with)."""
    r = _RENDERERS.get(id(model))
    if r is None:
        r = _RENDERERS[id(model)] = FaceRenderer(model)
    return r


def crops_to_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy/torch (or one (H, W, 3)) → float (N, 3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float() / 255.0


def resize_crops(crops: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) crops at ``size`` × ``size`` (area when shrinking, bilinear when growing)."""
    if crops.shape[-1] == size and crops.shape[-2] == size:
        return crops
    return F.interpolate(crops, size=(size, size), mode="area" if crops.shape[-1] > size else "bilinear",
                         align_corners=None if crops.shape[-1] > size else False)
