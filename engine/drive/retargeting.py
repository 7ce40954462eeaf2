"""Retarget: a track frame onto a target's coefficients (the third step of a drive).

Expression: absolute (the source's weights) or relative to the source's first tracked frame (the target's own
plus the source's change; gaze as one signed change per axis, so a glance from left to right is not cut at 0; a
blink's closing times ``BLINK_GAIN``, an opening past the target's open lid as eyeWide);
pose: the target's pose turned by the source's rotation since its first tracked frame, 1:1; placement: the head's
move and size change in the frame since the first tracked frame, in head sizes (:func:`retarget_placement`);
landmark residual (relative expression): the change since the first frame of where the source's landmarks are
minus where its fitted model puts them (:func:`retarget_residual`), for a photo target to move its mesh by — the
part of a clip's motion the model's shapes do not reach. A strength per group. Identity, albedo and light stay the
target's.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from engine.drive.track import Track, pose_from_rotation, rotation_np
from engine.face.model import N_EXP, Coefficients, default_model
from engine.photo.eyes import EYEBALL_RADIUS, GAZE_MAX_DEG

__all__ = ["retarget", "retarget_placement", "retarget_residual", "RESIDUAL_POINTS"]

# the landmarks whose residual change is carried (dlib's 68): brows 17-26, nose 27-35, the eye corners 36 39 42 45
# and the lips 48-67. Not the jaw line (its points slide along the outline) nor the lids (the eye layer draws them
# from the blink weights)
RESIDUAL_POINTS = tuple(range(17, 36)) + (36, 39, 42, 45) + tuple(range(48, 68))

# the source's closing change of eyeBlink is carried times this: the landmark fit reads a fully closed eye as a blink
# of about 0.4-0.7 (dlib's lid points of a closed eye keep an eye aspect ratio of ~0.35-0.45 of the open eye's), so a
# clip's blink closed the photo's eyes half way (seen on talk_man_older_05, talk_woman_older_glasses_07, turn_woman_02;
# bench/reenact.py: aligned-face gain of the 6 clips with turns +1.63 -> +1.84 dB)
BLINK_GAIN = 1.7

# signed gaze per axis from the eight eyeLook weights: horizontal = toward the image's right, vertical = down
_LOOK_H = {"eyeLookOut_L": 1, "eyeLookIn_R": 1, "eyeLookIn_L": -1, "eyeLookOut_R": -1}
_LOOK_V = {"eyeLookDown_L": 1, "eyeLookDown_R": 1, "eyeLookUp_L": -1, "eyeLookUp_R": -1}


def _look_axes(names) -> list[tuple[list[int], list[int], list[int], list[int]]]:
    """Per eye: (positive-horizontal, negative-horizontal, down, up) expression indices."""
    out = []
    for side in ("L", "R"):
        idx = {n: names.index(n) for n in (f"eyeLook{k}_{side}" for k in ("In", "Out", "Up", "Down")) if n in names}
        if len(idx) < 4:
            continue
        pos = [idx[n] for n in idx if _LOOK_H.get(n) == 1]
        neg = [idx[n] for n in idx if _LOOK_H.get(n) == -1]
        down = [idx[n] for n in idx if _LOOK_V.get(n) == 1]
        up = [idx[n] for n in idx if _LOOK_V.get(n) == -1]
        out.append((pos, neg, down, up))
    return out


def _iris_shift(h: float) -> float:
    """The eye layer's sideways iris shift (eye widths) at a signed horizontal gaze weight ``h``."""
    return EYEBALL_RADIUS * math.sin(math.radians(h * GAZE_MAX_DEG["horizontal"]))


def _gaze_weight(shift: float) -> float:
    """The signed horizontal gaze weight whose iris shift is ``shift`` eye widths (the eye layer's range at most)."""
    return math.degrees(math.asin(float(np.clip(shift / EYEBALL_RADIUS, -1.0, 1.0)))) / GAZE_MAX_DEG["horizontal"]


def _relative_gaze(e_t: np.ndarray, cur: np.ndarray, ref: np.ndarray, out: np.ndarray, names,
                   gaze_gain: float = 1.0) -> None:
    """Gaze weights of ``out`` (in place): per eye and axis, the target's signed gaze plus the source's signed
    change, split back into its two one-sided weights. The horizontal change is carried as an iris shift divided by
    ``gaze_gain`` (the target's :meth:`~engine.drive.targets.PhotoTarget.gaze_read_gain`: how much of its eye
    layer's shift the iris reader sees), so the driven eye *reads* the source's shift."""
    for pos, neg, down, up in _look_axes(names):
        for k, (a, b) in enumerate(((pos, neg), (down, up))):
            h_t = e_t[a[0]] - e_t[b[0]]
            d = (cur[a[0]] - cur[b[0]]) - (ref[a[0]] - ref[b[0]])
            if k == 0 and gaze_gain != 1.0:
                d_shift = _iris_shift(cur[a[0]] - cur[b[0]]) - _iris_shift(ref[a[0]] - ref[b[0]])
                d = _gaze_weight(_iris_shift(h_t) + d_shift / gaze_gain) - h_t
            s = h_t + d
            out[a[0]], out[b[0]] = max(s, 0.0), max(-s, 0.0)


def _wide_per_blink() -> float:
    """eyeWide weight that raises the model's upper lid as far as one unit of eyeBlink lowers it (mean of the four
    upper-lid landmarks of both eyes)."""
    global _WIDE_PER_BLINK
    if _WIDE_PER_BLINK is None:
        m = default_model()
        up = m.lm68[[37, 38, 43, 44]]
        blink = sum(float(m.expression_offsets(f"eyeBlink_{s}", up)[:, 1].abs().sum()) for s in "LR")
        wide = sum(float(m.expression_offsets(f"eyeWide_{s}", up)[:, 1].abs().sum()) for s in "LR")
        _WIDE_PER_BLINK = blink / max(wide, 1e-9)
    return _WIDE_PER_BLINK


_WIDE_PER_BLINK: float | None = None


def _relative_lids(e_t: np.ndarray, cur: np.ndarray, ref: np.ndarray, out: np.ndarray, names) -> None:
    """Blink weights of ``out`` (in place): the target's own plus the source's change (closing scaled by
    ``BLINK_GAIN``); an opening past the target's own open lid (the source's first frame was caught mid-blink, the
    target's fit reads less blink than the track's first frame) goes on as eyeWide instead of being cut at 0."""
    for side in ("L", "R"):
        if f"eyeBlink_{side}" not in names or f"eyeWide_{side}" not in names:
            continue
        b, w = names.index(f"eyeBlink_{side}"), names.index(f"eyeWide_{side}")
        d = cur[b] - ref[b]
        v = e_t[b] + (BLINK_GAIN * d if d > 0 else d)
        out[b] = v
        if v < 0:
            out[w] = out[w] - v * _wide_per_blink()


def retarget(target: Coefficients, track: Track, i: int, expression_strength: float = 1.0,
             pose_strength: float = 1.0, head_motion: bool = True, relative_expression: bool = False,
             smoothed: bool = True, gaze_gain: float = 1.0) -> Coefficients:
    """The target's coefficients driven by frame ``i`` of ``track``.

    Identity, albedo and light stay the target's. Expression: the source's (``relative_expression``: the
    target's plus the source's change since its first tracked frame), blended by ``expression_strength``
    (0 = the target's own, 1 = fully driven). Pose (with ``head_motion``): the target's pose rotated by the
    source's head rotation since its first tracked frame, scaled by ``pose_strength``. ``gaze_gain`` (relative
    expression): the target's iris read gain, the sideways gaze change is carried divided by it (see
    :func:`_relative_gaze`)."""
    v = track.values(smoothed)
    ref = v[track.first_found]
    cur = v[i]
    out = target[0:1].detach().clone()
    e_t = out.expression[0].double().numpy()
    if relative_expression:
        e_src = e_t + (cur[:N_EXP] - ref[:N_EXP])
        _relative_gaze(e_t, cur, ref, e_src, list(track.exp_names), gaze_gain)
        _relative_lids(e_t, cur, ref, e_src, list(track.exp_names))
        e_src = np.clip(e_src, 0.0, 1.0)
    else:
        e_src = cur[:N_EXP]
    s = float(expression_strength)
    out.expression = torch.as_tensor(np.clip(e_t + s * (e_src - e_t), 0.0, 1.0), dtype=torch.float32)[None]
    if head_motion and pose_strength != 0:
        rel = rotation_np(cur[N_EXP:]) @ rotation_np(ref[N_EXP:]).T
        rel_angles = pose_from_rotation(rel) * float(pose_strength)
        pose = pose_from_rotation(rotation_np(rel_angles) @ rotation_np(out.pose[0].double().numpy()))
        out.pose = torch.as_tensor(pose, dtype=torch.float32)[None]
    return out


def retarget_placement(track: Track, i: int, pose_strength: float = 1.0, smoothed: bool = True) -> np.ndarray:
    """(3,) the head's move in the frame since the source's first tracked frame: dx, dy in crop widths (the
    aligned face crop: the same share of the target's head) and the log of the size ratio, scaled by
    ``pose_strength``."""
    return track.placement_change(i, smoothed) * float(pose_strength)


def retarget_residual(track: Track, i: int, strength: float = 1.0, smoothed: bool = True,
                      points=RESIDUAL_POINTS) -> np.ndarray:
    """(68, 2) the change of the source's landmark residual since its first tracked frame (crop widths, frame
    orientation: :meth:`Track.residual_change`), on ``points`` only (others 0), times ``strength``: the part of
    the source's landmark motion its model fit does not reach, for the target to add to its model's."""
    d = track.residual_change(i, smoothed)
    out = np.zeros((68, 2))
    idx = list(points)
    out[idx] = d[idx] * float(strength)
    return out
