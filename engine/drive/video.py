"""Video in and out for driving: probe, stream frames (never the whole video in memory), write an MP4 with the
source's audio (through the one MP4 writer, :class:`engine.io.video.Mp4Writer`).

Reading goes through the ffmpeg executable that ``imageio_ffmpeg`` ships (mp4, mov, webm, mkv, avi, gif, ...).
Frames are streamed one at a time as uint8 RGB arrays. Stated fallbacks:

- **large frames** (4K): ffmpeg scales them down so the long side is at most ``MAX_TRACK_SIDE`` px before they reach
  Python (tracking needs no more; the output is at the target's resolution anyway);
- **variable frame rate**: detected from the packet timestamps (``framemd5`` of the stream copy, no decoding); the
  video is then resampled by ffmpeg to a constant rate equal to its average frame rate, so the output keeps the
  source's duration and stays in sync with its audio.

Every problem a user can cause (missing file, folder, empty file, not a video, no frames) is one
:class:`VideoError` naming the file.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from engine.drive.errors import DriveCancelled
from engine.io.video import Mp4Writer, ffmpeg_exe

MAX_TRACK_SIDE = 1280
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic")
MAX_FRAMES = 100_000


class VideoError(ValueError):
    """A video that cannot be used; the message names the file and the problem."""


@dataclass
class VideoInfo:
    path: Path
    n_frames: int  # frames that will be read (after a constant-rate resampling when the source is VFR)
    fps: float  # frames per second of what is read
    duration: float  # seconds
    source_size: tuple  # (width, height) as stored
    size: tuple  # (width, height) of the frames read (scaled down when the source is large)
    has_audio: bool
    audio_codec: str | None
    variable_rate: bool
    codec: str = ""
    notes: list = field(default_factory=list)  # fallbacks taken, one line each

    @property
    def scaled(self) -> bool:
        return tuple(self.size) != tuple(self.source_size)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        raise VideoError(f"{path} is a folder, not a video file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise VideoError(f"{path.name}: the file is empty")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if _is_image(path):
            raise VideoError(f"{path.name} is a still image, not a video (use it as the target photo instead)")
        raise VideoError(f"{path.name} is not a video (nor the image its name suggests: no picture in it)")


def _is_image(path: Path) -> bool:
    """The file holds a picture PIL can read (the name alone says nothing: a text file can be called x.jpg)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception:  # PIL raises many kinds for a non-image
        return False
    return True


def _starts_like_mp4(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


def _header_meta(path: Path) -> dict:
    """ffmpeg's header of ``path`` parsed into imageio_ffmpeg's meta dict (codec, fps, size, duration, audio)."""
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(gen)
    except (OSError, IndexError, ValueError, RuntimeError, StopIteration) as exc:
        text = str(exc)
        reason = "not a video file (or a format ffmpeg cannot read)"
        if isinstance(exc, IndexError) or "does not contain any stream" in text:  # no video stream
            reason = "there is no video stream in it (zero-length, or audio only)"
        if "moov atom not found" in text and _starts_like_mp4(path):
            reason = "a truncated or unfinished video (no index: 'moov atom not found')"
        elif "Invalid data" in text:
            reason = "not a video file: ffmpeg finds no valid data in it"
        raise VideoError(f"{path.name}: {reason}") from None
    finally:
        with contextlib.suppress(Exception):
            gen.close()
    return meta


def _packet_times(path: Path) -> np.ndarray:
    """Presentation times (s) of the first video stream's packets, from a stream copy (no decoding)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framemd5",
           "-"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return np.zeros(0)
    tb = 1.0
    pts = []
    for line in r.stdout.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            tb = float(num) / float(den)
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4 and parts[0] == "0":
                try:
                    pts.append(int(parts[2]))
                except ValueError:
                    continue
    return np.sort(np.asarray(pts, np.float64)) * tb


def _is_variable_rate(times: np.ndarray) -> bool:
    if len(times) < 4:
        return False
    d = np.diff(times)
    d = d[d > 0]
    if len(d) < 3:
        return False
    med = float(np.median(d))
    off = np.abs(d - med) > 0.25 * med
    return int(off.sum()) > max(1, int(0.01 * len(d)))


def probe_video(path) -> VideoInfo:
    """Check a video and describe it (frame count, fps, sizes, audio, variable rate) without decoding it."""
    path = Path(path)
    _check_file(path)
    meta = _header_meta(path)
    src_size = tuple(int(v) for v in meta.get("source_size", meta.get("size", (0, 0))))
    if min(src_size) <= 0:
        raise VideoError(f"{path.name}: the video stream has no frame size")
    times = _packet_times(path)
    n_packets = len(times)
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    if n_packets == 0:
        raise VideoError(f"{path.name}: the video has no frames (zero-length)")
    notes = []
    vfr = _is_variable_rate(times)
    if n_packets >= 2:
        span = float(times[-1] - times[0])
        avg = (n_packets - 1) / span if span > 0 else fps
    else:
        avg = fps
    if vfr:
        fps = avg
        duration = n_packets / fps if fps > 0 else duration
        notes.append(f"variable frame rate: resampled to a constant {fps:.3f} fps (the average)")
    if not fps or fps <= 0 or not np.isfinite(fps):
        fps = avg if avg and avg > 0 else 25.0
        notes.append(f"no frame rate in the file: using {fps:.3f} fps")
    fps = float(min(max(fps, 1.0), 240.0))
    n = n_packets if not vfr else max(1, int(round(duration * fps)))
    if n > MAX_FRAMES:
        raise VideoError(f"{path.name}: {n} frames is more than the {MAX_FRAMES} a drive can take; cut the video")
    w, h = src_size
    if meta.get("rotate") in (90, 270):  # ffmpeg auto-rotates; what we receive is transposed
        w, h = h, w
    s = min(1.0, MAX_TRACK_SIDE / max(w, h))
    size = (w, h) if s == 1.0 else (max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2))
    if s < 1.0:
        notes.append(f"large frames ({w}x{h}): tracked at {size[0]}x{size[1]}")
    audio = meta.get("audio_codec")
    return VideoInfo(path=path, n_frames=int(n), fps=fps, duration=duration if duration > 0 else n / fps,
                     source_size=(w, h), size=size, has_audio=audio is not None, audio_codec=audio,
                     variable_rate=vfr, codec=str(meta.get("codec", "")), notes=notes)


def iter_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """Stream the frames of a probed video as (H, W, 3) uint8 RGB arrays (scaled / resampled as ``info`` says)."""
    filters = []
    if info.variable_rate:
        filters.append(f"fps={info.fps:.6f}")
    if info.scaled:
        filters.append(f"scale={info.size[0]}:{info.size[1]}:flags=area")
    out = ["-map", "0:v:0", "-an", "-sn"]
    if filters:
        out += ["-vf", ",".join(filters)]
    gen = imageio_ffmpeg.read_frames(str(info.path), output_params=out)
    try:
        try:
            meta = next(gen)
        except (OSError, IndexError, ValueError, RuntimeError, StopIteration):
            raise VideoError(f"{info.path.name}: ffmpeg could not read the video") from None
        w, h = meta["size"]
        for raw in gen:
            a = np.frombuffer(raw, np.uint8)
            if a.size != w * h * 3:
                break
            yield a.reshape(h, w, 3)
    except RuntimeError as exc:  # ffmpeg failed mid-stream: a corrupt file
        raise VideoError(f"{info.path.name}: the video is corrupt ({str(exc).splitlines()[0][:120]})") from None
    finally:
        with contextlib.suppress(Exception):
            gen.close()


class VideoWriter(Mp4Writer):
    """The drive's MP4 output (:class:`engine.io.video.Mp4Writer`): the path must end in .mp4 and its folder must
    exist; problems are :class:`VideoError`."""

    error = VideoError

    def __init__(self, path, fps: float, audio_from=None, n_frames: int | None = None):
        path = Path(path)
        if path.suffix.lower() != ".mp4":
            raise VideoError(f"the output must be an .mp4 file, got {path.name}")
        if not path.parent.exists():
            raise VideoError(f"folder {path.parent} does not exist")
        super().__init__(path, fps, audio_from, n_frames)


def write_video(frames, path, fps: float, audio_from=None, progress=None, cancel=None) -> Path:
    """Write uint8 RGB frames (all the same size) to an H.264 MP4 at ``fps``, atomically (see
    :class:`VideoWriter`). ``cancel()`` returning True stops with ``DriveCancelled`` and leaves nothing."""
    w = VideoWriter(path, fps, audio_from)
    try:
        for f in frames:
            if cancel is not None and cancel():
                raise DriveCancelled("cancelled")
            w.append(f)
            if progress is not None:
                progress(w.count)
        w.finish()
        return w.commit()
    except BaseException:
        w.abort()
        raise


def has_audio(path) -> bool:
    """Whether ffmpeg sees an audio stream in ``path``."""
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                       timeout=60)
    return bool(re.search(r"Stream #\S+.*Audio:", r.stderr))
