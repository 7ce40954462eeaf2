"""Photo mode v2, the layered photo (issue 20): hair beyond the fitted mesh turns with the head, what it reveals is the
background (no old outline), the background away from the head stays, layer hooks compose.

The "photo": the textured synthetic head of test_photo_render on a smooth background, plus a dark "hair" cap that
reaches beyond the mesh (above and beside the scalp)."""
import math

import cv2
import numpy as np
import pytest
import torch

from engine.photo import PhotoRenderer, flow
from engine.photo.fit import PhotoFit
from engine.photo.layers import LayerFill
from engine.perception.align import Alignment
from tests.test_photo_render import SIZE, _texture

HAIR = np.array([8, 8, 8], np.uint8)  # darker than any of the texture (≥ 38)
N = 448  # canvas: the head (about 170 px) in the middle, the work box inside the photo
CROP_SCALE = 1.5  # crop px per photo px


def _bg(n=N):
    yy, xx = np.mgrid[0:n, 0:n] / n
    return (np.stack([0.3 + 0.4 * xx, 0.4 + 0.2 * yy, 0.6 - 0.3 * xx], -1) * 255 + 0.5).astype(np.uint8)


def _canvas_alignment():
    t = SIZE / 2 - CROP_SCALE * N / 2
    m = np.array([[CROP_SCALE, 0.0, t], [0.0, CROP_SCALE, t]])
    return Alignment(matrix=m, size=SIZE, landmarks_photo=np.zeros((68, 2), np.float32),
                     landmarks_crop=np.zeros((68, 2), np.float32), photo_shape=(N, N, 3))


def _canvas_head(face_model, head, tex=None):
    """The test head drawn on the canvas background: (coefficients, alignment, photo-space vertex xy, coverage,
    image); ``tex`` (V, 3) per-vertex colours (default: the shared test texture)."""
    c = face_model.zeros(1)
    c.identity[0, :5] = torch.tensor([0.5, -0.3, 0.2, 0.0, 0.4])
    al = _canvas_alignment()
    proj = flow.HeadProjector(head, al)
    with torch.no_grad():
        cam = proj.camera_space(proj.posed(proj.model_vertices(c), c.pose[0]))
        xy = proj.to_photo(cam)
        tris = flow.flow_triangles(head)
        frags = flow.rasterize(xy[None], cam[None, :, 2], tris, N)
        tex = _texture(head) if tex is None else tex
        face = flow.interpolate(tex[None], frags, tris)[0].permute(1, 2, 0).numpy()
    cov = frags.face_id[0].numpy() >= 0
    img = np.where(cov[..., None], (face * 255 + 0.5).astype(np.uint8), _bg())
    return c, al, xy, cov, img


@pytest.fixture(scope="module")
def hair_fit(head, face_model):
    c, al, xy, cov, img = _canvas_head(face_model, head)
    # a hair cap: the top of an ellipse around the scalp, reaching beyond the mesh, down to the brows
    ys, xs = np.nonzero(cov)
    cx, top = int(xs.mean()), int(ys.min())
    w = int(0.62 * (xs.max() - xs.min()))
    cap = np.zeros((N, N), np.uint8)
    cv2.ellipse(cap, (cx, top + int(0.8 * w)), (w, w), 0, 180, 360, 1, -1)
    brow_y = float(xy[head.lm68[17:27], 1].min())
    cap[int(brow_y):] = 0
    img = img.copy()
    img[cap > 0] = HAIR
    return PhotoFit(img, c, al, np.array([1.0, 1.0, 1.0], np.float32)), cap > 0


def _turn(c0, deg):
    c = c0.clone()
    c.pose[0, 0] += math.radians(deg)
    return c


def _hair_mask(img):
    return np.abs(img.astype(int) - HAIR.astype(int)).max(-1) < 20


def test_layers_are_built_once_and_give_the_photo_back(hair_fit, face_model, head):
    fit, cap = hair_fit
    r = PhotoRenderer(fit, face_model, head)
    L = r.layers
    assert L is not None and L.seconds > 0
    a = L.fg[..., 3]
    x0, y0 = L.box[:2]
    # the head matte holds the hair cap (beyond the mesh) and not the far background
    assert L.box == (0, 0, N, N) or x0 > 0  # the box lies in the photo
    full = np.zeros((N, N), np.uint8)
    full[y0:L.box[3], x0:L.box[2]] = a
    assert (full[cap] > 200).mean() > 0.9
    assert full[:12].max() == 0 and full[:, :12].max() == 0
    # the drag-preview renderer shares the layers (built once per photo)
    assert r.preview_renderer().layers is L
    # through the full path, no edit gives the photo back
    r.fast_path = False
    out = r.render(fit.coeffs.clone()).image
    assert np.abs(out.astype(int) - fit.image.astype(int)).max() <= 2


def test_hair_turns_with_the_head_and_reveals_background(hair_fit, face_model, head):
    fit, cap = hair_fit
    r = PhotoRenderer(fit, face_model, head)
    y = r.src.verts[:, 1]
    top = y > y.max() - 3.0  # the crown of the head (under the cap)
    for deg in (-20, 20):
        fr = r.render(_turn(fit.coeffs, deg))
        img = fr.image
        ff = r.flow_field(_turn(fit.coeffs, deg))
        hair1 = _hair_mask(img)
        # the hair moved sideways with the crown of the head under it (the head turns about the face: the crown
        # moves against the nose)
        dx_hair = np.nonzero(hair1)[1].mean() - np.nonzero(cap)[1].mean()
        dx_top = float((ff.target.photo_xy[top, 0] - r.src.photo_xy[top, 0]).mean())
        assert abs(dx_top) > 8
        assert np.sign(dx_hair) == np.sign(dx_top) and 0.5 < dx_hair / dx_top < 1.5, (dx_hair, dx_top)
        # where the cap was and is no more, the background shows (no old outline, no stretched hair)
        tcov = ff.in_photo(ff.covered.astype(np.float32), img.shape[:2]) > 0.01
        gone = cap & ~cv2.dilate(hair1.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~tcov
        assert gone.sum() > 30, gone.sum()
        err = np.abs(img[gone].astype(int) - _bg()[gone].astype(int)).mean()
        assert err < 15, err
        # far from the head nothing changes
        ys, xs = np.nonzero(cap | tcov)
        far = np.ones(img.shape[:2], bool)
        m = 40  # the matte may take a little background beside the head (it moves with it)
        far[max(0, ys.min() - m):ys.max() + m, max(0, xs.min() - m):xs.max() + m] = False
        assert np.abs(img[far].astype(int) - fit.image[far].astype(int)).max() <= 1


def test_layer_hooks_compose_after_the_fills(hair_fit, face_model, head):
    fit, _ = hair_fit
    r = PhotoRenderer(fit, face_model, head)
    seen = []

    def hook(renderer, coeffs, field):
        seen.append(field.target)
        a = np.zeros((renderer.grid.res,) * 2, np.float32)
        a[100:110, 100:110] = 1.0
        return LayerFill(alpha=a, rgb=np.repeat(a[..., None], 3, -1) * np.array([0.0, 1.0, 0.0], np.float32))

    r.layer_hooks.append(hook)
    fr = r.render(_turn(fit.coeffs, 10))
    assert seen and seen[0] is not None
    g = r.grid
    p = np.array(g.origin) + (np.array([105, 105]) + 0.5) * g.step
    px = fr.image[int(p[1]), int(p[0])]
    assert px[1] > 240 and px[0] < 15 and px[2] < 15
    # previews get the same hooks
    assert r.preview_renderer().layer_hooks is r.layer_hooks


def test_cli_pose_is_a_turn_from_the_photos_own_pose(tmp_path, ict_path, capsys):
    """``edit --set yaw=+10``: ten degrees from the photo's own yaw (not an absolute 10°); a turn beyond this photo's
    believable range warns; ``--animate turn`` stays inside it."""
    from engine.editing.session import Session
    from tests.test_cli import ASTRONAUT, main_

    out = tmp_path / "s.json"
    rc, _, err = main_(["edit", ASTRONAUT, "--set", "yaw=+10", "pitch=-5", "-o", out], capsys)
    assert rc == 0, err
    assert "own pose" in err and "warning" not in err
    sess = Session.load(out, generator=None)
    fit = sess.state.photo.fit
    own = math.degrees(float(fit.coeffs.pose[0, 0])), math.degrees(float(fit.coeffs.pose[0, 1]))
    assert abs(sess.control_value("yaw") - (own[0] + 10)) < 0.05
    assert abs(sess.control_value("pitch") - (own[1] - 5)) < 0.05
    rc, _, err = main_(["edit", ASTRONAUT, "--set", "yaw=38", "-o", tmp_path / "t.json"], capsys)
    assert rc == 0 and "warning: yaw +38°" in err and "believable" in err, err
    rc, _, err = main_(["edit", ASTRONAUT, "--animate", "turn", "-o", tmp_path / "a.json"], capsys)
    assert rc == 0 and "warning" not in err, err
    s2 = Session.load(tmp_path / "a.json", generator=None)
    lim = PhotoRenderer(s2.state.photo.fit, layers=False).turn_range()["yaw"]
    yaws = [math.degrees(float(k.coeffs.pose[0, 0])) - own[0] for k in s2.keyframes]
    assert len(yaws) == 3 and min(yaws) >= lim[0] - 0.1 and max(yaws) <= lim[1] + 0.1 and max(yaws) - min(yaws) > 30


def _skin_head(face_model, head):
    """A skin-coloured frontal head with mild stripes drawn on the canvas: (coefficients, alignment, face rgb in
    0..1, coverage)."""
    c0 = face_model.zeros(1)
    al = _canvas_alignment()
    proj = flow.HeadProjector(head, al)
    with torch.no_grad():
        cam = proj.camera_space(proj.posed(proj.model_vertices(c0), c0.pose[0]))
        xy = proj.to_photo(cam)
        tris = flow.flow_triangles(head)
        frags = flow.rasterize(xy[None], cam[None, :, 2], tris, N)
        tex = torch.tensor([0.78, 0.58, 0.48]) * (0.92 + 0.08 * _texture(head)[:, :1])
        face = flow.interpolate(tex[None], frags, tris)[0].permute(1, 2, 0).numpy()
    return c0, al, face, frags.face_id[0].numpy() >= 0


def test_grazing_skin_a_turn_shows_frontally_comes_from_the_model_not_a_stretched_rim(face_model, head):
    # a skin-coloured head with mild stripes (the fill is only for what looks like the face's skin)
    c0, al, face, cov = _skin_head(face_model, head)
    img = np.where(cov[..., None], (face * 255 + 0.5).astype(np.uint8), _bg())
    fit = PhotoFit(img, c0, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    c = _turn(fit.coeffs, 30)
    f = r.flow_field(c)
    assert f.extra, "a 30° turn shows skin the photo saw only at a grazing angle"
    lf = f.extra[0]
    strong = (lf.alpha > 0.6) & f.covered
    assert strong.sum() > 20, strong.sum()
    # what is drawn there is the model's skin (smooth), not the photo's rim stretched across the cheek: along the
    # turn (rows) the stretched rim varies little, but its colour is the rim's; the fill is the calibrated model's
    out = r.render(c).image.astype(np.float32)
    g = r.grid
    ys, xs = np.nonzero(strong)
    px = np.round(np.array(g.origin) + (np.stack([xs, ys], 1) + 0.5) * g.step).astype(int)
    got = out[px[:, 1], px[:, 0]]
    want = lf.rgb[ys, xs] / np.maximum(lf.alpha[ys, xs, None], 1e-3) * 255.0
    assert np.abs(got - want).mean() < 12, np.abs(got - want).mean()


def test_the_outlines_fringe_belongs_to_the_head_layer(hair_fit, face_model, head):
    """A hair edge's fringe (the few px of halo beside the outline: compression ringing, a soft edge) belongs to the
    head layer where the background beyond is plain (here a smooth gradient), so a turn takes it along instead of
    leaving the old outline drawn in the plate: the matte reaches beyond the hair's own edge."""
    fit, cap = hair_fit
    r = PhotoRenderer(fit, face_model, head)
    L = r.layers
    x0, y0, x1, y1 = L.box
    full = np.zeros((N, N), np.float32)
    full[y0:y1, x0:x1] = L.fg[..., 3] / 255.0
    disk = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(cap.astype(np.uint8), disk).astype(bool) & ~cap  # the px just outside the cap
    ring[int(np.nonzero(cap)[0].max()) - 5:] = False  # the cap's top and sides only (its bottom is the face)
    assert (full[ring] > 0.5).mean() > 0.9, (full[ring] > 0.5).mean()


def test_the_plates_mirror_follows_a_smoothed_outline():
    """The plate mirrors the background across the hole's edge; along a ragged (hair) edge each pixel's own nearest
    edge point jumps, which mirrors the background into radial streaks: the mirror's offsets are low-passed."""
    from engine.photo import layers

    n = 160
    yy, xx = np.mgrid[0:n, 0:n]
    photo = np.repeat((128 + 100 * np.sin(xx / 3.0))[..., None], 3, -1).astype(np.uint8)  # vertical stripes
    edge = 80 + 6 * (yy % 8 >= 4)  # a ragged vertical edge: teeth 6 px deep every 8 rows
    hole = xx >= edge
    smooth = np.full((n, n, 3), 128, np.float32)
    fw = 100.0  # face width (px) the constants are scaled by
    kw = dict(band=layers.REFLECT_BAND * fw)  # the plate's fold, as build_layers calls it
    out = layers._reflect_fill(photo, hole, smooth, 0.25 * fw, 0, layers.REFLECT_SMOOTH * fw, **kw)
    band = hole & (xx < 100) & (yy > 10) & (yy < n - 10)  # the mirrored band beside the edge
    # rows of a smoothly mirrored band agree with their neighbours (the stripes stay straight)
    jag = np.abs(np.diff(out.astype(np.float32), axis=0)).mean(-1)[band[1:] & band[:-1]].mean()
    raw = layers._reflect_fill(photo, hole, smooth, 0.25 * fw, 0, 0.0, **kw)
    jag_raw = np.abs(np.diff(raw.astype(np.float32), axis=0)).mean(-1)[band[1:] & band[:-1]].mean()
    assert jag < 0.5 * jag_raw and jag < 15, (jag, jag_raw)


def _beside_cap(cap: np.ndarray) -> np.ndarray:
    """An ellipse hanging from the hair cap's lower right side, the part outside the cap."""
    ys, xs = np.nonzero(cap)
    bottom, right = int(ys.max()), int(xs.max())
    yy, xx = np.mgrid[0:N, 0:N]
    out = ((xx - right) / 26.0) ** 2 + ((yy - bottom + 10) / 30.0) ** 2 < 1.0
    return out & ~cap & (xx > right - 14)


def test_hair_of_the_backgrounds_colour_joins_the_head_layer(hair_fit, face_model, head):
    """A tuft of hair whose colours grabCut cannot tell from the background (thin strands with the wall showing
    between them, the same strands on the wall elsewhere: grey hair on a grey wall) still stands out from the smooth
    background the far surroundings predict: it joins the head layer (left in the plate it stays behind when the head
    turns away)."""
    fit, cap = hair_fit
    yy, xx = np.mgrid[0:N, 0:N]
    tuft = _beside_cap(cap)  # a tuft hanging from the cap's right side, strands across it
    bg = _bg().astype(np.float32)
    strands = np.where(((xx + yy // 3) % 4) == 0, -45.0, 0.0)[..., None]  # thin dark strands, the wall between
    img = fit.image.copy()
    # the same strands on the wall far from the head: grabCut's background colours hold the tuft's
    wall = np.zeros((N, N), bool)
    wall[16:70, 16:70] = wall[16:70, N - 70:N - 16] = wall[N - 70:N - 16, 16:70] = True
    img[tuft | wall] = np.clip(bg[tuft | wall] + strands[tuft | wall], 0, 255).astype(np.uint8)
    photo = PhotoFit(img, fit.coeffs.clone(), fit.alignment, fit.gain)
    r = PhotoRenderer(photo, face_model, head)
    L = r.layers
    x0, y0, x1, y1 = L.box
    full = np.zeros((N, N), np.float32)
    full[y0:y1, x0:x1] = L.fg[..., 3] / 255.0
    assert (full[tuft] > 0.5).mean() > 0.7, (full[tuft] > 0.5).mean()  # grabCut alone: 0.04
    # the plain background away from the head stays out of the head layer
    assert full[:12].max() == 0 and full[:, :12].max() == 0 and full[:, -12:].max() == 0 and full[wall].max() == 0


def test_the_model_skin_a_turn_reveals_matches_the_photos_skin_around_it(face_model, head):
    """The far cheek lies in shadow in most photos: the model's skin drawn where a turn shows grazing skin frontally
    takes the brightness of the photo's own skin around it (here the sides of the face are 35 % darker than its
    middle, which the model's colour is calibrated on), not the face's median colour (a pale patch)."""
    c0, al, face, cov = _skin_head(face_model, head)
    ys, xs = np.nonzero(cov)
    cx, half = 0.5 * (xs.min() + xs.max()), 0.5 * (xs.max() - xs.min())
    shade = 1.0 - 0.35 * np.clip(np.abs(np.arange(N) - cx) / (0.8 * half), 0, 1) ** 2
    img = np.where(cov[..., None], (face * shade[None, :, None] * 255 + 0.5).astype(np.uint8), _bg())
    fit = PhotoFit(img, c0, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    f = r.flow_field(_turn(fit.coeffs, 30))
    assert f.extra
    lf = f.extra[0]
    strong = (lf.alpha > 0.6) & f.covered
    assert strong.sum() > 20, strong.sum()
    fill_y = (lf.rgb[strong] / lf.alpha[strong, None]).mean(0) @ np.array([0.299, 0.587, 0.114])
    mid_y = float(np.median(img[cov & (np.abs(np.arange(N) - cx) < 0.3 * half)[None, :]], 0)
                  @ np.array([0.299, 0.587, 0.114])) / 255.0
    # the unmatched model skin is the middle's colour; the sides are at 0.65-0.8 of it
    assert fill_y < 0.88 * mid_y, (fill_y, mid_y)


def test_a_smooth_patch_of_background_beside_the_head_stays_in_the_plate(hair_fit, face_model, head):
    """A painted background has smooth patches that differ from what the far background predicts beside the head;
    they are no hair (hair is strands, busier than the wall): they stay in the plate, or a turn drags them along."""
    fit, cap = hair_fit
    patch = _beside_cap(cap)
    wall = np.zeros((N, N), bool)
    wall[16:70, 16:70] = wall[16:70, N - 70:N - 16] = wall[N - 70:N - 16, 16:70] = True
    shade = np.zeros((N, N), np.float32)
    shade[patch | wall] = -45.0
    shade = cv2.GaussianBlur(shade, (0, 0), 2.0)[..., None]  # soft-edged, smooth inside
    img = np.clip(fit.image.astype(np.float32) + np.where(cap[..., None], 0.0, shade), 0, 255).astype(np.uint8)
    r = PhotoRenderer(PhotoFit(img, fit.coeffs.clone(), fit.alignment, fit.gain), face_model, head)
    L = r.layers
    x0, y0, x1, y1 = L.box
    full = np.zeros((N, N), np.float32)
    full[y0:y1, x0:x1] = L.fg[..., 3] / 255.0
    inner = patch & ~cv2.dilate(cap.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert inner.sum() > 200
    assert (full[inner] > 0.5).mean() < 0.2, (full[inner] > 0.5).mean()


def test_the_plate_mirrors_the_background_sideways():
    """What a turn reveals is a band beside the head: the plate mirrors the background across the hole's edge along
    the row, so level lines beside the head stay level (mirrored across the nearest edge in 2D they fan out
    radially around a round head: the old outline drawn as a fan of streaks)."""
    from engine.photo import layers

    n = 200
    yy, xx = np.mgrid[0:n, 0:n]
    stripes = 128 + 90 * np.sin(yy / 2.5)  # level lines (a window frame, shelves)
    photo = np.repeat(stripes[..., None], 3, -1).astype(np.uint8)
    hole = (xx - 100) ** 2 + (yy - 100) ** 2 < 60 ** 2  # a round head
    smooth = np.full((n, n, 3), 128, np.float32)
    out = layers._reflect_fill(photo, hole, smooth, 20.0, 0, 0.0, band=layers.REFLECT_BAND * 100.0)
    ring = hole & ((xx - 100) ** 2 + (yy - 100) ** 2 > 50 ** 2)  # within ~10 px of the outline: mostly mirror
    err = np.abs(out[..., 0] - stripes)[ring].mean()
    assert err < 30, err  # the 2D nearest edge: 63 (the fade into the smooth fill alone costs ~10)


def test_a_stretched_band_of_a_rows_flow_is_folded_in_at_scale_one():
    """flow.unstretch_rows: a band where the source advances 0.1 px per px (the rim the photo saw edge-on, spread over
    what a turn shows frontally: a streak) is redrawn at scale 1 from the side facing the face — continuous at both
    ends, every step ±1 source px, the band's outer end keeping the rim and the rest from the face side."""
    res, step = 1024, 2.0  # the band (20 px) is narrow beside the grid: not capped by UNSTRETCH_DEPTH
    xs = np.arange(res, dtype=np.float32)
    # left of 20: background (slope 1); 20..40: the stretched rim (the source crawls 2 px in 20); right: the face
    src = np.where(xs < 20, xs, np.where(xs < 40, 20 + 0.1 * (xs - 20), 22 + (xs - 40)))
    disp = np.zeros((res, res, 2), np.float32)
    disp[..., 0] = (src - xs)[None, :] * step
    disp[..., 1] = 3.0
    mask = np.zeros((res, res), bool)
    mask[:, 18:] = True
    out, changed = flow.unstretch_rows(disp, step, centre_x=55.0, mask=mask)
    new = xs + out[32, :, 0] / step
    assert changed[32, 21:39].all() and not changed[32, :18].any() and not changed[32, 42:].any()
    d = np.diff(new[18:44])
    assert np.abs(np.abs(d) - 1).max() < 0.35, d  # scale 1 everywhere: no streak
    assert new[19:41].min() >= 19.0  # nothing from beyond the rim (background) enters the band
    assert new[18:44].max() <= 22 + 20  # the face side, at most the band's width in
    np.testing.assert_allclose(out[32, :, 1], 3.0, atol=1e-4)  # the rows' own vertical source stays
    # a band spread only mildly (0.35 px per px: hair spread 3x is still hair), never a streak, is left as it is:
    # folded in some rows and not in the next, it rippled the hair
    mild = np.where(xs < 20, xs, np.where(xs < 40, 20 + 0.35 * (xs - 20), 27 + (xs - 40)))
    dm = disp.copy()
    dm[..., 0] = (mild - xs)[None, :] * step
    out_m, changed_m = flow.unstretch_rows(dm, step, centre_x=55.0, mask=mask)
    assert not changed_m.any()
    np.testing.assert_array_equal(out_m, dm)
    # on a coarse grid the same band is wide: the fold reaches at most UNSTRETCH_DEPTH of the grid into the face side
    # (no eye corner mirrored into the band) and spreads that evenly (no streak either)
    res2 = 128
    x2 = np.arange(res2, dtype=np.float32)
    src2 = np.where(x2 < 20, x2, np.where(x2 < 40, 20 + 0.1 * (x2 - 20), 22 + (x2 - 40)))
    d2 = np.zeros((res2, res2, 2), np.float32)
    d2[..., 0] = (src2 - x2)[None, :] * step
    o2, c2 = flow.unstretch_rows(d2, step, centre_x=110.0, mask=np.ones((res2, res2), bool))
    n2 = x2 + o2[64, :, 0] / step
    assert c2[64, 21:39].all()
    depth = flow.UNSTRETCH_DEPTH * res2
    assert n2[19:41].max() <= 22 + depth + 1.0, (n2[19:41].max(), depth)
    dd = np.abs(np.diff(n2[19:41]))
    k = 2 * depth / 21
    assert abs(np.median(dd) - k) < 0.1 * k and dd.max() < 1.2 and (dd < 0.5 * k).sum() <= 1, dd  # (the fold's turn)
    # rows where the fold would read an eye or a brow (``avoid``) keep their stretch: a mirrored eye corner on the
    # temple is worse than a stretched one
    avoid = np.zeros((res2, res2), bool)
    avoid[60:70, 41:44] = True  # just inside the band's inner end
    o3, c3 = flow.unstretch_rows(d2, step, centre_x=110.0, mask=np.ones((res2, res2), bool), avoid=avoid)
    assert not c3[60:70].any() and c3[50].any()
    np.testing.assert_array_equal(o3[60:70], d2[60:70])
    # the other side (face on the left) folds the other way
    out2, _ = flow.unstretch_rows(disp[:, ::-1] * np.array([-1, 1], np.float32), step, centre_x=8.0,
                                  mask=mask[:, ::-1])
    np.testing.assert_allclose(out2[32, ::-1, 0], -out[32, :, 0], atol=1e-4)


def test_a_turn_shows_the_skin_the_photo_saw_edge_on_at_its_own_scale_not_stretched(face_model, head):
    """A turn shows frontally what the photo saw edge-on (the side of the head by the ear, the rim of the cheek): the
    photo's few pixels there, spread over the band, drew streaks. Folded in (engine.photo.flow.unstretch_rows), the
    band keeps the photo's own texture scale: its fine vertical stripes stay far sharper across the band (horizontal
    gradient) than stretched, at about half the face's own sharpness beside it."""
    c0, al, face, cov = _skin_head(face_model, head)
    stripes = 0.8 + 0.2 * (np.sin(np.arange(N) * 2 * np.pi / 6.0) > 0)  # 6 px period, vertical stripes
    img = np.where(cov[..., None], (face * stripes[None, :, None] * 255 + 0.5).astype(np.uint8), _bg())
    fit = PhotoFit(img, c0, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    c = _turn(fit.coeffs, 25)
    r.unstretch = False
    f_old = r.flow_field(c)
    g = r.grid
    sx = np.arange(g.res)[None, :] + f_old.displacement[..., 0] / g.step
    slope = np.gradient(sx, axis=1)
    band = (slope < 0.3) & cv2.erode(f_old.covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # (the rows of the eyes and brows keep their stretch on purpose: a mirrored eye corner is worse)
    band &= ~r._eye_zone(f_old.target).any(1)[:, None]
    # (skin the model draws there instead — test_grazing_skin_… — is not what this is about)
    # (nor the pixels its soft edge reaches: a smooth fill beside them softens their gradient)
    for lf in f_old.extra:
        band &= cv2.dilate((lf.alpha > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    if f_old.mirror_alpha is not None:
        band &= f_old.mirror_alpha < 0.1
    assert band.sum() > 30, band.sum()
    face_px = (slope > 0.8) & f_old.covered
    ys, xs = np.nonzero(band)
    px = np.round(np.array(g.origin) + (np.stack([xs, ys], 1) + 0.5) * g.step).astype(int)
    fy, fx = np.nonzero(face_px)
    fpx = np.round(np.array(g.origin) + (np.stack([fx, fy], 1) + 0.5) * g.step).astype(int)

    def sharpness(out, p):
        gray = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
        return float(gx[p[:, 1], p[:, 0]].mean())

    old = r.render(c).image
    r.unstretch = True
    new = r.render(c).image
    ref = sharpness(new, fpx)
    # the stretched stripes: a smooth streak (19 of 80); folded 33 of 80 (it passed 0.6 × only while the model
    # skin's black fringe drew its own edges into the band: test_the_model_skins_soft_edge_…)
    assert sharpness(old, px) < 0.3 * ref, (sharpness(old, px), ref)
    assert sharpness(new, px) > max(0.36 * ref, 1.5 * sharpness(old, px)), (sharpness(new, px), sharpness(old, px), ref)


def test_the_model_skins_soft_edge_has_the_skins_colour_not_black(face_model, head):
    """The model skin's alpha is antialiased a little beyond the vertices that carry it; its colour there must be the
    skin's too: premultiplied with a colour of 0 that fringe darkened the warped photo under it — a faint, broken
    dark line along the revealed cheek (ffhq 00002 / 00003 at +20°)."""
    c0, al, face, cov = _skin_head(face_model, head)
    img = np.where(cov[..., None], (face * 255 + 0.5).astype(np.uint8), _bg())
    fit = PhotoFit(img, c0, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    f = r.flow_field(_turn(fit.coeffs, 25))
    assert f.extra
    lf = f.extra[0]
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    col = (lf.rgb / np.maximum(lf.alpha, 1e-6)[..., None]) @ luma
    strong = lf.alpha > 0.6
    fringe = (lf.alpha > 0.02) & (lf.alpha < 0.3)
    assert strong.sum() > 20 and fringe.sum() > 20, (strong.sum(), fringe.sum())
    ref = float(np.median(col[strong]))
    # every fringe pixel carries the skin's colour (the model's rim is shaded a little darker; the old fringe was 0)
    assert float(np.percentile(col[fringe], 2)) > 0.6 * ref, (np.percentile(col[fringe], 2), ref)


def test_the_plate_beside_the_head_is_the_background_it_stood_in_front_of(hair_fit, face_model, head):
    """What a turn reveals beside the head is the background right beside it: a red curtain standing off the head's
    side (0.2-0.35 face widths away) is not mirrored into the revealed band, and the band takes the wall's own level
    (a plain mirror reached as far outside as inside and faded into the hole's whole surroundings averaged: a red,
    pale or tinted ghost of the head where it was)."""
    fit, cap = hair_fit
    r0 = PhotoRenderer(fit, face_model, head)
    lmx = r0.src.photo_xy[head.lm68].numpy()
    fw = float(lmx[16, 0] - lmx[0, 0])
    L0 = r0.layers
    x0, y0, x1, y1 = L0.box
    full0 = np.zeros((N, N), np.float32)
    full0[y0:y1, x0:x1] = L0.fg[..., 3] / 255.0
    rows = np.nonzero(full0.max(1) > 0.5)[0]
    ya, yb = int(rows.min()) + 10, int(np.percentile(rows, 60))  # the head's rows above the shoulders
    left = int(np.nonzero(full0[ya:yb].max(0) > 0.5)[0].min())  # the head layer's leftmost column there
    img = fit.image.copy()
    red = np.array([200, 30, 30], np.uint8)
    bar = slice(max(2, int(left - 0.35 * fw)), int(left - 0.2 * fw))
    img[ya:yb, bar] = red
    img[4:N - 4, 2:8] = red  # the same red on the photo's edge: grabCut's background colours hold it
    r = PhotoRenderer(PhotoFit(img, fit.coeffs.clone(), fit.alignment, fit.gain), face_model, head)
    L = r.layers
    x0, y0, x1, y1 = L.box
    full = np.zeros((N, N), np.float32)
    full[y0:y1, x0:x1] = L.fg[..., 3] / 255.0
    assert full[ya:yb, bar].max() < 0.1  # the curtain is background
    plate = img.astype(np.float32).copy()
    plate[y0:y1, x0:x1] = L.plate
    # the band a ±20° turn reveals: the head layer's first 0.3 face widths from its left edge, on the curtain's rows
    band = np.zeros((N, N), bool)
    for y in range(ya, yb):
        xs = np.nonzero(full[y] > 0.5)[0]
        if len(xs):
            band[y, xs[0] + 3:xs[0] + int(0.3 * fw)] = True
    band &= full > 0.5
    assert band.sum() > 200
    redness = plate[..., 0] - plate[..., 1]
    wall = _bg().astype(np.float32)
    wall_red = wall[..., 0] - wall[..., 1]
    excess = (redness - wall_red)[band]
    assert np.percentile(excess, 90) < 20, np.percentile(excess, 90)  # a plain mirror + smooth fill: 53 (this: -5)
    # the band's level is the wall's beside it
    err = np.abs(plate[band] - wall[band]).mean()
    assert err < 6, err  # a plain mirror + smooth fill: 7.0 (this: 4.4)


def test_hair_lying_over_the_cheeks_rim_stays_hair_when_a_turn_spreads_it(face_model, head):
    """Long hair over the side of the face: a turn shows frontally the rim the photo saw edge-on, under the hair.
    Folding that band in from the face side (flow.unstretch_rows) drew the face's skin where the hair lay (a skin
    patch beside the jaw with the hair cut off at it: the red-haired and dark-haired portraits); a band whose own
    source is hair — this photo's hair colours, grabCut's head, connected to the hair beyond the face — is left
    spread: hair (a skin rim is still folded: test_a_turn_shows_the_skin_the_photo_saw_edge_on_…)."""
    c0, al, face, cov = _skin_head(face_model, head)
    img = np.where(cov[..., None], (face * 255 + 0.5).astype(np.uint8), _bg())
    ys, xs = np.nonzero(cov)
    top, bottom, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    w = x1 - x0
    yy, xx = np.mgrid[0:N, 0:N]
    # a cap of hair over the scalp, reaching beyond the head, and strands hanging down both sides over the rim
    cap = ((xx - (x0 + x1) / 2) / (0.62 * w)) ** 2 + ((yy - (top + 0.25 * w)) / (0.45 * w)) ** 2 < 1.0
    cap &= yy < top + 0.3 * (bottom - top)
    row_l = np.where(cov.any(1), cov.argmax(1), N)
    row_r = np.where(cov.any(1), N - 1 - cov[:, ::-1].argmax(1), -1)
    side = (yy >= top) & (yy < top + 0.75 * (bottom - top))
    strand = side & (((xx >= row_l[:, None] - 14) & (xx < row_l[:, None] + int(0.03 * w)))
                     | ((xx <= row_r[:, None] + 14) & (xx > row_r[:, None] - int(0.03 * w))))
    hair = cap | strand
    tone = 40 + 25 * (np.sin(xx / 2.0) > 0)  # dark brown strands
    img[hair] = np.stack([tone + 25, tone + 10, tone], -1)[hair].astype(np.uint8)
    fit = PhotoFit(img, c0, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    g = r.grid
    centres = g.centres()
    on_rim = hair & cov  # the strands' part over the mesh: what a turn spreads

    def src_on(disp, mask):
        p = np.round(centres + disp).astype(int)
        ok = (p[..., 0] >= 0) & (p[..., 0] < N) & (p[..., 1] >= 0) & (p[..., 1] < N)
        out = np.zeros(disp.shape[:2], bool)
        out[ok] = mask[p[ok, 1], p[ok, 0]]
        return out

    hair_band = taken = 0
    for deg in (-25, 25):
        c = _turn(fit.coeffs, deg)
        r.unstretch = False
        spread = r.flow_field(c)
        r.unstretch = True
        f = r.flow_field(c)
        sx = np.arange(g.res)[None, :] + spread.displacement[..., 0] / g.step
        band = np.gradient(sx, axis=1) < flow.UNSTRETCH_MIN  # the band the turn spreads
        was_hair = src_on(spread.displacement, on_rim) & f.covered & band  # spread, these show the strands
        now_skin = src_on(f.displacement, cov & ~hair)  # ... folded, the face's skin beside them
        hair_band += int(was_hair.sum())
        taken += int((was_hair & now_skin).sum())
    assert hair_band > 50, hair_band
    assert taken < 0.05 * hair_band, (taken, hair_band)  # folded regardless: 237 of 1555 (15 %); now 18


def test_a_turn_continues_the_hair_a_tight_crop_cut_off_not_the_plate(hair_fit, face_model, head):
    """A photo cropped through the hair: a turn that brings what lay beyond the border into the frame shows the
    head layer continued (the photo's own hair, mirrored across the border), not the plate's fill."""
    fit, cap = hair_fit
    cols = np.nonzero(cap.any(0))[0]
    ci = int(cols[0]) + 40  # the crop's left border cuts through the cap beside the scalp (a turn moves it ~30 px)
    al = fit.alignment
    m = al.matrix.copy()
    m[:, 2] += m[:, 0] * ci
    crop_al = Alignment(matrix=m, size=al.size, landmarks_photo=al.landmarks_photo, landmarks_crop=al.landmarks_crop,
                        photo_shape=(N, N - ci, 3))
    crop = PhotoFit(np.ascontiguousarray(fit.image[:, ci:]), fit.coeffs.clone(), crop_al, fit.gain.copy())
    r_full = PhotoRenderer(fit, face_model, head)
    r_crop = PhotoRenderer(crop, face_model, head)
    assert r_crop.layers is not None and r_crop.layers.box[0] == 0
    y = r_full.src.verts[:, 1]
    top = y > y.max() - 3.0
    checked = 0
    for deg in (-20, 20):
        ff = r_full.flow_field(_turn(fit.coeffs, deg))
        if float((ff.target.photo_xy[top, 0] - r_full.src.photo_xy[top, 0]).mean()) < 4:
            continue  # the crown moves left: nothing comes in over the left border
        full = r_full.render(_turn(fit.coeffs, deg)).image[:, ci:]
        out = r_crop.render(_turn(crop.coeffs, deg)).image
        band = np.zeros(out.shape[:2], bool)
        band[:, :8] = True  # the first columns: what the turn brought in over the border
        # off the turned mesh (on it, surface the crop never showed is drawn from the model: another matter)
        fc = r_crop.flow_field(_turn(crop.coeffs, deg))
        band &= fc.in_photo(fc.covered.astype(np.float32), out.shape[:2]) < 0.01
        # ... in the rows where the head layer reaches the border (the matte's own call: its sure-background band
        # along the border leaves the cap's top rows out, and there the plate showing is right)
        _, ly0, _, ly1 = r_crop.layers.box
        at_border = np.zeros(out.shape[0], bool)
        at_border[ly0:ly1] = r_crop.layers.fg[:, :3, 3].min(1) > 128
        band &= at_border[:, None]
        want = _hair_mask(full) & band
        assert want.sum() > 40, want.sum()
        got = _hair_mask(out) & want
        # (the plate: none of it; the mirrored hair: 0.65 — where the matte has a notch near the border, the run ends)
        assert got.sum() / want.sum() > 0.5, (got.sum(), want.sum())
        checked += 1
    assert checked == 1


SKIN = np.array([0.86, 0.62, 0.52], np.float32)  # a skin tone (shaded 0.75–0.95 over the surface)


def test_a_bald_head_cut_off_at_a_top_corner_does_not_come_back_as_a_skin_patch(face_model, head):
    """A tight crop through a bald head (the forehead and temple reach the top and left borders): the skin at the
    border is not mirrored beyond it (only hair goes on), so a turn that brings what lay beyond the corner into the
    frame shows the plate there, not a squarish patch of mirrored skin beside the head."""
    v = torch.cat([head.model.mean, head.parts_mean])
    tex = (0.85 + 0.1 * torch.sin(v[:, 0] * 1.3 + v[:, 1] * 0.9))[:, None] * torch.from_numpy(SKIN)[None]
    c, al, xy, cov, img = _canvas_head(face_model, head, tex)
    ys, xs = np.nonzero(cov)
    brow_y = float(xy[head.lm68[17:27], 1].min())
    cy, cx = int(ys.min() + 0.5 * (brow_y - ys.min())), int(xs.min()) + 25  # through the forehead and the temple
    m = al.matrix.copy()
    m[:, 2] += m[:, 0] * cx + m[:, 1] * cy
    crop_al = Alignment(matrix=m, size=al.size, landmarks_photo=al.landmarks_photo, landmarks_crop=al.landmarks_crop,
                        photo_shape=(N - cy, N - cx, 3))
    crop = PhotoFit(np.ascontiguousarray(img[cy:, cx:]), c.clone(), crop_al, np.ones(3, np.float32))
    r = PhotoRenderer(crop, face_model, head)
    assert r.layers is not None and r.layers.box[:2] == (0, 0)
    c1 = _turn(c, -20)  # the head moves right: what lay beyond the left border comes in at the top-left corner
    out = r.render(c1).image.astype(int)
    f = r.flow_field(c1)
    off = f.in_photo(f.covered.astype(np.float32), out.shape[:2]) < 0.01  # off the turned mesh
    corner = np.zeros(out.shape[:2], bool)
    corner[:60, :12] = True  # the corner beside the turned head, above the brows
    corner &= off
    assert corner.sum() > 300, corner.sum()
    # skin: red well above green (the plate's fill of this background has r - g ≤ 30, the skin ≥ 40)
    skin = (out[..., 0] - out[..., 1] > 35) & (out[..., 0] > 150) & corner
    # (the old mirror: 145 of 720 corner pixels were mirrored forehead skin; now none)
    assert skin.sum() <= 0.02 * corner.sum(), (skin.sum(), corner.sum())


def _pitch_roll(c0, pitch=0.0, roll=0.0):
    c = c0.clone()
    c.pose[0, 1] += math.radians(pitch)
    c.pose[0, 2] += math.radians(roll)
    return c


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region it encloses (not connected to the image border) added."""
    h, w = mask.shape
    out = np.ones((h + 2, w + 2), np.uint8)
    out[1:-1, 1:-1] = ~mask
    cv2.floodFill(out, None, (0, 0), 0)
    return mask | (out[1:-1, 1:-1] > 0)


def test_hair_cut_off_at_the_top_goes_on_beyond_the_border_only_as_far_as_the_crown(hair_fit, face_model, head):
    """A photo cropped through the hair cap at the top: beyond the border the head layer goes on (the photo's hair,
    mirrored) only about as far as the head's own outline would, rounding off over the crown; the mirror image alone
    went on in every column the hair crossed the border in, to a fixed depth: a block with straight sides and a flat
    top (with a notch where the hair over the scalp was thin) that a raised chin brought into the frame as a bow."""
    fit, cap = hair_fit
    rows = np.nonzero(cap.any(1))[0]
    cy = int(rows[0] + 0.3 * (rows[-1] - rows[0]))  # the border cuts through the cap
    al = fit.alignment
    m = al.matrix.copy()
    m[:, 2] += m[:, 1] * cy
    crop_al = Alignment(matrix=m, size=al.size, landmarks_photo=al.landmarks_photo, landmarks_crop=al.landmarks_crop,
                        photo_shape=(N - cy, N, 3))
    crop = PhotoFit(np.ascontiguousarray(fit.image[cy:]), fit.coeffs.clone(), crop_al, fit.gain.copy())
    r = PhotoRenderer(crop, face_model, head)
    gl = r.grid_layers
    assert gl.off_photo_px > 0 and gl.off_photo_sides[1]
    # the grid's pixels beyond the top border, and the cap the uncropped photo has there
    cen = r.grid.centres()
    ix = np.clip(np.round(cen[..., 0] - 0.5).astype(int), 0, N - 1)
    iy = np.round(cen[..., 1] - 0.5).astype(int) + cy
    beyond = (cen[..., 1] < 0) & (iy >= 0) & (cen[..., 0] >= 0) & (cen[..., 0] < N)
    truth = cap[np.clip(iy, 0, N - 1), ix] & beyond
    got = (gl.matte > 0.5) & beyond
    assert truth.sum() > 300, truth.sum()
    # (the old block: 1139 px, 718 of them beyond the cap's outline, IoU 0.30; now 653 / 232 / 0.47)
    assert (got & ~truth).sum() < 0.5 * truth.sum(), ((got & ~truth).sum(), truth.sum())
    assert (got & truth).sum() / (got | truth).sum() > 0.4
    # rendered with the chin raised, what lay beyond the border comes into the frame as hair (not the plate)
    out = r.render(_pitch_roll(crop.coeffs, pitch=15)).image
    assert _hair_mask(out)[:3].sum(1).min() > 0


def test_long_hair_beside_the_jaw_shows_no_holes_of_the_plate_when_the_head_rolls(face_model, head):
    """Long hair hanging beside the jaw and neck: rolling or lowering the head moves the jaw (on the mesh, turning
    with the head) apart from the hair beside it (off the mesh, half staying with the shoulders): the splat left
    pixels nobody lands on and the plate's colour showed there, holes with stepped edges inside the hair. The warped
    layer's tears are closed: no pixel enclosed by hair and face shows the background."""
    c, al, xy, cov, img = _canvas_head(face_model, head)
    ys, xs = np.nonzero(cov)
    chin_y = float(xy[head.lm68[8], 1])
    hair = cv2.dilate(cov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61))) > 0
    hair &= ~cov
    hair[int(chin_y) + 70:] = False  # down to the shoulders, beside the neck
    cx = int(xs.mean())
    hair[int(chin_y) - 10:, cx - 28:cx + 28] = False  # not in front of the neck
    img = img.copy()
    img[hair] = HAIR
    fit = PhotoFit(img, c, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    x0, y0, x1, y1 = r.layers.box
    plate = img.astype(int)
    plate[y0:y1, x0:x1] = r.layers.plate
    for roll in (-20, 20):
        c1 = _pitch_roll(c, roll=roll)
        out = r.render(c1).image
        f = r.flow_field(c1)
        tcov = f.in_photo(f.covered.astype(np.float32), out.shape[:2]) > 0.5
        solid = _hair_mask(out) | tcov
        holes = _fill_holes(solid) & ~solid
        shown = holes & (np.abs(out.astype(int) - plate).max(-1) < 8)  # the plate, inside the head
        # (before: 143 / 122 plate pixels in the hair beside the jaw at roll -20 / +20)
        assert shown.sum() <= 10, (roll, int(shown.sum()))


COLLAR = np.array([40, 70, 190], np.uint8)  # a blue shirt: no colour of the skin-toned head


def test_the_collar_under_the_chin_stays_with_the_torso_when_the_head_turns(face_model, head):
    """A shirt (its collar up under the chin, over the fitted lower neck): a yaw turn turns the lower neck part of
    the way, and the flow of the mesh dragged the collar along with it (a sheared collar and tie knot). The clothing
    under the chin is told by its colour (as on the body below the neck, unlike the skin and hair) and stays."""
    v = torch.cat([head.model.mean, head.parts_mean])
    tex = (0.85 + 0.1 * torch.sin(v[:, 0] * 1.3 + v[:, 1] * 0.9))[:, None] * torch.from_numpy(SKIN)[None]
    c, al, xy, cov, img = _canvas_head(face_model, head, tex)
    chin_y = float(xy[head.lm68[8], 1])
    fw = float(np.linalg.norm((xy[head.lm68[16]] - xy[head.lm68[0]]).numpy()))
    rows = np.arange(N)[:, None]
    shirt = cov & (rows > chin_y + 0.08 * fw)
    img = img.copy()
    img[shirt] = COLLAR
    fit = PhotoFit(img, c, al, np.array([1.0, 1.0, 1.0], np.float32))
    r = PhotoRenderer(fit, face_model, head)
    collar = shirt & (rows < chin_y + 0.4 * fw)  # the part the lower neck's ramp moves

    def blue(im):
        return np.abs(im.astype(int) - COLLAR.astype(int)).max(-1) < 30

    low = collar & (rows > chin_y + 0.15 * fw)  # clear of the chin at +-20 deg (the face goes in front there)
    ctr = np.clip(np.round(r.grid.centres() - 0.5).astype(int), 0, N - 1)
    on = low[ctr[..., 1], ctr[..., 0]]  # on the work grid
    assert on.sum() > 100, on.sum()
    for deg in (-20, 20):
        c1 = _turn(c, deg)
        moved = np.linalg.norm(r.flow_field(c1).displacement[on], axis=-1)  # photo px
        out = r.render(c1).image
        kept = (blue(out) & collar).sum() / collar.sum()
        # (before: at -20 deg the collar moved by 4.4 px (median; 90th percentile 12.6) and 0.93 of it stayed collar;
        # now 0.0 (0.8) and 0.94, the rest where the turned chin goes in front of it)
        assert np.median(moved) < 0.3 and np.percentile(moved, 90) < 1.0, (deg, np.percentile(moved, [50, 90]))
        assert kept > 0.935, (deg, kept)
    # the photo cache keeps the clothing's mask (its Lab conversion): a renderer given the source state takes it
    from engine.photo import layers as layers_mod

    state = r.source_state()
    assert state["grid_torso"].shape == (r.grid.res, r.grid.res) and state["grid_torso"].max() > 0.5
    calls = []
    real = layers_mod.torso_on_grid
    layers_mod.torso_on_grid = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        again = PhotoRenderer(fit, face_model, head, layers=r.layers, source_state=state)
    finally:
        layers_mod.torso_on_grid = real
    assert again.source_restored and not calls
    assert np.array_equal(again.grid_layers.torso, r.grid_layers.torso)


def test_a_notch_in_the_layer_s_outline_is_covered_but_not_drawn_opaque_while_a_tear_is():
    """close_tears: a few pixels in a notch of the cover's outline (taken in by the closing) are covered but not
    marked to be drawn opaque — opaque, they showed as specks of the jacket's and hair's colour floating outside a
    driven head's outline; a hole enclosed inside the layer (a tear) is still marked."""
    from engine.photo.layers import close_tears

    cover = np.zeros((64, 64), np.float32)
    cover[10:50, 10:50] = 1.0
    cover[30, 50] = 0.5  # two hits beside the outline enclose a 1 px notch at its edge
    cover[32, 50] = 0.5
    cover[31, 51] = 0.5
    cover[20:28, 20:28] = 0.0  # a tear well inside the layer
    filled, holes = close_tears(cover)
    assert filled[31, 50] > 0 and filled[24, 24] > 0  # both covered
    assert holes[20:28, 20:28].all()  # the tear drawn opaque
    assert not holes[28:35, 48:54].any()  # the notch not
