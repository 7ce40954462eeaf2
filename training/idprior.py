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

Options added for issue 25's second round: ``--loss frechet`` fits the Fréchet distance itself (FID-id's measure)
instead of the moments; ``--sr-shift FILE`` takes the upsampler's mean shift of the descriptors off the target (the
bench measures the upsampled faces); ``--colour-weight`` keeps each face's eye / border / skin colour statistics
(``training/colour.py``) inside the train photos' range; ``--decoder-lr`` also fine-tunes the identity decoder
(a non-linear prior, anchored to the decoder it started from by ``--anchor-weight``).
Issue 25, gen4: ``--code-weight`` pulls each face's descriptor, read back as an identity code, towards the code the
face was drawn with (the generator's noise latent is the whitened descriptor PCA of the photos, z ~ N(0, I), but v2's
synthesis ignores it: correlation ~0 per dimension), so that with ``--mapping-lr`` the mapping learns to use it.
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


def sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    ev, V = torch.linalg.eigh(c)
    return (V * ev.clamp_min(0).sqrt()) @ V.t()


def frechet_loss(fake: torch.Tensor, mean_r: torch.Tensor, cov_r_sqrt: torch.Tensor) -> torch.Tensor:
    """The Fréchet distance of ``fake`` (N, D) to N(mean_r, cov_r) — FID-id's own measure, differentiable:
    |Δμ|² + tr C + tr C_r − 2 tr (C_r^½ C C_r^½)^½ (the last trace from the eigenvalues)."""
    m = fake.mean(0)
    c = torch.cov(fake.t())
    ev = torch.linalg.eigvalsh(cov_r_sqrt @ c @ cov_r_sqrt)
    tr_r = cov_r_sqrt.square().sum()
    return (m - mean_r).square().sum() + torch.trace(c) + tr_r - 2 * ev.clamp_min(1e-12).sqrt().sum()


def mapping_anchor(G, old_mapping, coeffs, noise: torch.Tensor) -> torch.Tensor:
    """Relative squared change of what the non-identity factors (expression, light, pose) add to w,
    w(all) − w(identity only), between G's mapping and ``old_mapping`` (the one a ``--mapping-lr`` run started
    from): the mapping may move who the faces are, not how the controls act on them."""
    v = G._coeff_vector(coeffs)
    vi, ni = G._identity_only(v, noise)
    x = torch.cat([torch.cat([v, noise.to(v)], 1), torch.cat([vi, ni], 1)])
    x = torch.cat([(x[:, :v.shape[1]] - G.coeff_mean) / G.coeff_std, x[:, v.shape[1]:]], 1)
    b = v.shape[0]
    new, old = G.mapping(x), old_mapping(x)
    d_new, d_old = new[:b] - new[b:], (old[:b] - old[b:]).detach()
    return (d_new - d_old).square().sum(1).mean() / d_old.square().sum(1).mean().clamp_min(1e-8)


def code_loss(G, desc: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per dimension between the identity code a face's descriptor reads back as (the
    generator's descriptor PCA, ``Generator.identity_code``) and the code ``code`` it was drawn with. Zero when the
    descriptor is the one the code stands for (within the PCA's span); ~2 when G ignores the code (both ~ N(0, I))."""
    return (G.identity_code(desc.float()).to(desc) - code.to(desc)).square().mean()


def code_nce(G, desc: torch.Tensor, code: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Contrastive form of :func:`code_loss`: cross-entropy of picking each face's own code among the batch's codes
    by the squared distance of its read-back code (logits −|ĉᵢ − zⱼ|² / τ). Unlike the squared error it does not
    reward read-back codes shrunk towards the mean code (faces alike), only faces told apart by their codes."""
    c = G.identity_code(desc.float()).to(desc)
    logits = -torch.cdist(c, code.to(desc)).square() / tau
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(c), device=c.device))


def laplacian_energy(img01: torch.Tensor) -> torch.Tensor:
    """(B,) mean |4-neighbour Laplacian| of the grey image over the central half, in 0–255 grey levels:
    ``bench/generator.py``'s sharpness measure (``laplacian_energy``), per face and differentiable."""
    g = (img01 * 255 * torch.tensor([0.299, 0.587, 0.114], dtype=img01.dtype, device=img01.device)
         .view(1, 3, 1, 1)).sum(1)
    n = g.shape[-1]
    c = g[:, n // 4: 3 * n // 4, n // 4: 3 * n // 4]
    lap = 4 * c[:, 1:-1, 1:-1] - c[:, :-2, 1:-1] - c[:, 2:, 1:-1] - c[:, 1:-1, :-2] - c[:, 1:-1, 2:]
    return lap.abs().mean((1, 2))


def spread_hinge(desc: torch.Tensor, others: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of relu(margin − distance) over the pairs of ``desc`` (with gradient) among themselves and with
    ``others`` (detached recent descriptors): different random faces closer than the margin are pushed apart."""
    d = torch.cdist(desc, torch.cat([desc, others.to(desc)]) if len(others) else desc)
    n = desc.shape[0]
    off = torch.ones_like(d, dtype=torch.bool)
    off[:, :n] = ~torch.eye(n, dtype=torch.bool)
    return torch.relu(margin - d[off]).mean()


def _train_subset(limit: int):
    from training.data import load_aligned

    d = load_aligned("train", 128, None)
    idx = np.linspace(0, len(d["images"]) - 1, min(limit, len(d["images"]))).round().astype(int)
    return d["images"][idx], d["landmarks"][idx]


def real_colour_stats(limit: int, size: int, cache: Path) -> np.ndarray:
    """(N, 7) :mod:`training.colour` statistics of the same train crops the descriptors come from, at ``size``."""
    if cache.exists():
        return np.load(cache)
    import torch.nn.functional as F

    from training.colour import colour_stats, face_masks

    imgs, lms = _train_subset(limit)
    out = []
    for i in range(0, len(imgs), 64):
        x = F.interpolate(imgs[i:i + 64].permute(0, 3, 1, 2).double() / 255, size=(size, size), mode="area")
        x = torch.round(x * 255) / 255  # as the bench's uint8 faces
        out.append(colour_stats(x, *face_masks(lms[i:i + 64].numpy() * size / 128, size)).numpy())
    arr = np.concatenate(out).astype(np.float32)
    np.save(cache, arr)
    return arr


def real_descriptors(idnet, limit: int, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    imgs, _ = _train_subset(limit)
    idx = np.arange(len(imgs))
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
    ap.add_argument("--colour-weight", type=float, default=0.0,
                    help="hinge keeping each face's eye / border / skin colour statistics (training/colour.py) inside "
                         "the train photos' --colour-q … 100 − q %% range, in units of that range's width")
    ap.add_argument("--colour-q", type=float, default=5.0)
    ap.add_argument("--decoder-lr", type=float, default=0.0,
                    help="also fine-tune the identity decoder's weights (a non-linear prior) at this learning rate")
    ap.add_argument("--anchor-weight", type=float, default=1.0,
                    help="with --decoder-lr: mean squared change of the decoded identity (in training-std units) "
                         "against the decoder as loaded, for the same mapped latent")
    ap.add_argument("--mapping-lr", type=float, default=0.0,
                    help="also fine-tune G's mapping network (coefficients + code -> w) at this Adam learning rate "
                         "(its layers are equalised with lr_mul 0.01: 0.02 moves a weight ~2e-4 of its size a step)")
    ap.add_argument("--map-anchor-weight", type=float, default=1.0,
                    help="with --mapping-lr: keep what expression / light / pose add to w (w(all) - w(identity "
                         "only)) as the mapping it started from maps it, relative squared change")
    ap.add_argument("--code-weight", type=float, default=0.0,
                    help="pull each face's descriptor, read back as an identity code (the generator's own descriptor "
                         "PCA, Generator.identity_code), towards the code it was drawn with (mean squared difference "
                         "per code dimension): the code is z ~ N(0, I) fitted to the photos, so a generator that follows "
                         "it spreads its people as the photos do (identity-code generators only)")
    ap.add_argument("--code-loss", choices=("mse", "nce"), default="mse",
                    help="--code-weight's form: mse (code_loss) or nce (code_nce: the face's own code picked among "
                         "the batch's, no reward for shrinking towards the mean code)")
    ap.add_argument("--sharp-weight", type=float, default=0.0,
                    help="hinge keeping the batch's mean Laplacian energy (the bench's sharpness, at G's size) at "
                         "least that of --sharp-ref's faces: relu(1 − energy / reference)")
    ap.add_argument("--sharp-ref", default=None,
                    help="with --sharp-weight: generator file whose 256 random faces (ψ --psi) give the reference "
                         "energy (default: the generator being tuned, as this run starts)")
    ap.add_argument("--loss", choices=("moments", "frechet"), default="moments",
                    help="moments: |Δμ|² + ‖ΔCov‖_F; frechet: the Fréchet distance itself (FID-id's measure)")
    ap.add_argument("--sr-shift", default=None,
                    help="an upsampler file: at the start of the run, the mean change it makes to the descriptors of "
                         "256 faces is taken off the real mean, so the faces match the photos *after* upsampling "
                         "(the bench measures FID-id on the upsampled faces)")
    ap.add_argument("--real", type=int, default=2000, help="train crops the target descriptors come from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", default=None, help="write the generator with the folded prior here and exit")
    ap.add_argument("--trunc-layers", type=int, default=None,
                    help="with --export: how many per-layer ws the truncation acts on in the written file (the "
                         "generator's own setting when not given; fewer: the finer layers keep each face's own look)")
    args = ap.parse_args(argv)
    if args.batch < 2 or args.steps < 0 or args.queue < 0 or args.colour_weight < 0 or args.decoder_lr < 0 \
            or args.mapping_lr < 0 or args.code_weight < 0 or args.sharp_weight < 0 \
            or not 0 <= args.colour_q < 50:
        print("error: --batch must be >= 2; --steps, --queue, --colour-weight, --decoder-lr, --mapping-lr, "
              "--code-weight, --sharp-weight >= 0; "
              "--colour-q in [0, 50)", file=sys.stderr)
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
    if args.code_weight > 0 and not fg.G.identity_noise:
        print("error: --code-weight needs a generator whose noise latent is an identity code (--id-codes)",
              file=sys.stderr)
        return 1
    d_id = LATENT_DIMS["identity"]
    mu = torch.zeros(d_id, requires_grad=True)
    A = torch.eye(d_id).requires_grad_(True)
    opt = torch.optim.Adam([mu, A], lr=args.lr)
    id_dec = fg.decoders.nets["identity"]
    dec_opt = None
    state = {"step": 0, "runs": []}
    dec_t: dict = {}
    map_t: dict = {}
    map_anchor_t: dict = {}  # the mapping a --mapping-lr run started from
    map_opt_t: dict = {}  # its Adam moments (a resumed run goes on without a fresh-Adam jump)
    anchor_t: dict = {}  # the identity decoder a --decoder-lr run started from (its anchor)
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
            dec_t = {k[4:]: v for k, v in t.items() if k.startswith("dec.")}
            anchor_t = {k[7:]: v for k, v in t.items() if k.startswith("anchor.")}
            if dec_t:  # a run with --decoder-lr: its identity decoder
                id_dec.load_state_dict(dec_t)
            map_t = {k[4:]: v for k, v in t.items() if k.startswith("map.")}
            map_anchor_t = {k[10:]: v for k, v in t.items() if k.startswith("mapanchor.")}
            map_opt_t = {k[7:]: v for k, v in t.items() if k.startswith("mapopt.")}
            if map_t:  # a run with --mapping-lr: its mapping network
                fg.G.mapping.load_state_dict(map_t)
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
        if ("anchor" in state and not dec_t) or (state.get("mapping") and not map_t):
            print(f"error: {ck} has no {'decoder' if not dec_t else 'mapping'} weights", file=sys.stderr)
            return 1
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
    cov_r_sqrt = sqrtm_psd(cov_r)
    fg.requires_grad_(False)
    fg = fg.to(memory_format=torch.contiguous_format)
    anchor = None
    if args.decoder_lr > 0:
        import copy

        anchor = copy.deepcopy(id_dec).requires_grad_(False)
        if anchor_t:  # the decoder the first decoder run started from, not this run's
            anchor.load_state_dict(anchor_t)
        anchor_t = {k: v.detach().clone() for k, v in anchor.state_dict().items()}
        id_dec.requires_grad_(True)
        dec_opt = torch.optim.Adam(id_dec.parameters(), lr=args.decoder_lr)
        state["anchor"] = True
    map_anchor = map_opt = None
    if args.mapping_lr > 0:
        import copy

        map_anchor = copy.deepcopy(fg.G.mapping).requires_grad_(False)
        if map_anchor_t:
            map_anchor.load_state_dict(map_anchor_t)
        map_anchor_t = {k: v.detach().clone() for k, v in map_anchor.state_dict().items()}
        fg.G.mapping.requires_grad_(True)
        map_opt = torch.optim.Adam(fg.G.mapping.parameters(), lr=args.mapping_lr)
        named = dict(fg.G.mapping.named_parameters())
        if map_opt_t and all(f"exp_avg.{k}" in map_opt_t and f"exp_avg_sq.{k}" in map_opt_t for k in named):
            for k, prm in named.items():  # a fresh Adam moves every weight by ~lr at once: S's speckle jump
                map_opt.state[prm] = {"step": map_opt_t["step"].clone(), "exp_avg": map_opt_t[f"exp_avg.{k}"],
                                      "exp_avg_sq": map_opt_t[f"exp_avg_sq.{k}"]}
        state["mapping"] = True
    elif state.get("mapping"):  # resumed without --mapping-lr: the mapping stays as trained, frozen
        map_anchor_t = map_anchor_t or {}
    colour = None
    if args.colour_weight > 0:
        from engine.face.model import default_model
        from engine.render import FaceRenderer
        from training.colour import STATS, colour_stats, face_masks, range_penalty, stat_ranges

        try:
            rc = torch.from_numpy(real_colour_stats(args.real, fg.G.resolution, out / "real_colour.npy")).double()
        except Exception as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        lo, hi = stat_ranges(rc, args.colour_q)
        width = (torch.quantile(rc, 0.99, 0) - torch.quantile(rc, 0.01, 0)).clamp_min(1e-3)
        colour = (FaceRenderer(default_model()), lo, hi, width)
        log("colour ranges (" + ", ".join(f"{n} {float(a):.1f}..{float(b):.1f}" for n, a, b in
                                          zip(STATS, lo, hi)) + ")")
    sr = None
    if args.sr_shift:
        from engine.generator.sr import FaceSR

        try:
            sr = FaceSR.load(args.sr_shift)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if sr.in_res != fg.G.resolution:
            print(f"error: {args.sr_shift} upsamples {sr.in_res} px images, the generator makes {fg.G.resolution} px",
                  file=sys.stderr)
            return 1
        with torch.no_grad():
            lat = sample_latents(256, generator=torch.Generator().manual_seed(12345))
            lat.identity = mu + lat.identity @ A.t()
            c = fg.decoders.decode(lat)
            d64, d128 = [], []
            for i in range(0, 256, 32):
                img = fg.synthesize(c[i:i + 32], lat.noise[i:i + 32], args.psi, upsample=False)
                d64.append(idnet.embed_crops(img).double())
                d128.append(idnet.embed_crops(sr.upsample01(img)).double())
            shift = torch.cat(d128).mean(0) - torch.cat(d64).mean(0)
        mean_r = mean_r - shift
        log(f"upsampler shift of the descriptor mean |δ|² = {float(shift.square().sum()):.4f} (taken off the target)")
    sharp_ref = None

    def sharp_view(img01: torch.Tensor) -> torch.Tensor:
        """the faces the sharpness hinge measures: upsampled by --sr-shift's upsampler when given (as the bench)"""
        return img01 if sr is None else sr.upsample01(img01)

    if args.sharp_weight > 0:
        try:
            ref_fg = FaceGenerator.load(args.sharp_ref) if args.sharp_ref else None
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        with torch.no_grad():
            lat = sample_latents(256, generator=torch.Generator().manual_seed(12345))
            if ref_fg is None:
                ref_fg = fg
                lat.identity = mu + lat.identity @ A.t()
            c = ref_fg.decoders.decode(lat)
            sharp_ref = float(torch.cat([laplacian_energy(sharp_view(ref_fg.synthesize(
                c[i:i + 32], lat.noise[i:i + 32], args.psi, upsample=False))) for i in range(0, 256, 32)]).mean())
        log(f"sharpness reference: mean Laplacian energy {sharp_ref:.3f}"
            + (f" after the upsampler ({sr.out_res} px)" if sr is not None else f" at {fg.G.resolution} px"))
    cfg = {k: v for k, v in vars(args).items() if k not in ("export", "resume", "out")}
    state["runs"].append({"from_step": state["step"], "args": cfg, "started": time.strftime("%Y-%m-%d %H:%M")})
    log(f"run {len(state['runs'])}: step {state['step']}, {len(real)} real descriptors; args {json.dumps(cfg)}")
    g = torch.Generator().manual_seed(args.seed * 7919 + state["step"])
    queue = torch.zeros(0, real.shape[1], dtype=torch.float64)
    t0 = time.time()
    step0 = state["step"]

    def save() -> None:
        t = {"mu": mu.detach().clone(), "A": A.detach().clone()}
        if state.get("anchor"):
            t.update({f"dec.{k}": v.detach().clone() for k, v in id_dec.state_dict().items()})
            t.update({f"anchor.{k}": v for k, v in anchor_t.items()})
        if state.get("mapping"):
            t.update({f"map.{k}": v.detach().clone() for k, v in fg.G.mapping.state_dict().items()})
            t.update({f"mapanchor.{k}": v for k, v in map_anchor_t.items()})
        if map_opt is not None and map_opt.state:
            for k, prm in fg.G.mapping.named_parameters():
                if prm in map_opt.state:
                    t[f"mapopt.exp_avg.{k}"] = map_opt.state[prm]["exp_avg"].detach().clone()
                    t[f"mapopt.exp_avg_sq.{k}"] = map_opt.state[prm]["exp_avg_sq"].detach().clone()
                    t["mapopt.step"] = torch.as_tensor(map_opt.state[prm]["step"], dtype=torch.float32).clone()
        elif map_opt_t:  # resumed without --mapping-lr: keep the moments for a later run
            t.update({f"mapopt.{k}": v for k, v in map_opt_t.items()})
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
            terms = {}
            extra = 0.0
            if colour is not None:
                rend, lo, hi, width = colour
                with torch.no_grad():
                    masks = face_masks(rend.landmarks(c, img.shape[-1]).numpy(), img.shape[-1])
                terms["colour"] = range_penalty(colour_stats(img.double(), *masks), lo, hi, width)
                extra = extra + args.colour_weight * terms["colour"]
            if anchor is not None:
                ref = anchor(lat.identity)
                terms["anchor"] = ((id_dec(lat.identity) - ref) / anchor.out_std).square().mean()
                extra = extra + args.anchor_weight * terms["anchor"]
            if map_anchor is not None:
                terms["map_anchor"] = mapping_anchor(fg.G, map_anchor, c, lat.noise)
                extra = extra + args.map_anchor_weight * terms["map_anchor"]
            if sharp_ref is not None:
                terms["sharp"] = torch.relu(1 - laplacian_energy(sharp_view(img)).mean() / sharp_ref)
                extra = extra + args.sharp_weight * terms["sharp"]
            desc = idnet.embed_crops(img).double()
            if args.code_weight > 0:
                terms["code"] = (code_loss if args.code_loss == "mse" else code_nce)(fg.G, desc, lat.noise)
                extra = extra + args.code_weight * terms["code"]
            allf = torch.cat([queue, desc]) if len(queue) else desc
            mom = (moments_loss(allf, mean_r, cov_r) if args.loss == "moments"
                   else frechet_loss(allf, mean_r, cov_r_sqrt))
            kl = kl_to_standard(mu, A)
            loss = mom + args.kl_weight * kl + extra
            terms.update({args.loss: mom, "kl": kl})
            if args.spread_weight > 0:
                terms["spread"] = spread_hinge(desc, queue, args.spread_min)
                loss = loss + args.spread_weight * terms["spread"]
            opt.zero_grad(set_to_none=True)
            for o in (dec_opt, map_opt):
                if o is not None:
                    o.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for o in (dec_opt, map_opt):
                if o is not None:
                    o.step()
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
