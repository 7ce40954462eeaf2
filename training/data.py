"""Loading the prepared (aligned) UTKFace crops and the compact training pack (WebP/JPEG crops in one npz).

Both loaders return the same dict: ``images`` uint8 torch (N, H, W, 3), ``landmarks`` float32 torch (N, 68, 2)
(crop px, continuous coordinates as the renderer's), ``names`` list[str]; the pack may add ``coeffs`` (N, D) float32
and ``coeff_names``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """Prepared data is missing or unreadable; the message says which command makes it."""


def aligned_dir(split: str, size: int = 128, cache: Path | None = None) -> Path:
    from engine.config import cache_dir

    return Path(cache or cache_dir()) / f"aligned{size}" / split


def load_aligned(split: str, size: int = 128, limit: int | None = None, cache: Path | None = None) -> dict:
    """The aligned crops of ``split`` ("train"/"test") made by ``python -m training prepare --size <size>``."""
    d = aligned_dir(split, size, cache)
    shards = sorted(d.glob("shard_*.npz"))
    if not shards:
        raise DataError(f"no aligned {size}px UTKFace crops for split {split!r} in {d}; "
                        f"make them with: python -m training prepare --size {size}")
    images, lms, names = [], [], []
    n = 0
    for p in shards:
        if limit is not None and n >= limit:
            break
        try:
            with np.load(p, allow_pickle=False) as z:
                im, lm, nm = z["images"], z["landmarks"], z["names"].tolist()
        except Exception as e:
            raise DataError(f"could not read {p} ({type(e).__name__}: {e}); delete it and rerun "
                            f"python -m training prepare --size {size}") from None
        if im.shape[1:] != (size, size, 3) or lm.shape[1:] != (68, 2) or not len(im) == len(lm) == len(nm):
            raise DataError(f"{p} has unexpected shapes {im.shape}/{lm.shape}; rerun "
                            f"python -m training prepare --size {size} --force")
        if limit is not None:
            k = limit - n
            im, lm, nm = im[:k], lm[:k], nm[:k]
        images.append(im)
        lms.append(lm)
        names += nm
        n += len(im)
    return {"images": torch.from_numpy(np.concatenate(images)),
            "landmarks": torch.from_numpy(np.concatenate(lms).astype(np.float32)),
            "names": names}


# ----------------------------------------------------------------------------------------------------- the pack
PACK_FORMAT = "discoface.trainpack"
PACK_VERSION = 1


def load_aligned_by_names(names, split: str, size: int = 128, cache: Path | None = None) -> dict:
    """The prepared crops (uint8 (N,S,S,3)) and landmarks ((N,68,2)) of ``names``, in that order, read shard by shard
    (only the rows asked for are kept); ``found`` (N,) bool marks names that were in the shards."""
    names = [str(n) for n in names]
    want = {n: i for i, n in enumerate(names)}
    images = np.zeros((len(names), size, size, 3), np.uint8)
    landmarks = np.zeros((len(names), 68, 2), np.float32)
    found = np.zeros(len(names), bool)
    d = aligned_dir(split, size, cache)
    for p in sorted(d.glob("shard_*.npz")):
        with np.load(p, allow_pickle=False) as z:
            sel = [(i, want[n]) for i, n in enumerate(z["names"].tolist()) if n in want]
            if sel:
                src, dst = (list(t) for t in zip(*sel))
                images[dst] = z["images"][src]
                landmarks[dst] = z["landmarks"][src]
                found[dst] = True
    if not found.any():
        raise DataError(f"none of the {len(names)} requested crops were found in {d} "
                        f"(run: python -m training prepare)")
    return {"images": images, "landmarks": landmarks, "found": found}


def load_pack(path, limit: int | None = None, workers: int | None = None) -> dict:
    """Decode a training pack written by ``python -m training pack`` to the ``load_aligned`` dict."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"training pack not found: {path}; make it with: python -m training pack --out {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = {k: str(z[k]) for k in ("format", "version", "size")}
            if meta["format"] != PACK_FORMAT:
                raise DataError(f"{path} is not a DiscoFace training pack (format {meta['format']!r})")
            if int(meta["version"]) > PACK_VERSION:
                raise DataError(f"{path} is a version {meta['version']} training pack; this build reads up to "
                                f"version {PACK_VERSION}")
            blob, offsets = z["image_blob"], z["image_offsets"].astype(np.int64)
            lms, names = z["landmarks"], z["names"].tolist()
            coeffs = z["coeffs"] if "coeffs" in z.files else None
            coeff_names = z["coeff_names"].tolist() if "coeff_names" in z.files else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"could not read training pack {path} ({type(e).__name__}: {e})") from None
    size = int(meta["size"])
    n = len(names) if limit is None else min(limit, len(names))
    if len(offsets) != len(names) + 1 or len(lms) != len(names):
        raise DataError(f"training pack {path} is inconsistent (offsets/landmarks/names lengths differ)")
    images = np.empty((n, size, size, 3), np.uint8)
    bad: list[int] = []

    def decode(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            bgr = cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (size, size, 3):
                bad.append(i)
            else:
                images[i] = bgr[..., ::-1]

    workers = max(1, min(os.cpu_count() or 1, 16)) if workers is None else max(1, workers)
    step = 512
    if workers == 1 or n <= step:
        decode(0, n)
    else:  # cv2.imdecode releases the GIL: threads scale with cores
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(lambda lo: decode(lo, min(n, lo + step)), range(0, n, step)))
    if bad:
        i = min(bad)
        raise DataError(f"training pack {path}: image {i} ({names[i]}) cannot be decoded")
    out = {"images": torch.from_numpy(images), "landmarks": torch.from_numpy(lms[:n].astype(np.float32)),
           "names": names[:n]}
    if coeffs is not None:
        out["coeffs"] = torch.from_numpy(coeffs[:n].astype(np.float32))
        out["coeff_names"] = coeff_names
    return out
