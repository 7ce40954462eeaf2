"""Differentiable per-face colour statistics (CIELAB a*, b*) of generated faces, the torch twin of
``bench/generator.py``'s :func:`colour_stats` (issue 25's eyelid / background colour outliers).

Per face, in a*b* units (sRGB → CIELAB, D65, as OpenCV's ``COLOR_RGB2LAB``):

* ``eye purple`` / ``eye teal``: 95th percentile over the eye regions (``training.sr.eye_region``) of the pixel's
  shift from the face's own skin colour towards magenta (Δa* − Δb*) / teal (−Δa*);
* ``border a*`` / ``border b*``: mean over the outer ring (1/8 of the size: background, hair);
* ``border chroma noise``: mean chroma of the ring's band-pass (Gaussian σ 1 − σ 3 px at 64 px, scaled);
* ``skin a*`` / ``skin b*``: the skin colour (mean inside the jaw/brow hull, eyes excluded; the bench takes the
  median: the mean keeps a gradient on every skin pixel).

:func:`range_penalty` is the hinge that keeps faces inside the photos' range of each statistic (the purple, teal
and noise statistics have an upper bound only), in units of that range's width.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STATS = ("eye purple", "eye teal", "border a*", "border b*", "border chroma noise", "skin a*", "skin b*")
UPPER_ONLY = (0, 1, 4)

_M = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def rgb_to_ab(img01: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] → (B, 2, H, W) CIELAB a*, b*."""
    c = img01.clamp(0, 1)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).clamp_min(1e-8) ** 2.4)
    xyz = torch.einsum("ij,bjhw->bihw", _M.to(c), lin) / _WHITE.to(c).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(4 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def face_masks(landmarks: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, S) bool eye regions and skin masks (jaw/brow hull without the eyes) from 68-point landmarks in px."""
    import cv2
    from PIL import Image, ImageDraw

    from training.sr import eye_region

    eyes, skin = [], []
    for lm in np.asarray(landmarks, np.float64):
        e = eye_region(lm, size)
        hull = cv2.convexHull(lm[:27].astype(np.float32)).reshape(-1, 2)
        im = Image.new("L", (size, size), 0)
        ImageDraw.Draw(im).polygon([tuple(p) for p in hull.tolist()], fill=1)
        eyes.append(e)
        skin.append(np.asarray(im, bool) & ~e)
    return torch.from_numpy(np.stack(eyes)), torch.from_numpy(np.stack(skin))


def colour_stats(img01: torch.Tensor, eyes: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """(B, 7) statistics of :data:`STATS` for (B, 3, S, S) images in [0, 1] and their masks (:func:`face_masks`)."""
    ab = rgb_to_ab(img01)
    s = ab.shape[-1]
    ring = torch.ones(s, s, dtype=torch.bool, device=ab.device)
    w = max(2, s // 8)
    ring[w:-w, w:-w] = False
    k = s / 64
    bp = _blur(ab, k) - _blur(ab, 3 * k)
    noise = bp.square().sum(1).add(1e-8).sqrt()[:, ring].mean(1)
    border = ab[:, :, ring].mean(2)
    out = []
    for i in range(ab.shape[0]):
        sk = ab[i][:, skin[i]].mean(1) if skin[i].any() else ab[i].mean((1, 2))
        e = ab[i][:, eyes[i]] - sk[:, None] if eyes[i].any() else torch.zeros(2, 1).to(ab)
        out.append(torch.stack([torch.quantile(e[0] - e[1], 0.95), torch.quantile(-e[0], 0.95), *sk]))
    o = torch.stack(out)
    return torch.stack([o[:, 0], o[:, 1], border[:, 0], border[:, 1], noise, o[:, 2], o[:, 3]], 1)


def stat_ranges(stats: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The q … 100 − q % range of each statistic over (N, 7) real faces; −inf below for the upper-only ones."""
    lo = torch.quantile(stats, q / 100, 0)
    hi = torch.quantile(stats, 1 - q / 100, 0)
    lo[list(UPPER_ONLY)] = -float("inf")
    return lo, hi


def range_penalty(stats: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Mean over faces of Σ_stat relu(outside the [lo, hi] range) / width (the range's width per statistic)."""
    over = torch.relu(stats - hi) + torch.relu(lo - stats)
    return (over / width).sum(1).mean()
