"""A shaded picture of a posed mesh from an orbiting camera, drawn on the CPU: the editor's mesh panel.

The panel used to draw through OpenGL in the GUI thread; on a software GL (Mesa llvmpipe, e.g. under Xvfb or a
remote desktop) every paint waited tens of milliseconds for llvmpipe's threads and the window's GL composition, so
a slider drag stuttered. Here the picture is an ordinary image drawn by the compiled rasterizer
(:mod:`engine.render.fast_raster`, no GIL held) in whatever thread calls :func:`draw_mesh`; the GUI only shows it.

Shading is the image's (SH bands 0-1 of the session's light, as ``engine.render.shading``), fixed to the face, so
turning the view shows which side is lit; both sides of a triangle are shaded as seen, with a faint rim from the
camera to keep the silhouette readable. Axes are the model's: x the subject's left (the viewer's right), y up, z
toward the viewer; the camera orbits the mesh's centre (azimuth about y, elevation about x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine.render import fast_raster

BACKGROUND = (38, 40, 46)
SKIN = (0.86, 0.74, 0.66)
FOV_DEG = 40.0


@dataclass
class OrbitCamera:
    """Where the panel looks from: degrees around the vertical axis (positive: from the subject's left) and above
    the horizon, the distance to ``center`` (cm) and the centre itself."""

    azimuth: float = 0.0
    elevation: float = 8.0
    distance: float = 42.0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def rotation(self) -> np.ndarray:
        """(3, 3): model axes → view axes (x right, y up, z toward the camera)."""
        a, e = math.radians(self.azimuth), math.radians(self.elevation)
        ry = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]], np.float32)
        rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]], np.float32)
        return rx @ ry

    def frame(self, positions: np.ndarray) -> None:
        """Centre on a mesh and step back far enough to show all of it."""
        p = np.asarray(positions, np.float32)
        c = (p.min(0) + p.max(0)) / 2
        self.center = (float(c[0]), float(c[1]), float(c[2]))
        self.distance = max(30.0, 1.1 * float(np.ptp(p, axis=0).max()) / (2 * math.tan(math.radians(FOV_DEG) / 2)))

    def project(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) pixel positions (x right, y down) and (N,) depths in front of the camera."""
        p = (np.asarray(points, np.float32) - np.asarray(self.center, np.float32)) @ self.rotation().T
        z = self.distance - p[:, 2]
        f = 0.5 * min(width, height) / math.tan(math.radians(FOV_DEG) / 2)
        zz = np.maximum(z, 1e-3)
        xy = np.stack([width / 2 + f * p[:, 0] / zz, height / 2 - f * p[:, 1] / zz], 1)
        return xy.astype(np.float32), z.astype(np.float32)


def light_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit direction toward a light (``Session.light_params()`` degrees: azimuth 0 = from the front, positive = from
    the viewer's right; elevation positive = from above), in model axes."""
    a, e = math.radians(float(azimuth)), math.radians(float(elevation))
    return np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)], np.float32)


def draw_mesh(positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray, camera: OrbitCamera,
              width: int, height: int, light: dict | None = None, points: np.ndarray | None = None):
    """(height, width, 3) uint8: the mesh (model axes, unit vertex ``normals``) shaded by ``light`` (azimuth,
    elevation, intensity, ambient, color; default a frontal key light) seen from ``camera``.

    With ``points`` (N, 3) (landmarks) also returns ``(image, xy, seen)``: their pixel positions and whether each is
    in front of the drawn surface (not hidden behind the head)."""
    lt = {"azimuth": 25.0, "elevation": 20.0, "intensity": 0.45, "ambient": 0.75, "color": (1.0, 1.0, 1.0)}
    lt.update({k: v for k, v in (light or {}).items() if v is not None})
    w, h = max(1, int(width)), max(1, int(height))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    tri = np.ascontiguousarray(triangles, dtype=np.int64)

    def result(depth=None):
        if points is None:
            return img
        pxy, pz = camera.project(points, w, h)
        seen = np.ones(len(pxy), bool)
        if depth is not None:
            # the farthest surface within 2 px (empty counts as infinitely far): a point on the silhouette, such as
            # the jaw line's landmarks seen from the front, is not hidden by the cheek right in front of it
            far = cv2.dilate(np.where(depth > 0, depth, np.float32(1e9)).astype(np.float32), np.ones((5, 5), np.uint8))
            ix = np.clip(pxy[:, 0].astype(np.int64), 0, w - 1)
            iy = np.clip(pxy[:, 1].astype(np.int64), 0, h - 1)
            seen = pz <= far[iy, ix] + 0.02 * camera.distance
        return img, pxy, seen
    if tri.size == 0 or len(positions) == 0:
        return result()
    xy, z = camera.project(positions, w, h)
    frags = fast_raster.rasterize_forward(torch.from_numpy(xy[None]), torch.from_numpy(z[None]), torch.from_numpy(tri),
                                          (h, w), cull_backfaces=False)
    pix = frags.pix_index.numpy()
    if pix.size == 0:
        return result()
    face = frags.pix_face.numpy()
    bary = frags.pix_bary.numpy().astype(np.float32)
    n = np.asarray(normals, np.float32)
    ldir = light_direction(lt["azimuth"], lt["elevation"])
    amb = 0.886227 * float(lt["ambient"])
    k = 1.772454 * max(0.0, float(lt["intensity"]))
    nl = n @ ldir  # per vertex; a back face (seen from behind) is lit as its other side
    rim_v = 1.0 - np.abs(n @ camera.rotation()[2])  # 1 at the silhouette
    # which side of each covered pixel's triangle the camera sees: the sign of its screen area
    t = tri[face]
    a, b, c = xy[t[:, 0]], xy[t[:, 1]], xy[t[:, 2]]
    front = ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])) < 0
    s_nl = (nl[t] * bary).sum(1)
    s_nl = np.where(front, s_nl, -s_nl)
    rim = (rim_v[t] * bary).sum(1) ** 3
    shade = np.maximum(amb + k * s_nl, 0.0)
    col = np.asarray(SKIN, np.float32) * np.asarray(lt["color"], np.float32)[:3]
    rgb = np.minimum(shade[:, None] * col + 0.06 * rim[:, None], 1.0)
    img.reshape(-1, 3)[pix] = (rgb * 255 + 0.5).astype(np.uint8)
    return result(frags.depth[0].numpy())
