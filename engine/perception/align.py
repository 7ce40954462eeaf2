"""Face detection, 68-point landmarks and alignment to the canonical crop.

Coordinate convention (the same as the renderer's): pixel coordinates are *continuous*, x right, y down, and pixel
``i`` covers ``[i, i + 1)`` so its centre is at ``i + 0.5``. dlib's landmark positions (pixel indices) are shifted by
half a pixel into this convention; ``Alignment.matrix`` maps continuous photo coordinates to continuous crop
coordinates, so ``landmarks_crop`` can be compared directly with ``FaceRenderer`` landmarks.

The canonical crop is defined by the template ``canonical_landmarks(default_model(), size)`` (the mean 3DMM face at
pose 0). Photos are mapped onto it by a least-squares similarity fitted on the stable points (brows, nose, eyes,
mouth: 17-67); the jaw contour of a 2D detector slides with pose and is left out.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from engine.perception import dlib_files

STABLE = np.arange(17, 68)
DETECT_MAX_SIDE = 1024  # images are downscaled to this long side for detection
DETECT_PAD = 0.3  # border added around the image (fraction of its long side) so tight crops are still detected
_MIN_SIDE = 8


class AlignError(ValueError):
    """A photo cannot be read or no face can be aligned in it; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------- image reading
def _name(src) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(src)


def load_image(path_or_bytes) -> np.ndarray:
    """Read a photo as uint8 (H, W, 3) RGB.

    EXIF orientation is applied; grayscale, palette, RGBA/LA (composited on white), 16-bit and CMYK images are
    converted. Anything unreadable raises ``AlignError("could not read image <path>: <reason>")``.
    """
    from PIL import Image, ImageOps

    name = _name(path_or_bytes)

    def fail(reason: str):
        return AlignError(f"could not read image {name}: {reason}")

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        if not data:
            raise fail("no data (empty)")
        src = io.BytesIO(data)
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        p = Path(path_or_bytes)
        if not p.exists():
            raise fail("file not found")
        if p.is_dir():
            raise fail("it is a folder, not an image file")
        try:
            if p.stat().st_size == 0:
                raise fail("the file is empty")
        except OSError as e:
            raise fail(e.strerror or str(e)) from None
        src = p
    else:
        raise fail(f"expected a path or bytes, got {type(path_or_bytes).__name__}")

    try:
        with Image.open(src) as im:
            im.load()  # truncated files raise here (LOAD_TRUNCATED_IMAGES stays False)
            im = ImageOps.exif_transpose(im)
            arr = _to_rgb8(im)
    except AlignError:
        raise
    except Image.DecompressionBombError:
        raise fail("the image is too large (decompression-bomb limit)") from None
    except Image.UnidentifiedImageError:
        raise fail("not an image file (or an unsupported format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated/corrupt data
        msg = str(e) or type(e).__name__
        raise fail(f"corrupt or truncated image data ({msg})") from None
    except MemoryError:
        raise fail("not enough memory to decode it") from None
    if arr.shape[0] < _MIN_SIDE or arr.shape[1] < _MIN_SIDE:
        raise fail(f"the image is only {arr.shape[1]}x{arr.shape[0]} pixels")
    return arr


def _to_rgb8(im) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            hi = 1.0 if a.max(initial=0) <= 1.0 else (255.0 if a.max(initial=0) <= 255.0 else 65535.0)
        else:
            hi = 255.0 if a.max(initial=0) <= 255 else 65535.0
        g = np.clip(np.round(a / hi * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def as_rgb(img) -> np.ndarray:
    if isinstance(img, (str, os.PathLike, bytes, bytearray, memoryview)):
        return load_image(img)
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise AlignError(f"expected an (H, W, 3) RGB image, got an array of shape {a.shape}")
    if a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.max(initial=0) <= 1.0:
            a = a * 255.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


# -------------------------------------------------------------------------------------------- detection, landmarks
def _detect_scaled(img: np.ndarray) -> tuple[list[tuple[float, float, float, float]], np.ndarray, float]:
    """Detect on a copy downscaled to DETECT_MAX_SIDE and padded; boxes in the original image's pixels."""
    h, w = img.shape[:2]
    s = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = img if s == 1.0 else cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                                            interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    det = dlib_files.detector()
    # try in turn: as is; padded with a constant border (tight crops such as UTKFace chips); for small images also
    # upsampled once and padded with a reflected border. Boxes must have their centre inside the image.
    pad = int(round(DETECT_PAD * max(sh, sw)))
    const = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(gray.mean()))
    tries = [(lambda: gray, 0, 0), (lambda: const, pad, 0)]
    if max(sh, sw) <= 400:
        refl = lambda: cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REFLECT101)  # noqa: E731
        tries += [(lambda: gray, 0, 1), (lambda: const, pad, 1), (refl, pad, 0), (refl, pad, 1)]
    for make, off, up in tries:
        boxes = []
        for r in det(make(), up):
            b = ((r.left() - off) / s, (r.top() - off) / s, (r.right() + 1 - off) / s, (r.bottom() + 1 - off) / s)
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if 0 <= cx < w and 0 <= cy < h:
                boxes.append(b)
        if boxes:
            boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
            return boxes, small, s
    return [], small, s


def face_confidence(img: np.ndarray, box) -> float:
    """dlib's detector confidence for the face in ``box``, re-detected on a small crop around it (-inf if gone)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    m = 0.5 * max(bw, bh)
    rx0, ry0 = int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m)))
    rx1, ry1 = int(min(img.shape[1], np.ceil(x1 + m))), int(min(img.shape[0], np.ceil(y1 + m)))
    region = cv2.cvtColor(np.ascontiguousarray(img[ry0:ry1, rx0:rx1]), cv2.COLOR_RGB2GRAY)
    s = 160.0 / max(bw, bh, 1.0)  # the box becomes ~160 px: cheap and well inside dlib's detection range
    region = cv2.resize(region, (max(1, round(region.shape[1] * s)), max(1, round(region.shape[0] * s))),
                        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    pad = 40
    region = cv2.copyMakeBorder(region, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    dets, scores, _ = dlib_files.detector().run(region, 0, -1.0)
    cx, cy = ((x0 + x1) / 2 - rx0) * s + pad, ((y0 + y1) / 2 - ry0) * s + pad
    best = -float("inf")
    for d, sc in zip(dets, scores):
        if d.left() <= cx <= d.right() and d.top() <= cy <= d.bottom():
            best = max(best, float(sc))
    return best


def pick_face(img: np.ndarray, boxes: list) -> tuple:
    """The face to fit among detected ``boxes`` (largest first): the most confident of the large ones.

    The largest box is not always a face (the astronaut portrait's mission patch is larger than her face and
    detected too, with a confidence of 0.03 against 1.47)."""
    if len(boxes) <= 1:
        return boxes[0]
    area0 = (boxes[0][2] - boxes[0][0]) * (boxes[0][3] - boxes[0][1])
    cands = [b for b in boxes[:4] if (b[2] - b[0]) * (b[3] - b[1]) >= 0.25 * area0]
    if len(cands) == 1:
        return cands[0]
    scores = [face_confidence(img, b) for b in cands]
    return cands[int(np.argmax(scores))]


CHOICE_MIN_CONFIDENCE = 0.3  # real faces score 0.7-2.6 (12 portraits, ffhq); the astronaut's mission patch -0.15


def face_choices(img, boxes=None) -> list[tuple[int, tuple, float]]:
    """The faces a user may mean, for a chooser: ``(index into detect_faces(img), box, dlib confidence)`` of the
    boxes :func:`pick_face` weighs (the 4 largest, each ≥ 1/4 of the largest one's area) that are confidently faces,
    left to right. Fewer than two: nothing to choose."""
    img = as_rgb(img)
    boxes = detect_faces(img) if boxes is None else boxes
    if len(boxes) < 2:
        return []
    area0 = (boxes[0][2] - boxes[0][0]) * (boxes[0][3] - boxes[0][1])
    out = [(i, b, face_confidence(img, b)) for i, b in enumerate(boxes[:4])
           if (b[2] - b[0]) * (b[3] - b[1]) >= 0.25 * area0]
    out = [c for c in out if c[2] >= CHOICE_MIN_CONFIDENCE]
    return sorted(out, key=lambda c: c[1][0]) if len(out) > 1 else []


def detect_faces(img) -> list[tuple[float, float, float, float]]:
    """Face boxes (x0, y0, x1, y1) in continuous pixel coordinates, largest first (dlib HOG)."""
    return _detect_scaled(as_rgb(img))[0]


def find_face(img) -> tuple[list, tuple | None, np.ndarray | None]:
    """The default face search of a photo fit: ``(boxes, box, landmarks)`` — every detected box, the one
    :func:`pick_face` picks and its 68 landmarks (``box`` and ``landmarks`` None when there is no face). No torch:
    the command line runs it in a process forked before torch loads."""
    img = as_rgb(img)
    boxes = detect_faces(img)
    if not boxes:
        return boxes, None, None
    box = pick_face(img, boxes)
    return boxes, box, landmarks68(img, box)


def landmarks68(img, box) -> np.ndarray:
    """(68, 2) float32 landmarks (x, y), iBUG order, continuous pixel coordinates, for the face in ``box``."""
    import dlib

    img = as_rgb(img)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    if not (bw > 0 and bh > 0):
        raise AlignError(f"empty face box {box}")
    # run the predictor on a region around the box (avoids converting huge photos to a dlib image)
    m = 0.6 * max(bw, bh)
    rx0, ry0 = max(0, int(np.floor(x0 - m))), max(0, int(np.floor(y0 - m)))
    rx1, ry1 = min(w, int(np.ceil(x1 + m))), min(h, int(np.ceil(y1 + m)))
    region = np.ascontiguousarray(img[ry0:ry1, rx0:rx1])
    scale = 1.0
    if max(bw, bh) > 400:  # the predictor was trained on faces of ~100-300 px: downscale big faces
        scale = 300.0 / max(bw, bh)
        region = cv2.resize(region, (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
        sx, sy = region.shape[1] / (rx1 - rx0), region.shape[0] / (ry1 - ry0)
    else:
        sx = sy = 1.0
    rect = dlib.rectangle(int(round((x0 - rx0) * sx)), int(round((y0 - ry0) * sy)),
                          int(round((x1 - rx0) * sx)) - 1, int(round((y1 - ry0) * sy)) - 1)
    shape = dlib_files.landmark_predictor()(region, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64) + 0.5  # index -> continuous
    pts[:, 0] = pts[:, 0] / sx + rx0
    pts[:, 1] = pts[:, 1] / sy + ry0
    return pts.astype(np.float32)


# ------------------------------------------------------------------------------------------------------- alignment
def similarity_transform(src, dst) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src -> dst
    (Umeyama 1991)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching point sets of >= 2 points, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are all identical")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.concatenate([scale * r, t[:, None]], 1)


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    return np.linalg.inv(_h(np.asarray(m, np.float64)))[:2]


def apply_affine(m: np.ndarray, pts) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _to_index(m: np.ndarray) -> np.ndarray:
    """A continuous-coordinate affine map as the pixel-index map cv2.warpAffine expects."""
    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], np.float64)
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], np.float64)
    return (shift_out @ _h(m) @ shift_in)[:2]


@lru_cache(maxsize=8)
def _template(size: int) -> np.ndarray:
    from engine.face.model import default_model
    from engine.render import canonical_landmarks

    t = canonical_landmarks(default_model(), int(size)).detach().cpu().numpy().astype(np.float64)
    t.setflags(write=False)
    return t


def template(size: int = 128) -> np.ndarray:
    """(68, 2) template landmarks of the canonical crop of ``size`` px."""
    return _template(int(size)).copy()


@dataclass
class Alignment:
    matrix: np.ndarray  # (2, 3) continuous photo px -> continuous crop px
    size: int
    landmarks_photo: np.ndarray  # (68, 2)
    landmarks_crop: np.ndarray  # (68, 2)
    n_faces: int = 1
    box: tuple | None = None
    photo_shape: tuple = field(default_factory=tuple)

    def inverse(self) -> np.ndarray:
        """(2, 3) crop px -> photo px."""
        return invert_affine(self.matrix)

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def warp_to_crop(img: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Resample ``img`` through ``matrix`` (continuous photo -> crop) into a (size, size, 3) crop; strong
    downscales are pre-filtered with an area resize; borders are reflected."""
    h, w = img.shape[:2]
    m = np.asarray(matrix, np.float64)
    inv = invert_affine(m)
    corners = apply_affine(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    margin = 2.0 / max(scale, 1e-6) + 2
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin), x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin), y0 + 1, h))
    region = img[y0:y1, x0:x1]
    pre = np.array([[1, 0, -x0], [0, 1, -y0]], np.float64)  # photo -> region (continuous)
    if scale < 0.8:
        rw, rh = x1 - x0, y1 - y0
        nw, nh = max(1, int(round(rw * scale))), max(1, int(round(rh * scale)))
        region = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
        pre = np.diag([nw / rw, nh / rh, 1.0])[:2] @ _h(pre)
    m_region = (_h(m) @ np.linalg.inv(_h(pre)))[:2]
    return cv2.warpAffine(np.ascontiguousarray(region), _to_index(m_region), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def align_with_landmarks(img, lm68, size: int = 128, *, n_faces: int = 1, box=None) -> tuple[np.ndarray, Alignment]:
    """Align a photo given its 68 landmarks (continuous px) to the canonical crop of ``size`` px."""
    img = as_rgb(img)
    lm = np.asarray(lm68, np.float64).reshape(68, 2)
    if not np.isfinite(lm).all():
        raise AlignError("landmarks contain NaN/inf")
    tmpl = _template(int(size))
    m = similarity_transform(lm[STABLE], tmpl[STABLE])
    crop = warp_to_crop(img, m, int(size))
    al = Alignment(matrix=m, size=int(size), landmarks_photo=lm.astype(np.float32),
                   landmarks_crop=apply_affine(m, lm).astype(np.float32), n_faces=n_faces,
                   box=tuple(float(v) for v in box) if box is not None else None, photo_shape=tuple(img.shape))
    return crop, al


SMALL_PHOTO_SIDE = 100  # px: below this, a photo without a detected face is called too small (dlib finds ~40 px faces)


def no_face_error(name: str, img: np.ndarray) -> AlignError:
    """The error for an image without a detected face; a small image is said to be too small (the likely reason)."""
    h, w = img.shape[:2]
    if max(h, w) < SMALL_PHOTO_SIDE:
        return AlignError(f"{name} is too small ({w}x{h} px) to find a face in: use a photo of at least "
                          f"{SMALL_PHOTO_SIDE} px with the face clearly visible")
    return AlignError(f"no face found in {name} (use a photo with a clearly visible, roughly frontal face)")


def align_face(img, size: int = 128) -> tuple[np.ndarray, Alignment]:
    """Detect the face (the most confident of the large boxes: ``pick_face``), predict its 68 landmarks and align
    it to the canonical crop.

    ``img`` is an (H, W, 3) array or a path/bytes (read with ``load_image``). No face -> ``AlignError``.
    """
    name = _name(img) if isinstance(img, (str, os.PathLike, bytes, bytearray, memoryview)) else "the image"
    img = as_rgb(img)
    boxes = detect_faces(img)
    if not boxes:
        raise no_face_error(name, img)
    box = pick_face(img, boxes)
    lm = landmarks68(img, box)
    return align_with_landmarks(img, lm, size, n_faces=len(boxes), box=box)


# ------------------------------------------------------------------------------------------------------ paste back
def feather_mask(size: int, feather: float = 0.08, mask=None) -> np.ndarray:
    """(size, size) float32 weights in [0, 1]: 0 at the crop border, ramping up over ``feather * size`` px
    (smoothstep); an optional mask (crop px, [0, 1]) is blurred by the same width and multiplied in."""
    f = max(1e-6, float(feather) * size)
    c = np.arange(size, dtype=np.float64) + 0.5
    d = np.minimum(c, size - c)
    r = np.clip(d / f, 0, 1)
    r = r * r * (3 - 2 * r)
    out = np.minimum(r[:, None], r[None, :])
    if mask is not None:
        mk = np.asarray(mask, np.float64)
        if mk.ndim == 3:
            mk = mk[..., 0] if mk.shape[-1] in (1, 3) else mk[0]
        if mk.shape != (size, size):
            mk = cv2.resize(mk, (size, size), interpolation=cv2.INTER_LINEAR)
        if mk.max(initial=0) > 1.0:
            mk = mk / 255.0
        sigma = f / 2.0
        if sigma > 0.3:
            mk = cv2.GaussianBlur(mk, (0, 0), sigma)
        out = out * np.clip(mk, 0, 1)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Footprint:
    """Where a square crop lands in its photo: the photo box it covers (clipped to the photo, a pixel of margin)
    and the map from crop pixels to that box as ``cv2.warpAffine`` takes it."""

    x0: int
    y0: int
    x1: int
    y1: int
    to_box: np.ndarray  # (2, 3) pixel-index map crop -> box (cv2.warpAffine's matrix)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the box."""
        return self.x1 - self.x0, self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    def warp(self, crop: np.ndarray, interpolation: int = cv2.INTER_LINEAR, border: int = cv2.BORDER_REPLICATE,
             value: float = 0) -> np.ndarray:
        """``crop`` (or any per-crop-pixel array) resampled onto the box."""
        return cv2.warpAffine(crop, self.to_box, self.size, flags=interpolation, borderMode=border, borderValue=value)


def crop_footprint(alignment: Alignment, crop_size: int, photo_shape) -> Footprint:
    """The :class:`Footprint` of a crop of ``crop_size`` px (rendered at any resolution: the alignment is rescaled)
    in a photo of ``photo_shape`` (H, W, …)."""
    size = int(crop_size)
    m = np.asarray(alignment.matrix, np.float64)
    if size != alignment.size:  # crop rendered at another resolution: rescale the alignment
        m = np.diag([size / alignment.size, size / alignment.size, 1.0])[:2] @ _h(m)
    inv = invert_affine(m)
    h, w = photo_shape[:2]
    corners = apply_affine(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, 0, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, 0, h))
    to_region = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ _h(inv))[:2]
    return Footprint(x0, y0, x1, y1, _to_index(to_region))


def paste_back(photo, crop, alignment: Alignment, feather: float = 0.08, mask=None) -> np.ndarray:
    """Composite an (edited) crop back into the photo through the inverse alignment, with a feathered mask.

    Returns a uint8 array of the photo's shape; pixels outside the crop's footprint are untouched."""
    photo = as_rgb(photo)
    crop = as_rgb(crop)
    size = crop.shape[0]
    if crop.shape[:2] != (size, size):
        raise AlignError(f"the crop must be square, got {crop.shape[:2]}")
    fp = crop_footprint(alignment, size, photo.shape)
    out = photo.copy()
    if fp.empty:
        return out
    warped = fp.warp(crop)
    wmask = fp.warp(feather_mask(size, feather, mask), border=cv2.BORDER_CONSTANT, value=0)
    a = np.clip(wmask, 0, 1)[..., None]
    reg = out[fp.y0:fp.y1, fp.x0:fp.x1].astype(np.float32)
    out[fp.y0:fp.y1, fp.x0:fp.x1] = np.clip(np.round(reg * (1 - a) + warped.astype(np.float32) * a), 0,
                                            255).astype(np.uint8)
    return out
    to_region = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ _h(inv))[:2]
    mi = _to_index(to_region)
    rw, rh = x1 - x0, y1 - y0
    warped = cv2.warpAffine(crop, mi, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    wm = feather_mask(size, feather, mask)
    wmask = cv2.warpAffine(wm, mi, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = np.clip(wmask, 0, 1)[..., None]
    reg = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.round(reg * (1 - a) + warped.astype(np.float32) * a), 0, 255).astype(np.uint8)
    return out
