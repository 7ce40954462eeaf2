"""``python -m training vae``: one small VAE per factor on the fitted 3DMM coefficients; the decoders are what the
generator samples from (z ~ N(0, I) → plausible coefficients).

    python -m training vae [--fits cache/fits/train.npz] [--steps 6000] [--out assets/decoders.safetensors]
    python -m training vae --synthetic 20000 --out cache/decoders-synthetic.safetensors   # no fits yet: plumbing

Each VAE works on the factor's coefficients normalised by their mean/std (stored in the decoder as ``out_mean`` /
``out_std``); the identity VAE covers identity + albedo together (as the original's 80 shape + 80 albedo). The
likelihood is Gaussian with a learned per-dimension σ (so reconstruction and KL balance themselves), and the KL weight
warms up linearly over the first ``--warmup`` fraction of the steps. At the end the decoded statistics of N(0, I)
samples are compared with the fits' (per-dimension mean offset in σ units and variance ratio) and printed.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.face.model import N_EXP, N_ID, N_LIGHT, N_POSE
from engine.generator.networks import DECODER_SPECS, FactorDecoders, FactorMLP, sample_latents

FACTOR_KEYS = {"identity": ("identity", "albedo"), "expression": ("expression",), "light": ("light",),
               "pose": ("pose",)}


class VAEError(RuntimeError):
    pass


class FactorVAE(nn.Module):
    """Encoder MLP → (μ, log σ²); the decoder is the generator's :class:`FactorMLP`."""

    def __init__(self, decoder: FactorMLP, z_dim: int, hidden: int, layers: int):
        super().__init__()
        out_dim = decoder.out_mean.shape[0]
        mods, d = [], out_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
            d = hidden
        self.enc = nn.Sequential(*mods)
        self.mu = nn.Linear(d, z_dim)
        self.logvar = nn.Linear(d, z_dim)
        self.dec = decoder
        self.log_sigma = nn.Parameter(torch.full((out_dim,), -1.0))

    def decode_norm(self, z):
        return self.dec.skip(z) + self.dec.mlp(z)

    def loss(self, x_norm: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
        h = self.enc(x_norm)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-12, 6)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = self.decode_norm(z)
        nll = (0.5 * (rec - x_norm).pow(2) * torch.exp(-2 * self.log_sigma) + self.log_sigma).sum(1).mean()
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
        return nll + beta * kl, {"nll": nll.detach(), "kl": kl.detach(),
                                 "mse": (rec - x_norm).pow(2).mean().detach()}


def load_fits(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise VAEError(f"fits not found: {path}; make them with: python -m training fit "
                       f"(or use --synthetic N to test the plumbing)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k].astype(np.float32) for k in ("identity", "albedo", "expression", "light", "pose")
                 if k in z.files}
    except Exception as exc:
        raise VAEError(f"could not read fits {path} ({type(exc).__name__}: {exc})") from None
    need = {"identity": N_ID, "expression": N_EXP, "light": N_LIGHT, "pose": N_POSE}
    for k, n in need.items():
        if k not in d or d[k].ndim != 2 or d[k].shape[1] != n:
            raise VAEError(f"{path}: array {k!r} missing or not (N, {n})")
    if "albedo" not in d:
        d["albedo"] = np.zeros((d["identity"].shape[0], 0), np.float32)
    n = {v.shape[0] for v in d.values()}
    if len(n) != 1:
        raise VAEError(f"{path}: arrays have different lengths {sorted(n)}")
    if not all(np.isfinite(v).all() for v in d.values()):
        raise VAEError(f"{path}: fits contain NaN/inf values")
    return d


def synthetic_fits(n: int, albedo_dim: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """A correlated, non-Gaussian coefficient set shaped like real fits (for tests and plumbing)."""
    g = torch.Generator().manual_seed(seed)
    exp_names = ()
    prior = FactorDecoders.prior(albedo_dim, exp_names, seed=seed)
    with torch.no_grad():
        c = prior.decode(sample_latents(n, generator=g))
        ident = c.identity * (1 + 0.5 * torch.tanh(c.identity[:, :1]))  # heteroscedastic
        expr = (torch.rand(n, N_EXP, generator=g) ** 3) * 0.6
        light = c.light
        pose = c.pose + 0.1 * torch.sin(3 * c.pose)
    return {"identity": ident.numpy(), "albedo": c.albedo.numpy(), "expression": expr.numpy(),
            "light": light.numpy(), "pose": pose.numpy()}


def factor_matrix(fits: dict, factor: str) -> np.ndarray:
    return np.concatenate([fits[k] for k in FACTOR_KEYS[factor]], 1)


def train_decoders(fits: dict, exp_names=(), steps: int = 6000, batch: int = 256, lr: float = 1e-3,
                   warmup: float = 0.2, seed: int = 0, log=print, calibrate: bool = True) -> tuple[FactorDecoders, dict]:
    torch.manual_seed(seed)
    albedo_dim = fits["albedo"].shape[1]
    dec = FactorDecoders(albedo_dim, exp_names)
    report = {}
    for factor, (z_dim, hidden, layers) in DECODER_SPECS.items():
        x = torch.from_numpy(factor_matrix(fits, factor))
        mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
        net = dec.nets[factor]
        with torch.no_grad():
            net.out_mean.copy_(mean)
            net.out_std.copy_(std)
        vae = FactorVAE(net, z_dim, hidden, layers)
        opt = torch.optim.Adam(vae.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
        xn = (x - mean) / std
        t0 = time.time()
        for step in range(steps):
            beta = min(1.0, (step + 1) / max(1, warmup * steps))
            idx = torch.randint(0, xn.shape[0], (min(batch, xn.shape[0]),))
            loss, parts = vae.loss(xn[idx], beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if log and (step + 1) % max(1, steps // 4) == 0:
                log(f"  {factor:10s} step {step + 1}/{steps}: loss {float(loss.detach()):.3f} mse {float(parts['mse']):.3f} "
                    f"kl {float(parts['kl']):.2f} beta {beta:.2f}")
        report[factor] = {"seconds": round(time.time() - t0, 1)}
    dec.eval()
    if calibrate:
        report["calibration"] = calibrate_variance(dec, fits)
    report.update(sampling_check(dec, fits))
    return dec, report


@torch.no_grad()
def calibrate_variance(dec: FactorDecoders, fits: dict, n: int = 20000, seed: int = 2, max_gain: float = 2.5) -> dict:
    """Match each decoded dimension's mean and variance to the fits (a VAE's decoded means are under-dispersed:
    they lack the reconstruction noise). Rewrites ``out_mean``/``out_std`` so out = μ + σ·k·(y − ȳ) with
    k = min(max_gain, σ_data/σ_decoded) in normalised units; the shape of the decoded distribution is kept."""
    lat = sample_latents(n, seed=seed)
    gains = {}
    for factor, net in dec.nets.items():
        y = net.skip(getattr(lat, factor)) + net.mlp(getattr(lat, factor))  # normalised units
        x = torch.from_numpy(factor_matrix(fits, factor))
        target = x.std(0) / net.out_std
        k = (target / y.std(0).clamp_min(1e-6)).clamp(max=max_gain)
        k = torch.where(x.std(0) > 1e-6, k, torch.ones_like(k))
        net.out_mean -= net.out_std * k * y.mean(0) - (x.mean(0) - net.out_mean)
        net.out_std *= k
        gains[factor] = {"gain_median": float(k.median()), "gain_max": float(k.max())}
    return gains


@torch.no_grad()
def sampling_check(dec: FactorDecoders, fits: dict, n: int = 20000, seed: int = 1) -> dict:
    """Decoded N(0, I) statistics vs the fits: mean offset (σ units) and variance ratio per dimension."""
    c = dec.decode(sample_latents(n, seed=seed))
    out = {}
    for factor, keys in FACTOR_KEYS.items():
        x = factor_matrix(fits, factor)
        y = torch.cat([getattr(c, k) for k in keys], 1).numpy()
        if factor == "expression":  # compare like with like: decode() clamps to [0, 1]
            x = np.clip(x, 0, 1)
        sd = x.std(0) + 1e-6
        off = np.abs(y.mean(0) - x.mean(0)) / sd
        ratio = (y.var(0) + 1e-12) / (x.var(0) + 1e-12)
        keep = x.std(0) > 1e-6
        out[factor] = {"mean_offset_sigma_max": float(off[keep].max(initial=0)),
                       "mean_offset_sigma_mean": float(off[keep].mean()) if keep.any() else 0.0,
                       "var_ratio_median": float(np.median(ratio[keep])) if keep.any() else 1.0,
                       "var_ratio_min": float(ratio[keep].min(initial=1)),
                       "var_ratio_max": float(ratio[keep].max(initial=1))}
    return out


@torch.no_grad()
def graft_albedo_prior(dec: FactorDecoders, albedo_dim: int, seed: int = 0) -> FactorDecoders:
    """Decoders with ``albedo_dim`` albedo outputs when the fits have none yet (fitted before the learned albedo
    existed): identity outputs are copied, the albedo coefficients follow the basis' own prior, N(0, 1) (the
    learned basis is std-scaled), as random unit projections of z_id."""
    if dec.albedo_dim == albedo_dim:
        return dec
    if dec.albedo_dim != 0:
        raise VAEError(f"decoders have {dec.albedo_dim} albedo outputs, the face model {albedo_dim}; retrain")
    new = FactorDecoders(albedo_dim, dec.exp_names)
    sd = {k: v for k, v in dec.state_dict().items() if not k.startswith("nets.identity.")}
    new.load_state_dict(sd, strict=False)
    src, dst = dec.nets["identity"], new.nets["identity"]
    for a, b in zip(src.mlp, dst.mlp):
        if isinstance(a, nn.Linear) and a.out_features == b.out_features:
            b.load_state_dict(a.state_dict())
    last_a, last_b = src.mlp[-1], dst.mlp[-1]
    last_b.weight.zero_()
    last_b.bias.zero_()
    last_b.weight[:N_ID] = last_a.weight
    last_b.bias[:N_ID] = last_a.bias
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(albedo_dim, dst.skip.in_features, generator=g)
    dst.skip.weight.copy_(torch.cat([src.skip.weight, p / p.norm(dim=1, keepdim=True)]))
    dst.out_mean.copy_(torch.cat([src.out_mean, torch.zeros(albedo_dim)]))
    dst.out_std.copy_(torch.cat([src.out_std, torch.ones(albedo_dim)]))
    return new.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training vae", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fits", default=None, help="fits npz (default cache/fits/train.npz)")
    ap.add_argument("--synthetic", type=int, default=0, help="train on N synthetic coefficient sets instead")
    ap.add_argument("--out", default=None, help="decoders file (default assets/decoders.safetensors)")
    ap.add_argument("--steps", type=int, default=6000, help="steps per factor")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of steps over which the KL weight ramps to 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-calibrate", action="store_true", help="skip the per-dimension mean/variance calibration")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from engine import config

    try:
        if args.synthetic:
            fits, source = synthetic_fits(args.synthetic, seed=args.seed), f"synthetic:{args.synthetic}"
            out = Path(args.out or config.cache_dir() / "decoders-synthetic.safetensors")
        else:
            fpath = Path(args.fits or config.cache_dir() / "fits" / "train.npz")
            fits, source = load_fits(fpath), str(fpath)
            out = Path(args.out or config.ASSETS_DIR / "decoders.safetensors")
        exp_names = ()
        try:
            from engine.face.model import load_ict_arrays

            exp_names = tuple(str(n) for n in load_ict_arrays()["exp_names"])
        except Exception:
            pass
        if args.steps < 1:
            raise VAEError("--steps must be at least 1")
        n = fits["identity"].shape[0]
        print(f"training factor VAEs on {n} coefficient sets from {source} (albedo K={fits['albedo'].shape[1]})")
        dec, report = train_decoders(fits, exp_names, args.steps, args.batch, args.lr, args.warmup, args.seed,
                                     calibrate=not args.no_calibrate)
    except VAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from engine.face.model import FaceModel

        k_model = FaceModel.load().albedo_dim
    except Exception:
        k_model = dec.albedo_dim
    if k_model != dec.albedo_dim and dec.albedo_dim == 0:
        print(f"note: the fits have no albedo coefficients but the face model has K={k_model}; albedo decodes "
              f"from its N(0, 1) prior until the fits are redone with the learned albedo")
        dec = graft_albedo_prior(dec, k_model, args.seed)
    for f, g in report.get("calibration", {}).items():
        print(f"  calibration {f:10s} variance gain median {g['gain_median']:.2f} (max {g['gain_max']:.2f})")
    print("sampling check (decoded N(0,I) vs fits): factor: mean offset max/mean [σ], variance ratio median [min, max]")
    for f in FACTOR_KEYS:
        r = report[f]
        print(f"  {f:10s} {r['mean_offset_sigma_max']:.3f}/{r['mean_offset_sigma_mean']:.3f}   "
              f"{r['var_ratio_median']:.2f} [{r['var_ratio_min']:.2f}, {r['var_ratio_max']:.2f}]")
    dec.save(out, {"source": source, "n": n, "steps": args.steps})
    print(f"wrote {out}")
    return 0
