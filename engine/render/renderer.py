"""FaceRenderer: coefficients → shaded image, mask, depth, fragments and projected landmarks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.face.model import Coefficients, FaceModel
from engine.render.camera import Camera, rotation_matrix
from engine.render.fast_raster import rasterize_forward
from engine.render.rasterizer import Fragments, interpolate, pytorch3d_available, rasterize, rasterize_pytorch3d
from engine.render.shading import shade


@dataclass
class RenderResult:
    image: torch.Tensor  # (B, 3, H, W) in [0, 1] (unclamped shading may exceed 1 slightly; clamped here)
    mask: torch.Tensor  # (B, 1, H, W) 1 inside the face
    depth: torch.Tensor  # (B, 1, H, W) camera depth in cm, 0 outside
    landmarks: torch.Tensor  # (B, 68, 2) pixel coordinates (x right, y down)
    fragments: Fragments
    screen: torch.Tensor  # (B, V, 2) projected vertices (pixels)
    cam_vertices: torch.Tensor  # (B, V, 3) camera-space vertices
    vertex_colors: torch.Tensor  # (B, V, 3) shaded colours


class FaceRenderer(torch.nn.Module):
    """R(λ) of DiscoFaceGAN: 3DMM geometry + albedo, SH Lambertian shading, perspective camera."""

    def __init__(self, model: FaceModel, camera: Camera | None = None, backend: str = "auto"):
        """``backend``: "auto" = pytorch3d on a GPU where installed, else the compiled forward rasterizer when no
        gradient is asked for (nothing to differentiate in ``xy``/``z``), else the torch rasterizer."""
        super().__init__()
        self.model = model
        self.camera = camera or Camera.canonical(model.mean, model.lm68)
        if backend not in ("auto", "torch", "pytorch3d"):
            raise ValueError(f"unknown render backend {backend!r}")
        if backend == "pytorch3d" and not pytorch3d_available():
            raise RuntimeError("the pytorch3d backend was requested but pytorch3d is not installed")
        self.backend = backend

    def _rasterize(self, xy, z, size) -> Fragments:
        use_p3d = self.backend == "pytorch3d" or (self.backend == "auto" and xy.is_cuda and pytorch3d_available())
        no_grad = not (torch.is_grad_enabled() and (xy.requires_grad or z.requires_grad))
        fn = rasterize_pytorch3d if use_p3d else rasterize_forward if self.backend == "auto" and no_grad else rasterize
        return fn(xy, z, self.model.triangles, size)

    def geometry(self, c: Coefficients, size: int):
        verts = self.model.vertices(c)
        cam = self.camera.to_camera(verts, c.pose)
        screen = self.camera.project(cam, size)
        return verts, cam, screen

    def landmarks(self, c: Coefficients, size: int) -> torch.Tensor:
        """(B, 68, 2) projected landmarks in pixels, without rasterizing."""
        verts = self.model.vertices(c)[:, self.model.lm68]
        return self.camera.project(self.camera.to_camera(verts, c.pose), size)

    def forward(self, c: Coefficients, size: int = 128, background: float | torch.Tensor = 0.0) -> RenderResult:
        verts, cam, screen = self.geometry(c, size)
        normals = self.model.vertex_normals(verts) @ rotation_matrix(c.pose).transpose(1, 2)
        colors = shade(self.model.albedo(c), normals, c.light)
        frags = self._rasterize(screen, cam[..., 2], size)
        image = interpolate(colors, frags, self.model.triangles, background)
        mask = frags.mask.unsqueeze(1)
        return RenderResult(
            image=image.clamp(0.0, 1.0),
            mask=mask,
            depth=frags.depth.unsqueeze(1),
            landmarks=screen[:, self.model.lm68],
            fragments=frags,
            screen=screen,
            cam_vertices=cam,
            vertex_colors=colors,
        )


def canonical_landmarks(model: FaceModel, size: int, camera: Camera | None = None) -> torch.Tensor:
    """(68, 2) pixel positions of the mean face's landmarks at pose 0: the alignment template."""
    camera = camera or Camera.canonical(model.mean, model.lm68)
    c = model.zeros(1)
    verts = model.vertices(c)[:, model.lm68]
    return camera.project(camera.to_camera(verts, c.pose), size)[0]
