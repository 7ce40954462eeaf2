"""``python -m training warmup``: paired reconstruction warm start of the generator (CPU-friendly stage 0).

Why this exists: on two CPU cores the GAN of ``training gan`` sees ~4 images/s, so from scratch it is still noise
after an hour. Before the adversarial stages we therefore give G a supervised start that converges in minutes:

* **reconstruction** — every fitted training photo *i* has coefficients λ_i (``python -m training fit``); G learns
  ``G(λ_i, z_i) ≈ photo_i`` (L1 over the crop, ×3 inside the 3DMM face mask), where z_i is a *learned per-image noise
  code* (GLO, Bojanowski et al. 2018) kept on the sphere of radius √32 so that at sampling time z ~ N(0, I) lands where
  the codes live: the noise code learns hair / background / everything the 3DMM does not model;
* **imitation** — DiscoFaceGAN's stage-1 low-resolution term: for coefficients λ decoded from random z, G(λ, z)
  matches the analytic render R(λ) inside the render mask (weight 1, every other step), so G follows the
  coefficients beyond the range the fits cover (large yaw, strong expressions, odd light).

* **landmarks** (optional, ``--lm-weight``) — DiscoFaceGAN's stage-1 landmark term: the R-Net reads the generated
  imitation samples back and their 68 landmarks must sit where the requested coefficients put them. The masked L1
  above mostly teaches colour (a blurry head turned 30° and a frontal one differ little in L1); this term pulls
  geometry, i.e. pose and mouth/eye shape;
* **contrastive pairs** (optional, ``--pairs-weight``) — DiscoFaceGAN's stage-2 terms on pairs of random latents that
  differ in one factor, alternating expression pairs (G(λ1) warped by the 3D flow onto face 2 must match G(λ2)) and
  light pairs (hair/background, identity and landmarks unchanged); ``training.loss.DiscoLoss`` computes both, the
  same code the GAN uses. ``--steps`` fixes the step count so two runs from one checkpoint, with and without pairs,
  make the paper's stage-1 vs stage-1+2 ablation (see README, "Ablation").

Generator v2 (the shipped weights; flags and runs in assets/MODEL_CARD.md) adds, fine-tuning v1 with ``--init``:

* **full-head imitation** (``--head --imit-res 32``): the target is the face + mouth interior + eyes render, compared
  area-downsampled to 32 px, so the flat render teaches colour and layout (teeth, not purple) but not smoothness;
* **identity codes** (``--id-codes``): z_i is the whitened PCA of photo i's face descriptor (``training/idcodes.py``)
  instead of a learned code; the exported generator carries the PCA (``Generator(identity_noise=True)``);
* **a patch discriminator** (``--adv-weight``; RGB + high-pass, DiffAugment, R1 every 8 steps) on real photos against
  the step's reconstructions and samples — sharpness;
* **identity terms on the random samples**: ``--id-spread`` pushes the descriptors of different people apart,
  ``--id-keep`` makes half the samples twins of the other half (same identity, other expression / light / pose)
  whose descriptors must stay close; ``--id-weight`` (descriptor = the code's) is kept for experiments: it
  collapsed every face to one person (MODEL_CARD).

The result is a generator whose factors already act like the 3DMM's; ``training gan --preset cpu64ft --init
<exported generator>`` fine-tunes it with the GAN loop instead (the GPU presets skip this stage).
``--init`` also lets a warm-up run start from an exported generator file.
Resumable (``--resume``), time-boxed (``--minutes``), exports ``assets/generator.safetensors`` with ``--export``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import config
from engine.face.head import default_head
from engine.face.model import Coefficients, default_model
from engine.generator.networks import FactorDecoders, Generator, Latents, sample_latents
from engine.io.files import WeightsError, atomic_path, load_safetensors, save_image, save_safetensors, write_json_atomic
from engine.perception.identity import default_identity_net
from engine.render import FaceRenderer
from training.augment import diff_augment, parse_policy
from training.checkpoint import (CheckpointError, export_warmup_run, load_init_generator, load_warmup_checkpoint,
                                 save_warmup_checkpoint, warmup_meta, write_generator)
from training.data import load_aligned_by_names
from training.idcodes import IdentityCodes, fit_codes, photo_descriptors
from training.loss import (DiscoLoss, Perception, d_logistic, downsample, g_nonsaturating, masked_mean, r1_penalty,
                           strong_expressions, wide_poses)
from training.networks_d import PatchDiscriminator
from training.presets import get_preset

D_FORMAT = "discoface.warmup_d"
D_VERSION = 1


def load_pairs(fits_path: Path, size: int, limit: int | None = None) -> dict:
    """Fitted coefficients joined with their aligned crops (by file name), crops resized to ``size``.

    The joined set is cached as uint8 under ``cache/warmup/`` (keyed by the fits file's size and mtime), so a
    resumed run does not re-read the 1 GB of prepared shards."""
    st = fits_path.stat()
    cache = config.cache_dir() / "warmup" / f"pairs_{size}_{st.st_size}_{int(st.st_mtime)}_{limit or 0}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {"images": torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float().div_(255),
                "coeffs": {k: torch.from_numpy(z[k]) for k in ("identity", "albedo", "expression", "light", "pose")},
                "names": [str(x) for x in z["names"]]}
    pairs = _join_pairs(fits_path, size, limit)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, images=(pairs["images"].permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy(),
                     names=np.array(pairs["names"]), **{k: v.numpy() for k, v in pairs["coeffs"].items()})
    return pairs


def _join_pairs(fits_path: Path, size: int, limit: int | None) -> dict:
    fits = np.load(fits_path, allow_pickle=False)
    names = [str(n) for n in fits["names"]]
    if limit:
        names = names[:limit]
    data = load_aligned_by_names(names, "train")
    keep = np.flatnonzero(data["found"]).tolist()
    imgs = torch.from_numpy(data["images"][keep]).permute(0, 3, 1, 2).float().div_(255)
    if size != imgs.shape[-1]:
        imgs = torch.cat([F.interpolate(imgs[i:i + 512], size=(size, size), mode="area")
                          for i in range(0, len(imgs), 512)])
    keep_t = torch.tensor(keep)
    coeff = {k: torch.from_numpy(np.asarray(fits[k], dtype=np.float32)).index_select(0, keep_t)
             for k in ("identity", "albedo", "expression", "light", "pose")}
    return {"images": imgs, "coeffs": coeff, "names": [names[j] for j in keep]}


def face_masks(renderer: FaceRenderer, coeffs: dict, exp_names, size: int, batch: int = 128) -> torch.Tensor:
    out = []
    n = coeffs["identity"].shape[0]
    with torch.no_grad():
        for i in range(0, n, batch):
            c = Coefficients(*(coeffs[k][i:i + batch] for k in Coefficients.FACTORS), exp_names=exp_names)
            out.append(renderer(c, size).mask.bool())
    return torch.cat(out)


def _coeffs_at(coeffs: dict, idx: torch.Tensor, exp_names) -> Coefficients:
    return Coefficients(*(coeffs[k].index_select(0, idx) for k in Coefficients.FACTORS), exp_names=exp_names)


def pair_coefficients(decoders: FactorDecoders, half: int, factor: str, gen: torch.Generator,
                      pose_override=None) -> tuple[Latents, Coefficients]:
    """``2 * half`` latents and their coefficients: rows ``i`` and ``half + i`` differ only in ``factor``."""
    base = sample_latents(half, generator=gen)
    part = getattr(base, factor)
    lat = Latents.cat([base, base.replace(**{factor: torch.randn(part.shape, generator=gen)})])
    with torch.no_grad():
        c = decoders.decode(lat)
        if pose_override is not None:
            first = c[:half]
            pose_override(first, gen)
            c.pose[half:] = first.pose  # the pair shares everything but ``factor``
    return lat, c


def pair_loss(disco, G: Generator, decoders: FactorDecoders, half: int, factor: str, gen: torch.Generator,
              pose_override=None) -> torch.Tensor:
    """Stage-2 contrastive term on ``half`` pairs of latents differing only in ``factor`` (expression | light)."""
    if factor not in ("expression", "light"):
        raise ValueError(f"contrastive pairs are for expression or light, not {factor!r}")
    lat, c = pair_coefficients(decoders, half, factor, gen, pose_override)
    img = G(c, lat.noise, noise_mode="const")
    a, b = img[:half], img[half:]
    if factor == "expression":
        return disco.expression_pair(a, b, c[:half], c[half:])
    with torch.no_grad():
        mask = disco.renderer(c[:half], disco.res).mask
    return disco.light_pair(a, b, c[:half], c[half:], mask)


def imitation_l1(img01: torch.Tensor, rend_img: torch.Tensor, rend_mask: torch.Tensor, res: int) -> torch.Tensor:
    """Masked L1 between G's image and the render, both area-downsampled to ``res`` (the mask kept where it covers
    more than half a pixel): below G's size the flat render teaches colour and layout but not its own smoothness."""
    size = img01.shape[-1]
    if rend_img.shape[-1] != size:
        rend_img = F.interpolate(rend_img, size=(size, size), mode="bilinear", align_corners=False)
        rend_mask = F.interpolate(rend_mask, size=(size, size), mode="bilinear", align_corners=False)
    m = (downsample(rend_mask, res) > 0.5).to(img01.dtype)
    return masked_mean((downsample(img01, res) - downsample(rend_img, res)).abs().mean(1, keepdim=True), m)


ID_SPREAD_MARGIN = 0.75  # UTKFace photo pairs: median descriptor distance ≈ 0.83


ID_KEEP_MARGIN = 0.4  # an edit of expression / light / pose should stay this close (dlib: same person < 0.6)


def spread_term(desc: torch.Tensor, margin: float, person: torch.Tensor | None = None) -> torch.Tensor:
    """Mean hinge ``relu(margin − ‖d_i − d_j‖)`` over the pairs i < j of a batch of descriptors (B, 128) —
    of different people only, when ``person`` (B,) says who each row is."""
    if desc.shape[0] < 2:
        return desc.sum() * 0
    i, j = torch.triu_indices(desc.shape[0], desc.shape[0], 1)
    if person is not None:
        keep = person[i] != person[j]
        i, j = i[keep], j[keep]
        if i.numel() == 0:
            return desc.sum() * 0
    dist = (desc[i] - desc[j]).pow(2).sum(1).add(1e-8).sqrt()
    return F.relu(margin - dist).mean()


def load_identity_codes(images01: torch.Tensor, k: int, fits_path: Path, res: int
                        ) -> tuple[IdentityCodes, torch.Tensor]:
    """(PCA codes, (n, 128) descriptors) of the pair photos at G's size, cached beside the pairs."""
    st = fits_path.stat()
    cache = config.cache_dir() / "warmup" / f"idcodes_{res}_{len(images01)}_{st.st_size}_{int(st.st_mtime)}.npz"
    if cache.exists():
        desc = torch.from_numpy(np.load(cache)["descriptors"])
    else:
        t = time.time()
        desc = photo_descriptors(images01, default_identity_net())
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, descriptors=desc.numpy())
        print(f"face descriptors of {len(desc)} photos in {time.time() - t:.0f} s", flush=True)
    return fit_codes(desc, k), desc


def with_identity_noise(G: Generator, idc: IdentityCodes) -> Generator:
    """``G`` (same weights) whose noise latent is the identity code of ``idc``, carrying its PCA."""
    if G.identity_noise:
        G.set_identity_pca(idc.mean, idc.basis, idc.std)
        return G
    cfg = dict(G.cfg, identity_noise=True, descriptor_dim=idc.mean.numel())
    out = Generator(**cfg)
    missing, unexpected = out.load_state_dict(G.state_dict(), strict=False)
    if unexpected or set(missing) - {"id_mean", "id_basis", "id_std"}:
        raise ValueError(f"cannot carry the weights over: missing {missing}, unexpected {unexpected}")
    out.set_identity_pca(idc.mean, idc.basis, idc.std)
    return out.train().requires_grad_(True)


def run_decoders(dec_path: Path, model) -> FactorDecoders:
    """The factor decoders a warm-up run uses: ``dec_path`` when it exists, else the hand-made prior."""
    K = model.albedo_dim
    dec = FactorDecoders.load(dec_path) if dec_path.exists() else FactorDecoders.prior(K, model.exp_names)
    dec.exp_names = model.exp_names
    return dec


# ----------------------------------------------------------------------------------------------------- config
class WarmupError(ValueError):
    """A user-facing problem (missing fits, a mismatched --init, a term without what it needs): one line, exit 2."""


@dataclass
class WarmupConfig:
    """Everything a warm-up run depends on: the generator architecture (from a preset in ``training/presets.py``),
    the files, the schedule and the weight of every term (0: off). ``main`` builds it from the command line."""

    preset: str = "cpu64"
    resolution: int = 64
    g_channels: dict = field(default_factory=dict)
    w_dim: int = 256
    map_layers: int = 4
    # files
    fits: Path | None = None        # default cache/fits/train.npz
    decoders: Path | None = None    # default assets/decoders.safetensors (the hand-made prior if absent)
    out: Path = Path("runs/warmup")
    init: str | None = None         # generator file G starts from (its architecture replaces the preset's)
    export: str | None = None       # write the FaceGenerator (G_ema + decoders) here at the end
    resume: bool = False
    # schedule
    minutes: float = 30.0
    steps: int | None = None        # stop at this total step count (besides the minutes)
    batch: int = 16
    lr: float = 0.002
    map_lr_mul: float = 20.0        # the mapping MLP's learning rate as a multiple of lr
    limit: int | None = None
    seed: int = 0
    threads: int | None = None
    ckpt_every: int = 200           # steps
    log_every: int = 25             # steps
    # terms
    imit_weight: float = 1.0
    imit_every: int = 2
    imit_yaw: float = 0.0
    imit_expr: float = 0.0
    imit_res: int | None = None
    head: bool = False
    lm_weight: float = 0.0
    pairs_weight: float = 0.0
    pairs_every: int = 2
    id_codes: bool = False
    id_weight: float = 0.0
    id_every: int = 2
    id_spread: float = 0.0
    id_keep: float = 0.0
    adv_weight: float = 0.0
    d_lr: float = 0.002
    r1_gamma: float = 0.1
    augment: str = "color,translation"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "WarmupConfig":
        """The preset's generator architecture with ``overrides`` (any other field)."""
        try:
            p = get_preset(name)
        except KeyError as exc:
            raise WarmupError(exc.args[0]) from None
        return cls(preset=name, resolution=p["resolution"], g_channels=p["g_channels"], w_dim=p["w_dim"],
                   map_layers=p["map_layers"], **overrides)

    @property
    def fits_path(self) -> Path:
        return Path(self.fits) if self.fits else config.cache_dir() / "fits" / "train.npz"

    @property
    def decoders_path(self) -> Path:
        return Path(self.decoders) if self.decoders else config.ASSETS_DIR / "decoders.safetensors"

    @property
    def checkpoint(self) -> Path:
        return Path(self.out) / "warmup.safetensors"

    def arch(self) -> dict:
        """The preset keys ``training.checkpoint.export_warmup_run`` builds G_ema from."""
        return {"resolution": self.resolution, "g_channels": self.g_channels, "w_dim": self.w_dim,
                "map_layers": self.map_layers}


# ----------------------------------------------------------------------------------------------------- set-up
@dataclass
class WarmupRun:
    """A run's state: data, networks, optimisers and counters (what ``warmup_loop`` advances)."""

    model: object
    renderer: FaceRenderer
    pairs: dict
    masks: torch.Tensor
    decoders: FactorDecoders
    G: Generator
    G_ema: Generator
    codes: torch.Tensor              # (n, noise_dim): learned (GLO) or the photos' identity codes
    opt: torch.optim.Optimizer
    opt_codes: torch.optim.Optimizer | None
    idc: IdentityCodes | None = None
    descriptors: torch.Tensor | None = None
    D: PatchDiscriminator | None = None
    opt_d: torch.optim.Optimizer | None = None
    augment: tuple = ()
    idnet: object = None
    disco: DiscoLoss | None = None
    imit_res: int = 0
    step: int = 0
    images_seen: int = 0

    @property
    def n(self) -> int:
        return len(self.pairs["names"])


def setup(cfg: WarmupConfig) -> WarmupRun:
    """Load the pairs, build G (fresh, ``--init`` or resumed), the codes, D and the loss helpers."""
    torch.manual_seed(cfg.seed)
    res = cfg.resolution
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    model = default_model()
    renderer = FaceRenderer(model)
    fits_path = cfg.fits_path
    if not fits_path.exists():
        raise WarmupError(f"no fits at {fits_path}; run `python -m training fit` first")
    t0 = time.time()
    pairs = load_pairs(fits_path, res, cfg.limit)
    K = pairs["coeffs"]["albedo"].shape[1]
    if K != model.albedo_dim:
        raise WarmupError(f"fits have albedo K={K} but the face model has K={model.albedo_dim}; refit after "
                          f"`python -m training albedo`")
    n = len(pairs["names"])
    masks = face_masks(renderer, pairs["coeffs"], model.exp_names, res)
    print(f"{n} fitted pairs at {res} px loaded in {time.time() - t0:.0f} s", flush=True)

    decoders = run_decoders(cfg.decoders_path, model)
    if decoders.albedo_dim != K:
        print(f"warning: decoders at {cfg.decoders_path} have albedo K={decoders.albedo_dim}, fits K={K}: using "
              f"the hand-made prior decoders (train the VAEs on these fits: python -m training vae)", file=sys.stderr)
        decoders = FactorDecoders.prior(K, model.exp_names)
    decoders.exp_names = model.exp_names
    decoders.requires_grad_(False)

    G = Generator(resolution=res, albedo_dim=K, channels=cfg.g_channels, w_dim=cfg.w_dim, map_layers=cfg.map_layers)
    vec = torch.cat([pairs["coeffs"][k] for k in Coefficients.FACTORS], 1)
    G.set_coeff_stats(vec.mean(0), vec.std(0))
    if cfg.init and not (cfg.resume and cfg.checkpoint.exists()):
        try:
            init = load_init_generator(cfg.init).G
        except CheckpointError as exc:
            raise WarmupError(str(exc)) from None
        if init.resolution != res or init.albedo_dim != K:
            raise WarmupError(f"{cfg.init} is {init.resolution} px with albedo K={init.albedo_dim}; this run needs "
                              f"{res} px and K={K}")
        G = init
    idc = descriptors = None
    if cfg.id_codes:
        try:
            idc, descriptors = load_identity_codes(pairs["images"], G.noise_dim, fits_path, res)
        except ValueError as exc:
            raise WarmupError(str(exc)) from None
        print(f"identity codes: {G.noise_dim} components hold {100 * idc.explained:.0f} % of the descriptor "
              f"variance", flush=True)
        G = with_identity_noise(G, idc)
        codes = idc.codes.clone()
    else:
        codes = torch.randn(n, G.noise_dim)
        codes = F.normalize(codes, dim=1) * math.sqrt(G.noise_dim)
        codes.requires_grad_(True)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    # The mapping's equalised-lr layers run at lr_mul 0.01 (StyleGAN's choice for adversarial stability); for this
    # supervised stage they get a proportionally larger step so the coefficients → w map learns as fast as synthesis.
    map_params = list(G.mapping.parameters())
    map_ids = {id(p) for p in map_params}
    opt = torch.optim.Adam([{"params": [p for p in G.parameters() if id(p) not in map_ids], "lr": cfg.lr},
                            {"params": map_params, "lr": cfg.lr * cfg.map_lr_mul}], betas=(0.5, 0.99))
    opt_codes = torch.optim.Adam([codes], lr=0.01) if codes.requires_grad else None
    run = WarmupRun(model=model, renderer=renderer, pairs=pairs, masks=masks, decoders=decoders, G=G, G_ema=G_ema,
                    codes=codes, opt=opt, opt_codes=opt_codes, idc=idc, descriptors=descriptors,
                    augment=parse_policy(cfg.augment))
    if cfg.adv_weight > 0:
        run.D = PatchDiscriminator(res, highpass=True)
        run.opt_d = torch.optim.Adam(run.D.parameters(), lr=cfg.d_lr, betas=(0.0, 0.99))
    if cfg.resume and cfg.checkpoint.exists():
        _resume(cfg, run)
    if cfg.id_weight > 0 and idc is None:
        raise WarmupError("--id-weight needs --id-codes (the codes say which descriptor each image should have)")
    run.idnet = default_identity_net() if cfg.id_weight > 0 or cfg.id_spread > 0 or cfg.id_keep > 0 else None
    run.imit_res = min(cfg.imit_res or res, res)
    if cfg.pairs_weight > 0 or cfg.lm_weight > 0 or cfg.head:
        try:
            head = default_head(model) if cfg.head else None
        except Exception as exc:  # noqa: BLE001 - any unreadable parts file is one message
            raise WarmupError(f"--head needs the head parts: {exc}") from None
        run.disco = DiscoLoss(renderer, Perception(), res, l1_res=res, head=head)
        if cfg.lm_weight > 0 and run.disco.perception.rnet is None:
            raise WarmupError("--lm-weight needs the R-Net (assets/rnet.safetensors)")
    return run


def _resume(cfg: WarmupConfig, run: WarmupRun) -> None:
    try:
        g_sd, ema_sd, st, saved_codes = load_warmup_checkpoint(cfg.checkpoint)
    except CheckpointError as exc:
        raise WarmupError(str(exc)) from None
    run.G.load_state_dict(g_sd)
    run.G_ema.load_state_dict(ema_sd)
    if saved_codes.shape == run.codes.shape and run.idc is None:
        with torch.no_grad():
            run.codes.copy_(saved_codes)
    d_file = Path(cfg.out) / "discriminator.safetensors"
    if run.D is not None and d_file.exists():
        try:
            run.D.load_state_dict(load_safetensors(d_file, D_FORMAT, D_VERSION)[0])
        except (WeightsError, RuntimeError) as exc:
            print(f"warning: discriminator not resumed ({exc}); it starts afresh", file=sys.stderr)
    run.step = int(st["step"])
    # older checkpoints did not count images; their runs used one batch size throughout
    run.images_seen = int(st.get("images_seen", run.step * cfg.batch))
    print(f"resumed at step {run.step}", flush=True)


def save_checkpoint(cfg: WarmupConfig, run: WarmupRun) -> None:
    save_warmup_checkpoint(cfg.checkpoint, run.G, run.G_ema, run.codes, {
        "step": run.step, "pairs": run.n, "res": cfg.resolution, "images_seen": run.images_seen})
    if run.D is not None:
        save_safetensors(Path(cfg.out) / "discriminator.safetensors", run.D.state_dict(), D_FORMAT, D_VERSION)


@torch.no_grad()
def save_samples(cfg: WarmupConfig, run: WarmupRun) -> None:
    """photos | their reconstructions | renders of random coefficients | G_ema's images of them (8 each)."""
    res = cfg.resolution
    c = _coeffs_at(run.pairs["coeffs"], torch.arange(8), run.model.exp_names)
    lat = sample_latents(8, seed=1)
    cr = run.decoders.decode(lat)
    grid = torch.cat([run.pairs["images"][:8], run.G_ema(c, run.codes[:8].detach()) * 0.5 + 0.5,
                      run.renderer(cr, res).image, run.G_ema(cr, lat.noise) * 0.5 + 0.5]).clamp(0, 1)
    grid = grid.view(4, 8, 3, res, res).permute(2, 0, 3, 1, 4).reshape(3, 4 * res, 8 * res)
    save_image(Path(cfg.out) / f"samples_{run.step:06d}.png", grid)


# ----------------------------------------------------------------------------------------------------- the loop
def generator_step(cfg: WarmupConfig, run: WarmupRun, g: torch.Generator) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One G step (reconstruction, and on their steps imitation, landmarks, identity, pairs, adversarial); returns
    (the terms, the real photos, G's images in [-1, 1] for D)."""
    G, step, model = run.G, run.step, run.model
    idx = torch.randint(0, run.n, (cfg.batch,), generator=g)
    c = _coeffs_at(run.pairs["coeffs"], idx, model.exp_names)
    target = run.pairs["images"].index_select(0, idx)
    m = run.masks.index_select(0, idx).float()
    fake = G(c, run.codes[idx], noise_mode="const") * 0.5 + 0.5
    err = (fake - target).abs()
    rec = err.mean() + 2.0 * (err * m).sum() / (m.sum() * 3).clamp_min(1)
    loss = rec
    terms = {"rec": rec}

    def pose_override(cc: Coefficients, gen: torch.Generator) -> None:
        wide_poses(cc, cfg.imit_yaw, gen)

    fr = None
    if step % cfg.imit_every == cfg.imit_every - 1:
        lat = sample_latents(cfg.batch // 2, generator=g)
        twins = cfg.id_keep > 0 and run.idnet is not None and step % cfg.id_every == cfg.id_every - 1
        with torch.no_grad():
            cr = run.decoders.decode(lat)
            pose_override(cr, g)
            if cfg.imit_expr > 0:
                strong_expressions(cr, cfg.imit_expr, g)
            if twins:  # rows i and i + q: one person (identity, albedo, code), other expression/light/pose
                q = len(lat.noise) // 2
                cr.identity[q:2 * q] = cr.identity[:q]
                cr.albedo[q:2 * q] = cr.albedo[:q]
                lat.noise[q:2 * q] = lat.noise[:q]
            if run.disco is not None and run.disco.head is not None:
                r_img, r_mask = run.disco.imitation_target(cr)
            else:
                r = run.renderer(cr, cfg.resolution)
                r_img, r_mask = r.image, r.mask
        fr = G(cr, lat.noise, noise_mode="const") * 0.5 + 0.5
        terms["imit"] = imitation_l1(fr, r_img, r_mask, run.imit_res)
        loss = loss + cfg.imit_weight * terms["imit"]
        if cfg.lm_weight > 0:
            terms["lm"], _ = run.disco.landmark_light_terms(fr, cr)
            loss = loss + cfg.lm_weight * terms["lm"]
        if run.idnet is not None and step % cfg.id_every == cfg.id_every - 1:
            h = cfg.batch // 2
            if cfg.id_weight > 0:
                # what a code means: the random sample's descriptor is the one its code stands for, and the
                # reconstruction's is its photo's (the first half of the batch, to keep the step cheap)
                got = run.idnet.embed_crops(torch.cat([fake[:h], fr]))
                want = torch.cat([run.descriptors.index_select(0, idx[:h]), run.idc.descriptors(lat.noise)])
                terms["id"] = (got - want).pow(2).sum(1).add(1e-8).sqrt().mean()
                loss = loss + cfg.id_weight * terms["id"]
                got = got[h:]
            else:
                got = run.idnet.embed_crops(fr)
            same = None
            if twins:
                terms["keep"] = F.relu((got[:q] - got[q:2 * q]).norm(dim=1) - ID_KEEP_MARGIN).mean()
                loss = loss + cfg.id_keep * terms["keep"]
                same = torch.zeros(len(got), dtype=torch.long)
                same[:2 * q] = torch.arange(q).repeat(2)
                same[2 * q:] = torch.arange(q, q + len(got) - 2 * q)
            if cfg.id_spread > 0:  # random samples must be different people
                terms["spread"] = spread_term(got, ID_SPREAD_MARGIN, same)
                loss = loss + cfg.id_spread * terms["spread"]
    if cfg.pairs_weight > 0 and step % cfg.pairs_every == 0:
        terms["pairs"] = pair_loss(run.disco, G, run.decoders, cfg.batch // 4, "expression"
                                   if (step // cfg.pairs_every) % 2 == 0 else "light", g, pose_override)
        loss = loss + cfg.pairs_weight * terms["pairs"]
    fakes = None
    if run.D is not None:  # this step's reconstructions and samples, in [-1, 1] as D sees photos
        fakes = torch.cat([fake] + ([fr] if fr is not None else [])) * 2 - 1
        run.D.requires_grad_(False)
        terms["adv"] = g_nonsaturating(run.D(diff_augment(fakes, run.augment)))
        loss = loss + cfg.adv_weight * terms["adv"]
    run.opt.zero_grad(set_to_none=True)
    if run.opt_codes is not None:
        run.opt_codes.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.opt_codes is not None:
        run.opt_codes.step()
    return terms, target, fakes


def discriminator_step(cfg: WarmupConfig, run: WarmupRun, target: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
    """Real photos against this step's reconstructions and samples (logistic loss, R1 every 8 steps)."""
    D = run.D
    D.requires_grad_(True)
    real = target * 2 - 1
    d_loss = d_logistic(D(diff_augment(real, run.augment)), D(diff_augment(fakes.detach(), run.augment)))
    if cfg.r1_gamma > 0 and run.step % 8 == 0:
        r1, _ = r1_penalty(D, real, cfg.r1_gamma)
        d_loss = d_loss + 8 * r1
    run.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    run.opt_d.step()
    return d_loss


@torch.no_grad()
def _after_step(run: WarmupRun) -> None:
    """Codes back onto their sphere; G_ema follows G."""
    if run.opt_codes is not None:
        run.codes.copy_(F.normalize(run.codes, dim=1) * math.sqrt(run.G.noise_dim))
    ema_beta = min(0.995, (1 + run.step) / (10 + run.step))
    for pe, p in zip(run.G_ema.parameters(), run.G.parameters()):
        pe.lerp_(p, 1 - ema_beta)
    for be, b in zip(run.G_ema.buffers(), run.G.buffers()):
        be.copy_(b)


def warmup_loop(cfg: WarmupConfig, run: WarmupRun) -> WarmupRun:
    """Train until ``cfg.minutes`` pass or ``cfg.steps`` is reached; progress lines, checkpoints and sample grids
    on their steps; a last checkpoint at the end."""
    g = torch.Generator().manual_seed(cfg.seed + run.step)
    deadline = time.time() + cfg.minutes * 60
    t_last, log = time.time(), []
    while time.time() < deadline and (cfg.steps is None or run.step < cfg.steps):
        terms, target, fakes = generator_step(cfg, run, g)
        if run.D is not None:
            terms["d"] = discriminator_step(cfg, run, target, fakes)
        _after_step(run)
        run.step += 1
        run.images_seen += cfg.batch
        log.append({k: float(v.detach()) for k, v in terms.items()})
        if run.step % cfg.log_every == 0:
            dt = time.time() - t_last
            t_last = time.time()
            keys = dict.fromkeys(k for row in log for k in row)
            means = "  ".join(f"{k} {np.mean([row[k] for row in log if k in row]):.4f}" for k in keys)
            log = []
            print(f"step {run.step}  {means}  {cfg.log_every * cfg.batch / dt:.1f} img/s", flush=True)
        if run.step % cfg.ckpt_every == 0:
            save_checkpoint(cfg, run)
            save_samples(cfg, run)
    save_checkpoint(cfg, run)
    return run


def finish(cfg: WarmupConfig, run: WarmupRun) -> None:
    """Export the generator (``cfg.export``) and write the run's state file."""
    if cfg.export:
        write_generator(run.G_ema, run.decoders, Path(cfg.export), warmup_meta(
            {"step": run.step, "pairs": run.n, "images_seen": run.images_seen}, batch=cfg.batch, preset=cfg.preset,
            init=cfg.init or "none"))
        print(f"exported {cfg.export}")
    write_json_atomic(Path(cfg.out) / "warmup_state.json", {"step": run.step, "pairs": run.n, "res": cfg.resolution,
                                                            "images_seen": run.images_seen})


# ----------------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training warmup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu64")
    ap.add_argument("--fits", default=None, help="default cache/fits/train.npz")
    ap.add_argument("--decoders", default=None, help="default assets/decoders.safetensors (prior if absent)")
    ap.add_argument("--out", default="runs/warmup")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default=None, metavar="GENERATOR",
                    help="start G and G_ema from this generator file (e.g. assets/generator.safetensors) instead of "
                         "from scratch; its architecture replaces the preset's (ignored with --resume)")
    ap.add_argument("--export", default=None, help="write the FaceGenerator (G_ema + decoders) here at the end")
    ap.add_argument("--export-only", action="store_true",
                    help="write --export from the run folder's last checkpoint without loading data or training")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints")
    ap.add_argument("--log-every", type=int, default=25, help="steps between progress lines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imit-weight", type=float, default=1.0, help="weight of the imitation term")
    ap.add_argument("--imit-every", type=int, default=2, help="imitation term every N steps")
    ap.add_argument("--imit-yaw", type=float, default=0.0,
                    help="draw the imitation samples' yaw/pitch uniformly in ±this/±this/2 degrees (0: decoders' "
                         "pose); the fits are mostly frontal, so pose control comes from these samples")
    ap.add_argument("--imit-expr", type=float, default=0.0,
                    help="add strong expressions to the imitation samples: this share of them get jawOpen and "
                         "three random blendshapes drawn uniformly in [0, 1] (the fits' expressions are mild)")
    ap.add_argument("--lm-weight", type=float, default=0.0,
                    help="weight of the R-Net landmark term on the imitation samples (0: off; the GAN uses 500)")
    ap.add_argument("--pairs-weight", type=float, default=0.0,
                    help="weight of the stage-2 contrastive pair terms (0: off; DiscoLoss already scales them ×10)")
    ap.add_argument("--pairs-every", type=int, default=2, help="a contrastive pair batch every N steps")
    ap.add_argument("--steps", type=int, default=None, help="stop at this total step count (besides --minutes)")
    ap.add_argument("--id-keep", type=float, default=0.0,
                    help="weight of an identity-keeping term: half the random samples are twins of the other half "
                         "(same identity and code, other expression / light / pose) whose descriptors must stay "
                         "within 0.4")
    ap.add_argument("--map-lr-mul", type=float, default=20.0,
                    help="the mapping MLP's learning rate as a multiple of --lr (its layers run at lr_mul 0.01)")
    ap.add_argument("--head", action="store_true",
                    help="imitate the full head render (face + mouth interior, teeth, tongue + eyes; "
                         "engine.face.head) instead of the face-only render")
    ap.add_argument("--imit-res", type=int, default=None,
                    help="compare imitation samples with the render at this size (area-downsampled; default: G's): "
                         "the flat render then teaches colour and layout, not blur")
    ap.add_argument("--id-codes", action="store_true",
                    help="the noise latent is an identity code: the whitened PCA of each photo's face descriptor "
                         "(training/idcodes.py) instead of a learned per-image code")
    ap.add_argument("--id-weight", type=float, default=0.0,
                    help="weight of the identity term: the descriptor of G's image must be the one its code stands "
                         "for (reconstructions: the photo's; random samples: the code's), L2 as dlib measures")
    ap.add_argument("--id-every", type=int, default=2, help="identity term every N steps")
    ap.add_argument("--id-spread", type=float, default=0.0,
                    help="weight of a spread term on the random samples: descriptor pairs closer than 0.75 (dlib: "
                         "same person < 0.6) are pushed apart")
    ap.add_argument("--adv-weight", type=float, default=0.0,
                    help="weight of a patch discriminator's non-saturating term on G's images (0: off)")
    ap.add_argument("--d-lr", type=float, default=0.002)
    ap.add_argument("--r1-gamma", type=float, default=0.1)
    ap.add_argument("--augment", default="color,translation", help="DiffAugment policy for D's inputs")
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> WarmupConfig:
    fields = {f.name for f in dataclasses.fields(WarmupConfig)} - {"preset", "resolution", "g_channels", "w_dim",
                                                                   "map_layers"}
    return WarmupConfig.from_preset(args.preset, **{k: v for k, v in vars(args).items() if k in fields})


def export_only(cfg: WarmupConfig) -> int:
    """``--export-only``: the run folder's last checkpoint as the editor's generator file (no data, no training)."""
    if not cfg.export or not cfg.checkpoint.exists():
        raise WarmupError(f"--export-only needs --export DEST and a checkpoint in {cfg.out}")
    try:
        st = export_warmup_run(cfg.checkpoint, Path(cfg.export), cfg.arch(),
                               run_decoders(cfg.decoders_path, default_model()))
    except CheckpointError as exc:
        raise WarmupError(str(exc)) from None
    print(f"exported {cfg.export} (step {st['step']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if args.export_only:
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            return export_only(cfg)
        run = setup(cfg)
        warmup_loop(cfg, run)
        finish(cfg, run)
    except WarmupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
