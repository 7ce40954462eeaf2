"""Photo mode, filling what the photo never showed (DESIGN.md §6).

The mouth interior (socket, gums/tongue, teeth), where the photo hid it, is drawn from plain part colours whose
*brightness comes from the photo itself* (:func:`photo_mouth_colors`: the lips' and the eye whites' luminance, with
fixed hues: ivory teeth, red gums/tongue, a dark socket), shaded by the change of irradiance from the fitted light to
the target light, darkened with depth inside the mouth (a cheap ambient occlusion: the back of the mouth gets little
light past the lips), and blended into the warped photo with a soft premultiplied mask. The fit's colour gain is not
used here: its hue is the *skin's* (teeth came out grey-green on dark skin, a flat dark oval on a grayscale photo).
Where the photo itself shows the person's teeth (an open mouth with bright, low-saturation pixels between the inner
lips), their colour is used (:func:`own_teeth_color`); otherwise the eye whites' white balance, kept from turning
green or blue (:func:`_warm`). Teeth get less depth darkening than the socket (``TEETH_AO_MIN``), except the back
teeth a wide-open jaw shows at the mouth corners (:func:`teeth_lit`: as dark as the socket there). Hidden skin needs
no colours: its stand-in photo positions (the nearest visible skin, stretched) are part of the flow
(:class:`engine.photo.flow.SourceHead`).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.face.head import MOUTH_PARTS, HeadModel
from engine.photo.relight import irradiance

MOUTH_AO_Z = (3.0, 10.8)  # model-space z (cm) from the back of the mouth (dark) to the front teeth (lit)
MOUTH_AO_MIN = 0.3
MOUTH_LIGHT = 0.95  # the lips shade the inside of the mouth
TEETH_MAX = 0.82  # keep teeth below the photo's white (no glowing teeth)
# hues of the mouth parts (scaled to a luminance taken from the photo)
TEETH_HUE = (1.0, 0.95, 0.84)  # ivory
GUMS_HUE = (0.62, 0.28, 0.28)
SOCKET_HUE = (0.36, 0.13, 0.13)
# luminance of each part relative to the photo: teeth against the eye whites, gums/tongue and socket against the lips
TEETH_OF_SCLERA = 0.85
TEETH_OVER_LIPS = 1.35  # teeth at least this much brighter than the lips (eyes hidden / closed / shadowed)
TEETH_MIN = 0.30
GUMS_OF_LIPS = 0.9
SOCKET_OF_LIPS = 0.30
LIPS_SAT_FULL = 0.35  # lips this saturated ((max - min) / max) or more: the mouth parts' full colour
MOUTH_CHROMA_MIN = 0.1
IRRADIANCE_RATIO_MAX = 1.6
TEETH_CAST_RANGE = (0.8, 1.25)  # per-channel bounds of the photo's colour cast taken into the teeth
OWN_TEETH_MIN_GAP = 0.12  # inner-lip gap / mouth width from which the photo's own teeth can show
OWN_TEETH_MAX_SAT = 0.45  # teeth pixels: (max - min) / max of the channels below this
OWN_TEETH_MIN_SHARE = 0.15  # … and at least this share of the open mouth
TEETH_AO_MIN = 0.75  # teeth sit right behind the lips and catch the light: less depth darkening than the socket
TEETH_LIT_Z = (6.0, 8.0)  # model-space z (cm, with the expression) over which teeth go from the socket's light to it
_Y = np.array([0.299, 0.587, 0.114], np.float32)


def luminance(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ _Y


def _with_luminance(hue, lum: float) -> np.ndarray:
    h = np.asarray(hue, np.float32)
    return np.clip(h * (lum / float(luminance(h))), 0.0, 1.0)


def _polygon_pixels(image: np.ndarray, poly: np.ndarray, hole: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float pixels in [0, 1] inside ``poly`` (photo px), minus ``hole``; only the polygon's box is touched."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(np.clip(poly.min(0), 0, [w - 1, h - 1])).astype(int)
    x1, y1 = np.ceil(np.clip(poly.max(0), 0, [w - 1, h - 1])).astype(int) + 1
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((0, 3), np.float32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
    if hole is not None:
        cv2.fillPoly(mask, [np.round(hole - [x0, y0]).astype(np.int32)], 0)
    return image[y0:y1, x0:x1][mask > 0].astype(np.float32) / 255.0


def photo_mouth_colors(image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Plain colours (photo units, [0, 1]) of the mouth parts for this photo, from its 68 landmarks (photo px):
    teeth ivory at ``TEETH_OF_SCLERA`` × the eye whites' luminance (the bright part of the eye openings) but at least
    ``TEETH_OVER_LIPS`` × the lips'; gums/tongue red at ``GUMS_OF_LIPS`` × the lips' luminance; the socket darker."""
    lm = np.asarray(landmarks, np.float32).reshape(68, 2)
    lips = _polygon_pixels(image, lm[48:60], lm[60:68])
    lip_y = float(np.median(luminance(lips))) if len(lips) >= 4 else 0.45
    eyes = np.concatenate([_polygon_pixels(image, lm[36:42]), _polygon_pixels(image, lm[42:48])])
    teeth_y = TEETH_OVER_LIPS * lip_y
    teeth_hue = np.asarray(TEETH_HUE, np.float32)
    if len(eyes) >= 4:
        ey = luminance(eyes)
        white = eyes[ey >= np.percentile(ey, 80)].mean(0)  # the eye whites (the bright part of the openings)
        teeth_y = max(teeth_y, TEETH_OF_SCLERA * float(luminance(white)))
        # the photo's colour cast, as the eye whites show it (damped, bounded): neutral teeth in a warm photo read
        # as green-grey beside the lips
        cast = np.clip(np.sqrt(white / max(float(luminance(white)), 1e-3)), *TEETH_CAST_RANGE)
        teeth_hue = teeth_hue * cast
    teeth_y = float(np.clip(teeth_y, TEETH_MIN, TEETH_MAX))
    teeth = _with_luminance(_warm(teeth_hue), teeth_y)
    own = own_teeth_color(image, lm, lip_y)
    if own is not None:  # the photo shows the person's own teeth: theirs, as the photo lit them
        teeth = own
    lip_y = float(np.clip(lip_y, 0.05, 0.9))
    # gums, tongue and socket are as colourful as the photo's lips (a black-and-white or faded photo: a red
    # tongue in a grey face)
    chroma = 1.0
    if len(lips) >= 4:
        lc = np.median(lips, 0)
        sat = float((lc.max() - lc.min()) / max(float(lc.max()), 1e-3))
        chroma = float(np.clip(sat / LIPS_SAT_FULL, MOUTH_CHROMA_MIN, 1.0))
    return {"teeth": teeth,
            "gums_tongue": _with_luminance(_chroma(GUMS_HUE, chroma), GUMS_OF_LIPS * lip_y),
            "mouth_socket": _with_luminance(_chroma(SOCKET_HUE, chroma), SOCKET_OF_LIPS * lip_y)}


def _chroma(hue, k: float) -> np.ndarray:
    """``hue`` with its colourfulness scaled by ``k`` (toward its own grey)."""
    h = np.asarray(hue, np.float32)
    y = float(luminance(h))
    return y + (h - y) * k


def _warm(hue) -> np.ndarray:
    """Teeth are never greener or bluer than neutral: a cast is taken into the teeth only as far as it keeps
    red ≥ green ≥ blue (a cyan-tinted photo gave grey-green teeth)."""
    r, g, b = (float(v) for v in np.asarray(hue, np.float32))
    g = min(g, r)
    b = min(b, g)
    return np.array([r, g, b], np.float32)


def own_teeth_color(image: np.ndarray, landmarks: np.ndarray, lip_y: float) -> np.ndarray | None:
    """The colour of the person's own teeth where the photo shows them (the mouth open between the inner lips,
    bright, low-saturation pixels clearly brighter than the lips), else None."""
    lm = np.asarray(landmarks, np.float32).reshape(68, 2)
    width = float(np.linalg.norm(lm[64] - lm[60]))
    gap = float(np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))]))
    if width < 8 or gap < OWN_TEETH_MIN_GAP * width:
        return None
    px = _polygon_pixels(image, lm[60:68])
    if len(px) < 20:
        return None
    y = luminance(px)
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1e-3)
    cand = px[(y >= np.percentile(y, 50)) & (sat < OWN_TEETH_MAX_SAT) & (y > TEETH_OVER_LIPS * lip_y)]
    if len(cand) < max(8, OWN_TEETH_MIN_SHARE * len(px)):
        return None
    col = np.median(cand, 0)
    return np.clip(_warm(col / max(float(luminance(col)), 1e-3)) * min(float(luminance(col)), TEETH_MAX), 0, 1)


def mouth_base_colors(head: HeadModel, colors: dict[str, np.ndarray]) -> torch.Tensor:
    """(V, 3) per-vertex base colours: ``colors[part]`` on the mouth parts, 0 elsewhere."""
    out = torch.zeros(head.n_vertices, 3)
    for name, col in colors.items():
        if name in head.part_names:
            out[head.vertex_part == head.part_names.index(name)] = torch.as_tensor(col, dtype=torch.float32)
    return out


def teeth_lit(verts: torch.Tensor) -> torch.Tensor:
    """(N,) 0 … 1: how much of the light at the lips a tooth at these (unposed, expression applied) vertices gets:
    1 from ``TEETH_LIT_Z[1]`` forward (the front teeth, a turned face's near side teeth), 0 behind ``TEETH_LIT_Z[0]``
    (the molars a wide-open jaw shows at a mouth corner: they are lit like the socket around them)."""
    z0, z1 = TEETH_LIT_Z
    s = ((verts[:, 2] - z0) / (z1 - z0)).clamp(0, 1)
    return s * s * (3 - 2 * s)


def mouth_occlusion(head: HeadModel, verts: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """(V,) light factor: 1 outside the mouth, ``MOUTH_AO_MIN`` … ``MOUTH_LIGHT`` inside, by depth (``idx``: the
    vertices ``verts`` holds, else all)."""
    lo, hi = MOUTH_AO_Z
    t = ((verts[:, 2] - lo) / (hi - lo)).clamp(0, 1)
    ao = MOUTH_AO_MIN + (MOUTH_LIGHT - MOUTH_AO_MIN) * t * t
    teeth = head.vertex_in(["teeth"]).float()
    mouth = head.vertex_in(MOUTH_PARTS)
    if idx is not None:
        teeth, mouth = teeth[idx], mouth[idx]
    # teeth sit right behind the lips and catch the light (less depth darkening than the socket) — but only near the
    # opening: the back teeth a wide-open jaw brings into view at a mouth corner (the far side's molars in a turned
    # face; the lower row rises toward the jaw's hinge) sit as deep as the socket and take its light
    ao = ao + teeth * teeth_lit(verts) * (TEETH_AO_MIN + (MOUTH_LIGHT - TEETH_AO_MIN) * t - ao)
    return torch.where(mouth, ao, torch.ones_like(ao))


def part_colors(head: HeadModel, base: torch.Tensor, verts: torch.Tensor, normals: torch.Tensor,
                light0: torch.Tensor, light: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """(V, 3) rendered colours in [0, 1] (photo units): ``base`` (:func:`mouth_base_colors`, the colour of a lit
    front surface in the photo's own light) × the fitted light's grey shading relative to a camera-facing normal ×
    its per-channel change to the target ``light`` × occlusion / ``MOUTH_LIGHT``.

    ``verts`` unposed (for the occlusion), ``normals`` posed (camera orientation); with ``idx`` all three hold only
    those vertices (the result too)."""
    e0 = irradiance(normals, light0).clamp_min(1e-3)
    front = irradiance(torch.tensor([[0.0, 0.0, 1.0]]), light0).mean().clamp_min(1e-3)
    # the fitted light's shading without its colour (grey on a camera-facing normal), times the light's change
    ratio = e0.mean(1, keepdim=True) / front
    if not torch.equal(light, light0):
        ratio = ratio * (irradiance(normals, light).clamp_min(0) / e0)
    ratio = ratio.clamp(0.0, IRRADIANCE_RATIO_MAX)
    col = base * ratio * (mouth_occlusion(head, verts, idx) / MOUTH_LIGHT).unsqueeze(1)
    return col.clamp(0.0, TEETH_MAX)
