"""Photo mode, step 1: fit the 3D face to a real photo once (DESIGN.md §6).

``fit_photo(photo)`` → :class:`PhotoFit`: the original photo (uint8 RGB, any size), the fitted coefficients λ0,
the crop↔photo :class:`~engine.perception.align.Alignment` and the per-channel colour gain of the fit.

Pipeline (each step reports progress; ``cancel()`` is polled between steps and inside the fitter):

1. **Read** the photo (path, bytes or array; grayscale, RGBA composited on white, 16-bit … → uint8 RGB).
2. **Detect** faces on a copy downscaled to ≤ 1024 px (dlib HOG) and pick the most confident of the large ones
   (``align.pick_face``: the largest box is not always a face), **68 landmarks** at full resolution around the box.
3. **Align** to the canonical crop (``FIT_CROP`` px) by the similarity of the stable points.
4. **Initialise** with the R-Net (``assets/rnet.safetensors``) when it loads, else from the mean face.
5. **Landmark solve** (:func:`engine.fit.solve_landmarks`): damped Gauss-Newton with an analytic Jacobian on pose,
   identity, expression and a 2D scale + shift of the crop (folded into the returned alignment), jaw contour sliding
   along the silhouette, priors on identity/expression (blendshapes the landmarks cannot see held near 0, left/right
   kept alike). It replaces the Adam landmark stage of ``engine.fit.fit_coefficients`` here: on 17 real photos NME
   0.034, against 0.052 for 60 Adam steps from the R-Net start and 0.039 for 300 steps (0.8 s).
6. **Light, albedo and gain**: the linear robust solves of ``engine.fit`` (``solve_albedo`` / ``solve_light``) for
   the fitted geometry, on the refined crop.

Measured (bench/photo_edit.py, 1 torch thread on a loaded 2-core machine): 0.7-1.3 s for a 1024 px photo, landmark
NME median 0.034 over 18 photos; pose read back within about 1° from exact synthetic landmarks.

No face / unreadable file → :class:`engine.perception.align.AlignError` with its clear message.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from engine.face.model import Coefficients, CoefficientsError
from engine.fit import FitCancelled, crops_to_tensor, renderer_for, solve_albedo, solve_light, solve_landmarks
from engine.perception.align import AlignError, Alignment, pick_face  # noqa: F401  (pick_face re-exported)
from engine.perception.rnet import default_rnet

PHOTOFIT_FORMAT = "discoface.photofit"
PHOTOFIT_VERSION = 1
FIT_CROP = 128  # canonical crop size the fit works in (Alignment.size)


class PhotoFitCancelled(Exception):
    """The user cancelled the fit (``cancel()`` returned True)."""


class PhotoFitError(ValueError):
    """A stored photo fit that cannot be used (foreign/corrupt data, or it belongs to another photo)."""


@dataclass
class PhotoFit:
    image: np.ndarray  # (H, W, 3) uint8 RGB, the original photo (grayscale/RGBA converted)
    coeffs: Coefficients  # batch 1, the fitted λ0 (identity, albedo, expression, light, pose)
    alignment: Alignment  # crop (size alignment.size) <-> photo transform
    gain: np.ndarray  # (3,) per-channel colour gain of the fit (render * gain ≈ photo)
    seconds: float = 0.0
    landmark_nme: float = float("nan")

    # ------------------------------------------------------------------------------------------- JSON
    def to_json_dict(self) -> dict:
        """Coefficients, alignment and gain (not the pixels), for session files."""
        al = self.alignment
        return {
            "format": PHOTOFIT_FORMAT,
            "version": PHOTOFIT_VERSION,
            "photo_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "coefficients": self.coeffs.to_json_dict(),
            "alignment": {
                "matrix": np.asarray(al.matrix, np.float64).tolist(),
                "size": int(al.size),
                "landmarks_photo": np.asarray(al.landmarks_photo, np.float64).round(4).tolist(),
                "landmarks_crop": np.asarray(al.landmarks_crop, np.float64).round(4).tolist(),
                "n_faces": int(al.n_faces),
                "box": None if al.box is None else [float(v) for v in al.box],
            },
            "gain": [float(v) for v in np.asarray(self.gain, np.float64).reshape(3)],
            "seconds": float(self.seconds),
            "landmark_nme": None if not math.isfinite(self.landmark_nme) else float(self.landmark_nme),
        }

    @classmethod
    def from_json_dict(cls, d, image) -> "PhotoFit":
        """Rebuild a fit from :meth:`to_json_dict` output and the photo it was made on (path/bytes/array).

        Raises :class:`PhotoFitError` for foreign or corrupt data or a photo of another size."""
        from engine.face.model import default_model

        if not isinstance(d, Mapping) or d.get("format") != PHOTOFIT_FORMAT:
            raise PhotoFitError(f"not a photo fit (expected format {PHOTOFIT_FORMAT!r})")
        ver = d.get("version")
        if not isinstance(ver, int) or isinstance(ver, bool) or not 1 <= ver <= PHOTOFIT_VERSION:
            raise PhotoFitError(f"photo fit version {ver!r} is not supported (this build reads up to "
                                f"{PHOTOFIT_VERSION})")
        img = as_photo(image)
        try:
            w, h = (int(v) for v in d["photo_size"])
            if (h, w) != img.shape[:2]:
                raise PhotoFitError(f"the photo fit belongs to a {w}x{h} photo, but the photo is "
                                    f"{img.shape[1]}x{img.shape[0]}")
            model = default_model()
            coeffs = Coefficients.from_json_dict(d["coefficients"], model.exp_names)
            if coeffs.batch != 1:
                raise PhotoFitError(f"a photo fit holds one face, got {coeffs.batch}")
            if coeffs.albedo_dim != model.albedo_dim:
                raise PhotoFitError(f"the photo fit has {coeffs.albedo_dim} albedo values, the face model "
                                    f"{model.albedo_dim}")
            a = d["alignment"]
            matrix = np.asarray(a["matrix"], np.float64)
            lm_p = np.asarray(a["landmarks_photo"], np.float32)
            lm_c = np.asarray(a["landmarks_crop"], np.float32)
            if matrix.shape != (2, 3) or lm_p.shape != (68, 2) or lm_c.shape != (68, 2):
                raise PhotoFitError("the photo fit's alignment has the wrong shape")
            if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
                raise PhotoFitError("the photo fit's alignment is degenerate")
            size = int(a["size"])
            if size < 8:
                raise PhotoFitError(f"the photo fit's crop size {size} is too small")
            box = a.get("box")
            box = None if box is None else tuple(float(v) for v in box)
            al = Alignment(matrix=matrix, size=size, landmarks_photo=lm_p, landmarks_crop=lm_c,
                           n_faces=int(a.get("n_faces", 1)), box=box, photo_shape=tuple(img.shape))
            gain = np.asarray(d["gain"], np.float32).reshape(3)
            nme = d.get("landmark_nme")
            nme = float("nan") if nme is None else float(nme)
            seconds = float(d.get("seconds", 0.0))
        except PhotoFitError:
            raise
        except CoefficientsError as e:
            raise PhotoFitError(f"the photo fit's coefficients are not usable: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise PhotoFitError(f"the photo fit is incomplete or corrupt ({type(e).__name__}: {e})") from None
        vals = [matrix, lm_p, lm_c, gain, coeffs.as_vector().numpy()]
        if not all(np.isfinite(v).all() for v in vals):
            raise PhotoFitError("the photo fit contains non-finite values")
        return cls(image=img, coeffs=coeffs, alignment=al, gain=gain, seconds=seconds, landmark_nme=nme)


# ----------------------------------------------------------------------------------------------- reading
def as_photo(photo) -> np.ndarray:
    """path | bytes | (H, W) / (H, W, 1) / (H, W, 3) / (H, W, 4) array → uint8 (H, W, 3) RGB.

    Arrays: float images in [0, 1] are scaled to 0..255; RGBA is composited on white (as ``load_image`` does
    for files). Anything else → ``AlignError``."""
    from engine.perception.align import load_image

    if isinstance(photo, (str, bytes, bytearray, memoryview)) or hasattr(photo, "__fspath__"):
        return load_image(photo)
    if isinstance(photo, torch.Tensor):
        photo = photo.detach().cpu().numpy()
    a = np.asarray(photo)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise AlignError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got an array of shape {a.shape}")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise AlignError(f"the image is only {a.shape[1]}x{a.shape[0]} pixels")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        af = a.astype(np.float64)
        if not np.isfinite(af).all():
            raise AlignError("the image contains NaN/inf values")
        if np.issubdtype(a.dtype, np.floating) and af.max(initial=0) <= 1.0:
            af = af * 255.0
        elif a.dtype == np.uint16 or af.max(initial=0) > 255:
            af = af / 257.0
        a = np.clip(np.round(af), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.clip(np.round(a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


# ----------------------------------------------------------------------------------------------- fitting
LM_ITERS = 12  # Gauss-Newton iterations of the landmark solve
W_ID = 2e-5  # identity prior (per unit² of the N(0, 1) modes) relative to the landmark residual (NME²)
W_EXP = 1e-4  # expression prior (blendshapes the landmarks barely see: x100)
W_SIM = 1e-3  # prior on the crop's 2D scale (log·10) and shift (px)


def _rnet_or_none():
    try:
        return default_rnet()
    except (ValueError, OSError):  # no (usable) R-Net weights: start from the mean face
        return None


def fit_photo(photo, progress: Callable[[float], None] | None = None,
              cancel: Callable[[], bool] | None = None, *, face: int | None = None, found: tuple | None = None
              ) -> PhotoFit:
    """Detect, align and fit the largest face of ``photo`` (path | bytes | (H,W,3)/(H,W)/(H,W,4) array); ``face``:
    the index of the face to fit in ``detect_faces``' list instead (``engine.perception.align.face_choices``).
    ``found``: ``(boxes, box, landmarks)`` of this photo as ``align.find_face`` gives them, found already (the
    command line finds them in a second process while torch loads); without it and without ``face`` the fit runs
    that same search itself.

    ``progress(fraction)`` is called with increasing values in [0, 1] (1.0 last); ``cancel()`` returning True
    stops the fit with :class:`PhotoFitCancelled`. No face / unreadable → ``AlignError``."""
    from engine.face.model import default_model
    from engine.perception.align import (align_with_landmarks, detect_faces, find_face, landmarks68, no_face_error,
                                         warp_to_crop)

    t0 = time.perf_counter()

    def report(f: float):
        if progress is not None:
            progress(float(min(1.0, max(0.0, f))))

    def check():
        if cancel is not None and cancel():
            raise PhotoFitCancelled("photo fit cancelled")

    name = (str(photo) if isinstance(photo, str) or hasattr(photo, "__fspath__")
            else "<bytes>" if isinstance(photo, (bytes, bytearray, memoryview)) else "the image")
    img = as_photo(photo)
    check()
    report(0.02)
    if found is None and face is None:
        found = find_face(img)
    boxes = detect_faces(img) if found is None else list(found[0])
    if not boxes:
        raise no_face_error(name, img)
    check()
    report(0.15)
    if found is not None:
        box = tuple(found[1])
    elif 0 <= int(face) < len(boxes):
        box = boxes[int(face)]
    else:
        raise AlignError(f"{name} has no face number {int(face) + 1} ({len(boxes)} found)")
    lm = landmarks68(img, box) if found is None else np.asarray(found[2], np.float32)
    crop, al = align_with_landmarks(img, lm, FIT_CROP, n_faces=len(boxes), box=box)
    check()
    report(0.2)
    model = default_model()
    renderer = renderer_for(model)
    x = crops_to_tensor(crop)
    lm_crop = torch.from_numpy(np.asarray(al.landmarks_crop, np.float32))[None]
    rnet = _rnet_or_none()
    init = None
    if rnet is not None:
        with torch.no_grad():
            c = rnet.predict(x)
        init = Coefficients(c.identity, c.albedo, c.expression, c.light, c.pose, exp_names=model.exp_names)
        if init.albedo_dim != model.albedo_dim:
            from engine.generator.embed import conform_albedo

            init = conform_albedo(init, model.albedo_dim)
    check()
    report(0.3)
    if init is None:
        init = model.zeros(1)
    try:
        sol = solve_landmarks(init, al.landmarks_crop, model, renderer, FIT_CROP, iters=LM_ITERS, w_id=W_ID,
                              w_exp=W_EXP, w_sim=W_SIM, cancel=cancel, progress=lambda f: report(0.3 + 0.5 * f))
    except FitCancelled:
        raise PhotoFitCancelled("photo fit cancelled") from None
    al = _refined_alignment(img, al, sol.similarity)
    x = crops_to_tensor(warp_to_crop(img, al.matrix, FIT_CROP))
    report(0.8)
    coeffs = sol.coeffs
    check()
    with torch.no_grad():
        if model.albedo_dim:
            alb, gain, _ = solve_albedo(x, coeffs, model, renderer, size=FIT_CROP)
            coeffs.albedo = alb
        else:
            light, gain, _ = solve_light(x, coeffs, model, renderer, size=FIT_CROP)
            coeffs.light = light
    check()
    report(1.0)
    coeffs = Coefficients(coeffs.identity.detach().clone(), coeffs.albedo.detach().clone(),
                          coeffs.expression.detach().clone(), coeffs.light.detach().clone(),
                          coeffs.pose.detach().clone(), exp_names=model.exp_names)
    return PhotoFit(image=img, coeffs=coeffs, alignment=al, gain=gain[0].numpy().astype(np.float32),
                    seconds=time.perf_counter() - t0, landmark_nme=sol.nme)


def _refined_alignment(img: np.ndarray, al: Alignment, sim: np.ndarray) -> Alignment:
    """The alignment composed with the inverse of the solve's crop similarity A (render px -> crop px), so the
    fitted coefficients render onto the new crop without a residual scale/shift."""
    from engine.perception.align import apply_affine, invert_affine

    a_inv = np.vstack([invert_affine(sim), [0, 0, 1]])
    m = (a_inv @ np.vstack([al.matrix, [0, 0, 1]]))[:2]
    return Alignment(matrix=m, size=al.size, landmarks_photo=al.landmarks_photo,
                     landmarks_crop=apply_affine(m, al.landmarks_photo).astype(np.float32), n_faces=al.n_faces,
                     box=al.box, photo_shape=al.photo_shape)
