"""Iris position inside the eye from an image and dlib's 68 landmarks (issue 21, DESIGN.md §6c): the gaze signal
driving carries as ``eyeLook*``.

Per eye (landmarks 36-41 = the subject's right eye, image left; 42-47 = the subject's left eye, image right):

1. the eye region is cut out around the lid polygon and scaled so the eye is ``WORK_WIDTH`` px wide (sub-pixel
   accuracy on small faces, the same scale on large ones);
2. inside the lid polygon (pulled a little toward its centre: the lash line is dark too), the darkness-weighted
   centroid of the darkest ``DARK_SHARE`` of the pixels (weights (threshold - grey)²) — the iris and pupil;
3. optionally refined by means of gradients (Timm & Barth 2011): the centre ``c`` near the centroid that maximises
   the mean of ``max(0, d·g)²`` over the strong image gradients ``g`` (``d`` the unit vector from ``c`` to the
   gradient's pixel), weighted by the darkness at ``c`` — the point the iris edge's gradients radiate from.

The result is the iris centre relative to the lid polygon's centre in eye widths (the corner-to-corner distance):
x positive toward the image's right, y positive downward; ``None`` for an eye too small or too closed to show its
iris (eye aspect ratio below ``MIN_OPENING``). :func:`gaze` averages both eyes. Pure numpy + OpenCV, no model.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["WORK_WIDTH", "DARK_SHARE", "MIN_OPENING", "eye_opening", "iris_centre", "iris_offset", "gaze"]

WORK_WIDTH = 48  # px: each eye is resampled to this width
DARK_SHARE = 35.0  # per cent of the lid polygon's pixels (the darkest) that vote for the iris centre
SHRINK = 0.85  # the lid polygon is scaled by this about its centre vertically (keeps the lash line out)
MIN_OPENING = 0.12  # eye aspect ratio below which the iris is not looked for (closed or nearly closed)
MIN_WIDTH_PX = 5.0  # eyes narrower than this in the image are not read
REFINE_RADIUS = 0.12  # eye widths: how far the gradient refinement may move the centroid
EYES = (slice(36, 42), slice(42, 48))


def eye_opening(pts: np.ndarray) -> float:
    """Eye aspect ratio of 6 lid points (dlib order): mean lid gap / corner distance (open ~0.25-0.35)."""
    p = np.asarray(pts, np.float64)
    w = np.linalg.norm(p[3] - p[0])
    if w <= 1e-9:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * w))


def _gray(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    return a.astype(np.float32)


def _eye_patch(gray: np.ndarray, pts: np.ndarray):
    """The eye resampled so its corners are WORK_WIDTH px apart (axis-aligned with the corner line), its polygon in
    patch px, and the patch → image affine (2, 3)."""
    p0, p3 = pts[0], pts[3]
    w = float(np.linalg.norm(p3 - p0))
    s = WORK_WIDTH / w
    ang = np.arctan2(p3[1] - p0[1], p3[0] - p0[0])
    ca, sa = np.cos(ang), np.sin(ang)
    c = pts.mean(0)
    pw, ph = int(WORK_WIDTH * 1.4), int(WORK_WIDTH * 0.9)
    # image -> patch: rotate by -ang about c, scale by s, centre in the patch
    m = np.array([[ca * s, sa * s, 0.0], [-sa * s, ca * s, 0.0]])
    m[:, 2] = np.array([pw / 2, ph / 2]) - m[:, :2] @ c
    patch = cv2.warpAffine(gray, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    poly = pts @ m[:, :2].T + m[:, 2]
    inv = cv2.invertAffineTransform(m)
    return patch, poly, inv


def _means_of_gradients(patch: np.ndarray, mask: np.ndarray, start: np.ndarray, radius: float) -> np.ndarray | None:
    """Timm & Barth's centre of radiating gradients, searched within ``radius`` px of ``start`` (patch px)."""
    sm = cv2.GaussianBlur(patch, (0, 0), 1.0)
    gx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    region = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
    vals = mag[region]
    if vals.size < 10:
        return None
    strong = region & (mag > vals.mean() + 0.3 * vals.std())
    ys, xs = np.nonzero(strong)
    if len(xs) < 8:
        return None
    g = np.stack([gx[ys, xs], gy[ys, xs]], 1) / mag[ys, xs, None]
    r = int(np.ceil(radius))
    cx0, cy0 = int(round(start[0])), int(round(start[1]))
    cand = np.array([(cx0 + i, cy0 + j) for j in range(-r, r + 1) for i in range(-r, r + 1) if i * i + j * j <= r * r])
    h, w = patch.shape
    cand = cand[(cand[:, 0] >= 0) & (cand[:, 0] < w) & (cand[:, 1] >= 0) & (cand[:, 1] < h)]
    if not len(cand):
        return None
    d = np.stack([xs, ys], 1)[None, :, :].astype(np.float32) - cand[:, None, :].astype(np.float32)  # (C, N, 2)
    n = np.linalg.norm(d, axis=-1)
    n[n < 1e-6] = 1.0
    dot = np.maximum((d * g[None]).sum(-1) / n, 0.0)  # gradients point from the dark iris outward
    score = (dot ** 2).mean(1) * (255.0 - sm[cand[:, 1], cand[:, 0]])
    best = int(np.argmax(score))
    # sub-pixel: the score-weighted mean of the best candidates
    top = score >= score[best] * 0.98
    return (cand[top] * score[top, None]).sum(0) / score[top].sum()


def iris_centre(image: np.ndarray, pts: np.ndarray, refine: bool = False) -> np.ndarray | None:
    """The iris centre (x, y) in image px of one eye (6 lid points, dlib order), or None (eye too small or
    closed)."""
    pts = np.asarray(pts, np.float64).reshape(6, 2)
    if np.linalg.norm(pts[3] - pts[0]) < MIN_WIDTH_PX or eye_opening(pts) < MIN_OPENING:
        return None
    gray = _gray(image)
    patch, poly, inv = _eye_patch(gray, pts)
    c = poly.mean(0)
    shrunk = np.stack([poly[:, 0], c[1] + SHRINK * (poly[:, 1] - c[1])], 1)
    mask = np.zeros(patch.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(shrunk * 4).astype(np.int32)], 1, shift=2)
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return None
    v = cv2.GaussianBlur(patch, (0, 0), 0.8)[ys, xs]
    thr = np.percentile(v, DARK_SHARE)
    wgt = np.clip(thr - v, 0.0, None) ** 2
    if wgt.sum() <= 1e-9:  # a flat eye region (no contrast): nothing to read
        return None
    centre = np.array([(xs * wgt).sum(), (ys * wgt).sum()]) / wgt.sum()
    if refine:
        r = _means_of_gradients(patch, mask, centre, REFINE_RADIUS * WORK_WIDTH)
        if r is not None:
            centre = r
    return inv[:, :2] @ centre + inv[:, 2]


def iris_offset(image: np.ndarray, pts: np.ndarray, refine: bool = False) -> np.ndarray | None:
    """(x, y) of the iris centre from the lid polygon's centre in eye widths, along the eye's own axes (x along the
    corner line toward the image's right, y perpendicular to it, down: a rolled head reads the same), or None."""
    pts = np.asarray(pts, np.float64).reshape(6, 2)
    c = iris_centre(image, pts, refine)
    if c is None:
        return None
    u = pts[3] - pts[0]
    w = float(np.linalg.norm(u))
    u = u / w
    d = c - pts.mean(0)
    return np.array([d @ u, d @ np.array([-u[1], u[0]])]) / w


def gaze(image: np.ndarray, landmarks: np.ndarray, refine: bool = False) -> np.ndarray | None:
    """(x, y) iris offset in eye widths, mean over the eyes that show their iris (see :func:`iris_offset`), or
    None when neither does. ``landmarks``: (68, 2) dlib points in ``image`` px."""
    lm = np.asarray(landmarks, np.float64)
    gray = _gray(image)
    out = [o for o in (iris_offset(gray, lm[s], refine) for s in EYES) if o is not None]
    return np.mean(out, 0) if out else None
