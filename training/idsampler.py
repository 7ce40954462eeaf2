"""``python -m training idsampler``: fit the identity sampler of a trained generator (engine/generator/idsampler.py).

No weight of the generator changes. The command reads the descriptors (dlib-ResNet port) of ``--real`` UTKFace
**train** crops (the same evenly spread subset ``python -m training idprior`` uses) and of ``--fake`` plain random
faces of the generator (ψ ``--psi``, G's own size, as :meth:`FaceGenerator.sample` reads its candidates), takes the
``--dims`` main directions of the photos' descriptors, and stores the two Gaussians there: the photos' (its mean moved
by the upsampler's mean change of the descriptors, ``--sr``, so that the *upsampled* faces are the ones that match)
and the plain draws'. Seconds to minutes on one thread; ``--out`` is the sampler file (atomic write).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from engine.generator.idsampler import IdentitySampler, generator_fingerprint
from engine.generator.networks import FaceGenerator, sample_latents
from engine.io.files import WeightsError


def fake_descriptors(fg: FaceGenerator, idnet, n: int, seed: int, psi: float, sr=None, batch: int = 64):
    """(n, 128) descriptors of ``n`` plain random faces at G's size, and (with ``sr``) of the same faces upsampled."""
    lat = sample_latents(n, generator=torch.Generator().manual_seed(seed))
    c = fg.decoders.decode(lat)
    lo, hi = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            img = fg.synthesize(c[i:i + batch], lat.noise[i:i + batch], psi, upsample=False)
            lo.append(idnet.embed_crops(img).double())
            if sr is not None:
                hi.append(idnet.embed_crops(sr.upsample01(img)).double())
    return torch.cat(lo), (torch.cat(hi) if hi else None)


def fit_sampler(real: torch.Tensor, fake: torch.Tensor, dims: int, shift: torch.Tensor | None = None,
                candidates: int = 8, beta: float = 1.0, psi: float = 0.7, meta: dict | None = None,
                ridge: float = 1e-6, widen: float = 1.0) -> IdentitySampler:
    """The sampler whose weights move plain draws with descriptors ``fake`` (N, D) towards ``real`` (M, D) in the
    ``dims`` main directions of ``real``; ``shift``: a mean change applied to the faces after the descriptors are
    read (the upsampler's), taken off the photos' mean; ``widen``: the photos' covariance there scaled by it (> 1:
    a target wider than the photos, against the kept faces crowding where the ratio is high)."""
    real, fake = real.double(), fake.double()
    centre = real.mean(0)
    ev, vec = torch.linalg.eigh(torch.cov(real.t()))
    basis = vec[:, torch.argsort(ev, descending=True)[:dims]].t().contiguous()
    pr = (real - centre - (shift.double() if shift is not None else 0)) @ basis.t()
    pf = (fake - centre) @ basis.t()
    eye = ridge * torch.eye(dims, dtype=torch.float64)
    return IdentitySampler(centre, basis, pr.mean(0), widen * torch.cov(pr.t()) + eye, pf.mean(0),
                           torch.cov(pf.t()) + eye,
                           candidates, beta, psi, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training idsampler", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/identity_sampler.safetensors", help="the sampler file to write")
    ap.add_argument("--generator", default=None, help="generator file (default: the shipped one)")
    ap.add_argument("--sr", default=None,
                    help="upsampler whose mean change of the descriptors is taken off the target (default: the "
                         "shipped one when present; 'none': no shift)")
    ap.add_argument("--real", type=int, default=4000, help="train crops the photos' Gaussian comes from")
    ap.add_argument("--fake", type=int, default=4096, help="plain random faces the draws' Gaussian comes from")
    ap.add_argument("--dims", type=int, default=16, help="main directions of the photos' descriptors used")
    ap.add_argument("--candidates", type=int, default=8, help="draws per random face, one kept")
    ap.add_argument("--beta", type=float, default=1.0, help="power of the density ratio (0: plain draws)")
    ap.add_argument("--widen", type=float, default=1.3,
                    help="scale of the photos' covariance in the target (1: the photos'; 1.3 kept the same-person "
                         "pairs below plain draws' where 1 did not)")
    ap.add_argument("--psi", type=float, default=0.7, help="truncation the candidates are read at (the editor's)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--cache", default="runs/idsampler_cache", help="folder for the real descriptors (reused)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not 1 <= args.dims <= 128 or args.candidates < 1 or args.beta < 0 or args.real < args.dims + 2 \
            or args.fake < args.dims + 2 or not args.widen > 0:
        print("error: --dims must be 1..128, --candidates >= 1, --beta >= 0, --widen > 0, --real and --fake > "
              "--dims + 1", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    from engine import config
    from engine.generator.sr import FaceSR, load_default_sr
    from engine.perception.identity import default_identity_net
    from training.idprior import real_descriptors

    gen_path = Path(args.generator) if args.generator else config.ASSETS_DIR / "generator.safetensors"
    try:
        fg = FaceGenerator.load(gen_path)
        sr = None if args.sr == "none" else (FaceSR.load(args.sr) if args.sr else load_default_sr())
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if sr is not None and sr.in_res != fg.G.resolution:
        print(f"error: the upsampler takes {sr.in_res} px images, the generator makes {fg.G.resolution} px",
              file=sys.stderr)
        return 1
    t0 = time.time()
    idnet = default_identity_net()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        real = torch.from_numpy(real_descriptors(idnet, args.real, cache / f"real_desc_{args.real}.npy")).double()
    except Exception as exc:  # DataError and unreadable caches alike: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sha = hashlib.sha256(gen_path.read_bytes()).hexdigest()
    fake_cache = cache / f"fake_{sha[:12]}_{args.fake}_{args.seed}_{args.psi:g}_{'sr' if sr is not None else 'nosr'}.pt"
    if fake_cache.exists():  # the same draws of the same generator: reused (a --dims / --beta sweep)
        lo, hi = torch.load(fake_cache)
    else:
        lo, hi = fake_descriptors(fg, idnet, args.fake, args.seed, args.psi, sr)
        torch.save((lo, hi), fake_cache)
    shift = (hi.mean(0) - lo.mean(0)) if hi is not None else None
    meta = {"generator_fingerprint": generator_fingerprint(fg), "generator_sha256": sha, "generator": gen_path.name,
            "dims": args.dims,
            "training": json.dumps({"command": "python -m training idsampler", "real_train_crops": len(real),
                                    "fake": args.fake, "seed": args.seed,
                                    "sr": None if sr is None else str(getattr(sr, "meta", {}).get("training", ""))[:60],
                                    "sr_shift_sq": None if shift is None else round(float(shift.square().sum()), 5)})}
    meta["widen"] = args.widen
    s = fit_sampler(real, lo, args.dims, shift, args.candidates, args.beta, args.psi, meta, widen=args.widen)
    s.save(args.out)
    gap = float((s.real_mean - s.fake_mean).square().sum())
    print(f"wrote {args.out}: {args.dims} dims, {args.candidates} candidates, beta {args.beta}; |mean gap|^2 in those "
          f"dims {gap:.4f}, variance photos {float(torch.trace(s.real_cov)):.4f} / draws "
          f"{float(torch.trace(s.fake_cov)):.4f}; upsampler shift |d|^2 "
          f"{0.0 if shift is None else float(shift.square().sum()):.4f}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
