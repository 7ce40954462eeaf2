"""``python -m training idprior``: fit the identity prior of a trained generator to the photos' identities.

The generator's random faces draw the identity latent z_id ~ N(0, I) and decode it to 3DMM identity + albedo
coefficients (``FactorDecoders``). Whether those faces look like as many *different* people as photos do depends
on that distribution: measured with the dlib-port descriptor, v2's random faces sit off the photos' mean and
spread along other directions (``bench/identity_sampling.py``: FID-id 0.173 = 0.056 mean part + 0.117 covariance
part for v2 at ψ 0.7). This
command learns an affine map of the identity latent, z_id' = μ + A z_id (every weight of the generator frozen),
so that the descriptors of the faces drawn through it match the mean and covariance of the descriptors of UTKFace
**train** crops, at the editor's truncation ψ; a KL term keeps N(μ, AAᵀ) near N(0, I) (no extreme faces).

The map is folded exactly into the identity decoder's first layers (``fold_identity_map``): the exported generator
file has the same format and shapes, only its decoders' weights change; the synthesis network, embedding and photo
mode are untouched. Resumable (``--resume``), time-boxed (``--minutes``), one thread by default; ``--export FILE``
writes the generator with the folded prior.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.generator.networks import LATENT_DIMS, FaceGenerator, FactorDecoders, load_default_generator, \
    sample_latents
from engine.io.files import WeightsError, load_safetensors, save_safetensors
from training.checkpoint import run_log

CKPT_FORMAT = "discoface.idprior-checkpoint"
CKPT_VERSION = 1
CKPT_NAME = "idprior_ckpt.safetensors"


def fold_identity_map(dec: FactorDecoders, mu: torch.Tensor, A: torch.Tensor) -> None:
    """Replace the identity decoder f(z) by f(μ + A z) in place (exact: its first layers are linear in z)."""
    net = dec.nets["identity"]
    with torch.no_grad():
        first = net.mlp[0]
        first.bias.add_(first.weight @ mu)
        first.weight.copy_(first.weight @ A)
        net.out_mean.add_(net.out_std * (net.skip.weight @ mu))
        net.skip.weight.copy_(net.skip.weight @ A)


def kl_to_standard(mu: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, AAᵀ) ‖ N(0, I)) per dimension."""
    d = mu.numel()
    cov = A @ A.t()
    return 0.5 * (torch.trace(cov) + mu.square().sum() - d - torch.logdet(cov + 1e-6 * torch.eye(d))) / d


def moments_loss(fake: torch.Tensor, mean_r: torch.Tensor, cov_r: torch.Tensor) -> torch.Tensor:
    """|mean − mean_real|² + ‖Cov − Cov_real‖_F, the two parts of a Fréchet distance (descriptor units²)."""
    m = fake.mean(0)
    c = torch.cov(fake.t())
    return (m - mean_r).square().sum() + (c - cov_r).square().sum().sqrt()


def spread_hinge(desc: torch.Tensor, others: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of relu(margin − distance) over the pairs of ``desc`` (with gradient) among themselves and with
    ``others`` (detached recent descriptors): different random faces closer than the margin are pushed apart."""
    d = torch.cdist(desc, torch.cat([desc, others.to(desc)]) if len(others) else desc)
    n = desc.shape[0]
    off = torch.ones_like(d, dtype=torch.bool)
    off[:, :n] = ~torch.eye(n, dtype=torch.bool)
    return torch.relu(margin - d[off]).mean()


def real_descriptors(idnet, limit: int, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    from training.data import load_aligned

    d = load_aligned("train", 128, None)
    imgs = d["images"]
    idx = np.linspace(0, len(imgs) - 1, min(limit, len(imgs))).round().astype(int)
    out = []
    with torch.no_grad():
        for i in range(0, len(idx), 32):
            x = imgs[idx[i:i + 32]].permute(0, 3, 1, 2).float() / 255
            out.append(idnet.embed_crops(x).numpy())
    arr = np.concatenate(out).astype(np.float32)
    np.save(cache, arr)
    return arr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training idprior", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/idprior")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--generator", default=None, help="generator file (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--queue", type=int, default=240, help="recent descriptors (detached) the moments are taken over")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--kl-weight", type=float, default=0.05)
    ap.add_argument("--spread-weight", type=float, default=0.0,
                    help="hinge on descriptor distances under --spread-min between this step's faces and the recent "
                         "ones (dlib: < 0.6 is the same person)")
    ap.add_argument("--spread-min", type=float, default=0.65)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--real", type=int, default=2000, help="train crops the target descriptors come from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", default=None, help="write the generator with the folded prior here and exit")
    ap.add_argument("--trunc-layers", type=int, default=None,
                    help="with --export: how many per-layer ws the truncation acts on in the written file (the "
                         "generator's own setting when not given; fewer: the finer layers keep each face's own look)")
    args = ap.parse_args(argv)
    if args.batch < 2 or args.steps < 0 or args.queue < 0:
        print("error: --batch must be >= 2, --steps and --queue >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    ck = out / CKPT_NAME
    try:
        fg = FaceGenerator.load(args.generator) if args.generator else load_default_generator(upsampler=False)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fg is None:
        print("error: no generator (assets/generator.safetensors missing; pass --generator)", file=sys.stderr)
        return 1
    d_id = LATENT_DIMS["identity"]
    mu = torch.zeros(d_id, requires_grad=True)
    A = torch.eye(d_id).requires_grad_(True)
    opt = torch.optim.Adam([mu, A], lr=args.lr)
    state = {"step": 0, "runs": []}
    if args.resume or args.export:
        if not ck.exists():
            print(f"error: nothing to {'export' if args.export else 'resume'} in {out} (no {CKPT_NAME})",
                  file=sys.stderr)
            return 1
        try:
            t, meta = load_safetensors(ck, CKPT_FORMAT, CKPT_VERSION)
            state = json.loads(meta["state"])
            with torch.no_grad():
                mu.copy_(t["mu"])
                A.copy_(t["A"])
            if "opt.exp_avg.mu" in t:
                opt.state[mu] = {"step": torch.tensor(float(state["step"])), "exp_avg": t["opt.exp_avg.mu"],
                                 "exp_avg_sq": t["opt.exp_avg_sq.mu"]}
                opt.state[A] = {"step": torch.tensor(float(state["step"])), "exp_avg": t["opt.exp_avg.A"],
                                "exp_avg_sq": t["opt.exp_avg_sq.A"]}
        except (WeightsError, KeyError, ValueError, RuntimeError) as exc:
            print(f"error: cannot read {ck}: {exc}", file=sys.stderr)
            return 1
    elif ck.exists():
        print(f"error: {out} already holds a run; add --resume to continue it or choose another --out",
              file=sys.stderr)
        return 1
    if args.export:
        fold_identity_map(fg.decoders, mu.detach(), A.detach())
        if args.trunc_layers is not None:
            if not 0 <= args.trunc_layers <= fg.G.num_ws:
                print(f"error: --trunc-layers must be 0..{fg.G.num_ws}", file=sys.stderr)
                return 2
            fg.G.trunc_layers = fg.G.cfg["trunc_layers"] = int(args.trunc_layers)
        fg.save(args.export, {"training": json.dumps({"command": "python -m training idprior", "step": state["step"],
                                                      "trunc_layers": fg.G.trunc_layers,
                                                      "runs": state["runs"]})})
        print(f"wrote {args.export} (identity prior after {state['step']} steps)")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    log = run_log(out)

    from engine.perception.identity import default_identity_net

    idnet = default_identity_net()
    try:
        real = torch.from_numpy(real_descriptors(idnet, args.real, out / "real_desc.npy")).double()
    except Exception as exc:  # DataError and unreadable caches alike: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mean_r, cov_r = real.mean(0), torch.cov(real.t())
    fg.requires_grad_(False)
    fg = fg.to(memory_format=torch.contiguous_format)
    cfg = {k: v for k, v in vars(args).items() if k not in ("export", "resume", "out")}
    state["runs"].append({"from_step": state["step"], "args": cfg, "started": time.strftime("%Y-%m-%d %H:%M")})
    log(f"run {len(state['runs'])}: step {state['step']}, {len(real)} real descriptors; args {json.dumps(cfg)}")
    g = torch.Generator().manual_seed(args.seed * 7919 + state["step"])
    queue = torch.zeros(0, real.shape[1], dtype=torch.float64)
    t0 = time.time()
    step0 = state["step"]

    def save() -> None:
        t = {"mu": mu.detach().clone(), "A": A.detach().clone()}
        if mu in opt.state:
            for name, p in (("mu", mu), ("A", A)):
                t[f"opt.exp_avg.{name}"] = opt.state[p]["exp_avg"]
                t[f"opt.exp_avg_sq.{name}"] = opt.state[p]["exp_avg_sq"]
        save_safetensors(ck, t, CKPT_FORMAT, CKPT_VERSION, {"state": json.dumps(state)})

    def on_term(*_):  # a plain `kill` saves like Ctrl+C
        raise KeyboardInterrupt

    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    acc: dict[str, float] = {}
    try:
        while state["step"] < args.steps:
            if args.minutes is not None and time.time() - t0 > args.minutes * 60:
                break
            lat = sample_latents(args.batch, generator=g)
            lat.identity = mu + lat.identity @ A.t()
            c = fg.decoders.decode(lat)
            img = fg.synthesize(c, lat.noise, args.psi, upsample=False)
            desc = idnet.embed_crops(img).double()
            allf = torch.cat([queue, desc]) if len(queue) else desc
            mom = moments_loss(allf, mean_r, cov_r)
            kl = kl_to_standard(mu, A)
            loss = mom + args.kl_weight * kl
            terms = {"moments": mom, "kl": kl}
            if args.spread_weight > 0:
                terms["spread"] = spread_hinge(desc, queue, args.spread_min)
                loss = loss + args.spread_weight * terms["spread"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            queue = torch.cat([queue, desc.detach()])[-args.queue:] if args.queue else queue
            state["step"] += 1
            for k, v in terms.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            acc["n"] = acc.get("n", 0) + 1
            if state["step"] % 10 == 0:
                rate = (state["step"] - step0) / max(1e-6, time.time() - t0)
                log(f"step {state['step']} " + " ".join(f"{k} {v / acc['n']:.4f}" for k, v in acc.items() if k != "n")
                    + f" |mu| {float(mu.detach().norm()):.3f} ({60 * rate:.1f} steps/min)")
                acc = {}
                save()
    except KeyboardInterrupt:
        log("interrupted: saving")
    save()
    log(f"checkpoint at step {state['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
