"""Rotation from pose angles and the perspective camera framed like the canonical aligned crop.

The camera is fixed (translation and scale come from the alignment, as in DiscoFaceGAN): a pinhole at
``distance`` cm in front of the model origin, looking down the model's -z axis. Its focal length and
vertical offset are chosen so that the **mean face at pose 0** lands where aligned training crops put a
face: outer eye corners at 28 % and 72 % of the width, the eye/mouth midpoint at 53 % of the height.
This is also the landmark template the photo aligner maps photos onto (``canonical_landmarks``), so a
crop and a render of the same face agree pixel for pixel.

Image coordinates: pixels, x to the right, y down, pixel centres at ``i + 0.5``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EYE_SPAN = 0.44  # outer-eye-corner distance as a fraction of the crop width
FACE_CENTRE_Y = 0.53  # eye/mouth midpoint, fraction of the crop height from the top
DISTANCE_CM = 80.0


def rotation_matrix(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3) yaw, pitch, roll (radians) → (B, 3, 3) rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)``.

    Positive yaw turns the nose toward +x (viewer's right), positive pitch raises the chin, positive roll
    turns the face counter-clockwise as the viewer sees it.
    """
    yaw, pitch, roll = pose.unbind(-1)
    pitch = -pitch
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; ``focal`` is in NDC units (x_ndc = focal * X / Z), ``offset_y`` in cm."""

    focal: float
    offset_y: float
    distance: float = DISTANCE_CM
    # Rotation centre (model cm). The canonical camera uses the centroid of the alignment landmarks (17-67) of
    # the mean face, so a posed face stays centred the way aligned photo crops centre it (translation is fixed
    # by the alignment); rotating about the model origin, 10 cm behind the face, would slide a turned face
    # sideways off the crop's centre.
    pivot: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def canonical(cls, mean_vertices: torch.Tensor, lm68: torch.Tensor, distance: float = DISTANCE_CM) -> "Camera":
        """Frame the mean face like an aligned crop (see module doc)."""
        lm = mean_vertices[lm68].double()
        left, right = lm[36], lm[45]
        depth = distance - float((left[2] + right[2]) / 2)
        half_span = float(right[0] - left[0]) / 2
        focal = EYE_SPAN * depth / half_span
        eyes = lm[36:48].mean(0)
        mouth = lm[48:68].mean(0)
        mid = (eyes + mouth) / 2
        mid_depth = distance - float(mid[2])
        target_ndc = 1.0 - 2.0 * FACE_CENTRE_Y
        offset_y = target_ndc * mid_depth / focal - float(mid[1])
        pivot = tuple(float(v) for v in lm[17:68].mean(0))
        return cls(focal=float(focal), offset_y=float(offset_y), distance=float(distance), pivot=pivot)

    def to_camera(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Model-space (B, V, 3) → camera space: x right, y up, z = distance in front of the camera."""
        pivot = torch.tensor(self.pivot, dtype=verts.dtype, device=verts.device)
        p = (verts - pivot) @ rotation_matrix(pose).transpose(1, 2) + pivot
        x, y, z = p.unbind(-1)
        return torch.stack([x, y + self.offset_y, self.distance - z], -1)

    def project(self, cam: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Camera space (B, V, 3) → (B, V, 2) pixel coordinates in an image of ``size`` (H, W)."""
        h, w = (size, size) if isinstance(size, int) else size
        z = cam[..., 2].clamp_min(1e-3)
        x_ndc = self.focal * cam[..., 0] / z
        y_ndc = self.focal * cam[..., 1] / z
        return torch.stack([(x_ndc + 1) * (w / 2), (1 - y_ndc) * (h / 2)], -1)
