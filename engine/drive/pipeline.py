"""A drive, step by step: read the video (:mod:`~engine.drive.video`) → track it (:mod:`~engine.drive.track`) →
retarget each frame (:mod:`~engine.drive.retargeting`) → render it through the target
(:mod:`~engine.drive.targets`) → write the MP4 at the target's size with the source's frame count, fps and audio
(atomic), optionally a side-by-side preview and the track as a session JSON whose keyframes the editor opens.

With render workers the tracking and the rendering run at once (:class:`~engine.drive.track.TrackStream`: a frame
is rendered once its smoothed values are final, while later frames are still being tracked; the workers get each
frame's coefficients down their pipes, :func:`~engine.render.frame_pool.render_stream`); without (one core, the
editor, ``$DISCOFACE_DRIVE_STREAM=off``) the whole video is tracked first. Both write the same frames.

Errors a user can cause are :class:`~engine.drive.errors.DriveError` (a ValueError) or the video module's
:class:`~engine.drive.video.VideoError`; a cancel raises :class:`~engine.drive.errors.DriveCancelled`; neither
leaves a partial output file.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from engine.drive.errors import DriveCancelled, DriveError
from engine.render.frame_pool import MIN_FRAMES, default_workers, render_frames, render_stream
from engine.drive.retargeting import retarget, retarget_placement, retarget_residual
from engine.drive.targets import Target, load_target
from engine.drive.track import IDENTITY_SPAN, Track, TrackStream, track_video
from engine.drive.video import VideoWriter, iter_frames, probe_video
from engine.editing.session import SessionError
from engine.io.files import check_writable

__all__ = ["DriveResult", "drive", "save_track_session", "side_by_side_frame"]


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
    video_size: tuple | None = None  # (width, height) in the file: H.264 pads an odd size to even

    def summary(self) -> str:
        w, h = self.video_size or self.size
        pad = (f" (the {self.size[0]}x{self.size[1]} frames padded to even: H.264 needs it)"
               if (w, h) != tuple(self.size) else "")
        s = (f"wrote {self.output} ({self.n_frames} frames, {self.fps:.3g} fps, {w}x{h}{pad}, "
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
          pose_strength: float = 1.0, relative_expression: bool = True, keep_placement: bool = False,
          side_by_side=None, track_path=None, track_every: int = 1, size: int | None = None, keep_audio: bool = True, smoothing=None,
          progress: Callable[[str, int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
          track: Track | None = None, landmark_residual: bool = True) -> DriveResult:
    """Drive ``target`` (a :class:`Target`, a photo path or a session .json) from ``video``; write ``output``
    (.mp4). ``side_by_side``: a path, or True for ``<output stem>_side_by_side.mp4``. ``progress(stage, done,
    total)`` with stage "target", "tracking" or "rendering". The head moves and scales in the frame as the source's
    does since its first frame (photo targets), unless ``keep_placement`` or ``expression_only``. With
    ``landmark_residual`` (and relative expression) a photo target's face also takes the change of the source's
    landmark residual (:func:`~engine.drive.retargeting.retarget_residual`: what the source's model fit misses)."""
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
    for p in (output, sbs, track_path):  # an output that cannot be written fails now, not after the tracking
        if p is not None:
            check_writable(p)
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
    kw = dict(expression_strength=expression_strength, pose_strength=pose_strength,
              head_motion=not expression_only, relative_expression=relative_expression)
    if relative_expression and hasattr(target, "gaze_read_gain"):  # (a photo: its eye layer's iris read gain)
        kw["gaze_gain"] = target.gaze_read_gain()
    audio_src = info.path if keep_audio and info.has_audio else None

    def move(tr: Track, i: int):
        """What the target draws beyond the coefficients: (the head's move in the frame, the landmark residual)."""
        mv = None if expression_only or keep_placement else retarget_placement(tr, i, pose_strength)
        res = retarget_residual(tr, i, expression_strength) if landmark_residual and relative_expression else None
        return mv, res

    t0 = time.perf_counter()
    stream = None
    if track is None and _streaming(info):
        # track and render at once: a frame is rendered as soon as its smoothed values are final (TrackStream)
        rendering = []  # once frames come out, only the rendering is reported (the CLI shows one bar at a time)
        stream = TrackStream(video, progress=_track_progress(lambda *a: rendering or progress(*a))
                             if progress else None, cancel=cancel_fn, smoothing=smoothing, info=info)
        coeffs = target.coeffs[0:1].detach()

        def render(job):
            exp, pose, (mv, res) = job
            c = coeffs.clone()
            c.expression, c.pose = torch.from_numpy(exp)[None], torch.from_numpy(pose)[None]
            return target.render(c, mv, res)

        frames = render_stream(render, _jobs(stream, target, kw, move, times, t0))
        n = info.n_frames  # (an estimate until the stream ends)
    else:
        if track is None:
            track = track_video(video, progress=_track_progress(progress) if progress else None,
                                cancel=cancel_fn, smoothing=smoothing, info=info)
        times["tracking"] = time.perf_counter() - t0
        n = track.n_frames

        def render_index(i: int):
            return target.render(retarget(target.coeffs, track, i, **kw), *move(track, i))

        frames = render_frames(render_index, n)  # in parallel when worth it; forks: before the writers open pipes
    writers = [VideoWriter(output, info.fps, audio_src, n)]
    if sbs is not None:
        writers.append(VideoWriter(sbs, info.fps, audio_src, n))
    sources = iter_frames(info) if sbs is not None else None
    t0 = time.perf_counter()
    try:
        i = 0
        for img in frames:
            if cancel_fn is not None and cancel_fn():
                raise DriveCancelled("cancelled")
            writers[0].append(img)
            if sources is not None:
                src = next(sources, None)
                if src is not None:  # (a resampled VFR source can end a frame early: the preview is shorter)
                    writers[1].append(side_by_side_frame(src, img))
            i += 1
            if stream is not None and not rendering:
                rendering.append(True)
            if progress is not None:
                progress("rendering", i, max(i, n if stream is None else
                                             (stream.track.n_frames if stream.track else info.n_frames)))
        if stream is not None:
            track, n = stream.track, stream.track.n_frames
            for w in writers:
                w.n_frames = n  # the audio is cut to the frames written
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
        frames.close()
        if sources is not None:
            sources.close()
    times["rendering"] = time.perf_counter() - t0
    shape = writers[0].shape
    return DriveResult(output=output, track=track, n_frames=n, fps=track.fps, size=target.size,
                       audio=audio_src is not None, side_by_side=sbs, track_file=tf, seconds=times,
                       video_size=(shape[1], shape[0]) if shape is not None else None)


STREAM_ENV = "DISCOFACE_DRIVE_STREAM"  # "0" / "off": track the whole video first, then render (as before)


def _streaming(info) -> bool:
    """Track and render at once: with render workers (engine/render/frame_pool.py) and a clip long enough to have
    frames final before its end (the identity's IDENTITY_SPAN frames and the smoothing's window), unless
    ``$DISCOFACE_DRIVE_STREAM`` is off. The frames are the same either way (tests/test_drive.py)."""
    if os.environ.get(STREAM_ENV, "").strip().lower() in ("0", "off", "no", "false"):
        return False
    return (default_workers() > 1 and "fork" in mp.get_all_start_methods()
            and info.n_frames >= IDENTITY_SPAN + MIN_FRAMES)


def _jobs(stream: TrackStream, target: Target, kw: dict, move, times: dict, t0: float):
    """A render job (the frame's expression, pose and head move: what the worker needs) for each frame the stream
    makes final; ``None`` after each tracked frame that made none."""
    done = 0
    for part in stream:
        if part is None:
            yield None
            continue
        for i in range(done, part.n_frames):
            c = retarget(target.coeffs, part, i, **kw)
            yield c.expression[0].numpy(), c.pose[0].numpy(), move(part, i)
        done = part.n_frames
    times["tracking"] = time.perf_counter() - t0


def _track_progress(progress):
    """``track_video`` counts its two halves (locating the face, fitting it) as one 0..2n: report them as the
    stages "tracking" and "fitting", each in frames."""
    def report(done: int, total: int) -> None:
        half = max(1, total // 2)
        if done <= half:
            progress("tracking", done, half)
        else:
            progress("fitting", done - half, half)
    return report
