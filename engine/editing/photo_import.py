"""Photo import: turn a photo into a face for the session.

* :func:`open_photo_mode` — photo mode (the default): fit the 3D head once (``engine.photo.fit.fit_photo``, ~1 s);
  the session then edits the photo itself (``engine.photo.renderer``); :func:`open_photo_cached` (the session's
  open-photo) goes through the photo cache (:mod:`engine.editing.photo_cache`): fit and layers once per photo;
* :func:`embed_photo` — the GAN embedding (``engine.generator.embed.PhotoEmbedder``): coefficients + noise + style
  offsets of the generator;
* :func:`fit_3dmm` — the 3DMM fit only (``engine.fit.fit_photo_crop``): coefficients.

Each calls the engine directly with ``progress(done, total)`` and ``cancel()``, and turn the engine's own cancel
exceptions (``PhotoFitCancelled``, ``EmbedCancelled``, ``FitCancelled``) into :class:`ImportCancelled`; every user-facing failure is a
``ValueError`` subclass with one clear line (the aligner's ``AlignError``, ``EmbedError``, ``SessionError``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine import fit as fitting
from engine.face.model import Coefficients
from engine.photo import fit as photo_fit
from engine.photo.fit import PhotoFit, PhotoFitCancelled, PhotoFitError
from engine.editing.sessionfile import SessionError

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class ImportCancelled(Exception):
    """The user cancelled opening a photo."""


@dataclass
class Imported:
    coeffs: Coefficients
    noise: torch.Tensor | None = None
    w_offsets: torch.Tensor | None = None
    summary: str = ""


def check_photo_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise SessionError(f"photo not found: {path}")
    if path.is_dir():
        raise SessionError(f"{path} is a folder, not a photo")
    return path


def _fraction_progress(progress: Progress | None):
    return (lambda f: progress(int(round(float(f) * 1000)), 1000)) if progress is not None else None


def open_photo_mode(path, progress: Progress | None = None, cancel: Cancel | None = None, *,
                    face: int | None = None) -> "PhotoSource":
    """Fit the photo for photo mode (``face``: which detected face, see ``fit_photo``); the returned
    :class:`PhotoSource` goes into the session's snapshot."""
    path = check_photo_path(path)
    try:
        fit = photo_fit.fit_photo(str(path), progress=_fraction_progress(progress), cancel=cancel, face=face)
    except PhotoFitCancelled:
        raise ImportCancelled("cancelled") from None
    return PhotoSource(str(path), fit)


def open_photo_cached(path, progress: Progress | None = None, cancel: Cancel | None = None, *,
                      face: int | None = None, model=None):
    """:func:`open_photo_mode` through the photo cache (:mod:`engine.editing.photo_cache`, the one ``discoface edit``
    uses): a photo opened before (by the editor or the command line) skips its fit and layers. Returns the
    :class:`PhotoSource` and its :class:`~engine.photo.renderer.PhotoRenderer` (with its drag preview renderer)."""
    from engine.editing.photo_cache import PhotoCache, open_cached

    path = check_photo_path(path)
    try:
        fit, renderer, _hit = open_cached(path, face, PhotoCache.for_photo(path), model,
                                          progress=_fraction_progress(progress), cancel=cancel)
    except PhotoFitCancelled:
        raise ImportCancelled("cancelled") from None
    renderer.preview_renderer()  # in the open job, not in the first drag
    renderer.prepare_sharp()  # … nor in the first sharp frame
    return PhotoSource(str(path), fit), renderer


def embed_photo(path, generator, progress: Progress | None = None, cancel: Cancel | None = None) -> Imported:
    from engine.generator.embed import EmbedCancelled, PhotoEmbedder  # (not imported by photo mode)

    path = check_photo_path(path)
    prog = (lambda i, n, _loss: progress(int(i), int(n))) if progress is not None else None
    try:
        res = PhotoEmbedder(generator).embed(str(path), progress=prog, cancel=cancel)
    except EmbedCancelled:
        raise ImportCancelled("cancelled") from None
    m = res.metrics
    return Imported(res.coeffs, res.noise.detach(), None if res.w_offsets is None else res.w_offsets.detach(),
                    f"embedded {path.name}: face PSNR {m.get('psnr_face', float('nan')):.1f} dB "
                    f"in {m.get('seconds', 0):.1f} s")


def fit_3dmm(path, progress: Progress | None = None, cancel: Cancel | None = None) -> Imported:
    path = check_photo_path(path)
    if cancel is not None and cancel():
        raise ImportCancelled("cancelled")
    prog = _fraction_progress(progress)
    try:
        coeffs, _crop, _al, _res = fitting.fit_photo_crop(str(path), progress=prog, cancel=cancel)
    except fitting.FitCancelled:
        raise ImportCancelled("cancelled") from None
    if progress is not None:
        progress(1, 1)
    return Imported(coeffs, summary=f"fitted the 3D face model to {path.name}")


# ---------------------------------------------------------------------------------------------------------------- #
# photo mode: the photo and its fit travel in the snapshot
# ---------------------------------------------------------------------------------------------------------------- #
@dataclass(eq=False)
class PhotoSource:
    """A photo opened in photo mode: where it lives and its fit (``engine.photo.fit.PhotoFit``: the pixels, the
    fitted coefficients λ0, the crop↔photo alignment). Never changed after it is made: snapshots share it."""

    path: str
    fit: PhotoFit

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.fit.image.shape[:2]
        return w, h

    def describe(self) -> str:
        w, h = self.size
        yaw, pitch = (math.degrees(float(v)) for v in self.fit.coeffs.pose[0, :2])
        # the photo's own pose: photo edits turn relative to it (engine/editing/controls.py)
        return f"{Path(self.path).name} ({w}×{h} px, own pose yaw {yaw:+.0f}° pitch {pitch:+.0f}°)"

    def summary(self) -> str:
        nme = self.fit.landmark_nme
        q = f", landmark error {nme:.3f}" if nme == nme else ""
        return f"photo mode: {self.describe()} fitted in {self.fit.seconds:.1f} s{q}"

    def record(self) -> dict:
        return {"path": str(Path(self.path).resolve()), "fit": self.fit.to_json_dict()}


def photo_record(photo: PhotoSource | None) -> dict | None:
    return None if photo is None else photo.record()


def resolve_photo_record(d: dict, base: Path | None = None) -> PhotoSource:
    """The :class:`PhotoSource` of a session file's ``photo`` record, without refitting. The photo must still be
    where it was (or, for a relative path, beside the session file)."""
    p = Path(d["path"])
    if not p.is_absolute() and base is not None:
        p = base / p
    if not p.exists():
        raise SessionError(f"the photo of this session is no longer at {p}: move it back (or open the photo again)")
    try:
        fit = PhotoFit.from_json_dict(d["fit"], str(p))
    except PhotoFitError as exc:
        raise SessionError(f"the session's photo fit cannot be used: {exc}") from None
    except ValueError as exc:  # the photo file itself is unreadable now (AlignError)
        raise SessionError(f"the photo of this session cannot be read: {str(exc).strip().splitlines()[0]}") from None
    return PhotoSource(str(p), fit)
