"""Drive a face from a video (DESIGN.md §7, issue 16): the expression and head motion of a filmed person onto a
photo (photo mode) or a generated face (a session), keeping the target's identity, albedo, light and noise.

One module per step (this file only re-exports their public names):

1. read the video — :mod:`engine.drive.video` (probe, stream frames; the atomic MP4 writer);
2. track — :mod:`engine.drive.track` (:class:`FaceTracker` per frame, the expression + pose solve,
   :func:`track_video` → :class:`Track`; One-Euro smoothing from :mod:`engine.drive.smoothing`);
3. retarget — :mod:`engine.drive.retargeting` (:func:`retarget`: a track frame onto the target's coefficients;
   :func:`retarget_placement`, :func:`retarget_residual`: the head's move and the landmark motion beyond the model);
4. render targets — :mod:`engine.drive.targets` (:class:`PhotoTarget`, :class:`SessionTarget`, :func:`load_target`);
5. write — :mod:`engine.drive.pipeline` (:func:`drive`: the steps in order, the MP4s and the keyframe track).

Errors (:mod:`engine.drive.errors`): :class:`DriveError` (a ValueError) or :class:`VideoError` for what a user can
cause, :class:`DriveCancelled` for a cancel; neither leaves a partial output file. The command line is
``engine/cli/drive.py``.
"""
from __future__ import annotations

from engine.drive.errors import DriveCancelled, DriveError, NoFaceError
from engine.drive.pipeline import DriveResult, drive, save_track_session, side_by_side_frame
from engine.drive.retargeting import retarget, retarget_placement, retarget_residual
from engine.drive.targets import PHOTO_SUFFIXES, PhotoTarget, SessionTarget, Target, load_target
from engine.drive.track import IDENTITY_FRAMES, IDENTITY_SPAN, RNET_EVERY, SMOOTHING, Track, track_video
from engine.drive.video import VideoError, VideoInfo, probe_video

__all__ = ["DriveError", "NoFaceError", "DriveCancelled", "Track", "track_video", "retarget", "retarget_placement",
           "retarget_residual", "Target",
           "PhotoTarget", "SessionTarget", "load_target", "drive", "DriveResult", "VideoError", "VideoInfo",
           "probe_video", "SMOOTHING", "IDENTITY_FRAMES", "IDENTITY_SPAN", "RNET_EVERY", "PHOTO_SUFFIXES",
           "save_track_session", "side_by_side_frame"]
