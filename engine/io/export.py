"""Export frames (a keyframe animation) as a PNG sequence, a looping GIF or an H.264 MP4.

Every output is atomic: frames go into a temporary file/folder beside the target, which is renamed into place
only when every frame is written (missing parent folders are created; an unwritable target is an ``OutputError``,
a ValueError, saying ``cannot write PATH: reason``). A cancel (``cancel()`` returning True, or a set ``threading.Event``) or an error
leaves nothing behind, not even a partial file.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from engine.io.files import atomic_folder, atomic_path
from engine.io.video import Mp4Writer

FORMATS = ("png", "gif", "mp4")
MAX_FRAMES = 10000


class ExportError(ValueError):
    """An export the user asked for that cannot be done (bad path, bad value); the message says why."""


class ExportCancelled(Exception):
    """The user cancelled the export; nothing was written."""


@runtime_checkable
class KeyframedFrames(Protocol):
    """What :func:`export_sequence` renders frames from (``engine.editing.session.Session`` is one; ``io`` does
    not import ``editing``)."""

    keyframes: Sequence
    duration: float  # seconds from the first keyframe to the last

    def iter_frames(self, n_frames: int, size: int | None = None) -> Iterator[np.ndarray]: ...


def format_for(path: Path | str, fmt: str | None = None) -> str:
    """The export format of ``path`` (``.gif``, ``.mp4``, or a folder for PNG frames).

    With ``fmt`` given, the path must agree with it: GIF bytes never go into a ``.mp4`` (or the reverse).
    """
    name = Path(path).name
    suf = Path(path).suffix.lower()
    if fmt:
        fmt = str(fmt).lower().lstrip(".")
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}: use png, gif or mp4")
        if fmt in ("gif", "mp4") and suf != f".{fmt}":
            raise ExportError(f"{name!r} does not end in .{fmt}: the format is {fmt.upper()}, so name the file "
                              f"….{fmt} (or choose the format that matches the name)")
        if fmt == "png" and suf in (".gif", ".mp4"):
            raise ExportError(f"{name!r} ends in {suf} but the format is PNG frames (a folder): choose format "
                              f"{suf[1:]} or a folder name")
        return fmt
    if suf in (".gif", ".mp4"):
        return suf[1:]
    if suf in ("", ".png", ".frames"):
        return "png"
    raise ExportError(f"cannot tell the export format from {name!r}: use .gif, .mp4 or a folder "
                      f"name for PNG frames")


def _cancel_fn(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


def _frame_array(f) -> np.ndarray:
    a = np.asarray(f)
    if hasattr(f, "detach"):  # torch tensor in [0, 1]
        from engine.io.files import to_uint8_image

        a = to_uint8_image(f)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ExportError(f"frames must be H x W x 3 images, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def export_sequence(frames, path: Path | str, fmt: str | None = None, fps: float = 24, n_frames: int | None = None,
                    size: int | None = None, progress: Callable[[int, int], None] | None = None,
                    cancel=None) -> Path:
    """Write ``frames`` to ``path``; returns the path written.

    ``frames`` is an iterable of images (H x W x 3 uint8, or (3, H, W) tensors in [0, 1]) or a
    :class:`KeyframedFrames` (an ``engine.editing.session.Session``) whose keyframes are rendered (``n_frames`` of them, default ``fps`` × the keyframe
    span + 1, at ``size`` px). ``progress(done, total)`` is called after each frame (total 0 when unknown).
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise ExportError(f"fps {fps!r} is not a number") from None
    if not 1 <= fps <= 120:
        raise ExportError(f"fps must be between 1 and 120, got {fps:g}")
    if size is not None and not 8 <= int(size) <= 2048:
        raise ExportError(f"frame size must be between 8 and 2048 px, got {size}")
    if n_frames is not None and not 1 <= int(n_frames) <= MAX_FRAMES:
        raise ExportError(f"frame count must be between 1 and {MAX_FRAMES}, got {n_frames}")
    if isinstance(frames, KeyframedFrames):
        sess = frames
        if not sess.keyframes:
            raise ExportError("there are no keyframes to export: add at least one on the timeline")
        if n_frames is None:
            n_frames = max(1, int(round(sess.duration * fps)) + 1)
        frames = sess.iter_frames(int(n_frames), size)
        total = int(n_frames)
    else:
        total = int(n_frames) if n_frames is not None else (len(frames) if hasattr(frames, "__len__") else 0)
    is_cancelled = _cancel_fn(cancel)
    writer = {"png": _write_png, "gif": _write_gif, "mp4": _write_mp4}[fmt]
    return writer(_guarded(frames, n_frames, total, progress, is_cancelled), path, fps)


def _guarded(frames: Iterable, n_frames, total, progress, is_cancelled):
    """Yield checked frames, checking cancel before each one and reporting progress after it."""
    count = 0
    shape = None
    for f in frames:
        if n_frames is not None and count >= int(n_frames):
            break
        if is_cancelled():
            raise ExportCancelled("export cancelled")
        a = _frame_array(f)
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ExportError(f"frame {count} has size {a.shape[:2]}, the first had {shape[:2]}")
        yield a
        count += 1
        if progress is not None:
            progress(count, total)
    if is_cancelled():
        raise ExportCancelled("export cancelled")
    if count == 0:
        raise ExportError("nothing to export (no frames)")


def _write_png(frames, path: Path, fps: float) -> Path:
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} exists and is not a folder")
    if path.is_dir() and any(not (p.name.startswith("frame_") and p.suffix == ".png") for p in path.iterdir()):
        raise ExportError(f"folder {path} holds other files; choose a new or empty folder for the PNG frames")
    from PIL import Image

    with atomic_folder(path) as tmp:  # a previous export of frames only is replaced when every frame is written
        for i, a in enumerate(frames):
            Image.fromarray(a).save(tmp / f"frame_{i:04d}.png", format="PNG")
    return path


def _write_gif(frames, path: Path, fps: float) -> Path:
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:
        writer = imageio.get_writer(tmp, format="GIF", mode="I", duration=1000.0 / fps, loop=0)
        try:
            for a in frames:
                writer.append_data(a)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
    return path


def _write_mp4(frames, path: Path, fps: float) -> Path:
    with Mp4Writer(path, fps) as writer:
        for a in frames:
            writer.append(a)
        return writer.commit()
