"""``python -m training pack``: one compact file of the prepared train crops for the GPU machine.

The crops of ``cache/aligned<size>/train`` are re-encoded as WebP (or JPEG; quality 90, lowered until the file fits
60 MiB) into one byte blob with offsets, plus
the landmarks, names and (when ``cache/fits/train.npz`` exists) the fitted 3DMM coefficients matched by name. The file
is a plain ``.npz`` (no pickles) with ``format``/``version``/``size`` entries; ``training.data.load_pack`` decodes it
back to the ``load_aligned`` dict. The default output ``carry/train_pack.npz`` is git-ignored.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .data import PACK_FORMAT, PACK_VERSION, DataError, load_aligned

MAX_BYTES = 60 * 1024 * 1024


CODECS = {"webp": (".webp", "IMWRITE_WEBP_QUALITY"), "jpeg": (".jpg", "IMWRITE_JPEG_QUALITY")}


def _encode_one(im: np.ndarray, codec: str, quality: int) -> np.ndarray:
    import cv2

    ext, flag = CODECS[codec]
    params = [getattr(cv2, flag), int(quality)]
    if codec == "jpeg":
        params += [cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(im[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"{codec} encoding failed")
    return buf.reshape(-1)


def _encode(images: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    chunks, offsets = [], [0]
    for im in tqdm(images, desc=f"{codec} q{quality}", unit="img", file=sys.stderr, disable=len(images) < 2000):
        buf = _encode_one(im, codec, quality)
        chunks.append(buf)
        offsets.append(offsets[-1] + buf.size)
    blob = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return blob.astype(np.uint8), np.asarray(offsets, np.int64)


def _pick_quality(images: np.ndarray, codec: str, start: int, budget: int, n_sample: int = 600) -> int:
    """Highest quality <= start whose projected size (from a random sample) fits ``budget`` bytes."""
    n = len(images)
    if n == 0:
        return start
    idx = np.random.default_rng(0).choice(n, min(n, n_sample), replace=False)
    for q in range(start, 29, -1):
        per = np.mean([_encode_one(images[i], codec, q).size for i in idx])
        if per * n <= 0.97 * budget:
            return q
    return 30


def _fits(names: list[str], fits_path: Path) -> tuple[np.ndarray, list[str]] | None:
    """Fitted coefficients aligned to ``names`` (rows of missing names are NaN), or None without a fits file."""
    if not fits_path.is_file():
        return None
    with np.load(fits_path, allow_pickle=False) as z:
        if "names" not in z.files:
            return None
        fit_names = z["names"].tolist()
        keys = [k for k in z.files if k != "names" and z[k].ndim >= 1 and len(z[k]) == len(fit_names)
                and np.issubdtype(z[k].dtype, np.floating)]
        if not keys:
            return None
        parts, cols = [], []
        for k in sorted(keys):
            a = z[k].reshape(len(fit_names), -1).astype(np.float32)
            parts.append(a)
            cols += [f"{k}[{j}]" for j in range(a.shape[1])] if a.shape[1] > 1 else [k]
        table = np.concatenate(parts, 1)
    index = {n: i for i, n in enumerate(fit_names)}
    out = np.full((len(names), table.shape[1]), np.nan, np.float32)
    for i, n in enumerate(names):
        j = index.get(n)
        if j is not None:
            out[i] = table[j]
    return out, cols


def make_pack(out: Path, size: int = 128, quality: int = 90, fits: Path | None = None, split: str = "train",
              limit: int | None = None, max_bytes: int = MAX_BYTES, cache: Path | None = None,
              codec: str = "webp", auto_quality: bool = True) -> dict:
    """Write the pack; with ``auto_quality`` the quality is lowered from ``quality`` until it fits ``max_bytes``."""
    from engine.config import cache_dir
    from engine.io.files import atomic_path

    data = load_aligned(split, size, limit=limit, cache=cache)
    images = data["images"].numpy()
    names = data["names"]
    fits = fits if fits is not None else Path(cache or cache_dir()) / "fits" / f"{split}.npz"
    lms = data["landmarks"].numpy().astype(np.float16)  # 1/16 px or better below 256 px
    fitted = _fits(names, fits)
    side = lms.nbytes + (fitted[0].size * 2 if fitted is not None else 0) + 64 * len(names) + 65536
    q = _pick_quality(images, codec, quality, max_bytes - side) if auto_quality else quality
    while True:
        blob, offsets = _encode(images, codec, q)
        if not auto_quality or blob.nbytes + side <= max_bytes or q <= 30:
            break
        q -= 3  # the sample under-estimated: lower the quality and encode again
    arrays = dict(format=np.array(PACK_FORMAT), version=np.array(PACK_VERSION), size=np.array(size),
                  codec=np.array(codec), quality=np.array(q), image_blob=blob, image_offsets=offsets,
                  landmarks=lms, names=np.array(names, dtype=str))
    if fitted is not None:
        coeffs, cols = fitted
        arrays["coeffs"] = coeffs.astype(np.float16)  # training targets: 3 significant digits are plenty
        arrays["coeff_names"] = np.array(cols, dtype=str)
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    nbytes = out.stat().st_size
    if nbytes > max_bytes:
        print(f"warning: {out} is {nbytes / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit",
              file=sys.stderr)
    return {"path": str(out), "images": len(names), "bytes": nbytes, "quality": q, "codec": codec,
            "coeffs": fitted is not None}


def main(argv: list[str] | None = None) -> int:
    from engine.config import REPO_ROOT

    ap = argparse.ArgumentParser(prog="python -m training pack", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="crop size of the prepared data (default 128)")
    ap.add_argument("--out", default=str(REPO_ROOT / "carry" / "train_pack.npz"), help="output file")
    ap.add_argument("--quality", type=int, default=90,
                    help="image quality (default 90; lowered as needed to fit --max-mib)")
    ap.add_argument("--codec", default="webp", choices=sorted(CODECS),
                    help="image codec (default webp: ~30%% smaller than JPEG at the same error)")
    ap.add_argument("--max-mib", type=float, default=MAX_BYTES / 2**20, help="size limit in MiB (default 60)")
    ap.add_argument("--fixed-quality", action="store_true", help="use --quality as is, even over the limit")
    ap.add_argument("--split", default="train", choices=("train", "test"))
    ap.add_argument("--limit", type=int, default=None, help="pack only the first N crops")
    ap.add_argument("--fits", default=None, help="fitted coefficients npz (default cache/fits/<split>.npz)")
    args = ap.parse_args(argv)
    if not 10 <= args.quality <= 100:
        print(f"error: --quality must be between 10 and 100, got {args.quality}", file=sys.stderr)
        return 2
    try:
        r = make_pack(Path(args.out), args.size, args.quality, Path(args.fits) if args.fits else None, args.split,
                      args.limit, max_bytes=int(args.max_mib * 2**20), codec=args.codec,
                      auto_quality=not args.fixed_quality)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: could not write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"packed {r['images']} crops ({args.size}px, {r['codec']} q{r['quality']}"
          f"{', with fitted coefficients' if r['coeffs'] else ''}) -> {r['path']} ({r['bytes'] / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
