"""Analytic image formation R(λ): camera, rasterizer, SH shading as separate stages (pytorch3d-style)."""
from engine.render.camera import Camera, rotation_matrix
from engine.render.fast_raster import rasterize_forward
from engine.render.rasterizer import Fragments, interpolate, rasterize
from engine.render.renderer import FaceRenderer, RenderResult, canonical_landmarks
from engine.render.shading import light_from_direction, sh_basis, shade

__all__ = ["Camera", "rotation_matrix", "Fragments", "interpolate", "rasterize", "rasterize_forward", "FaceRenderer",
           "RenderResult", "canonical_landmarks", "light_from_direction", "sh_basis", "shade"]
