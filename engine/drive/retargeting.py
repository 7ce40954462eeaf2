"""Retarget: a track frame onto a target's coefficients (the third step of a drive).

Expression: absolute or relative to the source's first tracked frame; pose: relative to the source's first tracked
frame; a strength per group. Identity, albedo and light stay the target's.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.drive.track import Track
from engine.face.model import N_EXP, Coefficients
from engine.fit import pose_from_rotation, rotation_np

__all__ = ["retarget"]


def retarget(target: Coefficients, track: Track, i: int, expression_strength: float = 1.0,
             pose_strength: float = 1.0, head_motion: bool = True, relative_expression: bool = False,
             smoothed: bool = True) -> Coefficients:
    """The target's coefficients driven by frame ``i`` of ``track``.

    Identity, albedo and light stay the target's. Expression: the source's (``relative_expression``: the
    target's plus the source's change since its first tracked frame), blended by ``expression_strength``
    (0 = the target's own, 1 = fully driven). Pose (with ``head_motion``): the target's pose rotated by the
    source's head rotation since its first tracked frame, scaled by ``pose_strength``."""
    v = track.values(smoothed)
    ref = v[track.first_found]
    cur = v[i]
    out = target[0:1].detach().clone()
    e_t = out.expression[0].double().numpy()
    if relative_expression:
        e_src = np.clip(e_t + (cur[:N_EXP] - ref[:N_EXP]), 0.0, 1.0)
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
