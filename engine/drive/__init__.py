"""Drive a face from a video (DESIGN.md §7, issue 16): the expression and head motion of a filmed person onto a
photo (photo mode) or a generated face (a session), keeping the target's identity, albedo, light and noise.

Pipeline (no Qt):

1. :func:`track_video` streams the video (:mod:`engine.drive.video`), tracks the face frame to frame
   (:class:`~engine.drive.track.FaceTracker`: dlib detection only on loss, landmarks on the tracked box, R-Net),
   fixes identity/albedo/light from the first good frames and solves expression + pose per frame
   (:class:`~engine.drive.track.ExpressionPoseSolver`), holds the last fit over frames without a face (counted),
   and smooths every coefficient with a One-Euro filter (:mod:`engine.drive.smoothing`). → :class:`Track`.
2. :func:`retarget` puts a track frame onto the target's coefficients (expression: absolute or relative to the
   source's first frame; pose: relative to the source's first frame; a strength per group).
3. :func:`drive` renders every frame through a :class:`Target` (photo or session), writes the MP4 at the target's
   size with the source's frame count, fps and audio (atomic), optionally a side-by-side preview and the track as
   a session JSON whose keyframes the editor opens.

Errors a user can cause are :class:`DriveError` (a ValueError) or the video module's :class:`VideoError`; a cancel
raises :class:`DriveCancelled`; neither leaves a partial output file.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from engine.drive.smoothing import OneEuroFilter
from engine.drive.track import (ExpressionPoseSolver, FaceTracker, Observation, estimate_identity, pose_from_rotation,
                                renderer_for, rotation_np)
from engine.drive.video import VideoError, VideoInfo, VideoWriter, iter_frames, probe_video
from engine.editing.photo_import import PhotoSource
from engine.editing.session import Session, SessionError
from engine.face.model import N_EXP, Coefficients, default_model
from engine.perception.rnet import default_rnet

__all__ = ["DriveError", "NoFaceError", "DriveCancelled", "Track", "track_video", "retarget", "Target",
           "PhotoTarget", "SessionTarget", "load_target", "drive", "DriveResult", "VideoError", "probe_video",
           "SMOOTHING"]

IDENTITY_FRAMES = 8  # good frames used to fix identity / albedo / light
IDENTITY_SPAN = 90  # ... taken among the first this many good frames
RNET_EVERY = IDENTITY_SPAN // IDENTITY_FRAMES  # R-Net reads every this many of those (and every re-detection)
# One-Euro settings: (min_cutoff Hz, beta) for pose (radians) and expression weights
SMOOTHING = {"pose": (0.8, 6.0), "expression": (1.5, 3.0), "d_cutoff": 1.0}


class DriveError(ValueError):
    """A drive the user asked for that cannot be done; the message says why."""


class NoFaceError(DriveError):
    """No face was found in any frame of the video."""


class DriveCancelled(Exception):
    """The user cancelled; nothing was written."""


# -------------------------------------------------------------------------------------------------------- track
@dataclass
class Track:
    """Per-frame expression + pose of a video's face (index = frame)."""

    info: VideoInfo
    raw: np.ndarray  # (T, 56): expression (53) then yaw, pitch, roll (radians, roll in the frame's plane)
    smoothed: np.ndarray  # (T, 56) after the One-Euro filter
    found: np.ndarray  # (T,) bool: a face was tracked in the frame (else the last fit is held)
    base: Coefficients  # batch 1: the source's identity, albedo, light (expression/pose zero)
    exp_names: tuple
    n_detections: int = 0
    ms_track: list = field(default_factory=list)  # per found frame: landmarks + align + R-Net (+ detection)
    ms_fit: list = field(default_factory=list)  # per found frame: the expression + pose solve
    notes: list = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.raw)

    @property
    def fps(self) -> float:
        return self.info.fps

    @property
    def n_lost(self) -> int:
        return int((~self.found).sum())

    @property
    def first_found(self) -> int:
        return int(np.argmax(self.found))

    def values(self, smoothed: bool = True) -> np.ndarray:
        return self.smoothed if smoothed else self.raw

    def coefficients(self, i: int, smoothed: bool = True) -> Coefficients:
        """The source's own coefficients at frame ``i`` (batch 1)."""
        v = self.values(smoothed)[i]
        c = self.base.clone()
        c.expression = torch.as_tensor(v[:N_EXP], dtype=torch.float32)[None].clone()
        c.pose = torch.as_tensor(v[N_EXP:], dtype=torch.float32)[None].clone()
        return c

    def series(self, name: str, smoothed: bool = True) -> np.ndarray:
        """(T,) one coefficient over time: an expression name, or yaw / pitch / roll (degrees)."""
        v = self.values(smoothed)
        if name in ("yaw", "pitch", "roll"):
            return np.degrees(v[:, N_EXP + ("yaw", "pitch", "roll").index(name)])
        return v[:, self.exp_names.index(name)]

    def summary(self) -> str:
        s = f"{self.n_frames} frames at {self.fps:.3g} fps, face tracked in {self.n_frames - self.n_lost}"
        if self.n_lost:
            s += f"; {self.n_lost} frame(s) without a face held the last fit"
        return s


def _smooth(raw: np.ndarray, fps: float, params: dict | None = None) -> np.ndarray:
    p = dict(SMOOTHING, **(params or {}))
    mc = np.concatenate([np.full(N_EXP, p["expression"][0]), np.full(3, p["pose"][0])])
    beta = np.concatenate([np.full(N_EXP, p["expression"][1]), np.full(3, p["pose"][1])])
    f = OneEuroFilter(fps, mc, beta, p["d_cutoff"])
    out = f.filter_sequence(raw)
    out[:, :N_EXP] = np.clip(out[:, :N_EXP], 0.0, 1.0)
    return out


def _unwrap_roll(vals: list[np.ndarray]) -> None:
    """Keep roll continuous across +-pi (in place)."""
    for a, b in zip(vals, vals[1:]):
        d = b[N_EXP + 2] - a[N_EXP + 2]
        b[N_EXP + 2] -= 2 * math.pi * round(d / (2 * math.pi))


def track_video(video, progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                smoothing: dict | bool | None = None, detect_every: int = 60, model=None, rnet=None,
                info: VideoInfo | None = None, full_search_every: int = 10) -> Track:
    """Track and fit the face of every frame of ``video`` (a path). ``progress(done, total)``: tracking is the
    first half, the per-frame fit the second. A lost face is looked for around its last box every frame and on
    the full frame every ``full_search_every`` frames (:class:`~engine.drive.track.FaceTracker`).

    Raises :class:`VideoError` (unreadable video), :class:`NoFaceError` (no face in any frame),
    :class:`DriveCancelled`."""
    info = info or probe_video(video)
    model = model or default_model()
    rnet = rnet or default_rnet()
    renderer = renderer_for(model)
    tracker = FaceTracker(rnet, detect_every=detect_every, full_search_every=full_search_every)
    size = tracker.crop_size
    obs: list[Observation | None] = []
    ms_track = []
    n = 0
    n_found = 0
    for frame in iter_frames(info):
        if cancel is not None and cancel():
            raise DriveCancelled("cancelled")
        t0 = time.perf_counter()
        # R-Net where its reading is used: the frames the identity may come from, and each re-detection (a new start)
        o = tracker.observe(frame, n, need_rnet=n_found < IDENTITY_SPAN and n_found % RNET_EVERY == 0)
        if o is not None:
            n_found += 1
            ms_track.append((time.perf_counter() - t0) * 1000.0)
        obs.append(o)
        n += 1
        if progress is not None:  # tracking is the first half of the work, the fit the second
            progress(n, 2 * max(n, info.n_frames))
    if n == 0:
        raise VideoError(f"{info.path.name}: the video has no frames (zero-length)")
    good = [o for o in obs if o is not None]
    if not good:
        raise NoFaceError(f"{info.path.name}: no face found in any of its {n} frames (use a video with a clearly "
                          f"visible, roughly frontal face)")
    # identity / albedo / light from a few good frames near the start (spread over the first IDENTITY_SPAN)
    early = [o for o in good[:IDENTITY_SPAN] if o.rnet is not None]
    pick = [early[int(i)] for i in np.unique(np.linspace(0, len(early) - 1, min(IDENTITY_FRAMES, len(early)))
                                             .round().astype(int))]
    base = estimate_identity(pick, model, renderer, size)
    solver = ExpressionPoseSolver(model, renderer, base.identity, size)
    raw = []
    found = np.zeros(n, bool)
    ms_fit = []
    prev = None  # the previous frame's solution in its crop (expression, pose, 2D similarity)
    for i, o in enumerate(obs):
        if i % 16 == 0:
            if cancel is not None and cancel():
                raise DriveCancelled("cancelled")
            if progress is not None:
                progress(n + i, 2 * n)
        if o is None:
            raw.append(None)
            continue
        found[i] = True
        prior = None if o.rnet is None else o.rnet.expression[0].numpy().astype(np.float64)
        if prev is None or (o.detected and o.rnet is not None):  # a (re)start: from R-Net's reading
            x0 = np.concatenate([prior, o.rnet.pose[0].numpy()])
        else:
            x0 = prev
        t0 = time.perf_counter()
        prev = solver.solve(o.landmarks, x0, prior)
        ms_fit.append((time.perf_counter() - t0) * 1000.0)
        x_frame = prev[:N_EXP + 3].copy()
        # the crop's pose -> the frame's: compose the in-plane rotation the alignment removed
        x_frame[N_EXP:] = pose_from_rotation(rotation_np([0.0, 0.0, o.roll_offset]) @ rotation_np(prev[N_EXP:N_EXP + 3]))
        raw.append(x_frame)
    # hold the last fit over frames without a face (and the first fit before the first face)
    first = next(v for v in raw if v is not None)
    last = first
    for i in range(n):
        if raw[i] is None:
            raw[i] = last.copy()
        else:
            last = raw[i]
    _unwrap_roll(raw)
    raw = np.stack(raw)
    smoothed = raw.copy() if smoothing is False else _smooth(raw, info.fps, smoothing or None)
    if progress is not None:
        progress(2 * n, 2 * n)
    notes = list(info.notes)
    lost = int((~found).sum())
    if lost:
        notes.append(f"no face in {lost} of {n} frames: the last fit was held there")
    return Track(info=info, raw=raw, smoothed=smoothed, found=found, base=base, exp_names=model.exp_names,
                 n_detections=tracker.n_detections, ms_track=ms_track, ms_fit=ms_fit, notes=notes)


# ----------------------------------------------------------------------------------------------------- retarget
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


# ------------------------------------------------------------------------------------------------------ targets
class Target:
    """What gets driven: base coefficients (identity, albedo, light...), how to render them, and the reference
    image for identity checks."""

    kind = "target"
    coeffs: Coefficients
    noise: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:  # (width, height) of the rendered frames
        raise NotImplementedError

    def render(self, coeffs: Coefficients) -> np.ndarray:
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

    def render(self, coeffs):
        return self.sess.render_state(coeffs, self.noise, self._size, w_offsets=self._w_offsets).image


    def session(self):
        """A session for the keyframe track: the loaded file's, or a fresh copy of a live session's face."""
        if self.path is not None:
            return self.sess
        fd, tmp = tempfile.mkstemp(suffix=".json")  # an exact copy (noise, truncation, offsets) via the file format
        os.close(fd)
        try:
            self.sess.save(tmp)
            s = Session.load(tmp, model=self.sess.model, generator=self.sess.generator)
        finally:
            os.unlink(tmp)
        s.set_coefficients(self.coeffs.clone(), self.noise.clone(), commit=False)
        return s


class PhotoTarget(Target):
    """A photo, edited at its own resolution by photo mode (``engine.photo``)."""

    kind = "photo"

    def __init__(self, path, max_side: int | None = None, progress=None, cancel=None):
        try:
            from engine.photo.fit import fit_photo
            from engine.photo.renderer import PhotoRenderer
        except ImportError as exc:
            raise DriveError(f"photo targets need photo mode, which is not available in this build ({exc}); "
                             f"use a session (.json) as the target") from None
        self.path = Path(path)
        try:
            self.fit = fit_photo(str(self.path), progress=progress, cancel=cancel)
        except Exception as exc:
            if "cancel" in type(exc).__name__.lower():
                raise DriveCancelled("cancelled") from None
            raise
        self.renderer = PhotoRenderer(self.fit)
        self.coeffs = self.fit.coeffs.detach().clone()
        self.max_side = max_side
        h, w = self.fit.image.shape[:2]
        s = 1.0 if max_side is None else min(1.0, int(max_side) / max(h, w))
        self._size = (max(1, round(w * s)), max(1, round(h * s))) if s < 1 else (w, h)

    @property
    def size(self):
        return self._size

    def render(self, coeffs):
        img = self.renderer.render(coeffs, max_side=self.max_side).image
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


# -------------------------------------------------------------------------------------------------------- drive
@dataclass
class DriveResult:
    output: Path
    track: Track
    n_frames: int
    fps: float
    size: tuple
    audio: bool
    side_by_side: Path | None = None
    track_file: Path | None = None
    seconds: dict = field(default_factory=dict)

    def summary(self) -> str:
        s = (f"wrote {self.output} ({self.n_frames} frames, {self.fps:.3g} fps, {self.size[0]}x{self.size[1]}, "
             f"{'with' if self.audio else 'no'} audio); {self.track.summary()}")
        return s


def side_by_side_frame(source: np.ndarray, result: np.ndarray) -> np.ndarray:
    """source | result at the result's height."""
    h = result.shape[0]
    sw = max(2, int(round(source.shape[1] * h / source.shape[0])))
    src = cv2.resize(source, (sw, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([src, result], 1)


def save_track_session(track: Track, target: Target, path, every: int = 1, **retarget_kw) -> Path:
    """The driven coefficients as a session whose keyframes (one per ``every`` frames, at the frame's time)
    the editor opens, scrubs and edits: all keyframes in one ``Session.set_keyframes`` call (one undo step, linear
    time). A photo target's track is a photo-mode session (the photo's path and fit): it reopens without refitting."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise DriveError(f"the track file must end in .json: {path.name}")
    if not path.parent.exists():
        raise DriveError(f"folder {path.parent} does not exist")
    every = max(1, int(every))
    sess = target.session()
    noise = target.noise if target.noise is not None else sess.noise
    idx = list(range(0, track.n_frames, every))
    if idx[-1] != track.n_frames - 1:
        idx.append(track.n_frames - 1)
    noise = noise.clone()  # keyframes share it (snapshots are never changed in place)
    sess.set_keyframes([(i / track.fps, (retarget(target.coeffs, track, i, **retarget_kw), noise)) for i in idx])
    sess.set_coefficients(retarget(target.coeffs, track, idx[0], **retarget_kw), noise, commit=False)
    try:
        sess.save(path)
    except SessionError as exc:
        raise DriveError(str(exc)) from None
    return path


def drive(video, target, output, *, expression_only: bool = False, expression_strength: float = 1.0,
          pose_strength: float = 1.0, relative_expression: bool = False, side_by_side=None, track_path=None,
          track_every: int = 1, size: int | None = None, keep_audio: bool = True, smoothing=None,
          progress: Callable[[str, int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
          track: Track | None = None) -> DriveResult:
    """Drive ``target`` (a :class:`Target`, a photo path or a session .json) from ``video``; write ``output``
    (.mp4). ``side_by_side``: a path, or True for ``<output stem>_side_by_side.mp4``. ``progress(stage, done,
    total)`` with stage "target", "tracking" or "rendering"."""
    times = {}
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise DriveError(f"the output must be an .mp4 file, got {output.name}")
    if not output.parent.exists():
        raise DriveError(f"folder {output.parent} does not exist")
    sbs = None
    if side_by_side:
        sbs = output.with_name(output.stem + "_side_by_side.mp4") if side_by_side is True else Path(side_by_side)
        if sbs.suffix.lower() != ".mp4":
            raise DriveError(f"the side-by-side preview must be an .mp4 file, got {sbs.name}")
        if not sbs.parent.exists():
            raise DriveError(f"folder {sbs.parent} does not exist")
    if track_path is not None:
        tp = Path(track_path)
        if tp.suffix.lower() != ".json":
            raise DriveError(f"the track file must end in .json: {tp.name}")
        if not tp.parent.exists():
            raise DriveError(f"folder {tp.parent} does not exist")
    for name, v in (("expression strength", expression_strength), ("pose strength", pose_strength)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 2.0):
            raise DriveError(f"{name} must be between 0 and 2, got {v}")
    cancel_fn = cancel.is_set if hasattr(cancel, "is_set") else cancel
    info = probe_video(video) if track is None else track.info
    t0 = time.perf_counter()
    if not isinstance(target, Target):
        if progress is not None:
            progress("target", 0, 1)
        target = load_target(target, size, cancel=cancel_fn)
    times["target"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if track is None:
        track = track_video(video, progress=(lambda d, t: progress("tracking", d, t)) if progress else None,
                            cancel=cancel_fn, smoothing=smoothing, info=info)
    times["tracking"] = time.perf_counter() - t0
    kw = dict(expression_strength=expression_strength, pose_strength=pose_strength,
              head_motion=not expression_only, relative_expression=relative_expression)
    n = track.n_frames
    audio_src = info.path if keep_audio and info.has_audio else None
    writers = [VideoWriter(output, track.fps, audio_src, n)]
    if sbs is not None:
        writers.append(VideoWriter(sbs, track.fps, audio_src, n))
    sources = iter_frames(info) if sbs is not None else None
    t0 = time.perf_counter()
    try:
        for i in range(n):
            if cancel_fn is not None and cancel_fn():
                raise DriveCancelled("cancelled")
            img = target.render(retarget(target.coeffs, track, i, **kw))
            writers[0].append(img)
            if sources is not None:
                src = next(sources, None)
                if src is not None:  # (a resampled VFR source can end a frame early: the preview is shorter)
                    writers[1].append(side_by_side_frame(src, img))
            if progress is not None:
                progress("rendering", i + 1, n)
        for w in writers:
            w.finish()
        tf = None
        if track_path is not None:
            tf = save_track_session(track, target, track_path, every=track_every, **kw)
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        if sources is not None:
            sources.close()
    times["rendering"] = time.perf_counter() - t0
    return DriveResult(output=output, track=track, n_frames=n, fps=track.fps, size=target.size,
                       audio=audio_src is not None, side_by_side=sbs, track_file=tf, seconds=times)
