"""How the way random identities are sampled moves the diversity goals (issue 25): same-person pairs and FID-id.

    python bench/identity_sampling.py [--generator FILE] [--settings "id=1,code=1,L=8" "id=1.2,code=1,L=8" ...] [--n 48]
                                      [--tune-seeds 101 102] [--report-seeds 7 2026] [--fid-n 256] [--no-sr]
                                      [--sampler FILE|none] [--fid-sets 3 10101 20202] [--time-draws 20]

Each setting changes only how a random face is drawn, not the weights: ``id`` scales the identity latent z_id
(what the identity decoder sees; 1 = N(0, I)), ``code`` scales the identity code (the noise latent, the whitened
descriptor PCA of ``--id-codes`` generators), ``L`` is the number of per-layer ws truncation acts on (the file's
``trunc_layers``), ``psi`` the truncation (default 0.7, the editor's and bench/generator.py's). With an identity sampler
(``--sampler``, or the shipped one) the faces are the generator's own ``FaceGenerator.sample`` draws. Per setting and
seed set: the share of random pairs dlib's descriptor puts under 0.6 (``n`` faces per seed, as
``../shared/tools/judge.py diversity``, faces upsampled to ≥ 160 px; then pooled: every pair among all the seeds'
faces, with its standard error, ``bench/generator.py``'s ``pair_share_se``), their median distance, and FID-id (the
dlib-port descriptors of ``--fid-n`` faces against 512 held-out UTKFace test crops; ``training.evaluate.fid_id``'s
measure on this script's seeds; its mean part |μ_real − μ_fake|² beside it, the rest is the covariance part; then the
same against 512 test crops spread over the whole split — the first 512 in name order are ages 10–28 plus the
youngest and oldest, see bench/generator.py).
Two disjoint seed sets: choose on ``--tune-seeds``, report ``--report-seeds``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.generator.networks import load_default_generator, sample_latents  # noqa: E402


def parse_setting(text: str) -> dict:
    out = {"id": 1.0, "code": 1.0, "L": None, "psi": 0.7}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        if k not in out:
            raise SystemExit(f"error: unknown setting {k!r} in {text!r} (id, code, L, psi)")
        out[k] = int(v) if k == "L" else float(v)
    return out


def draw(fg, n: int, seed: int, s: dict):
    if fg.id_sampler is not None:  # the generator's own random faces (FaceGenerator.sample, through its sampler)
        if s["id"] != 1 or s["code"] != 1:
            raise SystemExit("error: id / code scalings act on plain draws: pass --sampler none")
        return fg.sample(n, seed)
    lat = sample_latents(n, seed=seed)
    lat.identity = lat.identity * s["id"]
    lat.noise = lat.noise * s["code"]
    return fg.decoders.decode(lat), lat.noise


def images(fg, c, noise, s: dict, bs: int = 32) -> torch.Tensor:
    L0 = fg.G.trunc_layers
    if s["L"] is not None:
        fg.G.trunc_layers = min(s["L"], fg.G.num_ws)
    try:
        with torch.no_grad():
            return torch.cat([fg.synthesize(c[i:i + bs], noise[i:i + bs], s["psi"])
                              for i in range(0, noise.shape[0], bs)])
    finally:
        fg.G.trunc_layers = L0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["id=1,code=1"])
    ap.add_argument("--n", type=int, default=48, help="faces per seed for the same-person share")
    ap.add_argument("--fid-n", type=int, default=256, help="faces per seed set for FID-id (0: skip)")
    ap.add_argument("--tune-seeds", type=int, nargs="*", default=[101, 102])
    ap.add_argument("--report-seeds", type=int, nargs="*", default=[])
    ap.add_argument("--no-sr", action="store_true", help="the bare 64 px generator (faster; same people)")
    ap.add_argument("--generator", default=None,
                    help="generator file (default: the shipped one; the shipped upsampler is attached unless --no-sr)")
    ap.add_argument("--sampler", default=None,
                    help="identity sampler file the faces are drawn through (engine/generator/idsampler.py; 'none': "
                         "plain N(0, I) draws; default: the shipped one with the shipped generator, none with "
                         "--generator)")
    ap.add_argument("--fid-sets", type=int, nargs="*", default=[],
                    help="also FID-id of --fid-n faces drawn with each of these seeds (3: the bench's own set, "
                         "bench/generator.py / training.evaluate.fid_ids), one row per set, then their mean")
    ap.add_argument("--time-draws", type=int, default=0,
                    help="also time this many single draws (FaceGenerator.sample(1, seed), the editor's New random "
                         "face), median and max ms")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "bench"))
    from generator import Dlib, dlib_descriptors, pair_share_se, to_u8  # noqa: E402

    from engine.perception.identity import default_identity_net
    from training import evaluate as E
    from training.data import load_aligned

    fg = load_default_generator(upsampler=not args.no_sr)
    if args.generator:
        from engine.generator.networks import FaceGenerator

        fg = FaceGenerator.load(args.generator).attach_sr(None if args.no_sr else fg.sr)
    if args.sampler is not None:
        from engine.generator.idsampler import IdentitySampler

        fg.attach_sampler(None if args.sampler == "none" else IdentitySampler.load(args.sampler))
    dl = Dlib()
    idnet = default_identity_net()
    real = None
    if args.fid_n:
        d = load_aligned("test", 128, None)
        spread = np.linspace(0, len(d["images"]) - 1, 512).round().astype(int)
        real = []
        for idx in (np.arange(512), spread):
            crops = d["images"][idx].permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                real.append(torch.cat([idnet.embed_crops(crops[i:i + 32])
                                       for i in range(0, len(crops), 32)]).numpy().astype(np.float64))
    print(f"{fg.resolution} px faces; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| setting | seed set | same-person pairs (mean of the seeds' sets) | pooled: all pairs of all seeds' faces "
          "(± standard error) | median dlib dist | faces found | FID-id | its mean part | "
          "FID-id, crops of all ages | its mean part |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for text in args.settings:
        s = parse_setting(text)
        for name, seeds in (("tune", args.tune_seeds), ("report", args.report_seeds)):
            if not seeds:
                continue
            shares, meds, found, pool = [], [], 0, []
            for sd in seeds:
                c, z = draw(fg, args.n, sd, s)
                ds = dlib_descriptors(dl, to_u8(images(fg, c, z, s)))
                d = np.linalg.norm(ds[:, None] - ds[None], axis=-1)[np.triu_indices(len(ds), 1)]
                shares.append(float(np.mean(d < 0.6)) if len(d) else float("nan"))
                meds.append(float(np.median(d)) if len(d) else float("nan"))
                found += len(ds)
                pool.append(ds)
            pool = np.concatenate(pool)  # every pair of the seeds' faces together: the rate with less noise
            dp = np.linalg.norm(pool[:, None] - pool[None], axis=-1)[np.triu_indices(len(pool), 1)]
            pooled = f"{100 * np.mean(dp < 0.6):.1f} % ± {100 * pair_share_se(pool):.1f}" if len(dp) else "–"
            fids = [float("nan")] * 4
            if args.fid_n:
                c, z = draw(fg, args.fid_n, 10_000 + seeds[0], s)
                with torch.no_grad():
                    x = images(fg, c, z, s)
                    fake = torch.cat([idnet.embed_crops(x[i:i + 32]) for i in range(0, len(x), 32)]).numpy()
                fake = fake.astype(np.float64)
                fids = [v for r in real for v in (E.frechet_distance(r, fake),
                                                   float(((r.mean(0) - fake.mean(0)) ** 2).sum()))]
            print(f"| {text} | {name} {' '.join(map(str, seeds))} | {100 * np.mean(shares):.1f} % "
                  f"({' / '.join(f'{100 * v:.0f}' for v in shares)}) | {pooled} | {np.mean(meds):.3f} | "
                  f"{found}/{args.n * len(seeds)} | " + " | ".join(f"{v:.3f}" for v in fids) + " |", flush=True)
        if args.fid_sets and args.fid_n:
            rows = []
            for sd in args.fid_sets:
                c, z = draw(fg, args.fid_n, sd, s)
                with torch.no_grad():
                    x = images(fg, c, z, s)
                    fake = torch.cat([idnet.embed_crops(x[i:i + 32]) for i in range(0, len(x), 32)]).numpy()
                fake = fake.astype(np.float64)
                rows.append([v for r in real for v in (E.frechet_distance(r, fake),
                                                       float(((r.mean(0) - fake.mean(0)) ** 2).sum()))])
                print(f"| {text} | FID-id set {sd} ({args.fid_n} faces) | | | | | "
                      + " | ".join(f"{v:.3f}" for v in rows[-1]) + " |", flush=True)
            print(f"| {text} | FID-id, mean of sets {' '.join(map(str, args.fid_sets))} | | | | | "
                  + " | ".join(f"{v:.3f}" for v in np.mean(rows, 0)) + " |", flush=True)
        if args.time_draws:
            import time

            ts = []
            for sd in range(args.time_draws):
                t = time.perf_counter()
                draw(fg, 1, 50_000 + sd, s)
                ts.append(1e3 * (time.perf_counter() - t))
            how = " through the identity sampler" if fg.id_sampler is not None else ""
            print(f"{text}: one random face drawn (FaceGenerator.sample(1, seed){how}): "
                  f"median {np.median(ts):.0f} ms, max {max(ts):.0f} ms over {len(ts)} draws (first: {ts[0]:.0f} ms); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
