"""Paste an (edited) generator crop back into the photo it was embedded from.

``paste_into_photo(result, edited_crop, photo)`` composites through the inverse of the embedding's alignment with a
feathered face mask; ``mode="delta"`` adds only the change an edit makes, so the photo's own detail survives. The
masks come from the 3DMM render of the fit (``paste_mask``).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.face.model import Coefficients, default_model
from engine.generator.embed import EmbedError, EmbedResult, face_mask
from engine.io.files import to_uint8_image
from engine.perception import align as A
from engine.render import FaceRenderer


def _as_uint8_hwc(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        return to_uint8_image(img)
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255.0 if a.max(initial=0) <= 1.0 else a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def paste_mask(result: EmbedResult, coeffs: Coefficients | None = None, size: int | None = None,
               renderer=None) -> np.ndarray:
    """(S, S) float mask for pasting back: the face region of the fit (union that of ``coeffs``, e.g. an edit),
    dilated by ~10 % of the crop so the seam falls on skin/hair rather than on the face."""
    if renderer is None:
        renderer = FaceRenderer(default_model())
    size = int(size or result.crop.shape[0])
    dil = max(3, (size // 10) | 1)
    m = face_mask(renderer, result.coeffs, size, dil)
    if coeffs is not None:
        m = torch.maximum(m, face_mask(renderer, coeffs, size, dil))
    return m[0, 0].numpy()


def paste_into_photo(result: EmbedResult, edited_crop_image, photo, feather: float = 0.08, mask=None,
                     coeffs: Coefficients | None = None, renderer: FaceRenderer | None = None,
                     mode: str = "replace") -> np.ndarray:
    """Composite an (edited) reconstruction back into the original photo → uint8 (H, W, 3).

    ``edited_crop_image``: (1, 3, S, S) / (3, S, S) tensor in [0, 1] or (S, S, 3) uint8, in the canonical crop
    framing of ``result`` (any S; the alignment is rescaled). ``photo``: the photo that was embedded (path, bytes or
    array; EXIF orientation is applied as during embedding). ``mask``: (S, S) weights; by default the render mask of
    the fit (union the edited ``coeffs``' mask when given), dilated, then feathered and blurred by ``align.paste_back``.

    ``mode="replace"`` pastes the generator's pixels (what the generator can draw, at its resolution);
    ``mode="delta"`` adds only the *change* the edit makes (edited − reconstruction) to the photo, so the photo's own
    detail and sharpness survive — best for light / expression edits and small pose changes with a low-resolution
    generator (large pose changes leave a ghost of the original face).
    """
    img = A.as_rgb(photo)
    al = result.alignment
    shape = tuple(getattr(al, "photo_shape", ()) or ())
    if shape and tuple(img.shape[:2]) != tuple(shape[:2]):
        raise EmbedError(f"this photo is {img.shape[1]}x{img.shape[0]} px but the embedding was made from one of "
                         f"{shape[1]}x{shape[0]} px: paste back into the photo that was embedded")
    crop = _as_uint8_hwc(edited_crop_image)
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1] or crop.shape[2] != 3:
        raise EmbedError(f"the edited image must be a square RGB crop, got shape {crop.shape}")
    if mode not in ("replace", "delta"):
        raise EmbedError(f"paste mode must be 'replace' or 'delta', got {mode!r}")
    if mask is None:
        mask = paste_mask(result, coeffs, crop.shape[0], renderer)
    if mode == "replace":
        return A.paste_back(img, crop, al, feather=feather, mask=mask)
    return _paste_delta(img, crop, result, feather, mask)


def _paste_delta(img: np.ndarray, crop: np.ndarray, result: EmbedResult, feather: float, mask) -> np.ndarray:
    size = crop.shape[0]
    rec = result.reconstruction[0].detach().float().permute(1, 2, 0).numpy() * 255.0
    if rec.shape[0] != size:
        rec = cv2.resize(rec, (size, size), interpolation=cv2.INTER_AREA if rec.shape[0] > size else cv2.INTER_LINEAR)
    delta = crop.astype(np.float32) - rec.astype(np.float32)
    fp = A.crop_footprint(result.alignment, size, img.shape)
    out = img.copy()
    if fp.empty:
        return out
    # bicubic keeps the upsampled change smooth; the weights fade it out at the mask edge and the crop border
    dw = fp.warp(delta, interpolation=cv2.INTER_CUBIC)
    wm = fp.warp(A.feather_mask(size, feather, mask), border=cv2.BORDER_CONSTANT, value=0)
    y0, y1, x0, x1 = fp.y0, fp.y1, fp.x0, fp.x1
    reg = out[y0:y1, x0:x1].astype(np.float32) + np.clip(wm, 0, 1)[..., None] * dw
    out[y0:y1, x0:x1] = np.clip(np.round(reg), 0, 255).astype(np.uint8)
    return out


__all__ = ["paste_into_photo", "paste_mask"]
