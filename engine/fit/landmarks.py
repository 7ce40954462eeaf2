"""The 68 landmarks of the face model and the priors every landmark solve shares.

Points are weighted (eyes, nose and mouth high; the jaw contour low, because a 2D detector's contour slides with
the head's silhouette while our jaw landmarks are fixed vertices). The landmark error is reported as NME: the mean
point distance divided by the outer-eye-corner distance (36/45) of the target landmarks.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.face.model import FaceModel, load_ict_arrays

__all__ = ["LANDMARK_WEIGHTS", "landmark_nme", "LandmarkGeometry", "UNOBSERVED_EXPRESSIONS", "PREFERRED_EXPRESSIONS",
           "KEY_EXPRESSIONS", "UNSEEN_EXPRESSIONS", "expression_prior_weights", "lr_pairs"]

# landmark weights (iBUG 68 order)
LANDMARK_WEIGHTS = np.ones(68, np.float32)
LANDMARK_WEIGHTS[0:17] = 0.7  # jaw contour (points 0-5, 11-16 slide along the silhouette, see below)
LANDMARK_WEIGHTS[[0, 16]] = 0.3
LANDMARK_WEIGHTS[17:27] = 1.0  # brows
LANDMARK_WEIGHTS[27:36] = 1.5  # nose
LANDMARK_WEIGHTS[[30, 31, 33, 35]] = 3.0
LANDMARK_WEIGHTS[36:48] = 3.0  # eyes
LANDMARK_WEIGHTS[48:68] = 2.0  # mouth
LANDMARK_WEIGHTS[[48, 54, 60, 64]] = 3.0

def landmark_nme(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) mean point distance normalised by the target's outer-eye-corner distance (points 36 and 45)."""
    iod = (target[:, 36] - target[:, 45]).norm(dim=-1).clamp_min(1e-6)
    return (pred - target).norm(dim=-1).mean(-1) / iod

class LandmarkGeometry:
    """The 68 landmark vertices only: (B, 68, 2) pixels from identity/expression/pose.

    With ``sliding=True`` the jaw-contour points 0–5 and 11–16 slide along the face like a detector's contour:
    each has a small set of candidate vertices at its height between the kit's front jawline (``lm68``) and its
    alternative, further-back jawline (``lm68_jaw_alt``); the candidate that projects furthest out (the
    silhouette) is used. The choice carries no gradient; the chosen vertex's position does.
    """

    def __init__(self, model: FaceModel, renderer, sliding: bool = True):
        idx = model.lm68
        self.sliding = sliding
        self.slots: list[tuple[int, torch.Tensor, float]] = []  # (landmark, positions in verts, side)
        allidx = [idx]
        if sliding:
            mv = model.mean
            alt = _jaw_alt(model)
            off = 68
            for i in list(range(0, 6)) + list(range(11, 17)):
                side = -1.0 if i < 8 else 1.0
                v_front, v_back = mv[idx[i]], mv[alt[i]]
                y_lo, y_hi = sorted((float(v_front[1]), float(v_back[1])))
                xmax = max(abs(float(v_front[0])), abs(float(v_back[0]))) + 0.3
                xmin = min(abs(float(v_front[0])), abs(float(v_back[0]))) - 0.6
                zmin = min(float(v_front[2]), float(v_back[2])) - 0.3
                sel = ((mv[:, 1] >= y_lo - 0.35) & (mv[:, 1] <= y_hi + 0.35) & (mv[:, 0] * side > xmin)
                       & (mv[:, 0] * side < xmax) & (mv[:, 2] >= zmin))
                cand = torch.unique(torch.cat([torch.nonzero(sel)[:, 0], idx[i:i + 1], alt[i:i + 1]]))
                self.slots.append((i, torch.arange(off, off + len(cand)), side))
                allidx.append(cand)
                off += len(cand)
        self.idx = torch.cat(allidx)
        n = len(self.idx)
        self.mean = model.mean[self.idx]
        self.id_b = model.id_basis[:, self.idx].reshape(model.id_basis.shape[0], n * 3)
        self.exp_b = model.exp_basis[:, self.idx].reshape(model.exp_basis.shape[0], n * 3)
        self.camera = renderer.camera

    def __call__(self, identity, expression, pose, size):
        v = self.mean + (identity @ self.id_b + expression @ self.exp_b).view(identity.shape[0], -1, 3)
        p = self.camera.project(self.camera.to_camera(v, pose), size)
        lm = p[:, :68]
        if not self.slots:
            return lm
        cols = [lm[:, j] for j in range(68)]
        for i, pos, side in self.slots:
            cand = p[:, pos]  # (B, n, 2)
            k = (cand[..., 0].detach() * side).argmax(1)
            cols[i] = cand[torch.arange(cand.shape[0]), k]
        return torch.stack(cols, 1)


def _jaw_alt(model: FaceModel) -> torch.Tensor:
    alt = getattr(model, "_lm68_jaw_alt", None)
    if alt is None:
        try:
            alt = torch.from_numpy(load_ict_arrays()["lm68_jaw_alt"].astype(np.int64))
        except KeyError:
            alt = model.lm68.clone()
        model._lm68_jaw_alt = alt
    return alt


# blendshapes the 68 landmarks barely see (gaze, cheeks, nose, jaw sideways/forward): held near 0 by a strong prior,
# otherwise they soak up landmark noise and even fake a head turn (an asymmetric cheekPuff looks like yaw)
UNOBSERVED_EXPRESSIONS = ("cheekPuff", "cheekSquint", "eyeLook", "jawForward", "jawLeft", "jawRight", "noseSneer",
                          "mouthDimple", "mouthPress", "mouthLeft", "mouthRight")


# the jaw opens the mouth: with an equal (L2) prior the solve would rather spread an open mouth thinly over
# mouthLowerDown/UpperUp/Funnel than use one large jawOpen, and read a jawOpen 0.5 edit back as ~0.2
PREFERRED_EXPRESSIONS = {"jawOpen": 0.1}


def expression_prior_weights(exp_names, unobserved: float = 100.0) -> np.ndarray:
    """(53,) relative prior weights: 1 for blendshapes the landmarks see, ``unobserved`` for the others, less for
    the ``PREFERRED_EXPRESSIONS``."""
    return np.array([unobserved if n.startswith(UNOBSERVED_EXPRESSIONS) else PREFERRED_EXPRESSIONS.get(n, 1.0)
                     for n in exp_names], np.float64)


def lr_pairs(exp_names) -> list[tuple[int, int]]:
    """(left, right) indices of the blendshapes that come in ``_L`` / ``_R`` pairs."""
    names = list(exp_names)
    return [(i, names.index(n[:-2] + "_R")) for i, n in enumerate(names) if n.endswith("_L") and n[:-2] + "_R" in names]


# the drive's per-frame solve: expressions the 68 landmarks show well (weaker prior) and those they cannot show at
# all (gaze: no iris points)
KEY_EXPRESSIONS = ("jawOpen", "mouthSmile", "eyeBlink", "browInnerUp", "browDown", "browOuterUp")
UNSEEN_EXPRESSIONS = ("eyeLook",)
