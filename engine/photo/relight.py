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

import math

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


# --------------------------------------------------------------------- the face's exposure (issue 21, audit)
# A light edit changes the skin by the model's shading ratio. Its common part — how much brighter or darker the lit
# face gets overall (Ambient to 0, Light intensity up) — would be the light on the whole person, hair, ears, beard,
# neck and clothes alike; on the skin alone it drew a mask (Ambient 0: a dark brown face on an unchanged head, Light
# intensity 1.5 a pale one). As a camera's auto-exposure would, the face's overall change is kept within
# ``FACE_EXPOSURE_RANGE`` (the median ratio over the face's skin that faces the camera); the shading's shape — which
# side is lit, how deep the shadows are — is the slider's in full. (Spreading the change over the head layer instead
# was tried: the layer's matte reaches over the background beside the head and drew a halo there.)
FACE_EXPOSURE_RANGE = (0.8, 1.25)


def limit_face_exposure(head: HeadModel, delta: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``delta`` (V, 3) ratio minus one (:func:`key_vertex_ratio`) with the face's overall change (the median grey
    ratio over the face's skin facing the camera, ``normals`` posed, above the neck's fade) brought into
    :data:`FACE_EXPOSURE_RANGE`; the same per-vertex scale everywhere, faded down the neck like ``delta``."""
    skin = head.vertex_in(SKIN_PARTS)
    fade = neck_fade(head)
    face = skin & (fade >= 1.0) & (normals[:, 2] > 0.3)
    if not bool(face.any()):
        return delta
    g = float(1.0 + delta[face].mean(1).median())
    lo, hi = FACE_EXPOSURE_RANGE
    k = min(max(g, lo), hi) / max(g, 1e-6)
    if abs(k - 1.0) < 1e-6:
        return delta
    scaled = (1.0 + delta) * k - 1.0
    w = torch.where(skin, fade, torch.zeros_like(fade)).unsqueeze(1)
    return delta + (scaled - delta) * w


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


# ------------------------------------------------------------------------------------------------------------------ #
# Key + ambient relighting (DESIGN.md §6c, issue 21)
#
# Ratio relighting with the fitted SH light changes little where the fit explains the photo by a strong ambient term:
# turning a weak band-1 light round barely changes the shading. Here the fitted light is read as an ambient term plus
# one key light (band 0 and band 1; band 2 is left to the photo), the key given at least ``KEY_MIN`` x the ambient
# (the share it lacks comes from the front: a flat-lit photo is explained as lit from the camera), and the slider
# turns *that* key by the slider's change of direction. Shading = ambient + key·max(0, n·d)·visibility(d), where the
# visibility is a soft shadow map of the head mesh from the key's direction (nose, brows, the jaw on the neck). The
# per-vertex ratio target/fitted is grey (luminance): the photo's chroma is kept; a change of the light's colour
# multiplies by the per-channel ambient colour ratio on top.
KEY_MIN = 1.15  # key irradiance (peak) at least this x the ambient irradiance (1.1 / 1.15 / 1.25: light +60 cheek
# change -0.349 / -0.362 / -0.389, median of bench/eyes_light.py's 19 photos, goal 0.35; identity after it 0.211 /
# 0.221 / 0.224, worst 0.41 / 0.42 / 0.43)
SHADOW_RES = 160  # shadow-map pixels across the head
SHADOW_BIAS_CM = 0.6  # depth bias (cm) before a point counts as shadowed
SHADOW_SOFT_CM = 1.2  # ... and the depth over which it fades in (soft shadows)
SHADOW_BLUR = 2.0  # shadow-map pixels: soft edges
SHADOW_DEPTH = 0.6  # a shadowed point keeps 1 - SHADOW_DEPTH of the key (skin scatters light into its shadows)
SHADOW_SMOOTHING = 4  # neighbour-averaging passes over the per-vertex visibility
KEY_RATIO_RANGE = (0.3, 2.2)
KEY_EXPOSURE = 1.05  # the turned key's face exposure over the fitted one's
KEY_BLEND_DEG = 20.0  # slider turn over which the key goes from the fitted direction to the slider's
_FRONT = torch.tensor([0.0, 0.0, 1.0])


def _sh_consts() -> tuple[float, float]:
    b = sh_basis(torch.tensor([[0.0, 1.0, 0.0]]))[0]
    return float(b[0]), float(b[1])


def key_light(light: torch.Tensor) -> dict:
    """The fitted/target SH light (27,) as ambient (3,) irradiance, key direction (3,) and key peak irradiance
    (grey), plus its slider direction (azimuth, elevation in degrees)."""
    c0, c1 = _sh_consts()
    sh = full_light(light.reshape(1, 27))[0]  # (3, 9): band 1 is (y, z, x)
    amb = sh[:, 0] * c0
    v = sh[:, 1:4].mean(0)
    d = torch.stack([v[2], v[0], v[1]])
    k = float(d.norm()) * c1
    d = d / d.norm().clamp_min(1e-8) if k > 1e-8 else _FRONT.clone()
    return {"ambient": amb, "dir": d, "key": k, "color": light_color(amb, sh)}


AMBIENT_COLOR_MIN = 1e-4  # mean ambient irradiance below which the light's colour is read from its key instead


def light_color(amb: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """(3,) the light's colour, mean 1: its ambient part's, or with (almost) no ambient (the Ambient slider at 0)
    its key's (band 1, per channel; an ambient of 0 read as colour 0/0 darkened the face by half again and took its
    colour: a dark brown mask), or white for no light at all."""
    m = float(amb.mean())
    if m > AMBIENT_COLOR_MIN:
        return amb / amb.mean().clamp_min(1e-6)
    key = sh[:, 1:4].norm(dim=1)
    if float(key.mean()) > 1e-8:
        return key / key.mean()
    return torch.ones(3, dtype=amb.dtype)


def _dir_angles(d: torch.Tensor) -> tuple[float, float]:
    return math.atan2(float(d[0]), float(d[2])), math.asin(max(-1.0, min(1.0, float(d[1]))))


def _dir_from(az: float, el: float) -> torch.Tensor:
    return torch.tensor([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])


def effective_keys(light0: torch.Tensor, light1: torch.Tensor) -> tuple[dict, dict]:
    """Source and target key lights as the relighting uses them (see the section comment): the fitted key topped
    up to ``KEY_MIN`` x ambient from the front, and the target key turned from it by the slider's change."""
    k0, k1 = key_light(light0), key_light(light1)
    a0 = float(k0["ambient"].mean())
    extra = max(0.0, KEY_MIN * a0 - k0["key"])
    d0 = k0["key"] * k0["dir"] + extra * _FRONT
    d0 = d0 / d0.norm().clamp_min(1e-8)
    az0, el0 = _dir_angles(k0["dir"])
    az1, el1 = _dir_angles(k1["dir"])
    # the target key: the slider's own direction once it has moved KEY_BLEND_DEG from the fitted one (a flat-lit
    # photo lit "from -60" is lit from -60); in between, turned smoothly from the fitted key (no jump at zero)
    moved = float(torch.arccos((k0["dir"] @ k1["dir"]).clamp(-1, 1))) if k1["key"] >= 1e-6 else 0.0
    w = min(1.0, moved / math.radians(KEY_BLEND_DEG))
    d1 = _slerp(d0, k1["dir"] if k1["key"] >= 1e-6 else d0, w)
    s0 = {"ambient": k0["ambient"], "dir": d0, "key": k0["key"] + extra, "color": k0["color"]}
    s1 = {"ambient": k1["ambient"], "dir": d1, "key": k1["key"] + extra, "color": k1["color"]}
    return s0, s1


def _slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    om = float(torch.arccos((a @ b).clamp(-1, 1)))
    if om < 1e-4:
        return a.clone()
    return (math.sin((1 - w) * om) * a + math.sin(w * om) * b) / math.sin(om)


def light_frame(d: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation taking ``d`` to +z (the light looks down -z at the head, like the camera)."""
    z = d / d.norm().clamp_min(1e-8)
    up = torch.tensor([0.0, 1.0, 0.0]) if abs(float(z[1])) < 0.95 else torch.tensor([1.0, 0.0, 0.0])
    x = torch.linalg.cross(up, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z])


def shadow_visibility(posed: torch.Tensor, tris: torch.Tensor, d: torch.Tensor, res: int = SHADOW_RES
                      ) -> torch.Tensor:
    """(V,) soft visibility 0..1 of each posed vertex from a directional light along ``d`` (a shadow map of the
    triangles ``tris`` at ``res`` px, depth-compared with a bias, softened)."""
    from engine.render.fast_raster import rasterize_forward

    p = posed @ light_frame(d).T
    lo, hi = p[:, :2].min(0).values, p[:, :2].max(0).values
    span = float((hi - lo).max()) * 1.04 + 1e-6
    xy = torch.stack([(p[:, 0] - lo[0]) / span * res + 0.02 * res, (hi[1] - p[:, 1]) / span * res + 0.02 * res], -1)
    depth = float(p[:, 2].max()) + 1.0 - p[:, 2]  # distance from the light, > 0
    frags = rasterize_forward(xy.unsqueeze(0), depth.unsqueeze(0), tris, res)
    zb = frags.depth[0].numpy().astype(np.float32)
    zb = np.where(zb > 0, zb, 1e6).astype(np.float32)
    # soft: the nearest depth over a small neighbourhood, then a smooth comparison
    zb = cv2.erode(zb, np.ones((3, 3), np.uint8))
    ix = xy[:, 0].clamp(0, res - 1).long().numpy()
    iy = xy[:, 1].clamp(0, res - 1).long().numpy()
    occ = depth.numpy() - zb[iy, ix] - SHADOW_BIAS_CM
    vis = np.clip(1.0 - occ / SHADOW_SOFT_CM, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(vis)


def key_shading(normals: torch.Tensor, key: dict, vis: torch.Tensor | None) -> torch.Tensor:
    """(V,) grey shading ambient + key·max(0, n·d)·(1 - SHADOW_DEPTH·(1 - vis))."""
    lam = (normals @ key["dir"]).clamp_min(0.0)
    if vis is not None:
        lam = lam * (1.0 - SHADOW_DEPTH * (1.0 - vis))
    return float(key["ambient"].mean()) + key["key"] * lam


def key_vertex_ratio(head: HeadModel, normals: torch.Tensor, posed: torch.Tensor, tris: torch.Tensor,
                     light0: torch.Tensor, light1: torch.Tensor, albedo0: torch.Tensor | None = None,
                     albedo1: torch.Tensor | None = None, shadows: bool = True) -> torch.Tensor:
    """Like :func:`vertex_ratio` (ratio minus one, skin only, neck faded) for the key + ambient model: grey
    shading ratio × the light colour's per-channel change (× the albedo ratio). ``normals`` smoothed, posed;
    ``posed`` the target's posed vertices; ``tris`` the triangles that cast shadows."""
    skin = head.vertex_in(SKIN_PARTS)
    s0, s1 = effective_keys(light0, light1)
    v0 = v1 = None
    if shadows:
        def vis(d):  # smoothed over the mesh: no speckle where a grazing surface meets its own depth
            v = shadow_visibility(posed, tris, d).unsqueeze(1)
            for _ in range(SHADOW_SMOOTHING):
                v = torch.sparse.mm(head.adjacency(), v)
            return v[:, 0]
        v0 = vis(s0["dir"])
        v1 = v0 if torch.equal(s0["dir"], s1["dir"]) else vis(s1["dir"])
    e0 = key_shading(normals, s0, v0)
    e1 = key_shading(normals, s1, v1)
    if not torch.equal(s0["dir"], s1["dir"]):
        # a turned key keeps the face's exposure (the camera's auto-exposure would): the lit side brightens, the
        # far side darkens; intensity and ambient sliders still change it
        face = skin & (normals[:, 2] > 0.3)
        e1 = e1 * (KEY_EXPOSURE * key_shading(normals, {**s1, "dir": s0["dir"]}, v0)[face].mean()
                   / e1[face].mean().clamp_min(1e-6))
    floor = DENOM_FLOOR * e0[skin].median().clamp_min(1e-3)
    r = (e1.clamp_min(0) / torch.maximum(e0, floor)).unsqueeze(1)
    col0, col1 = s0["color"], s1["color"]
    r = r * (col1 / col0.clamp_min(1e-3)).clamp(0.5, 2.0).unsqueeze(0)
    if albedo0 is not None and albedo1 is not None:
        r = r * albedo1 / albedo0.clamp_min(0.05)
    r = r.clamp(*KEY_RATIO_RANGE)
    return torch.where(skin.unsqueeze(1), (r - 1.0) * neck_fade(head).unsqueeze(1), torch.zeros_like(r))


# ----------------------------------------------------------------------------------- applying on luminance
GAMUT_TOL = 2.5  # Lab a*b* change a brightened pixel may take from clipping
GAMUT_STEPS = 4  # halvings of a brightening that would leave the gamut
AB_FOLLOW = 0.1  # a*b* scale with (L1 / L) ** AB_FOLLOW (0: chroma kept exactly)
STORED_GAMMA = 2.2  # stored values ≈ linear light ** (1 / 2.2)
SKIN_BLUR = 0.012  # blur of the skin probability (share of the relit box): no mottling on textured skin
SKIN_CHROMA_K = 3.0  # Mahalanobis distance (a*, b*) from the photo's skin at which the relighting is ~halved
SKIN_DARK_SIGMAS = 2.5  # pixels darker than the skin's median L by more than this many sigmas (hair, beard) fade out


class SkinModel:
    """The photo's skin colour in Lab (from the cheeks and nose bridge, once per photo): a soft skin probability
    keeps relighting off hair, beards, eyebrows and clothes the mesh happens to cover."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray):
        lm = np.asarray(landmarks, np.float64).reshape(68, 2)
        w = float(np.linalg.norm(lm[16] - lm[0]))
        if not np.isfinite(w) or w < 8:  # no usable landmarks: every pixel counts as skin
            self.ok = False
            return
        r = max(2, int(0.06 * w))
        lab = []
        for c in (lm[[1, 3, 31, 36]].mean(0), lm[[15, 13, 35, 45]].mean(0), lm[[27, 28, 29]].mean(0)):
            x, y = int(c[0]), int(c[1])
            patch = image[max(0, y - r):y + r, max(0, x - r):x + r]
            if patch.size:
                lab.append(cv2.cvtColor(patch.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3))
        lab = np.concatenate(lab) if lab else np.zeros((0, 3), np.float32)
        if len(lab) < 8:
            self.ok = False
            return
        self.ok = True
        self.mean = np.median(lab, 0)
        ab = lab[:, 1:] - self.mean[1:]
        self.icov = np.linalg.inv(np.cov(ab.T) + np.eye(2) * 9.0)
        self.l_sigma = max(float(np.std(lab[:, 0])), 4.0)

    def probability(self, lab: np.ndarray) -> np.ndarray:
        if not self.ok:
            return np.ones(lab.shape[:2], np.float32)
        d = lab[..., 1:] - self.mean[1:]
        m2 = np.einsum("...i,ij,...j->...", d, self.icov, d)
        p = np.exp(-np.log(2.0) * m2 / (SKIN_CHROMA_K ** 2))  # 0.5 at K
        dark = np.clip((self.mean[0] - lab[..., 0]) / self.l_sigma - SKIN_DARK_SIGMAS, 0, 1.5) / 1.5
        return np.clip(2.0 * p * (1 - dark), 0.0, 1.0).astype(np.float32)  # full strength from p = 0.5


def _lum_f(t):
    return np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)


def apply_ratio_luminance(region: np.ndarray, ratio: np.ndarray, skin: SkinModel | None = None) -> np.ndarray:
    """uint8 (h, w, 3) × float (h, w, 3) ratio → uint8, on luminance only: the grey part of the ratio scales the
    pixel's CIE luminance Y (brightening rolled off by the highlight shoulder, as :func:`apply_ratio`) with its
    Lab a*b* kept; the colour part (ratio / grey, a change of the light's colour) multiplies the channels. ``skin``
    weighs the change by the pixel's skin probability (hair and beards keep their colour and light)."""
    lab = cv2.cvtColor(region.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    grey = ratio.mean(-1)
    if skin is not None:
        p = skin.probability(lab)
        p = cv2.GaussianBlur(p, (0, 0), max(2.0, SKIN_BLUR * max(p.shape)))  # no speckle where skin meets shadow
        grey = 1.0 + (grey - 1.0) * p
    L = lab[..., 0].copy()
    y = np.where(L > 8.0, ((L + 16.0) / 116.0) ** 3, L / 903.3)
    # the ratio is in the photo's stored (gamma-encoded) units, like the fit's model; Y is linear light
    grey = np.power(np.maximum(grey, 1e-3), STORED_GAMMA)
    yr = y * grey
    y1 = np.where(grey > 1.0, y + _shoulder(yr) - _shoulder(y), yr)
    L1 = np.clip(116.0 * _lum_f(np.maximum(y1, 0)) - 16.0, 0, 100)
    # a darker pixel with the same a*b* looks more saturated: a*b* follow L a little (AB_FOLLOW, in log)
    s = np.where(L > 1.0, np.power(np.clip(L1 / np.maximum(L, 1e-3), 0.3, 3.0), AB_FOLLOW), 1.0)
    lab[..., 1] *= s
    lab[..., 2] *= s
    lab[..., 0] = L1
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    # a brightened saturated pixel (orange skin) leaves the gamut: OpenCV clips a channel and the colour shifts.
    # Such pixels are brightened less: the share t of the change of L that survives the round trip (halvings), made
    # smooth over the image (a per-pixel share mottled textured skin), then applied once
    t = np.ones(L.shape, np.float32)
    for _ in range(GAMUT_STEPS):
        back = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)
        bad = (np.abs(back[..., 1:] - lab[..., 1:]).max(-1) > GAMUT_TOL) & (L1 > L)
        if not bad.any():
            break
        t = np.where(bad, 0.5 * t, t)
        lab[..., 0] = L + t * (L1 - L)
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if t.min() < 1.0:
        k = max(1, int(round(0.01 * max(t.shape))))
        t = cv2.GaussianBlur(cv2.erode(t, np.ones((2 * k + 1, 2 * k + 1), np.uint8)), (0, 0), 2.0 * k)
        lab[..., 0] = L + t * (L1 - L)
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    colour = ratio / np.maximum(ratio.mean(-1, keepdims=True), 1e-6)
    if np.abs(colour - 1).max() > 1e-3:
        out = out * colour
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
