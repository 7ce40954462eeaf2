"""``python -m training albedo``: learn a per-vertex albedo PCA from the fitted training photos.

For every fitted crop: project the fitted mesh, keep the vertices that are visible (z-buffer), face the camera
and are well lit, sample the photo colour there and divide by the fitted (grey) SH irradiance → a per-vertex
reflectance sample (the per-image RGB gain stays in it: it *is* the skin colour). Samples far from the image's
median face colour (hair, glasses, beard, specular highlights) are dropped. Over the narrow face region
(vertices 0..6705) the per-vertex median gives ``albedo_mean``; PCA with missing data (EM: impute the unobserved
entries from the current low-rank model, refit, 4 rounds) gives the components, scaled by their standard
deviation so coefficients are ~N(0, 1). Vertices never observed (ears, neck, scalp) are filled by diffusion over
the mesh from their observed neighbours. Writes ``assets/albedo.safetensors`` (format ``discoface.albedo`` v1)
and a preview PNG (mean and ±2σ of the first components).

Data licence: derived from UTKFace, so the result is for NON-COMMERCIAL research only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.config import ASSETS_DIR, cache_dir
from engine import fit as fitting
from engine.face.model import ALBEDO_FORMAT, ALBEDO_VERSION, Coefficients, FaceModel, FaceModelError
from engine.io.files import save_image, save_safetensors
from engine.render import FaceRenderer, light_from_direction
from engine.render.shading import full_light, sh_basis
from training.data import DataError, load_aligned_by_names
from training.fit import load_fits


def vertex_adjacency(triangles: torch.Tensor, n: int) -> torch.Tensor:
    """Row-normalised (V, V) sparse adjacency of the mesh."""
    t = triangles
    e = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    e = torch.cat([e, e.flip(1)])
    e = torch.unique(e, dim=0)
    deg = torch.bincount(e[:, 0], minlength=n).float().clamp_min(1)
    vals = 1.0 / deg[e[:, 0]]
    return torch.sparse_coo_tensor(e.T, vals, (n, n), check_invariants=False).coalesce()


def diffuse_fill(values: torch.Tensor, known: torch.Tensor, adj: torch.Tensor, iters: int = 400) -> torch.Tensor:
    """Fill the rows of ``values`` (V, C) where ``known`` is False by harmonic diffusion from the known rows."""
    x = values.clone()
    if (~known).any():
        x[~known] = values[known].mean(0)
    for _ in range(iters):
        x = torch.where(known[:, None], values, torch.sparse.mm(adj, x))
    return x


def collect_samples(fits: dict, images: np.ndarray, model, renderer, batch: int = 32, n_vert: int = 6706,
                    progress=None):
    """(N, n_vert, 3) reflectance samples (NaN where unobserved) from the fits."""
    n = len(images)
    out = np.full((n, n_vert, 3), np.nan, np.float32)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        c = Coefficients(*(torch.from_numpy(fits[k][s:e]).float() for k in Coefficients.FACTORS),
                         exp_names=model.exp_names)
        c.albedo = torch.zeros(e - s, model.albedo_dim)
        # re-split brightness between light and gain with the current convention
        p = torch.from_numpy(fits["gain"][s:e]).float()[:, :, None] * full_light(c.light)
        for i in range(e - s):
            c.light[i], _ = fitting.split_light_gain(p[i])
        crops = fitting.crops_to_tensor(images[s:e])
        with torch.no_grad():
            colors, valid, normals = fitting.sample_vertex_colors(crops, c, model, renderer, 128, min_facing=0.35)
            irr = (sh_basis(normals) @ full_light(c.light)[:, 0, :, None])[..., 0]  # grey light: (B, V)
        colors, valid, irr = colors[:, :n_vert], valid[:, :n_vert], irr[:, :n_vert]
        ok = valid & (irr > 0.35) & (colors.amin(-1) > 0.03) & (colors.amax(-1) < 0.97)
        alb = colors / irr.clamp_min(1e-3)[..., None]
        for i in range(e - s):
            m = ok[i]
            if m.sum() < 200:
                continue
            a = alb[i][m]
            med = a.median(0).values
            d = (a - med).norm(dim=-1)
            mad = (d - d.median()).abs().median()
            keep = d < max(0.12, float(d.median() + 3 * 1.4826 * mad))
            idx = torch.nonzero(m)[:, 0][keep]
            out[s + i, idx.numpy()] = a[keep].numpy()
        if progress:
            progress(e - s)
    return out


def em_pca(x: np.ndarray, k: int, rounds: int = 4):
    """PCA of (N, D) with NaNs: returns mean (D,), components (k, D) scaled by their std, std (k,)."""
    obs = ~np.isnan(x)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nan_to_num(np.nanmedian(x, axis=0))
    xt = torch.from_numpy(np.where(obs, x, mean[None]).astype(np.float32))
    mt = torch.from_numpy(mean.astype(np.float32))
    obs_t = torch.from_numpy(obs)
    for r in range(rounds):
        xc = xt - mt
        u, s, v = torch.svd_lowrank(xc, q=k + 8, niter=3)
        u, s, v = u[:, :k], s[:k], v[:, :k]
        rec = (u * s) @ v.T + mt
        xt = torch.where(obs_t, xt, rec)
    std = s / np.sqrt(max(1, len(x) - 1))
    comps = (v * std).T  # (k, D)
    return mt.numpy(), comps.numpy(), std.numpy()


def preview(model_path: Path, out: Path, comps: int = 3) -> None:
    m = FaceModel.load(albedo_path=model_path)
    r = FaceRenderer(m)
    rows = []
    for j in range(comps):
        c = m.zeros(3)
        c.albedo[0, j], c.albedo[2, j] = -2.0, 2.0
        c.light = light_from_direction(20, 15, 0.3).repeat(3, 1)
        c.pose[:, 0] = 0.3
        with torch.no_grad():
            img = r(c, 128, background=1.0).image
        rows.append(torch.cat(list(img), 2))
    save_image(out, torch.cat(rows, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training albedo", description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train")
    ap.add_argument("--components", type=int, default=40)
    ap.add_argument("--max-images", type=int, default=3000)
    ap.add_argument("--max-nme", type=float, default=0.08, help="skip fits with a worse landmark error")
    ap.add_argument("--out", default=None, help="default assets/albedo.safetensors")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    t0 = time.time()
    try:
        fits = load_fits(args.split)
        model = FaceModel.load(albedo_path=False)
    except (DataError, FaceModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keep = np.nonzero(fits["nme"] <= args.max_nme)[0][: args.max_images]
    if len(keep) < args.components + 10:
        print(f"error: only {len(keep)} usable fits; fit more crops first (python -m training fit)", file=sys.stderr)
        return 2
    fits = {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(fits["names"]) else v)
            for k, v in fits.items()}
    names = [fits["names"][i] for i in keep]
    try:
        imgs = load_aligned_by_names(names, args.split)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sel = np.nonzero(imgs["found"])[0]
    fits = {k: (v[sel] if isinstance(v, np.ndarray) and len(v) == len(keep) else v) for k, v in fits.items()}
    images = imgs["images"][sel]
    renderer = FaceRenderer(model)
    with tqdm(total=len(images), desc="sample albedo", unit="img") as bar:
        samples = collect_samples(fits, images, model, renderer, progress=bar.update)
    nv_n = samples.shape[1]
    seen = (~np.isnan(samples[..., 0])).mean(0)
    print(f"{len(images)} images; narrow-face vertices observed in >=10% of images: {(seen >= 0.1).mean():.1%}")
    x = samples.reshape(len(samples), -1)
    # vertices observed too rarely are treated as unknown (filled by diffusion)
    rare = np.repeat(seen < 0.05, 3)
    x[:, rare] = np.nan
    mean, comps, std = em_pca(x, args.components)
    known = torch.zeros(model.n_vertices, dtype=torch.bool)
    known[:nv_n] = torch.from_numpy(seen >= 0.05)
    full = torch.zeros(model.n_vertices, 3 * (1 + args.components))
    vals = np.concatenate([mean.reshape(nv_n, 3), comps.reshape(args.components, nv_n, 3).transpose(1, 0, 2)
                          .reshape(nv_n, -1)], 1)
    full[:nv_n] = torch.from_numpy(np.nan_to_num(vals))
    adj = vertex_adjacency(model.triangles, model.n_vertices)
    filled = diffuse_fill(full, known, adj)
    albedo_mean = filled[:, :3].clamp(0.0, 1.0).contiguous()
    basis = filled[:, 3:].reshape(model.n_vertices, args.components, 3).permute(1, 0, 2).contiguous()
    out = Path(args.out) if args.out else ASSETS_DIR / "albedo.safetensors"
    save_safetensors(out, {"albedo_mean": albedo_mean, "albedo_basis": basis}, ALBEDO_FORMAT, ALBEDO_VERSION,
                     extra={"source": f"UTKFace {args.split} fits ({len(images)} images, cache/fits)",
                            "licence": "derived from UTKFace: non-commercial research only",
                            "components": str(args.components),
                            "std": ",".join(f"{s:.5f}" for s in std)})
    mm = albedo_mean[:nv_n].mean(0).tolist()
    print(f"mean albedo RGB over the face {mm[0]:.3f} {mm[1]:.3f} {mm[2]:.3f}; component std "
          f"{std[0]:.4f} .. {std[-1]:.4f}; explained by first 5: {(std[:5] ** 2).sum() / (std ** 2).sum():.1%}")
    print(f"wrote {out} in {time.time() - t0:.0f} s")
    pv = Path(cache_dir()) / "albedo_preview.png"
    preview(out, pv)
    print(f"preview (rows: components 1-3 at -2σ, mean, +2σ): {pv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
