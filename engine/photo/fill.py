"""Photo mode, filling what the photo never showed (DESIGN.md §6).

The mouth interior (socket, gums/tongue, teeth) and the eyes, where the photo hid them, are drawn from the head
model's plain part colours under the *target* light and the fit's colour gain, darkened with depth inside the mouth
(a cheap ambient occlusion: the back of the mouth gets little light past the lips), and blended into the warped
photo with a soft premultiplied mask. Hidden skin needs no colours: its stand-in photo positions (the nearest
visible skin, stretched) are part of the flow (:class:`engine.photo.flow.SourceHead`).
"""
from __future__ import annotations

import numpy as np
import torch

from engine.face.head import MOUTH_PARTS, HeadModel
from engine.photo.relight import irradiance

MOUTH_AO_Z = (3.0, 10.8)  # model-space z (cm) from the back of the mouth (dark) to the front teeth (lit)
MOUTH_AO_MIN = 0.3
MOUTH_LIGHT = 0.95  # the lips shade the inside of the mouth
TEETH_MAX = 0.82  # keep teeth below the photo's white (no glowing teeth)


def mouth_occlusion(head: HeadModel, verts: torch.Tensor) -> torch.Tensor:
    """(V,) light factor: 1 outside the mouth, ``MOUTH_AO_MIN`` … ``MOUTH_LIGHT`` inside, by depth."""
    lo, hi = MOUTH_AO_Z
    t = ((verts[:, 2] - lo) / (hi - lo)).clamp(0, 1)
    ao = MOUTH_AO_MIN + (MOUTH_LIGHT - MOUTH_AO_MIN) * t * t
    mouth = head.vertex_in(MOUTH_PARTS)
    return torch.where(mouth, ao, torch.ones_like(ao))


def part_colors(head: HeadModel, albedo: torch.Tensor, verts: torch.Tensor, normals: torch.Tensor,
                light: torch.Tensor, gain) -> torch.Tensor:
    """(V, 3) rendered colours in [0, 1] (photo units): albedo × irradiance(target light) × gain × occlusion.

    ``verts`` unposed (for the occlusion), ``normals`` posed (camera orientation)."""
    g = torch.as_tensor(np.asarray(gain, np.float32)).reshape(1, 3)
    col = albedo * irradiance(normals, light).clamp_min(0) * g * mouth_occlusion(head, verts).unsqueeze(1)
    return col.clamp(0.0, TEETH_MAX)
