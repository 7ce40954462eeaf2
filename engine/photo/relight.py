"""Photo mode, relighting by ratio (DESIGN.md §6).

The photo already holds the fitted light; a light edit multiplies the skin by

    shading(λ1 light, n1) / shading(λ0 light, n1)

per vertex, on *smoothed* target normals (the fit's normals are noisy at the nose and the face's rim), with the
denominator kept away from zero and the ratio clamped to ``RATIO_RANGE``; an albedo/identity edit multiplies by the
albedo ratio too. The per-vertex ratio is rasterised on the work grid, low-passed, feathered at the skin's border
and multiplies the photo's stored values (the fit's own units, see ``RATIO_EXPONENT``), slightly weakened
(``RELIGHT_EXPONENT``: a little less change for a little more likeness).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.face.head import SKIN_PARTS, HeadModel
from engine.render.shading import full_light, sh_basis

RATIO_RANGE = (0.4, 2.0)  # (0.25, 3) at full strength blew bright skin out to white
DENOM_FLOOR = 0.3  # the denominator is at least this fraction of the median skin irradiance
NORMAL_SMOOTHING = 4  # neighbour-averaging passes over the mesh before shading
# The fit explains the photo's stored values as albedo × irradiance × gain (no gamma), so a shading ratio from that
# model applies to the stored values as they are (exponent 1). Applied in linear light (r ** (1 / 2.2) on the
# stored values) a side light changed the photo 0.44x as much as it changes the fitted model's render.
RATIO_EXPONENT = 1.0
# Light and albedo edits apply the shading ratio slightly weakened (ratio ** RELIGHT_EXPONENT): the side light
# (azimuth -60, elevation 15, intensity 0.6, ambient 0.6) on 12 photos (astronaut, ffhq 00000-00005, 5 UTKFace test;
# 10 have a dlib face) gave a dlib identity distance median 0.296 at 1.0, 0.287 at 0.95, 0.279 at 0.9, keeping 0.90 /
# 0.86 / 0.82 of the model's shading change on the photo; 0.9 put the synthetic strength test (0.7-1.3x of the
# model render's change) at 0.68x, 0.95 keeps it at 0.72x. (RATIO_EXPONENT, the units' exponent, stays 1: the mirror
# fill's shading gain uses it.)
RELIGHT_EXPONENT = 0.95
# brightened values roll off above this level instead of clipping (a side light on bright skin blew it out white)
HIGHLIGHT_KNEE = 0.7


RELIGHT_NECK_FULL_Y, RELIGHT_NECK_ZERO_Y = -7.5, -11.0  # the chin (landmark 8) is at y = -7.6 cm


def irradiance(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """(V, 3) normals, (27,) light offsets → (V, 3) per-channel SH irradiance."""
    return sh_basis(normals) @ full_light(light.reshape(1, 27))[0].T


def smooth_normals(head: HeadModel, normals: torch.Tensor, passes: int = NORMAL_SMOOTHING) -> torch.Tensor:
    a = head.adjacency()
    n = normals
    for _ in range(passes):
        n = torch.sparse.mm(a, n)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-8)


def vertex_ratio(head: HeadModel, normals: torch.Tensor, light0: torch.Tensor, light1: torch.Tensor,
                 albedo0: torch.Tensor | None = None, albedo1: torch.Tensor | None = None) -> torch.Tensor:
    """(V, 3) multiplicative change minus one (0 = unchanged) on the skin, 0 elsewhere.

    ``normals``: target normals in camera orientation (posed), already smoothed."""
    skin = head.vertex_in(SKIN_PARTS)
    e1 = irradiance(normals, light1)
    e0 = irradiance(normals, light0)
    floor = DENOM_FLOOR * e0[skin].median(0).values.clamp_min(1e-3)
    r = e1.clamp_min(0) / torch.maximum(e0, floor)
    if albedo0 is not None and albedo1 is not None:
        r = r * albedo1 / albedo0.clamp_min(0.05)
    r = r.clamp(*RATIO_RANGE)
    return torch.where(skin.unsqueeze(1), (r - 1.0) * neck_fade(head).unsqueeze(1), torch.zeros_like(r))


def neck_fade(head: HeadModel) -> torch.Tensor:
    """(V,) 1 down to the chin, fading to 0 on the neck below it (neutral-mesh height, cm): a photo's neck is often
    covered by a collar or a shirt the mesh's neck lies over, and relighting it shaded the cloth."""
    y = torch.cat([head.model.mean[:, 1], head.parts_mean[:, 1]])
    return ((y - RELIGHT_NECK_ZERO_Y) / (RELIGHT_NECK_FULL_Y - RELIGHT_NECK_ZERO_Y)).clamp(0.0, 1.0)


def feather_ratio(delta: np.ndarray, skin_cover: np.ndarray, erode_px: int = 2, sigma: float = 2.0) -> np.ndarray:
    """(R, R, 3) rasterised ratio-minus-one and (R, R) skin coverage → low-passed ratio, fading to 1 at the
    border of the skin."""
    m = (skin_cover > 0.5).astype(np.uint8)
    if erode_px:
        m = cv2.erode(m, np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8))
    m = cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma)
    d = cv2.GaussianBlur(delta.astype(np.float32), (0, 0), sigma * 0.75)
    return 1.0 + d * m[..., None]


def _shoulder_lut(knee: float = HIGHLIGHT_KNEE, n: int = 4096, top: float = 4.0) -> np.ndarray:
    """Lookup table v -> S(v) (float32, 0..1) for v in [0, top]: identity below ``knee``, a tanh roll-off to 1."""
    v = np.linspace(0.0, top, n, dtype=np.float64)
    s = 1.0 - knee
    return np.where(v <= knee, v, knee + s * np.tanh((v - knee) / s)).astype(np.float32)


_SHOULDER = _shoulder_lut()
_SHOULDER_TOP = 4.0


def _shoulder(v: np.ndarray) -> np.ndarray:
    idx = (v * ((len(_SHOULDER) - 1) / _SHOULDER_TOP)).astype(np.int32)
    np.clip(idx, 0, len(_SHOULDER) - 1, out=idx)
    return _SHOULDER[idx]


def apply_ratio(region: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) stored values × float (h, w, 3) ratio → uint8. Darkening is the plain product; brightening
    adds only the rolled-off *gain* S(v·r) − S(v) of the highlight curve S, so highlights do not clip into blotches
    and a pixel whose ratio is 1 stays exactly as it was (a bright shirt at the edge of the relit box is untouched:
    rolling off the whole value had dimmed every bright pixel in the box and drawn the box's edge)."""
    v = region.astype(np.float32) / 255.0
    vr = v * ratio
    out = np.where(ratio > 1.0, v + _shoulder(vr) - _shoulder(v), vr)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
