"""The believable turn range (``PhotoRenderer.turn_range``): where a turn stops being believable, per axis."""
from __future__ import annotations

import math

import torch

from engine.face.head import SKIN_PARTS
from engine.photo import PhotoRenderer, flow
from engine.photo import renderer as R
from tests.test_photo_layers import hair_fit  # noqa: F401  (fixture)


def _measured(fit):
    R._RANGES.pop(id(fit), None)  # measure afresh, not the range an earlier renderer of this fit stored
    pr = PhotoRenderer(fit, layers=False)
    return pr, pr.turn_range()


def _head_share(pr, axis: int, deg: float) -> float:
    """The head-only criterion, written out: the share of the turned head above the neck that the photo hid or saw
    at a grazing angle."""
    r = pr.preview_renderer()
    rot = flow.rotation_matrix(pr.coeffs0.pose.reshape(1, 3))[0]
    n0 = r.head.vertex_normals(r.src.verts.unsqueeze(0))[0] @ rot.T
    head_v = (r.src.verts[:, 1] > flow.NECK_FREE_Y + 2.0).float()
    unseen = ((R.UNSEEN_FACING - n0[:, 2]) / R.UNSEEN_FACING).clamp(0, 1)
    unseen = torch.maximum(unseen, (~r.src.visible).float()) * r.head.vertex_in(SKIN_PARTS).float() * head_v
    c = pr.coeffs0.clone()
    c.pose[0, axis] += math.radians(deg)
    t = flow.rasterize_target(r.head, r.proj, r.src, c, r.grid, r.neck)
    v = flow.interpolate_attrs(torch.stack([unseen, head_v], 1), t, r.head)
    return float(v[..., 0].sum()) / float(v[..., 1].sum())


def test_a_frontal_photos_pitch_range_ends_where_the_neck_tears_not_at_forty_degrees(hair_fit):  # noqa: F811
    """Pitch counts the neck a pitch bends against its fixed base (hidden under the chin, or stretched): a frontal
    head's believable pitch is about ±15..25° (the sheets: the collar tears at -20..-25, the neck shears at +20..+25),
    not the -35..+40° the head-only count gave (it never warned)."""
    fit, _ = hair_fit
    pr, lim = _measured(fit)
    lo, hi = lim["pitch"]
    assert -25.0 <= lo <= -15.0 and 15.0 <= hi <= 25.0, lim
    # the head alone stays well below the limit there: what ends the range is the neck
    assert _head_share(pr, 1, lo) < 0.6 * R.REVEAL_LIMIT and _head_share(pr, 1, hi) < 0.6 * R.REVEAL_LIMIT
    # and the status bar / --set warning now speaks inside the slider's normal ±20°
    for deg, warns in ((lo + 2.0, False), (hi - 2.0, False), (lo - 2.0, True), (hi + 2.0, True)):
        c = fit.coeffs.clone()
        c.pose[0, 1] += math.radians(deg)
        note = R.limits_note(fit, c)
        assert (note is not None and "pitch" in note) == warns, (deg, note)


def test_yaws_range_is_still_the_head_only_count(hair_fit):  # noqa: F811
    """Yaw keeps its criterion: its limit lies where the head-only share crosses ``REVEAL_LIMIT`` (between the 5°
    steps around it) — the -23..+25° a frontal photo always had."""
    fit, _ = hair_fit
    pr, lim = _measured(fit)
    lo, hi = lim["yaw"]
    assert -30.0 < lo < -15.0 and 15.0 < hi < 30.0, lim
    for end in (lo, hi):
        sign = math.copysign(1.0, end)
        below = 5.0 * math.floor(abs(end) / 5.0)
        assert _head_share(pr, 0, sign * below) <= R.REVEAL_LIMIT < _head_share(pr, 0, sign * (below + 5.0))
