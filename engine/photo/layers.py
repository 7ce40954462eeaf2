"""Photo mode v2: the layered photo (DESIGN.md §6b, issue 20) — the interface every photo-mode layer follows.

Once per photo (in the :class:`~engine.photo.renderer.PhotoRenderer` constructor, i.e. in the session's open-photo
worker; the drag-preview renderer shares the same :class:`PhotoLayers`, it is not recomputed) :func:`build_layers`
splits the photo, inside the work box, into

* **plate** — the background: the photo with the head region (head matte, dilated) filled from a context band
  *outside* the head only (never from face or hair pixels); low-res pull-push fill upsampled into the hole. What a
  turning head reveals behind itself is taken from here and only here.
* **head layer** — face, hair, ears and the neck down to the fitted neck cut (lower neck, collar, shirt stay in the
  plate): its foreground colour ``fg[..., :3]`` (solved so that ``fg·α + plate·(1-α)`` gives the photo back exactly)
  and its soft **matte** ``fg[..., 3]`` (grabCut seeded by the rasterised head on a ≤ ``MATTE_MAX_SIDE`` px copy,
  edges refined with a guided filter, cut below the chin at the fitted neck).
* **3D points** — every work-grid pixel gets a source point in *head coordinates* (unposed model cm, the frame the
  pose rotates): the fitted mesh where the mesh is; beyond it the camera depth is continued smoothly (pull-push),
  pushed out a little (hair is a shell outside the scalp) and the pixel is back-projected at that depth. With a
  stay-weight (0 = turns with the head, 1 = stays with the torso: the lower neck and what hangs below it) this gives
  every head-layer pixel a target position under any pose, in perspective (:meth:`GridLayers.forward`).

Per edit (:meth:`PhotoRenderer.render`), on the work grid and then once at the photo's own resolution, the
composition order is fixed:

1. **plate** (background; the photo itself outside the work box and far from the head);
2. **warped head layer**: mesh pixels by the target rasterisation (barycentric source positions, as before), the
   rest of the head layer (hair, ears, strands, neck top) by splatting its 3D points into the target grid with a
   z-buffer; ``fg`` and its matte are resampled *once* (one ``cv2.remap`` of the RGBA head layer) through the
   combined map and composed over the plate;
3. **fills**: revealed far-side skin (mirror point, shading divided out), the mouth interior (model colours);
4. **extra layers** — the hook: ``PhotoRenderer.layer_hooks`` is a list of callables
   ``hook(renderer, coeffs, field) -> LayerFill | None`` called in order after the fills; helper "eyes" (issue 21)
   appends the eyeball layer here. ``field`` is the :class:`~engine.photo.renderer.FlowField` of this edit
   (``field.target`` the :class:`~engine.photo.flow.TargetRaster`: its ``frags.face_id`` / ``tris`` say which grid
   pixels show sclera/iris *under the lids* — the lids are skin triangles in front in the same z-buffer). A hook's
   :class:`LayerFill` is composed over the region in that order;
5. **relighting** (ratio on the skin; hooks that draw colour should give it in the photo's own light).

A :class:`LayerFill` is defined on the work grid (``R × R``) and is upsampled by the renderer:

* ``alpha`` (R, R) float 0..1 — how much of the pixel the layer takes;
* ``disp`` (R, R, 2) photo px, optional — the layer's pixels are the *photo* resampled at ``p + disp`` (like
  ``FlowField.displacement``: e.g. the eyeball's own pixels following its rotation);
* ``rgb`` (R, R, 3) optional — premultiplied colour in [0, 1] (e.g. the person's sclera colour where the lids hid
  it); used where ``disp`` is None (give two LayerFills for both kinds);
* ``gain`` (R, R, 3) optional — multiplies the layer's resampled photo (shading correction), 1 = unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2

import numpy as np

from engine.render import fast_raster

MATTE_MAX_SIDE = 512  # grabCut runs on a copy of the work box at most this large
SPLAT_COMPILED = True  # the head layer's splat by fast_raster.splat_nearest (False: numpy sort + scatter, the reference)


@dataclass
class LayerFill:
    """One extra layer of an edit on the work grid (see module doc, step 4)."""

    alpha: np.ndarray  # (R, R) float32 0..1
    disp: np.ndarray | None = None  # (R, R, 2) photo px: the layer shows the photo at p + disp
    rgb: np.ndarray | None = None  # (R, R, 3) premultiplied colour in [0, 1] (used when disp is None)
    gain: np.ndarray | None = None  # (R, R, 3) multiplies the resampled photo (with disp)


@dataclass
class PhotoLayers:
    """The per-photo layers (photo resolution, inside ``box``); computed once by :func:`build_layers`."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 photo px (the work box ∩ the photo)
    plate: np.ndarray  # (bh, bw, 3) uint8: background, head region filled from outside the head
    fg: np.ndarray  # (bh, bw, 4) uint8: head-layer colour (RGB) and matte (A)
    seconds: float = 0.0  # time :func:`build_layers` took
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ building
MATTE_RES = 320  # side of the analysis copy of the work box (grabCut, plate fill): ≤ MATTE_MAX_SIDE
GRABCUT_ITERS = 4
BORDER_BAND = 0.03  # sure-background band along the photo's border (fraction of the analysis side)
HEAD_ELLIPSE = (0.95, 1.05)  # semi-axes of the probable-head ellipse around the brows: face widths, face heights
NECK_BOX_WIDTH = 0.75  # face widths
TEXTURE_FACTOR = 1e9  # busier than this × the border band's texture (75th percentile): hair
GUIDED_EPS = 1e-3
MIN_ALPHA = 0.02
REFLECT_MARGIN = 0.04  # face widths: the mirror takes the background from beyond this margin around the head
REFLECT_MAX_SIDE = 768  # px: the mirrored plate is made on a copy at most this large
REFLECT_DEPTH = 0.25  # face widths over which the plate's mirrored background fades into the smooth fill
REFLECT_BAND = 0.12  # face widths: the plate folds the background within this band beside the head into the hole
REFLECT_SMOOTH = 0.05  # face widths: low-pass of the mirror's offsets (a ragged hair outline mirrors as a smooth one)
DEPTH_SMOOTH = 0.02  # of the grid side: low-pass of the depth continued off the mesh
SHELL_CM = 0.5  # hair sits this much in front of the rim's depth
EDGE_GROW = 0.02  # face widths: the head matte grown by this (the outline's fringe moves with the head) ...
EDGE_GROW_MAX_TEX = 12.0  # ... where the background beyond is plainer than this (blurred |Laplacian|, grey levels)
STRAY_REACH = 0.12  # face widths: stray hair is looked for inside the head ellipse grown by this; ...
STRAY_MARGIN = 0.3  # ... the smooth background is predicted from beyond the ellipse grown by this
STRAY_SMOOTH = 0.05  # face widths: low-pass of that prediction
STRAY_FACTOR = 3.0  # a pixel stands out when its residual exceeds this × the background's own residual ...
STRAY_MIN_DIFF = 14.0  # ... plus this (RGB distance, grey levels)
STRAY_MAX_NOISE = 10.0  # only where the background's own residual is below this (a plain background)
STRAY_TEX = 2.0  # ... and busier (blurred |Laplacian|) than this × the far background's (75th percentile)
STRAY_TEX_MIN = 10.0  # ... plus this (grey levels): a soft edge is no strand
STRAY_INSIDE = 0.6  # share of an added piece that must lie inside the head ellipse
TORSO_STAYS = True  # the clothing under the chin stays with the torso over the lower neck (torso_on_grid)
OFF_PHOTO = 0.5  # face widths: how far the head layer goes on beyond a photo border that cuts through it
PRIOR_DILATE = 0.04  # face widths: the fitted head (above the chin), dilated, always belongs to the head layer
SKIN_BINS = (8, 16, 16)  # Lab histogram bins (L over 0..100, a and b over -64..64) of the skin / hair colour models
SKIN_ODDS = 0.5  # beyond a photo border: a colour at least this share of its frequency in the hair, in the face, is skin


def _grid_affine(origin, step: float) -> np.ndarray:
    """grid pixel index → photo pixel index (for cv2.warpAffine with WARP_INVERSE_MAP)."""
    return np.array([[step, 0.0, origin[0] + 0.5 * step - 0.5], [0.0, step, origin[1] + 0.5 * step - 0.5]])


def _box_filter(a: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(a, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float = GUIDED_EPS) -> np.ndarray:
    """He et al.'s guided filter, grey guide (H, W) float in [0, 1], src (H, W) float."""
    mi, mp = _box_filter(guide, r), _box_filter(src, r)
    cov = _box_filter(guide * src, r) - mi * mp
    var = _box_filter(guide * guide, r) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return _box_filter(a, r) * guide + _box_filter(b, r)


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    from engine.photo.flow import pull_push

    return pull_push(values.astype(np.float32), known.astype(np.float32))


def _reflect_fill(photo: np.ndarray, hole: np.ndarray, smooth: np.ndarray, depth: float, margin: int = 0,
                  sigma: float = 0.0, band: float = 0.0) -> np.ndarray:
    """Inside ``hole`` (photo px): the background mirrored across the hole's nearest edge along the row (keeps its
    texture: a smooth fill next to a textured background reads as a ghost of the old outline), fading over ``depth``
    px into ``smooth`` (the pull-push fill) deeper inside, where the mirror lands in the hole or off the photo.
    ``sigma`` (px): the offsets to the edge are low-passed inside the hole, so a ragged outline (hair) mirrors as a
    smooth one (each pixel's own edge point jumps along a ragged edge: streaks)."""
    h, w = hole.shape
    if margin > 0:  # mirror from beyond a margin around the hole: stray hair wisps live right at its edge
        hole = cv2.dilate(hole.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)
                          ) > 0
    if not hole.any() or hole.all():
        return smooth
    known = ~hole
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # the nearest edge *along the row* (a turn reveals a band beside the head: the background beside it mirrored
    # sideways keeps its verticals vertical and its horizontals level; the nearest edge in 2D fans out radially)
    col = np.arange(w, dtype=np.float32)[None, :]
    left = np.maximum.accumulate(np.where(known, col, -1e6), axis=1)
    right = np.minimum.accumulate(np.where(known, col, 1e6)[:, ::-1], axis=1)[:, ::-1]
    dl, dr = xx - left, right - xx
    use_l = (dl <= dr) & (left >= 0) | (right >= w)
    nx = np.where(use_l, left, right).astype(np.float32)
    ny = yy.copy()
    dist = np.where(hole, np.minimum(dl, dr), 0.0).astype(np.float32)
    none = hole & (left < 0) & (right >= w)  # a row the hole crosses from edge to edge: the smooth fill
    nx[none] = xx[none]
    if band > 0:
        return _band_mirror(photo, hole, known, smooth, xx, yy, left, right, use_l, none, band, sigma)
    if sigma > 0:
        hf = hole.astype(np.float32)
        norm = np.maximum(cv2.GaussianBlur(hf, (0, 0), sigma), 1e-6)
        vx = cv2.GaussianBlur((nx - xx) * hf, (0, 0), sigma) / norm
        vy = cv2.GaussianBlur((ny - yy) * hf, (0, 0), sigma) / norm
        nx, ny = np.where(hole, xx + vx, nx), np.where(hole, yy + vy, ny)
    rx, ry = 2 * nx - xx, 2 * ny - yy
    ok = (rx >= 0) & (rx <= w - 1) & (ry >= 0) & (ry <= h - 1)
    rxi = np.clip(np.round(rx), 0, w - 1).astype(np.int32)
    ryi = np.clip(np.round(ry), 0, h - 1).astype(np.int32)
    ok &= known[ryi, rxi]
    mir = cv2.remap(photo, rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    # the mirror keeps the texture, the smooth fill the local mean: take the mirror's detail over the smooth level
    wgt = (np.exp(-dist / max(depth, 1.0)) * ok)[..., None].astype(np.float32)
    return smooth * (1 - wgt) + mir * wgt


def _band_mirror(photo, hole, known, smooth, xx, yy, left, right, use_l, none, band: float, sigma: float):
    """The plate's fill from the background right beside the hole only: a pixel ``d`` px inside the hole from its
    edge (along the row) shows the background ``s`` px outside it, ``s`` going 0 → ``band`` → 0 → … as ``d`` grows
    (a mirror folded back and forth inside a band of the background beside the head; past the first ``band`` px
    it folds between ``band / 2`` and ``band`` only). A plain mirror reaches as far
    outside as inside and brings what stands further off (a curtain, a shoulder, a chair) into the revealed band, and
    the smooth fill it faded into is the hole's whole surroundings averaged (a pale or tinted ghost of the head);
    the band is the background the head stood in front of. Where a row's known run beside the edge is shorter than
    ``band`` (another part of the hole, the photo's edge) the band shrinks to it; no run on either side: ``smooth``."""
    h, w = hole.shape
    kn = known.copy()
    # known px in a row run from each known px leftwards / rightwards (inclusive)
    kn = kn.astype(np.int32)
    idx = np.broadcast_to(np.arange(w, dtype=np.int32)[None, :], (h, w))
    last_hole_l = np.maximum.accumulate(np.where(kn == 0, idx, -1), axis=1)  # the last hole/edge px at or left of x
    run_l = (idx - last_hole_l).astype(np.float32)  # known px ending at x, going left
    first_hole_r = np.minimum.accumulate(np.where(kn == 0, idx, w)[:, ::-1], axis=1)[:, ::-1]
    run_r = (first_hole_r - idx).astype(np.float32)
    li = np.clip(left, 0, w - 1).astype(np.int32)
    ri = np.clip(right, 0, w - 1).astype(np.int32)
    rows = np.arange(h)[:, None]
    avail_l = np.where(left >= 0, run_l[rows, li], 0.0)
    avail_r = np.where(right < w, run_r[rows, ri], 0.0)
    min_run = 3.0
    use_l = np.where(use_l, avail_l >= min_run, ~(avail_r >= min_run) & (avail_l >= min_run))
    use_r = ~use_l & (avail_r >= min_run)
    ok = hole & (use_l | use_r) & ~none
    nx = np.where(use_l, left, right).astype(np.float32)
    p = np.minimum(np.where(use_l, avail_l, avail_r) - 1.0, band).astype(np.float32)
    sgn = np.where(use_l, -1.0, 1.0).astype(np.float32)
    if sigma > 0:  # a ragged outline: the edge point and the band low-passed inside the hole (no streaks)
        hf = ok.astype(np.float32)
        norm = np.maximum(cv2.GaussianBlur(hf, (0, 0), sigma), 1e-6)
        nx = np.where(ok, cv2.GaussianBlur((nx - xx) * hf, (0, 0), sigma) / norm + xx, nx)
        p = np.where(ok, cv2.GaussianBlur(p * hf, (0, 0), sigma) / norm, p)
    p = np.maximum(p, 1.0)
    d = np.abs(xx - nx)
    # a plain mirror up to ``p``, then folding back and forth between ``p / 2`` and ``p``: what lies right at the
    # edge (the outline's halo, stray strands) is shown once, not again every ``2 p`` (copies of the old outline)
    q = 0.5 * p
    s = np.where(d <= p, d, p - q + np.abs(np.mod(d - p, 2 * q) - q))
    rx = nx + sgn * s
    ry = yy
    rxi = np.clip(np.round(rx), 0, w - 1).astype(np.int32)
    ok &= known[yy.astype(np.int32), rxi]
    ok |= ~hole
    mir = cv2.remap(photo, rx.astype(np.float32), ry.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    wgt = cv2.GaussianBlur(ok.astype(np.float32), (0, 0), 1.0)[..., None] * ok[..., None]
    return smooth * (1 - wgt) + mir * wgt


def _stray_hair(img: np.ndarray, fg: np.ndarray, ell: np.ndarray, inside: np.ndarray, fw: float) -> np.ndarray:
    """``fg`` (analysis grid, uint8 0/1) grown by what near the head ellipse ``ell`` stands out from the smooth
    background predicted from beyond it (pull-push of the far background, low-passed), where that background is
    plain (its own residual against the prediction is small), and touches ``fg``."""
    def grown(r):
        r = max(1, int(r * fw))
        return cv2.dilate(ell, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0

    zone = grown(STRAY_REACH)
    far = ~grown(STRAY_MARGIN) & inside
    far &= cv2.dilate(fg, np.ones((5, 5), np.uint8)) == 0
    if far.sum() < 50:
        return fg
    f = img.astype(np.float32)
    est = _fill(f, far.astype(np.float32))
    est = cv2.GaussianBlur(est, (0, 0), max(1.0, STRAY_SMOOTH * fw))
    resid = np.sqrt(((f - est) ** 2).sum(-1))
    resid = cv2.GaussianBlur(resid, (0, 0), 1.0)
    # the background's own roughness near the head: the residual of the far pixels, spread inwards
    s = max(2.0, 0.5 * fw)
    farf = far.astype(np.float32)
    noise = cv2.GaussianBlur(resid * farf, (0, 0), s) / np.maximum(cv2.GaussianBlur(farf, (0, 0), s), 1e-3)
    plain = noise < STRAY_MAX_NOISE
    # ... and hair is strands: busier than the wall (a smooth patch of a painted background that merely differs from
    # the far prediction is background)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    tex = cv2.GaussianBlur(np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3)), (0, 0), 1.5)
    busy = tex > STRAY_TEX * float(np.percentile(tex[far], 75)) + STRAY_TEX_MIN
    busy = cv2.morphologyEx(busy.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
    cand = (resid > STRAY_FACTOR * noise + STRAY_MIN_DIFF) & plain & busy & zone & inside & (fg == 0)
    if not cand.any():
        return fg
    joined = cv2.morphologyEx(np.maximum(cand.astype(np.uint8), fg), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, comp = cv2.connectedComponents(joined)
    keep = np.unique(comp[fg > 0])
    add = np.isin(comp, keep[keep > 0]) & (fg == 0)
    # each added piece lies mostly inside the head ellipse (a band of background that merely differs from the
    # prediction, a highlight across the top of a seat, reaches far beyond it)
    n, comp = cv2.connectedComponents(add.astype(np.uint8))
    if n > 1:
        tot = np.bincount(comp.ravel(), minlength=n)
        inn = np.bincount(comp.ravel(), weights=(ell > 0).ravel().astype(np.float64), minlength=n)
        ok = inn >= STRAY_INSIDE * tot
        ok[0] = False
        add = ok[comp]
    return np.maximum(add.astype(np.uint8), fg)


def build_layers(image: np.ndarray, grid, head, proj, src) -> PhotoLayers:
    """The per-photo layers (see module doc). ``grid``: the renderer's :class:`~engine.photo.flow.WorkGrid`;
    ``proj``/``src``: its :class:`~engine.photo.flow.HeadProjector` and :class:`~engine.photo.flow.SourceHead`."""
    import time

    import torch

    from engine.photo.flow import NECK_FIXED_Y, flow_triangles, rasterize

    t0 = time.perf_counter()
    tm = {}
    h, w = image.shape[:2]
    side = grid.step * grid.res
    a_res = int(max(32, min(MATTE_RES, MATTE_MAX_SIDE, round(side))))
    a_step = side / a_res
    m_a = _grid_affine(grid.origin, a_step)
    img_a = cv2.warpAffine(image, m_a, (a_res, a_res), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP
                           if a_step > 1.5 else cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    # which analysis pixels lie inside the photo
    cx = grid.origin[0] + (np.arange(a_res) + 0.5) * a_step
    cy = grid.origin[1] + (np.arange(a_res) + 0.5) * a_step
    inside = ((cy >= 0) & (cy < h))[:, None] & ((cx >= 0) & (cx < w))[None, :]
    # the fitted head on the analysis grid
    with torch.no_grad():
        gxy = (src.photo_xy - torch.tensor(grid.origin, dtype=src.photo_xy.dtype)) / a_step
        tris = flow_triangles(head, False)
        frags = rasterize(gxy.unsqueeze(0), src.cam[:, 2].unsqueeze(0), tris, a_res)
    mesh = (frags.face_id[0] >= 0).numpy()
    g = gxy.numpy()
    lm = g[head.lm68.numpy()]
    fw = float(np.linalg.norm(lm[16] - lm[0]))
    brow = lm[17:27].mean(0)
    chin = lm[8]
    fh = float(np.linalg.norm(chin - brow))
    up = (brow - chin) / max(fh, 1e-6)
    # the neck cut: where the fitted neck joins the torso
    vy = src.verts[:, 1].numpy()
    neck_v = (np.abs(vy - NECK_FIXED_Y) < 1.0) & head.vertex_in(("head_neck",)).numpy()
    cut_y = float(g[neck_v, 1].mean()) if neck_v.any() else float(chin[1] + 0.6 * fh)
    cut_y = max(cut_y, float(chin[1]) + 0.25 * fh)
    tm["seeds"] = time.perf_counter() - t0
    # grabCut labels
    lab = np.full((a_res, a_res), cv2.GC_PR_BGD, np.uint8)
    ell = np.zeros((a_res, a_res), np.uint8)
    ang = float(np.degrees(np.arctan2(-up[0], up[1])))  # roll of the face's up axis
    cv2.ellipse(ell, (int(round(brow[0])), int(round(brow[1]))),
                (max(2, int(HEAD_ELLIPSE[0] * fw)), max(2, int(HEAD_ELLIPSE[1] * fh))), -ang, 0, 360, 1, -1)
    nb = NECK_BOX_WIDTH * fw / 2
    cv2.rectangle(ell, (int(chin[0] - nb), int(chin[1] - 0.2 * fh)), (int(chin[0] + nb), int(cut_y)), 1, -1)
    lab[(ell > 0) | mesh] = cv2.GC_PR_FGD
    hull = np.concatenate([lm[0:17], lm[17:27] + up * 0.18 * fh])
    sure = np.zeros((a_res, a_res), np.uint8)
    cv2.fillConvexPoly(sure, cv2.convexHull(np.round(hull).astype(np.int32)), 1)
    k = max(1, int(0.04 * fw))
    sure = cv2.erode(sure, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    lab[sure > 0] = cv2.GC_FGD
    band = max(2, int(BORDER_BAND * a_res))
    edge = np.zeros((a_res, a_res), bool)
    # sure background: the photo's border band (inside the box) and everything below the cut outside the neck box
    ys, xs = np.nonzero(inside)
    if len(xs):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        edge[y0:y1, x0:x1] = True
        edge[y0 + band:y1 - band, x0 + band:x1 - band] = False
        edge[int(chin[1]):] = False  # the body usually reaches the bottom edge
        # an edge of the photo that cuts through the head (tight crops) is no background
        edge &= ell == 0
    lab[edge & (sure == 0)] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    t1 = time.perf_counter()
    try:
        cv2.setRNGSeed(0)  # grabCut's k-means start: the same photo gives the same matte
        cv2.grabCut(np.ascontiguousarray(img_a[..., ::-1]), lab, None, bgd, fgd, GRABCUT_ITERS,
                    cv2.GC_INIT_WITH_MASK)
        fg = ((lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)).astype(np.uint8)
    except cv2.error:
        fg = ((ell > 0) | mesh).astype(np.uint8)
    tm["grabcut"] = time.perf_counter() - t1
    # keep what connects to the face; the fitted head is always part of the head layer
    n, comp = cv2.connectedComponents(fg)
    if n > 2:
        keep = np.unique(comp[(sure > 0) & (fg > 0)])
        keep = keep[keep > 0]
        if len(keep):
            fg = np.isin(comp, keep).astype(np.uint8)
    fg = np.maximum(fg, sure)
    cut = fg.astype(np.float32) * inside  # grabCut's own head (before the priors widen it): hair, not the rim's background
    # a generous prior around the fitted head (scalp, ears): grabCut misses dark or grey hair on a like background,
    # and a cut through the hair leaves an old outline behind; plain background moved with the head is invisible
    kp = max(1, int(PRIOR_DILATE * fw))
    prior = cv2.dilate((mesh & (np.arange(a_res)[:, None] + 0.5 < chin[1])).astype(np.uint8),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kp + 1, 2 * kp + 1)))
    fg = np.maximum(fg, prior)
    # hair grabCut cannot tell from a background of the same colour (grey hair on grey) is still textured: inside the
    # head ellipse, what is clearly busier than the photo's border band joins the head layer where it touches it
    gray_a = cv2.cvtColor(img_a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    tex = cv2.GaussianBlur(np.abs(cv2.Laplacian(gray_a, cv2.CV_32F, ksize=3)), (0, 0), 2.0)
    ref = tex[edge & inside] if (edge & inside).any() else tex[(ell == 0) & inside]
    if ref.size:
        busy = (tex > TEXTURE_FACTOR * max(float(np.percentile(ref, 75)), 1.0)) & (ell > 0)
        busy = cv2.morphologyEx(busy.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, comp = cv2.connectedComponents(np.maximum(busy, fg))
        keep = np.unique(comp[fg > 0])
        fg = np.isin(comp, keep[keep > 0]).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    # hair of the background's own colour (grey hair on grey, a dark curl on a dark wall) that grabCut left out still
    # differs from the *smooth* background the far surroundings predict: inside the head ellipse, where that
    # background is plain, what clearly stands out from it and touches the head layer joins it (left in the plate it
    # stays behind as a detached tuft or ghost strands when the head turns away)
    fg = _stray_hair(img_a, fg, ell, inside, fw)
    # the body is not cut off: it stays in the head layer with stay-weight 1 (lower neck, collar, shirt, hair on the
    # shoulders do not move; see GridLayers.stay), so no seam and no plate shows below the head
    # the outline's own fringe (the dark or light halo a hair edge leaves, compression ringing) goes with the head: left
    # in the plate it draws the old outline where the head moved away. Only before a plain background: a busy one
    # moved with the head shows as a halo of moved background (talk_woman_older_glasses_07: head box -0.26 dB)
    ke = max(1, int(round(EDGE_GROW * fw)))

    def disk(r):
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    ring = (cv2.dilate(fg, disk(ke)) > 0) & (fg == 0)
    outer = ((cv2.dilate(fg, disk(4 * ke + 2)) > 0) & (cv2.dilate(fg, disk(2 * ke + 1)) == 0) & inside).astype(np.float32)
    sb = 3.0 * ke + 2.0
    tex_bg = cv2.GaussianBlur(tex * outer, (0, 0), sb) / np.maximum(cv2.GaussianBlur(outer, (0, 0), sb), 1e-3)
    fg = np.maximum(fg, (ring & (tex_bg < EDGE_GROW_MAX_TEX)).astype(np.uint8))
    matte_a = fg.astype(np.float32) * inside
    # the plate on the analysis grid: the hole (matte, dilated) filled from the background around it
    hole = cv2.dilate((matte_a > MIN_ALPHA).astype(np.uint8), np.ones((5, 5), np.uint8))
    known = (hole == 0) & inside
    fill_a = _fill(img_a.astype(np.float32), known.astype(np.float32)) if known.any() else img_a.astype(np.float32)
    # the plate is the photo wherever the head layer is not (the dilation only kept the fill's context off the
    # matte's soft edge): a static head layer over it gives the photo back
    inner = cv2.dilate((matte_a > MIN_ALPHA).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    hole_soft = np.maximum(cv2.GaussianBlur(inner, (0, 0), 0.7), inner)
    t2 = time.perf_counter()
    # to photo resolution inside the box
    x0, y0 = int(max(0, np.floor(grid.origin[0]))), int(max(0, np.floor(grid.origin[1])))
    x1, y1 = int(min(w, np.ceil(grid.origin[0] + side))), int(min(h, np.ceil(grid.origin[1] + side)))
    bw, bh = x1 - x0, y1 - y0
    s = 1.0 / a_step
    m_up = np.array([[s, 0, (x0 + 0.5 - grid.origin[0]) * s - 0.5], [0, s, (y0 + 0.5 - grid.origin[1]) * s - 0.5]])

    def up_(a):
        return cv2.warpAffine(np.ascontiguousarray(a, np.float32), m_up, (bw, bh),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)

    photo = image[y0:y1, x0:x1]
    pf = photo.astype(np.float32)
    hs = up_(hole_soft)[..., None]
    smooth = up_(fill_a).reshape(bh, bw, -1)
    k = min(1.0, REFLECT_MAX_SIDE / max(bh, bw))  # large photos: mirrored on a copy (what it fills is out of focus)
    if k < 1.0:
        size = (max(1, round(bw * k)), max(1, round(bh * k)))
        small = _reflect_fill(cv2.resize(photo, size, interpolation=cv2.INTER_AREA),
                              cv2.resize(hs[..., 0], size, interpolation=cv2.INTER_AREA) > 0.5,
                              cv2.resize(smooth, size, interpolation=cv2.INTER_AREA), REFLECT_DEPTH * fw * a_step * k,
                              int(REFLECT_MARGIN * fw * a_step * k), REFLECT_SMOOTH * fw * a_step * k,
                              REFLECT_BAND * fw * a_step * k)
        fill_p = cv2.resize(small, (bw, bh), interpolation=cv2.INTER_LINEAR)
    else:
        fill_p = _reflect_fill(photo, hs[..., 0] > 0.5, smooth, REFLECT_DEPTH * fw * a_step,
                               int(REFLECT_MARGIN * fw * a_step), REFLECT_SMOOTH * fw * a_step,
                               REFLECT_BAND * fw * a_step)
    plate_f = pf * (1 - hs) + fill_p * hs
    alpha = up_(cv2.GaussianBlur(matte_a, (0, 0), 0.7))
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    rg = max(2, int(round(0.6 * a_step)) + 1)
    alpha = np.clip(guided_filter(gray, alpha, rg), 0, 1)
    # the fitted face itself is solid
    alpha = np.maximum(alpha, up_(sure.astype(np.float32)))
    alpha[alpha < MIN_ALPHA] = 0
    a3 = alpha[..., None]
    fg_rgb = np.where(a3 > 0.05, (pf - (1 - a3) * plate_f) / np.maximum(a3, 0.05), pf)
    fga = np.empty((bh, bw, 4), np.uint8)
    fga[..., :3] = np.clip(fg_rgb + 0.5, 0, 255)
    fga[..., 3] = np.clip(alpha * 255 + 0.5, 0, 255)
    plate = np.clip(plate_f + 0.5, 0, 255).astype(np.uint8)
    tm["photo_res"] = time.perf_counter() - t2
    out = PhotoLayers((x0, y0, x1, y1), plate, fga, time.perf_counter() - t0, tm)
    out.matte_analysis = matte_a
    out.cut_analysis = cut
    out.analysis = (tuple(grid.origin), a_step, a_res)
    return out


class GridLayers:
    """The layers on one work grid: the head matte and every grid pixel's source 3D point (head coordinates) and
    stay-weight; :meth:`forward` moves them to a target pose."""

    def __init__(self, layers: PhotoLayers, grid, head, proj, src, neck, skin: np.ndarray | None = None,
                 torso: np.ndarray | None = None):
        """``skin``: :func:`skin_on_grid`'s mask from an earlier GridLayers of the same photo and grid (the photo
        cache's; its Lab conversion alone builds OpenCV's tables, ~55 ms), used when its shape and dtype fit;
        ``torso``: :func:`torso_on_grid`'s the same way (an empty array: it found none)."""
        import torch

        from engine.photo.flow import flow_triangles, interpolate, pull_push

        self.grid = grid
        res = grid.res
        origin, a_step, a_res = layers.analysis
        s = a_step / grid.step
        m = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5]])  # analysis index -> grid index
        self.matte = cv2.warpAffine(layers.matte_analysis, m, (res, res),
                                    flags=cv2.INTER_AREA if s < 0.7 else cv2.INTER_LINEAR)
        cut = getattr(layers, "cut_analysis", None)  # (a PhotoLayers from before it was kept: the matte)
        self.cut = cv2.warpAffine(layers.matte_analysis if cut is None else cut, m, (res, res),
                                  flags=cv2.INTER_AREA if s < 0.7 else cv2.INTER_LINEAR)
        frags = src.frags
        covered = (frags.face_id[0] >= 0).numpy()
        # a photo's border that cuts through the head (a tight crop): the head goes on beyond it, the photo's own
        # content reflected across the border (over OFF_PHOTO face widths), so a turn that brings it into the frame
        # shows it, not the plate (which was filled grey or streaked there)
        self.off_photo_px, self.off_photo_sides = off_photo_extent(layers.box, grid, head, src)
        self.skin: np.ndarray | None = None  # skin_on_grid's mask (only for a head the photo's border cuts)
        if self.off_photo_px > 0:
            # not the face: its mirror image beside it would be a second face (there the plate shows, as before)
            lm = grid.to_grid(src.photo_xy.numpy())[head.lm68.numpy()]
            face = np.zeros((res, res), np.uint8)
            cv2.fillConvexPoly(face, cv2.convexHull(np.round(np.concatenate([lm[0:17], lm[17:27]])).astype(np.int32)),
                               1)
            kf = max(1, int(round(0.05 * float(np.linalg.norm(lm[16] - lm[0])))))
            face = cv2.dilate(face, np.ones((2 * kf + 1, 2 * kf + 1), np.uint8))
            # ... nor the fitted head below the brows (jaw, neck, ears): mirrored, a second chin or neck ...
            brow_y = float(lm[17:27, 1].mean())
            rows = np.arange(res)[:, None] + 0.5
            face |= (covered & (rows > brow_y)).astype(np.uint8)
            # ... nor what lies below the upper lip (neck skin off the mesh beside the jaw, collar, shirt)
            face |= np.broadcast_to(rows > float(lm[51, 1]), (res, res)).astype(np.uint8)
            # ... nor skin anywhere (a bald forehead or a temple cut off at the border: mirrored, it comes in at a top
            # corner as a squarish skin patch beside the head): only hair and what grabCut took with it go on
            fits = isinstance(skin, np.ndarray) and skin.shape == (res, res) and skin.dtype == bool
            self.skin = np.array(skin) if fits else skin_on_grid(layers, grid, lm, covered, self.cut)
            face |= self.skin.astype(np.uint8)
            args = (grid, layers.box, self.off_photo_sides, self.off_photo_px, face)
            # (``cut`` stays: the hair test samples the photo); the sides the head layer goes on beyond, only
            self.matte, used = reflect_off_photo(self.matte, *args)
            # ... and only as far as the head's own outline goes on (the mirror image of hair that widens away from
            # the border widens beyond it: a bow-shaped block with straight sides where the crown should round off)
            self.matte = crown_bound(self.matte, grid, layers.box, used, covered & (rows < float(lm[8, 1])))
            self.off_photo_sides = tuple(bool(u) for u in used)
            if not any(used):
                self.off_photo_px = 0.0
        depth = frags.depth[0].numpy().astype(np.float32)
        if covered.any():
            # off the mesh: the depth of the mesh's rim continued smoothly (hair and ears as a shell around the
            # head), low-passed so the layer turns without folds
            ring = covered & ~cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            z = pull_push(depth[..., None], ring.astype(np.float32))[..., 0]
            z = cv2.GaussianBlur(z, (0, 0), DEPTH_SMOOTH * res)
            z = z - SHELL_CM
        else:
            z = np.full((res, res), float(src.cam[:, 2].mean()), np.float32)
        z = np.where(covered, depth, z).astype(np.float32)
        cam = proj.camera
        centres = grid.centres().astype(np.float64)
        mat = np.asarray(src_alignment_matrix(proj), np.float64)
        crop = centres @ mat[:, :2].T + mat[:, 2]
        size = proj.size
        xn = crop[..., 0] * 2 / size - 1
        yn = 1 - crop[..., 1] * 2 / size
        X = xn * z / cam.focal
        Y = yn * z / cam.focal
        posed = np.stack([X, Y - cam.offset_y, cam.distance - z], -1).astype(np.float32)
        self.posed0 = posed
        self.pivot = np.asarray(cam.pivot, np.float32)
        from engine.render.camera import rotation_matrix

        r0 = rotation_matrix(src.pose.reshape(1, 3))[0].numpy().astype(np.float32)
        self.head_xyz = (posed - self.pivot) @ r0 + self.pivot  # R0^T (p - pivot) + pivot
        idx, wn = neck
        wv = torch.zeros(head.n_vertices, 1)
        wv[idx] = wn
        with torch.no_grad():
            st = interpolate(wv.unsqueeze(0), frags, flow_triangles(head))[0, 0].numpy()
        # off the mesh: by height in the photo, from the fitted neck's free level (turns with the head) down to its
        # fixed level (stays with the torso): hair on the shoulders, collar and shirt stay where they are
        from engine.photo.flow import NECK_FIXED_Y, NECK_FREE_Y

        gy = grid.to_grid(src.photo_xy.numpy())[:, 1]
        vy = src.verts[:, 1].numpy()
        y_free = float(np.median(gy[np.abs(vy - NECK_FREE_Y) < 1.0])) if (np.abs(vy - NECK_FREE_Y) < 1.0).any() \
            else res * 0.6
        y_fixed = float(np.median(gy[np.abs(vy - NECK_FIXED_Y) < 1.0])) if (np.abs(vy - NECK_FIXED_Y) < 1.0).any() \
            else y_free + 0.1 * res
        t = np.clip((np.arange(res, dtype=np.float32) + 0.5 - y_free) / max(1.0, y_fixed - y_free), 0, 1)
        ramp = np.broadcast_to((t * t * (3 - 2 * t))[:, None], (res, res))
        self.stay = np.where(covered, st, ramp).astype(np.float32)
        # the clothing under the chin (collar, shirt, tie): the renderer keeps it where it is over the mesh's lower
        # neck (off the mesh the stay-weight's ramp already holds it; a collar made to stay there tore from the neck)
        self.torso: np.ndarray | None = None
        if isinstance(torso, np.ndarray) and torso.dtype == np.float32 and torso.shape in ((res, res), (0,)):
            self.torso = np.array(torso) if torso.size else None
        elif TORSO_STAYS and len(idx):
            gxy = grid.to_grid(src.photo_xy.numpy())
            nx = gxy[idx.numpy(), 0]
            torso = torso_on_grid(layers, grid, gxy[head.lm68.numpy()], covered, self.cut, self.matte, y_free,
                                  y_fixed, (float(nx.min()), float(nx.max())))
            if torso.any():
                self.torso = torso
        self.src_covered = covered
        sel = self.matte > MIN_ALPHA
        self.sel = np.nonzero(sel.reshape(-1))[0]
        self._cam = cam
        self._size = size
        self._inv = np.asarray(proj.inv.numpy(), np.float64)
        self._centres = grid.centres()

    def _selected(self) -> tuple:
        """The head-layer pixels' (``self.sel``) 3D points, fitted posed points, stay weights (N, 1) and grid centres
        (photo px): gathered once, not every frame (a driven frame splats every time)."""
        src = (self.sel, self.head_xyz, self.posed0, self.stay, self._centres)
        got = getattr(self, "_sel_arrays", None)
        if got is None or any(a is not b for a, b in zip(got[0], src)):
            sel = self.sel
            got = self._sel_arrays = (src, (self.head_xyz.reshape(-1, 3)[sel], self.posed0.reshape(-1, 3)[sel],
                                            self.stay.reshape(-1)[sel][:, None], self._centres.reshape(-1, 2)[sel]))
        return got[1]

    def forward(self, pose, placement: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Target grid positions (N, 2) and camera depths (N,) of the head-layer pixels ``self.sel`` at ``pose``;
        ``placement``: an optional (2, 3) photo-px affine moving the head in the frame (the stay-weight keeps the
        lower neck, as for a turn)."""
        from engine.render.camera import rotation_matrix

        r1 = rotation_matrix(pose.reshape(1, 3))[0].numpy().astype(np.float32)
        hx, p0, st, _ = self._selected()
        p1 = (hx - self.pivot) @ r1.T + self.pivot
        p = p1 + st * (p0 - p1)
        cam = self._cam
        zc = cam.distance - p[:, 2]
        zz = np.maximum(zc, 1e-3)
        xn = cam.focal * p[:, 0] / zz
        yn = cam.focal * (p[:, 1] + cam.offset_y) / zz
        cx = (xn + 1) * (self._size / 2)
        cy = (1 - yn) * (self._size / 2)
        photo = np.stack([cx, cy], -1) @ self._inv[:, :2].T + self._inv[:, 2]
        if placement is not None:
            a = np.asarray(placement, np.float64)
            photo = photo + (1.0 - st) * (photo @ a[:, :2].T + a[:, 2] - photo)
        gxy = (photo - np.asarray(self.grid.origin)) / self.grid.step
        return gxy.astype(np.float32), zc.astype(np.float32)

    def splat(self, pose, placement: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Backward displacement (R, R, 2) photo px of the head layer at ``pose`` (and ``placement``, see
        :meth:`forward`; z-buffered forward splat of its pixels, holes continued by pull-push) and its coverage
        (R, R) float 0..1."""
        from engine.photo.flow import pull_push_near

        res = self.grid.res
        gxy, zc = self.forward(pose, placement)
        src_photo = self._selected()[3]
        tgt_photo = gxy * self.grid.step + np.asarray(self.grid.origin, np.float32)
        d = (src_photo - tgt_photo).astype(np.float32)
        disp = np.zeros((res * res, 2), np.float32)
        hit = np.zeros(res * res, np.float32)
        if not (SPLAT_COMPILED and fast_raster.splat_nearest(gxy[:, 0] - 0.5, gxy[:, 1] - 0.5, zc, d, res, disp,
                                                             hit)):
            order = np.argsort(-zc, kind="stable")  # far first: the nearest write wins
            gx, gy, d = gxy[order, 0] - 0.5, gxy[order, 1] - 0.5, d[order]
            fx, fy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
            for ox in (0, 1):
                for oy in (0, 1):
                    x, y = fx + ox, fy + oy
                    ok = (x >= 0) & (x < res) & (y >= 0) & (y < res)
                    li = y[ok] * res + x[ok]
                    disp[li] = d[ok]
                    hit[li] = 1.0
        disp = disp.reshape(res, res, 2)
        hit = hit.reshape(res, res)
        ext = pull_push_near(disp, hit, 8)
        disp = np.where(hit[..., None] > 0, disp, ext)
        cover = cv2.morphologyEx(hit, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        return disp.astype(np.float32), cover


TEAR_CLOSE = 2  # grid px: gaps in the warped head layer up to twice this wide open to its outline are closed too


TEAR_MIN_PX = 6  # a hole of fewer grid pixels next to the outline is a notch, not a tear


def close_tears(cover: np.ndarray, radius: int = TEAR_CLOSE) -> tuple[np.ndarray, np.ndarray]:
    """The warped head layer's cover (R, R) float 0..1 (the target mesh's pixels and the splat's hits) with its tears
    closed: where the head layer moves apart from itself (the jaw turning away from the hair beside it: the mesh and
    the off-mesh hair have different stay-weights and depths), the splat leaves pixels nobody lands on, and the plate
    showed there — holes of the background's colour with the grid's stepped edges inside long hair. A hole the
    cover encloses (after closing gaps up to ``2 · radius`` px wide that open to its outline) is covered; its
    displacement is the splat's smooth continuation (the hair and jaw edge on both sides, stretched). What a turn
    reveals outside the head (connected to the grid's border) stays uncovered: the plate shows there. Returns the
    cover and the (R, R) bool of the enclosed holes (to be drawn opaque: their stretched source is the soft seam
    between the jaw and the hair, whose matte dips)."""
    on = (cover > 0).astype(np.uint8)
    if radius > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        on = np.maximum(on, cv2.morphologyEx(on, cv2.MORPH_CLOSE, k, borderType=cv2.BORDER_CONSTANT, borderValue=0))
    h, w = on.shape
    outside = np.ones((h + 2, w + 2), np.uint8)  # a ring of uncovered pixels around the grid
    outside[1:-1, 1:-1] = 1 - on
    cv2.floodFill(outside, None, (0, 0), 2)  # the uncovered pixels connected to the grid's border
    holes = (outside[1:-1, 1:-1] == 1) | ((on > 0) & (cover <= 0))
    holes &= cover <= 0
    if not holes.any():
        return cover, holes
    filled = np.where(holes, np.float32(1.0), cover).astype(np.float32)
    # drawn opaque only where it is a tear: a few pixels in a notch of the outline (the closing took them in; the
    # layer's soft edge around them) keep the matte of what the continuation brings (a driven frame showed specks of
    # the jacket's and the hair's colour floating outside the outline)
    n, lab, st, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=8)
    small = np.zeros(n, bool)
    small[1:] = st[1:, cv2.CC_STAT_AREA] < TEAR_MIN_PX
    if small.any():
        near = cv2.dilate((outside[1:-1, 1:-1] == 2).astype(np.uint8), np.ones((2 * radius + 3,) * 2, np.uint8)) > 0
        drop = small[lab] & near
        holes = holes & ~drop
    return filled, holes


def off_photo_extent(box, grid, head, src) -> tuple[float, tuple[bool, bool, bool, bool]]:
    """How far (photo px) the head layer goes on beyond the photo, and which of the layers' box sides (left, top,
    right, bottom) are the photo's border with the work box reaching past it: (0, …) when none is."""
    x0, y0, x1, y1 = box
    side = grid.step * grid.res
    sides = (grid.origin[0] < x0, grid.origin[1] < y0, grid.origin[0] + side > x1, grid.origin[1] + side > y1)
    if not any(sides):
        return 0.0, sides
    lm = src.photo_xy.numpy()[head.lm68.numpy()]
    fw = float(np.linalg.norm(lm[16] - lm[0]))
    return OFF_PHOTO * fw, sides


def reflect_off_photo(a: np.ndarray, grid, box, sides, depth_px: float, block: np.ndarray | None = None
                      ) -> tuple[np.ndarray, list[bool]]:
    """Grid array ``a`` (R, R) continued beyond the photo's border (the ``sides`` of ``box`` that are one, up to
    ``depth_px`` beyond): a pixel there takes its mirror point's value (about the border pixel's centre, as
    cv2.BORDER_REFLECT_101 resamples the photo), but only along the run of ``a`` that touches the border: the
    running minimum from the border inwards (where the head's outline comes back inside the photo, its mirror image
    would be a second outline: 0 beyond it); ``block`` (R, R) > 0 (the face) ends a run too. Columns first, then
    rows (a corner continues what the columns gave). Returns it and, per side (left, top, right, bottom), whether
    anything goes on beyond it."""
    res = grid.res
    out = np.array(a, np.float32)
    eff = out.copy() if block is None else np.where(block > 0, 0.0, out).astype(np.float32)
    used = [False, False, False, False]  # left, top, right, bottom
    c = (np.arange(res, dtype=np.float64) + 0.5) * grid.step
    for axis, (lo, hi, s_lo, s_hi) in ((1, (box[0], box[2], sides[0], sides[2])),
                                       (0, (box[1], box[3], sides[1], sides[3]))):
        p = c + grid.origin[1 - axis]  # photo coordinate along the axis
        ins = np.flatnonzero((p >= lo) & (p < hi))
        if not len(ins):
            continue
        i0, i1 = int(ins[0]), int(ins[-1]) + 1
        e, o = np.moveaxis(eff, axis, 0), np.moveaxis(out, axis, 0)  # views: (along the axis, across)
        runs = (np.minimum.accumulate(e[i0:i1], axis=0), np.minimum.accumulate(e[i0:i1][::-1], axis=0)[::-1])
        for side, on, idx, mirror, dist, run in (
                (1 - axis, s_lo, np.flatnonzero(p < lo), 2 * lo + 1 - p, lo - p, runs[0]),
                (3 - axis, s_hi, np.flatnonzero(p >= hi), 2 * hi - 1 - p, p - hi, runs[1])):
            if not on or not len(idx):
                continue
            k = np.clip(np.round((mirror[idx] - grid.origin[1 - axis]) / grid.step - 0.5).astype(np.int64), i0,
                        i1 - 1)
            vals = run[k - i0]
            vals[dist[idx] > depth_px] = 0
            used[side] = bool((vals > MIN_ALPHA).any())
            vals = np.maximum(o[idx], vals)  # (a pixel straddling the border keeps its own share of the matte)
            o[idx] = vals
            e[idx] = vals
    return out.astype(a.dtype), used


CROWN_FEATHER = 2.0  # grid px: the soft edge of the head layer's outline beyond a photo border
CROWN_BAND = 3  # grid px: the rows (columns) inside a border whose hair says how far it reaches beyond the skull


def crown_bound(matte: np.ndarray, grid, box, sides, head: np.ndarray) -> np.ndarray:
    """The head layer's matte (R, R) beyond the photo's border (the ``sides`` of ``box``, left, top, right, bottom, it
    was continued over: :func:`reflect_off_photo`) kept only within the fitted head's outline grown by the hair's own
    reach: per side, how far (90th percentile) the matte's pixels in the ``CROWN_BAND`` rows (columns) inside that
    border lie from the fitted head ``head`` (R, R) bool (the mesh above the chin). Beyond the border the head layer
    then rounds off over the crown as the skull does (a mirror image keeps the hair's widening *towards* the border
    going on beyond it: a block that flares out with straight sides). Inside the photo it is unchanged."""
    if not any(sides) or not head.any():
        return matte
    res = grid.res
    c = (np.arange(res, dtype=np.float64) + 0.5) * grid.step
    cx, cy = c + grid.origin[0], c + grid.origin[1]
    full = (res, res)
    beyond = [np.broadcast_to((cx < box[0])[None, :], full), np.broadcast_to((cy < box[1])[:, None], full),
              np.broadcast_to((cx >= box[2])[None, :], full), np.broadcast_to((cy >= box[3])[:, None], full)]
    b = CROWN_BAND * grid.step
    near = [(cx >= box[0]) & (cx < box[0] + b), (cy >= box[1]) & (cy < box[1] + b),
            (cx < box[2]) & (cx >= box[2] - b), (cy < box[3]) & (cy >= box[3] - b)]
    inside = ~(beyond[0] | beyond[1] | beyond[2] | beyond[3])
    dist = cv2.distanceTransform((~head).astype(np.uint8), cv2.DIST_L2, 5)
    reach = np.zeros((res, res), np.float32)
    out_any = np.zeros((res, res), bool)
    for k in range(4):
        if not sides[k]:
            continue
        band = np.broadcast_to(near[k][None, :] if k % 2 == 0 else near[k][:, None], (res, res))
        sel = band & inside & (matte > 0.5)
        t = float(np.percentile(dist[sel], 90)) if sel.any() else 0.0
        reach = np.where(beyond[k], np.maximum(reach, t), reach)
        out_any |= beyond[k]
    keep = np.clip((reach - dist) / CROWN_FEATHER + 0.5, 0.0, 1.0)
    return np.where(out_any, matte * keep, matte).astype(matte.dtype)


def _grid_lab_codes(layers: PhotoLayers, grid) -> np.ndarray:
    """(R, R) int: each grid pixel's Lab histogram bin (:data:`SKIN_BINS`) of the head layer's colour."""
    res = grid.res
    x0, y0 = layers.box[:2]
    m = _grid_affine((grid.origin[0] - x0, grid.origin[1] - y0), grid.step)
    flags = (cv2.INTER_AREA if grid.step > 1.5 else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    rgb = cv2.warpAffine(np.ascontiguousarray(layers.fg[..., :3]), m, (res, res), flags=flags,
                         borderMode=cv2.BORDER_REPLICATE)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.int32)  # uint8: L·255/100, a + 128, b + 128
    nl, na, nb = SKIN_BINS
    bl = np.clip(lab[..., 0] * nl // 256, 0, nl - 1)
    ba = np.clip((lab[..., 1] - 64) * na // 128, 0, na - 1)
    bb = np.clip((lab[..., 2] - 64) * nb // 128, 0, nb - 1)
    return (bl * na + ba) * nb + bb


def _colour_hist(code: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """The normalised Lab histogram (flat) of ``code``'s pixels where ``sel``, smoothed by one bin along each axis
    (a face's colours are not on bin edges)."""
    nl, na, nb = SKIN_BINS
    h = np.bincount(code[sel], minlength=nl * na * nb).reshape(nl, na, nb).astype(np.float64)
    for ax in range(3):
        p = np.pad(h, [(1, 1) if a == ax else (0, 0) for a in range(3)])
        h = (np.take(p, range(0, h.shape[ax]), ax) + 2 * np.take(p, range(1, h.shape[ax] + 1), ax)
             + np.take(p, range(2, h.shape[ax] + 2), ax)) / 4
    return (h / max(h.sum(), 1e-9)).reshape(-1)


def _face_inner(lm: np.ndarray, covered: np.ndarray, res: int) -> np.ndarray:
    """(R, R) bool: the face's inner 80 % (about the nose; hair lies over the cheeks' rim) on the fitted mesh."""
    face = np.zeros((res, res), np.uint8)
    pts = np.concatenate([lm[0:17], lm[17:27]])
    c0 = lm[27:36].mean(0)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(c0 + 0.8 * (pts - c0)).astype(np.int32)), 1)
    return face.astype(bool) & covered


def _hair_off_mesh(cut: np.ndarray, covered: np.ndarray, lm: np.ndarray, res: int) -> np.ndarray:
    """(R, R) bool: grabCut's own head off the fitted mesh above the chin (hair)."""
    rows = np.arange(res)[:, None] + 0.5
    hair = (cut > 0.5) & ~cv2.dilate(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return hair & (rows < float(lm[8, 1]))


def skin_on_grid(layers: PhotoLayers, grid, lm: np.ndarray, covered: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """(R, R) bool: the head layer's pixels coloured as this photo's skin rather than its hair, by the photo's own
    colours (Lab histograms, smoothed by one bin: skin from the face's inner 80 %, hair from grabCut's own head
    ``cut`` off the fitted mesh above the chin; with too little hair to tell, any colour the face shows is skin).
    Only on the fitted mesh (2 px grown). ``lm``: the 68 landmarks on the grid; ``covered``: the fitted mesh's pixels."""
    res = grid.res
    code = _grid_lab_codes(layers, grid)
    nl, na, nb = SKIN_BINS
    face = _face_inner(lm, covered, res)
    hair = _hair_off_mesh(cut, covered, lm, res)
    if face.sum() < 50:
        return np.zeros((res, res), bool)
    hs = _colour_hist(code, face)
    hh = _colour_hist(code, hair) if hair.sum() >= 50 else np.full(nl * na * nb, 1.0 / (nl * na * nb))
    skin = (hs[code] > SKIN_ODDS * hh[code]).astype(np.uint8)
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    # skin is the fitted head's surface (a bald scalp, a temple): off it, a colour the face merely has too (a pale
    # wall, a highlight) is no skin
    return skin & (cv2.dilate(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)


TORSO_ODDS = 2.0  # a colour this many times as frequent on the body as on the face's skin and in the hair is clothing
TORSO_MIN_PX = 50  # grid px of body below the fixed neck level needed to tell its colours


def torso_on_grid(layers: PhotoLayers, grid, lm: np.ndarray, covered: np.ndarray, cut: np.ndarray,
                  matte: np.ndarray, y_free: float, y_fixed: float, neck_x: tuple[float, float]) -> np.ndarray:
    """(R, R) float 0..1: the clothing under the chin — collar, shirt, tie — that stays with the torso however the
    head turns (the lower neck turns part of the way: a collar it carried along sheared). By colour: the head layer's
    and the fitted mesh's pixels below the fitted neck's fixed level (the body) give the clothing's colours, the
    face's inner 80 % the skin's and grabCut's head off the mesh the hair's (a beard or hair of the shirt's colour is
    not taken: left as it was); a colour at least ``TORSO_ODDS`` times as frequent on the body as on the skin and in
    the hair is clothing. Only below the chin, within a face width of the neck (``neck_x``: its columns), in pieces
    that reach down to the body; a soft edge of a pixel."""
    res = grid.res
    rows = np.arange(res, dtype=np.float32)[:, None] + 0.5
    person = (matte > 0.5) | covered  # (the fitted neck often reaches over the collar the matte left in the plate)
    body = person & (rows > y_fixed)
    face = _face_inner(lm, covered, res)
    if body.sum() < TORSO_MIN_PX or face.sum() < 50:
        return np.zeros((res, res), np.float32)
    code = _grid_lab_codes(layers, grid)
    hb, hs = _colour_hist(code, body), _colour_hist(code, face)
    hair = _hair_off_mesh(cut, covered, lm, res)
    hh = _colour_hist(code, hair) if hair.sum() >= 50 else np.zeros_like(hs)
    cloth = hb[code] > TORSO_ODDS * np.maximum(hs[code], hh[code])
    fw = float(np.linalg.norm(lm[16] - lm[0]))
    cols = np.arange(res, dtype=np.float32)[None, :] + 0.5
    zone = (rows > float(lm[8, 1]) - 0.05 * fw) & (cols > neck_x[0] - fw) & (cols < neck_x[1] + fw)
    cloth &= zone & person
    cloth = cv2.morphologyEx(cloth.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # pieces that reach the body (a collar is part of the shirt; a dark shadow under the chin is not)
    n, comp = cv2.connectedComponents(cloth)
    if n <= 1:
        return np.zeros((res, res), np.float32)
    keep = np.unique(comp[(cloth > 0) & np.broadcast_to(rows > y_fixed, (res, res))])
    cloth = np.isin(comp, keep[keep > 0]) & np.broadcast_to(rows > y_free - 0.05 * fw, (res, res))
    return np.clip(cv2.GaussianBlur(cloth.astype(np.float32), (0, 0), 0.7) * 1.5, 0, 1).astype(np.float32)


def src_alignment_matrix(proj) -> np.ndarray:
    """photo → crop affine of a :class:`~engine.photo.flow.HeadProjector` (the inverse of its ``inv``)."""
    inv = np.asarray(proj.inv.numpy(), np.float64)
    a = np.linalg.inv(inv[:, :2])
    return np.concatenate([a, (-a @ inv[:, 2])[:, None]], 1)
