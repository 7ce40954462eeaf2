"""Lambertian shading with 2nd-order spherical harmonics, one set of 9 coefficients per colour channel.

Light coefficients (27 = 3 channels x 9 bands, channel-major) are stored as offsets from the default
light, which has band 0 (ambient) = ``DEFAULT_AMBIENT`` per channel, so zero coefficients give an evenly
lit face. The basis includes the Lambertian kernel's band factors (Ramamoorthi & Hanrahan 2001), so
irradiance = sum_k Y_k(n) L_k.
"""
from __future__ import annotations

import math

import torch

from engine.face.model import DEFAULT_AMBIENT

_A0, _A1, _A2 = math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)
_C0 = 1 / math.sqrt(4 * math.pi)
_C1 = math.sqrt(3.0) / math.sqrt(4 * math.pi)
_C2 = 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals → (..., 9) Lambert-convolved SH basis values."""
    x, y, z = normals.unbind(-1)
    k0 = torch.full_like(x, _A0 * _C0)
    return torch.stack([
        k0,
        _A1 * _C1 * y, _A1 * _C1 * z, _A1 * _C1 * x,
        _A2 * _C2 * x * y, _A2 * _C2 * y * z, _A2 * _C2 * 0.5 / math.sqrt(3.0) * (3 * z * z - 1),
        _A2 * _C2 * x * z, _A2 * _C2 * 0.5 * (x * x - y * y),
    ], -1)


def full_light(light: torch.Tensor) -> torch.Tensor:
    """(B, 27) offsets → (B, 3, 9) absolute SH coefficients."""
    sh = light.view(-1, 3, 9)
    base = torch.zeros_like(sh)
    base[:, :, 0] = DEFAULT_AMBIENT
    return sh + base


def shade(albedo: torch.Tensor, normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Per-vertex colour = albedo * irradiance(normal). albedo/normals (B, V, 3), light (B, 27)."""
    irradiance = torch.einsum("bvk,bck->bvc", sh_basis(normals), full_light(light))
    return albedo * irradiance


def light_from_direction(azimuth_deg: float, elevation_deg: float, intensity: float = 0.5,
                         ambient: float = DEFAULT_AMBIENT, color=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """A user-friendly light (direction, strength, ambient, colour) → (1, 27) SH offsets.

    Azimuth 0 = from the front, positive = from the viewer's right; elevation positive = from above.
    """
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    d = (math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el))  # x, y, z
    sh = torch.zeros(3, 9)
    for c in range(3):
        sh[c, 0] = ambient * color[c]
        sh[c, 1], sh[c, 2], sh[c, 3] = (intensity * color[c] * d[1], intensity * color[c] * d[2],
                                        intensity * color[c] * d[0])
    sh[:, 0] -= DEFAULT_AMBIENT
    return sh.reshape(1, 27)


def direction_from_light(light: torch.Tensor) -> dict:
    """Inverse of :func:`light_from_direction` for band 0/1 (band 2 is ignored): a dict for the UI."""
    sh = full_light(light.reshape(1, 27))[0]
    amb = sh[:, 0]
    vec = sh[:, 1:4].mean(0)  # (y, z, x)
    dy, dz, dx = vec.tolist()
    inten = math.sqrt(dx * dx + dy * dy + dz * dz)
    ambient = float(amb.mean())
    color = (amb / amb.mean().clamp_min(1e-6)).clamp(0, 4).tolist() if ambient > 1e-6 else [1.0, 1.0, 1.0]
    if inten < 1e-8:
        return {"azimuth": 0.0, "elevation": 0.0, "intensity": 0.0, "ambient": ambient, "color": color}
    el = math.degrees(math.asin(max(-1.0, min(1.0, dy / inten))))
    az = math.degrees(math.atan2(dx, dz))
    return {"azimuth": az, "elevation": el, "intensity": inten, "ambient": ambient, "color": color}
