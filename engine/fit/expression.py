"""The per-frame expression + pose solve of a video (a fixed identity) and the identity estimate it starts from.

Identity, albedo and light are fixed per video (:func:`estimate_identity`: a landmark solve of the first good frames,
identities averaged). Each frame then solves only expression (53, kept in [0, 1]) and pose (3) against its landmarks
with a few damped, bound-constrained Gauss-Newton steps (:class:`ExpressionPoseSolver`; small numpy, an analytic
Jacobian through the landmark vertices of :class:`~engine.fit.landmarks.LandmarkGeometry`), starting from the
previous frame and pulled weakly toward R-Net's expression.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np
import torch

from engine.face.model import Coefficients, FaceModel
from engine.fit.gauss_newton import solve_landmarks
from engine.fit.landmarks import (KEY_EXPRESSIONS, LANDMARK_WEIGHTS, UNSEEN_EXPRESSIONS, LandmarkGeometry,
                                  expression_prior_weights, lr_pairs)

__all__ = ["ExpressionPoseSolver", "estimate_identity", "rotation_np", "pose_from_rotation", "LandmarkReading"]


class LandmarkReading(Protocol):
    """What :func:`estimate_identity` reads of one frame (``engine.drive.track.Observation`` is one)."""

    landmarks: np.ndarray  # (68, 2) crop px
    rnet: Coefficients  # batch 1, R-Net's reading of the crop


def _box_qp(h: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, iters: int = 12) -> np.ndarray:
    """min 1/2 d'Hd + g'd subject to lo <= d <= hi (H positive definite): projected Newton with an active set.
    Stops when the set of free variables no longer changes (solving again would give the same step)."""
    d = np.clip(np.zeros_like(g), lo, hi)
    free = None
    for _ in range(iters):
        grad = h @ d + g
        f = ~(((d <= lo + 1e-12) & (grad > 0)) | ((d >= hi - 1e-12) & (grad < 0)))
        if free is not None and np.array_equal(f, free):
            break
        fi = np.flatnonzero(f)
        ai = np.flatnonzero(~f)
        rhs = -g[fi]
        if len(ai):
            rhs = rhs - h[fi][:, ai] @ d[ai]
        d = d.copy()
        d[fi] = np.linalg.solve(h[fi][:, fi], rhs)
        np.clip(d, lo, hi, out=d)
        free = f
    return d


def rotation_np(pose) -> np.ndarray:
    """(3,) yaw, pitch, roll (radians) -> (3, 3), the same matrix as ``engine.render.camera.rotation_matrix``."""
    yaw, pitch, roll = (float(v) for v in pose)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(-pitch), math.sin(-pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_from_rotation(r: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_np`: (3, 3) -> (3,) yaw, pitch, roll in radians."""
    yaw = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = -math.atan2(float(r[2, 1]), float(r[2, 2]))
    roll = math.atan2(float(r[1, 0]), float(r[0, 0]))
    return np.array([yaw, pitch, roll])


def estimate_identity(observations: Sequence[LandmarkReading], model: FaceModel, renderer,
                      crop_size: int) -> Coefficients:
    """Identity, albedo and light for a whole video from a few good frames: per frame a landmark solve of identity,
    expression, pose and a 2D similarity (:func:`~engine.fit.gauss_newton.solve_landmarks`; R-Net start),
    identities averaged; albedo and light are R-Net's, averaged. Returns batch-1 coefficients (expression and pose
    zero)."""
    if not observations:
        raise ValueError("no observations to estimate the identity from")
    init = Coefficients.cat([o.rnet for o in observations])
    ids = [solve_landmarks(o.rnet, o.landmarks, model, renderer, crop_size, iters=15).coeffs.identity
           for o in observations]
    identity = torch.cat(ids).mean(0, keepdim=True)
    c = model.zeros(1)
    c.identity = identity.float()
    c.albedo = init.albedo.mean(0, keepdim=True)
    c.light = init.light.mean(0, keepdim=True)
    return c


class ExpressionPoseSolver:
    """Expression (53, in [0, 1]) and pose (3) of one frame for a fixed identity: damped, bound-constrained
    Gauss-Newton on the weighted landmark residual. Everything is small numpy: the landmark vertices (with the
    sliding jaw candidates of :class:`LandmarkGeometry`) are linear in the expression, so the Jacobian is the
    projection's derivative times the rotated blendshape offsets (analytic); the 3 pose columns are finite
    differences."""

    def __init__(self, model: FaceModel, renderer, identity: torch.Tensor, size: int, iterations: int = 5,
                 w_rnet: float = 0.0, w_zero=None, w_l1: float = 0.0, w_asym: float = 1e-3, w_sim: float = 1e-3, chin_weight: float | None = None,
                 damping: float = 1e-5,
                 sliding: bool = True, key_weight: float | None = 1e-4, unseen_weight: float | None = None):
        geo = LandmarkGeometry(model, renderer, sliding=sliding)
        self.geo = geo
        n = len(geo.idx)
        ident = identity.detach().reshape(1, -1).double()
        self.base = (geo.mean.double() + (ident @ geo.id_b.double()).view(n, 3)).numpy()  # (n, 3)
        self.exp_b = geo.exp_b.double().view(-1, n, 3).permute(1, 2, 0).numpy().copy()  # (n, 3, E)
        self.n_exp = self.exp_b.shape[2]
        cam = geo.camera
        self.focal, self.offset_y, self.distance = float(cam.focal), float(cam.offset_y), float(cam.distance)
        self.pivot = np.asarray(cam.pivot, np.float64)
        self.size = int(size)
        self.iterations = int(iterations)
        self.w_rnet, self.w_l1, self.damping = float(w_rnet), float(w_l1), float(damping)
        names = model.exp_names
        if w_zero is None:  # default: photo mode's prior (blendshapes the landmarks barely see held near 0)
            w_zero = 1e-3 * expression_prior_weights(names)
        wz = np.broadcast_to(np.asarray(w_zero, np.float64), (self.n_exp,)).copy()
        if key_weight is not None:  # the expressions 68 landmarks show well get a weaker pull toward 0
            wz[[i for i, nm in enumerate(names) if nm.startswith(KEY_EXPRESSIONS)]] = key_weight
        if unseen_weight is not None:  # ... and those they cannot show (gaze) a strong one
            wz[[i for i, nm in enumerate(names) if nm.startswith(UNSEEN_EXPRESSIONS)]] = unseen_weight
        self.w_zero = wz
        self.pairs = lr_pairs(names)
        self.w_asym = float(w_asym)
        self._asym = None
        if self.w_asym > 0 and self.pairs:  # sum over pairs of w (e_L - e_R)^2 as a (53, 53) quadratic form
            dmat = np.zeros((len(self.pairs), self.n_exp))
            for k, (a, b) in enumerate(self.pairs):
                dmat[k, a], dmat[k, b] = 1.0, -1.0
            self._asym = self.w_asym * dmat.T @ dmat
        self.w_sim = float(w_sim)
        lw = LANDMARK_WEIGHTS.astype(np.float64).copy()
        if chin_weight is not None:
            lw[7:10] = chin_weight
        self.sqrt_w = np.sqrt(lw / lw.mean()).repeat(2)  # (136,)
        self.slots = [(i, pos.numpy(), side) for i, pos, side in geo.slots]
        names = model.exp_names
        self._mc_jo = (names.index("mouthClose"), names.index("jawOpen")) \
            if "mouthClose" in names and "jawOpen" in names else None

    @staticmethod
    def rotation(pose) -> np.ndarray:
        """numpy twin of ``engine.render.camera.rotation_matrix`` (Rz(roll) @ Ry(yaw) @ Rx(-pitch))."""
        return rotation_np(pose)

    def _project(self, v: np.ndarray, rot: np.ndarray):
        p = (v - self.pivot) @ rot.T + self.pivot
        x, y, z = p[:, 0], p[:, 1] + self.offset_y, self.distance - p[:, 2]
        z = np.maximum(z, 1e-3)
        half = self.size / 2.0
        px = np.stack([(self.focal * x / z + 1) * half, (1 - self.focal * y / z) * half], -1)
        return px, x, y, z

    def _select(self, px: np.ndarray) -> np.ndarray:
        """Indices (into the candidate list) of the 68 landmark vertices (jaw points slide to the silhouette)."""
        sel = np.arange(68)
        for i, pos, side in self.slots:
            sel[i] = pos[np.argmax(px[pos, 0] * side)]
        return sel

    N_SIM = 3  # log scale, tx, ty of the 2D similarity on top of the projection

    def _similarity(self, px: np.ndarray, sim: np.ndarray) -> np.ndarray:
        c = self.size / 2.0
        return math.exp(sim[0]) * (px - c) + c + sim[1:3] * self.size

    def landmarks(self, x: np.ndarray) -> np.ndarray:
        """(68, 2) crop px of ``x`` = [expression (53), pose (3), optionally log scale, tx, ty]."""
        n = self.n_exp
        v = self.base + self.exp_b @ x[:n]
        px = self._project(v, self.rotation(x[n:n + 3]))[0]
        sim = x[n + 3:n + 6] if len(x) >= n + 6 else np.zeros(3)
        return self._similarity(px[self._select(px)], sim)

    def solve(self, landmarks: np.ndarray, x0: np.ndarray, prior_expression: np.ndarray | None = None) -> np.ndarray:
        """landmarks (68, 2) crop px; x0: [expression (53), pose (3)] or the (59,) result of the previous frame
        (with the 2D similarity: log scale, tx, ty — the alignment of a crop is not exactly the camera's framing:
        an opening mouth moves the similarity fitted on points 17-67). Returns (59,)."""
        n = self.n_exp
        target = np.asarray(landmarks, np.float64).reshape(-1) / self.size
        x = np.zeros(n + 3 + self.N_SIM)
        x0 = np.asarray(x0, np.float64)
        x[:len(x0)] = x0[:len(x)]
        x[:n] = np.clip(x[:n], 0.0, 1.0)
        prior = None if prior_expression is None else np.asarray(prior_expression, np.float64)
        sw = self.sqrt_w
        m = x.size
        half = self.size / 2.0
        eps = 1e-4
        for _ in range(self.iterations):
            v = self.base + self.exp_b @ x[:n]
            rot = self.rotation(x[n:n + 3])
            px, cx, cy, cz = self._project(v, rot)
            sel = self._select(px)
            vs, xs, ys, zs = v[sel], cx[sel], cy[sel], cz[sel]
            p0 = px[sel]
            sc = math.exp(x[n + 3])
            f = self._similarity(p0, x[n + 3:]).reshape(-1) / self.size
            # d(px)/d(camera point) (68, 2, 3), camera point = rot @ vertex (+ const)
            dp = np.zeros((68, 2, 3))
            dp[:, 0, 0] = self.focal * half / zs
            dp[:, 0, 2] = self.focal * half * xs / zs ** 2
            dp[:, 1, 1] = -self.focal * half / zs
            dp[:, 1, 2] = -self.focal * half * ys / zs ** 2
            j_e = (sc / self.size) * np.matmul(dp @ rot, self.exp_b[sel]).reshape(136, n)
            j_p = np.empty((136, 3))
            for k in range(3):
                pk = x[n:n + 3].copy()
                pk[k] += eps
                pxk = self._similarity(self._project(vs, self.rotation(pk))[0], x[n + 3:])
                j_p[:, k] = (pxk.reshape(-1) / self.size - f) / eps
            j_s = np.zeros((136, 3))
            j_s[:, 0] = (sc * (p0 - half)).reshape(-1) / self.size
            j_s[0::2, 1] = 1.0
            j_s[1::2, 2] = 1.0
            jac = np.concatenate([j_e, j_p, j_s], 1) * sw[:, None]
            r = (f - target) * sw
            # the linearised problem with its priors, solved with the expression bounds (0 <= x_e + d_e <= 1) by a
            # small projected-Newton active-set loop on the 56 x 56 normal equations
            h = jac.T @ jac
            g = jac.T @ r
            diag = np.arange(n)
            if prior is not None:
                g[:n] += self.w_rnet * (x[:n] - prior)
                h[diag, diag] += self.w_rnet
            g[:n] += self.w_zero * x[:n] + self.w_l1
            h[diag, diag] += self.w_zero
            if self._asym is not None:  # left and right halves of a pair move together unless the data says not
                g[:n] += self._asym @ x[:n]
                h[:n, :n] += self._asym
            if self._mc_jo is not None:  # mouthClose is corrective: keep it below jawOpen (soft)
                mc, jo = self._mc_jo
                v = np.zeros(m)
                v[mc], v[jo] = 1.0, -1.0
                if x[mc] - x[jo] > -1e-3:
                    k = 1e-2
                    g += k * max(0.0, x[mc] - x[jo]) * v
                    h += k * np.outer(v, v)
            h[np.arange(m), np.arange(m)] += self.damping
            h[np.arange(n + 3, m), np.arange(n + 3, m)] += self.w_sim  # the similarity stays near identity
            g[n + 3:] += self.w_sim * x[n + 3:]
            lo = np.full(m, -np.inf)
            hi = np.full(m, np.inf)
            lo[:n], hi[:n] = np.minimum(-x[:n], 0.0), np.maximum(1.0 - x[:n], 0.0)
            d = _box_qp(h, g, lo, hi)
            x = x + d
            x[:n] = np.clip(x[:n], 0.0, 1.0)
            x[n] = np.clip(x[n], -1.4, 1.4)
            x[n + 1:n + 3] = np.clip(x[n + 1:n + 3], -1.0, 1.0)
            x[n + 3:] = np.clip(x[n + 3:], -0.3, 0.3)
            if np.abs(d).max() < 1e-4:
                break
        return x
