"""Render targets: what a drive puts the motion on (the fourth step) — a photo (photo mode, at its own
resolution) or a session (generator face, or the 3DMM preview). Each gives base coefficients, renders driven
coefficients to an image, and makes the session the keyframe track is saved in.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from engine.drive.errors import DriveCancelled, DriveError
from engine.editing.photo_import import PhotoSource
from engine.editing.session import Session
from engine.face.model import Coefficients
from engine.photo.fit import PhotoFitCancelled, fit_photo
from engine.photo.renderer import PhotoRenderer

__all__ = ["Target", "SessionTarget", "PhotoTarget", "load_target", "PHOTO_SUFFIXES"]


class Target:
    """What gets driven: base coefficients (identity, albedo, light...), how to render them, and the reference
    image for identity checks."""

    kind = "target"
    coeffs: Coefficients
    noise: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:  # (width, height) of the rendered frames
        raise NotImplementedError

    def render(self, coeffs: Coefficients, placement: np.ndarray | None = None,
               residual: np.ndarray | None = None) -> np.ndarray:
        """The frame for ``coeffs``; ``placement`` (dx, dy in crop widths, log size ratio: the head's move in the
        frame, :func:`~engine.drive.retargeting.retarget_placement`) where the target can place the head;
        ``residual`` ((68, 2) landmark moves in crop widths the model's shapes do not reach,
        :func:`~engine.drive.retargeting.retarget_residual`) where the target can draw them."""
        raise NotImplementedError

    def reference_image(self) -> np.ndarray:
        return self.render(self.coeffs)

    def session(self):
        """A session holding this target (for the keyframe track)."""
        raise NotImplementedError


class SessionTarget(Target):
    """A saved session (generator face, or the 3DMM preview without generator weights), or — with
    :meth:`from_session` — the editor's live session (its current face is copied; the session is only read)."""

    kind = "session"

    def __init__(self, path, size: int | None = None, generator="auto", session=None):
        self.path = Path(path) if path is not None else None
        self.sess = session if session is not None else Session.load(self.path, generator=generator)
        self.coeffs = self.sess.coeffs.clone()
        self.noise = self.sess.noise.clone()
        if size is not None and not 32 <= int(size) <= 2048:
            raise DriveError(f"size must be between 32 and 2048 px, got {size}")
        self._size = int(size or self.sess.native_size)
        wo = self.sess.w_offsets
        self._w_offsets = None if wo is None else wo.clone()

    @classmethod
    def from_session(cls, session, size: int | None = None) -> "SessionTarget":
        return cls(None, size, session=session)

    @property
    def size(self):
        return (self._size, self._size)

    def render(self, coeffs, placement=None, residual=None):  # a generated face stays centred, model-shaped
        return self.sess.render_state(coeffs, self.noise, self._size, w_offsets=self._w_offsets).image

    def session(self):
        """A session for the keyframe track: the loaded file's, or a fresh copy of a live session's face."""
        if self.path is not None:
            return self.sess
        s = self.sess.copy()  # an exact copy (noise, truncation, offsets), in memory
        s.set_coefficients(self.coeffs.clone(), self.noise.clone(), commit=False)
        return s


# the target's iris read gain (PhotoTarget.gaze_read_gain): sideways gaze weights the eye layer turns both eyes by
# (small glances: the ones a clip's iris reading mostly carries), and the range the gain is kept in
GAIN_PROBE = (-0.2, -0.1, 0.1, 0.2)
GAIN_RANGE = (0.5, 1.0)


class PhotoTarget(Target):
    """A photo, edited at its own resolution by photo mode (``engine.photo``)."""

    kind = "photo"

    def __init__(self, path, max_side: int | None = None, progress=None, cancel=None):
        self.path = Path(path)
        try:
            self.fit = fit_photo(str(self.path), progress=progress, cancel=cancel)
        except PhotoFitCancelled:
            raise DriveCancelled("cancelled") from None
        self.renderer = PhotoRenderer(self.fit)
        self.coeffs = self.fit.coeffs.detach().clone()
        self.max_side = max_side
        self._spread = None  # (landmark points, (V, K) spread matrix) for residual_offsets, made on first use
        self._pivot_px = None  # the head's pivot in photo px, for placement_matrix (made on first use)
        self._gaze_gain = None
        h, w = self.fit.image.shape[:2]
        s = 1.0 if max_side is None else min(1.0, int(max_side) / max(h, w))
        self._size = (max(1, round(w * s)), max(1, round(h * s))) if s < 1 else (w, h)

    @property
    def size(self):
        return self._size

    def placement_matrix(self, placement) -> np.ndarray | None:
        """(2, 3) photo-px affine for a head move (dx, dy in crop widths, log size ratio): the head scaled about its
        pivot (the point the pose turns about) and moved by the same share of this photo's head; None for no move."""
        if placement is None:
            return None
        dx, dy, ls = (float(v) for v in placement)
        if abs(dx) < 1e-6 and abs(dy) < 1e-6 and abs(ls) < 1e-6:
            return None
        al = self.fit.alignment
        c = self._pivot_px
        if c is None:  # (the same every frame)
            proj = self.renderer.proj
            pivot = torch.tensor(np.asarray(proj.camera.pivot, np.float32))[None]
            c = self._pivot_px = proj.to_photo(proj.camera_space(pivot))[0].double().numpy()
        width = al.size / al.scale  # photo px per crop width
        k = float(np.exp(ls))
        return np.array([[k, 0.0, (1 - k) * c[0] + dx * width], [0.0, k, (1 - k) * c[1] + dy * width]])

    def gaze_read_gain(self) -> float:
        """How much of a sideways iris shift of this photo's eye layer the iris reader sees
        (:func:`engine.perception.iris.gaze`, the tracker's: a darkness-weighted centroid, which the still lash line
        and eye corners pull back toward the eye's centre): the eye layer alone turns both eyes by the gaze weights
        ``GAIN_PROBE`` on the photo, the reader reads them with the photo's own landmarks; the slope of the reading
        on the shift drawn, within ``GAIN_RANGE`` (1 where the eyes are not read). A drive divides the source's
        sideways iris change by it, so that the driven eye reads the shift the source's eye read — the same reader
        on the source's eye sees the same share of its real glance (:func:`~engine.drive.retargeting.retarget`)."""
        if self._gaze_gain is None:
            from engine.perception import iris
            from engine.drive.retargeting import _iris_shift

            r = self.renderer
            lm = np.asarray(self.fit.alignment.landmarks_photo, np.float64)
            g0 = iris.gaze(r.image, lm)
            xs, ys = [], []
            for w in GAIN_PROBE:
                c = self.coeffs.clone()
                for k, sign in (("eyeLookOut_L", 1), ("eyeLookIn_R", 1), ("eyeLookIn_L", -1), ("eyeLookOut_R", -1)):
                    if k in c.exp_names:
                        c.expr[k] = max(0.0, sign * w)
                g = iris.gaze(r.eyes.apply(r.image, c, 1.0), lm)
                if g is not None and g0 is not None:
                    xs.append(_iris_shift(w))
                    ys.append(float(g[0] - g0[0]))
            gain = float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 3 else 1.0
            self._gaze_gain = float(np.clip(gain, *GAIN_RANGE))
        return self._gaze_gain

    def residual_offsets(self, residual) -> np.ndarray | None:
        """(V, 2) photo-px shift of every head vertex for landmark moves ``residual`` ((68, 2) crop widths; None or
        all zero: None): each landmark vertex moves by its landmark's move (times this photo's px per crop width),
        and the mesh around it follows, fading over ~RESIDUAL_REACH_CM along the surface
        (:func:`residual_spread`)."""
        if residual is None:
            return None
        r = np.asarray(residual, np.float64)
        if not np.any(r):
            return None
        if self._spread is None:
            self._spread = residual_spread(self.renderer.head, self.renderer.proj.model_vertices(self.coeffs))
        pts, s = self._spread
        al = self.fit.alignment
        return (s @ (r[list(pts)] * (al.size / al.scale))).astype(np.float32)

    def render(self, coeffs, placement=None, residual=None):
        img = self.renderer.render(coeffs, max_side=self.max_side, placement=self.placement_matrix(placement),
                                   offsets=self.residual_offsets(residual)).image
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        return img

    def reference_image(self):
        img = np.asarray(self.fit.image)
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        return img

    def session(self):
        """A photo-mode session of this photo and its fit (saved with the fit: it reopens without refitting)."""
        s = Session(generator=None)
        photo = PhotoSource(str(self.path), self.fit)
        s.history.replace_silently(s.state.edited(coeffs=s.conform.coeffs(self.coeffs), photo=photo, w_offsets=None,
                                                  keyframes=()))
        s.source = str(self.path)
        return s


RESIDUAL_SIGMA_CM = 0.6  # the Gaussian of a landmark's move over the surface (geodesic cm)
RESIDUAL_REACH_CM = 2.5  # ... cut beyond this
RESIDUAL_RIDGE = 0.05  # regularisation of the interpolation at the landmark vertices


def residual_spread(head, verts: torch.Tensor, points=None) -> tuple[tuple, np.ndarray]:
    """(points, S): S (V, K) maps the moves of the K landmarks ``points`` (default
    :data:`~engine.drive.retargeting.RESIDUAL_POINTS`) to every vertex of ``head`` (posed-free ``verts``, (V, 3)
    cm): a Gaussian of the geodesic distance over the face surface (so the upper lip does not drag the lower one
    across the mouth's slit), interpolating the landmark vertices' own moves; vertices of the other parts (eyeballs,
    teeth, mouth socket) move as their nearest face vertex."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import cKDTree

    from engine.drive.retargeting import RESIDUAL_POINTS

    pts = tuple(RESIDUAL_POINTS if points is None else points)
    v = verts.detach().double().numpy()
    nf = int(head.n_face)
    tri = head.triangles.numpy()
    tri = tri[(tri < nf).all(1)]
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    g = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(nf, nf)).tocsr()
    lm = head.lm68.numpy()[list(pts)]
    d = dijkstra(g, directed=False, indices=lm, limit=RESIDUAL_REACH_CM)  # (K, nf)
    phi = np.where(np.isfinite(d), np.exp(-0.5 * (d / RESIDUAL_SIGMA_CM) ** 2), 0.0).T  # (nf, K)
    a = np.linalg.solve(phi[lm] + RESIDUAL_RIDGE * np.eye(len(lm)), np.eye(len(lm)))
    s_face = phi @ a
    s = np.zeros((int(head.n_vertices), len(lm)))
    s[:nf] = s_face
    if head.n_vertices > nf:
        _, near = cKDTree(v[:nf]).query(v[nf:])
        s[nf:] = s_face[near]
    return pts, s


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_target(path, size: int | None = None, progress=None, cancel=None) -> Target:
    """A session file (.json) or a photo; ``size``: the session's render size / the photo's longest side."""
    p = Path(path)
    if not p.exists():
        raise DriveError(f"target not found: {p}")
    suf = p.suffix.lower()
    if suf == ".json":
        return SessionTarget(p, size)
    if suf in PHOTO_SUFFIXES:
        return PhotoTarget(p, max_side=size, progress=progress, cancel=cancel)
    raise DriveError(f"the target must be a photo ({', '.join(PHOTO_SUFFIXES)}) or a session (.json), "
                     f"got {p.name}")
