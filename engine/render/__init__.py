"""Analytic image formation R(λ): camera, rasterizer, SH shading as separate stages (pytorch3d-style)."""
from .camera import Camera, rotation_matrix
from .rasterizer import Fragments, interpolate, rasterize
from .renderer import FaceRenderer, RenderResult, canonical_landmarks
from .shading import light_from_direction, sh_basis, shade

__all__ = ["Camera", "rotation_matrix", "Fragments", "interpolate", "rasterize", "FaceRenderer", "RenderResult",
           "canonical_landmarks", "light_from_direction", "sh_basis", "shade"]
