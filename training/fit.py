"""``python -m training fit``: fit the 3DMM to the prepared (aligned) UTKFace crops.

Per batch: landmark stage of :func:`engine.fit.fit_coefficients` (pose, identity, expression; sliding jaw
contour), then the linear robust SH light + RGB gain (:func:`engine.fit.solve_light`) and, when a learned
albedo exists, linear albedo coefficients (:func:`engine.fit.solve_albedo`). Chunks are written to
``cache/fits/<split>_chunks/`` as they finish (``--resume`` skips the finished ones) and merged into
``cache/fits/<split>.npz`` (identity, albedo, expression, light, pose, gain, names, nme, resid).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.config import cache_dir
from engine import fit as fitting
from engine.fit import overlay_image
from engine.face.model import Coefficients, FaceModel, FaceModelError
from engine.io.files import atomic_path, save_image
from engine.render import FaceRenderer
from training.data import DataError, aligned_dir, load_aligned, load_aligned_by_names

FIELDS = ("identity", "albedo", "expression", "light", "pose", "gain", "nme", "resid")


def fits_dir() -> Path:
    return Path(cache_dir()) / "fits"


def load_fits(split: str, path: Path | None = None) -> dict:
    """The merged fits of ``split`` as numpy arrays + ``names`` (list)."""
    p = Path(path) if path else fits_dir() / f"{split}.npz"
    if not p.is_file():
        raise DataError(f"no fits for split {split!r} at {p}; make them with: python -m training fit --split {split}")
    with np.load(p, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["names"] = out["names"].tolist()
    return out


def load_subset(split: str, every: int = 1, limit: int | None = None) -> dict:
    """``load_aligned`` but keeping every ``every``-th crop, shard by shard (memory stays small)."""
    if every <= 1:
        return load_aligned(split, 128, limit)
    shards = sorted(aligned_dir(split, 128).glob("shard_*.npz"))
    if not shards:
        return load_aligned(split, 128, limit)  # raises the clear DataError
    ims, lms, names = [], [], []
    k = 0
    for p in shards:
        with np.load(p, allow_pickle=False) as z:
            nm = z["names"].tolist()
            sel = [i for i in range(len(nm)) if (k + i) % every == 0]
            k += len(nm)
            ims.append(z["images"][sel])
            lms.append(z["landmarks"][sel])
            names += [nm[i] for i in sel]
        if limit is not None and len(names) >= limit:
            break
    n = len(names) if limit is None else min(limit, len(names))
    if n == 0:
        raise DataError(f"no crops selected from {aligned_dir(split, 128)}")
    return {"images": torch.from_numpy(np.concatenate(ims)[:n]),
            "landmarks": torch.from_numpy(np.concatenate(lms)[:n].astype(np.float32)), "names": names[:n]}


def fit_batch(images_u8: torch.Tensor, landmarks: torch.Tensor, model, renderer, steps: int = 200,
              size: int = 64) -> dict:
    """Fit one batch of aligned crops (uint8 (B, H, W, 3)) → dict of numpy arrays (see :data:`FIELDS`)."""
    crops = fitting.crops_to_tensor(images_u8)
    res = fitting.fit_coefficients(crops, landmarks, model, renderer, steps=(steps, 0), size=size)
    c = res.coeffs
    light, gain, resid = fitting.solve_light(crops, c, model, renderer, size=crops.shape[-1])
    c.light = light
    if model.albedo_dim:
        c.albedo, gain, resid = fitting.solve_albedo(crops, c, model, renderer, size=crops.shape[-1])
    return {"identity": c.identity.numpy(), "albedo": c.albedo.numpy(), "expression": c.expression.numpy(),
            "light": c.light.numpy(), "pose": c.pose.numpy(), "gain": gain.numpy(),
            "nme": res.landmark_nme.numpy(), "resid": resid.numpy()}


def relight(split: str) -> int:
    """Re-solve light/gain/albedo for every finished chunk with the current face model (geometry kept)."""
    torch.set_num_threads(1)
    chunk_dir = fits_dir() / f"{split}_chunks"
    parts = sorted(chunk_dir.glob("chunk_*.npz"))
    if not parts:
        print(f"error: no fitted chunks in {chunk_dir}; run python -m training fit --split {split} first",
              file=sys.stderr)
        return 2
    try:
        model = FaceModel.load()
    except FaceModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    renderer = FaceRenderer(model)
    t0 = time.time()
    n = 0
    for p in tqdm(parts, desc=f"relight {split}", unit="chunk"):
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        names = d["names"].tolist()
        try:
            imgs = load_aligned_by_names(names, split)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        c = Coefficients(*(torch.from_numpy(d[k]).float() for k in ("identity", "albedo", "expression", "light",
                                                                     "pose")), exp_names=model.exp_names)
        c.albedo = torch.zeros(len(names), model.albedo_dim)
        crops = fitting.crops_to_tensor(imgs["images"])
        c.light, gain, resid = fitting.solve_light(crops, c, model, renderer)
        if model.albedo_dim:
            c.albedo, gain, resid = fitting.solve_albedo(crops, c, model, renderer)
        d.update(albedo=c.albedo.numpy(), light=c.light.numpy(), gain=gain.numpy(), resid=resid.numpy(),
                 albedo_dim=np.array(model.albedo_dim))
        with atomic_path(p, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **d)
        n += len(names)
    total = merge(split, chunk_dir, fits_dir() / f"{split}.npz")
    fits = load_fits(split)
    print(f"relit {n} fits in {time.time() - t0:.0f} s (albedo K={model.albedo_dim}); photometric residual "
          f"{np.nanmean(fits['resid']):.4f}; {total} in {fits_dir() / f'{split}.npz'}")
    return 0


def merge(split: str, chunk_dir: Path, out: Path) -> int:
    parts = sorted(chunk_dir.glob("chunk_*.npz"))
    if not parts:
        return 0
    cols = {k: [] for k in FIELDS}
    names = []
    for p in parts:
        with np.load(p, allow_pickle=False) as z:
            for k in FIELDS:
                cols[k].append(z[k])
            names += z["names"].tolist()
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names), **arrays)
    return len(names)


def save_overlay(path: Path, data: dict, fits: dict, model, n: int = 12) -> None:
    n = min(n, len(fits["names"]))
    rows = []
    for i in range(n):
        c = Coefficients(*(torch.from_numpy(fits[k][i:i + 1]).float() for k in Coefficients.FACTORS),
                         exp_names=model.exp_names)
        rows.append(overlay_image(data["images"][i].numpy(), c, data["landmarks"][i].numpy(), model,
                                  gain=fits["gain"][i]))
    half = (n + 1) // 2
    left, right = rows[:half], rows[half:]
    while len(right) < len(left):
        right.append(np.zeros_like(left[0]))
    save_image(path, np.concatenate([np.concatenate(left, 0), np.concatenate(right, 0)], 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training fit", description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train", choices=("train", "test"))
    ap.add_argument("--limit", type=int, default=None, help="fit at most N crops")
    ap.add_argument("--every", type=int, default=1, help="take every K-th crop (a spread-out subset; the shards "
                    "are sorted by name, i.e. by age)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200, help="landmark-stage Adam steps")
    ap.add_argument("--size", type=int, default=64, help="fitting resolution (landmarks are scaled to it)")
    ap.add_argument("--resume", action="store_true", help="keep finished chunks and continue")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--relight", action="store_true", help="keep the fitted geometry of the finished chunks and "
                    "re-solve only light, gain and albedo (after a new albedo model)")
    args = ap.parse_args(argv)
    if args.relight:
        return relight(args.split)

    torch.set_num_threads(max(1, args.threads))
    if args.batch < 1 or args.steps < 1 or (args.limit is not None and args.limit < 1):
        print("error: --batch, --steps and --limit must be positive", file=sys.stderr)
        return 2
    try:
        data = load_subset(args.split, args.every, args.limit)
        model = FaceModel.load()
    except (DataError, FaceModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    renderer = FaceRenderer(model)
    out = fits_dir() / f"{args.split}.npz"
    chunk_dir = fits_dir() / f"{args.split}_chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for p in chunk_dir.glob("chunk_*.npz"):
            p.unlink()
    n = len(data["names"])
    t0 = time.time()
    done_new = 0

    with tqdm(total=n, desc=f"fit {args.split}", unit="img") as bar:
        for start in range(0, n, args.batch):
            stop = min(n, start + args.batch)
            cp = chunk_dir / f"chunk_{start:06d}.npz"
            if cp.exists():
                bar.update(stop - start)
                continue
            res = fit_batch(data["images"][start:stop], data["landmarks"][start:stop], model, renderer,
                            args.steps, args.size)
            res["albedo_dim"] = np.array(model.albedo_dim)
            with atomic_path(cp, suffix=".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, names=np.array(data["names"][start:stop]), **res)
            done_new += stop - start
            bar.update(stop - start)
            bar.set_postfix(nme=f"{float(np.mean(res['nme'])):.4f}")
    total = merge(args.split, chunk_dir, out)
    dt = time.time() - t0
    fits = load_fits(args.split)
    print(f"fitted {done_new} new crops in {dt:.0f} s ({done_new / max(dt, 1e-6):.2f} img/s); {total} in {out}")
    print(f"landmark NME mean {fits['nme'].mean():.4f} median {np.median(fits['nme']):.4f}; "
          f"photometric residual {np.nanmean(fits['resid']):.4f}")
    save_overlay(fits_dir() / f"{args.split}_overlay.png", data, fits, model)
    print(f"overlay grid: {fits_dir() / f'{args.split}_overlay.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
