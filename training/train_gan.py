"""``python -m training gan``: train the imitative-contrastive generator (adversarial + imitative, then contrastive).

    python -m training gan --preset cpu64 --out runs/cpu64 [--minutes 60] [--kimg 500] [--resume]
    python -m training gan --preset cpu64ft --init assets/generator.safetensors --out runs/ft   # CPU fine-tune
    python -m training gan --preset gpu128 --data cache/pack128.npz --out runs/g128        # one GPU
    torchrun --nproc_per_node 4 -m training gan --preset gpu256 --data pack.npz --out runs/g256   # DDP
    python -m training gan --out runs/cpu64 --export [assets/]          # G_ema + decoders + w̄_id → assets

Layout (after NVlabs/stylegan2-ada-pytorch): :class:`TrainConfig` (the hyper-parameters; a preset plus overrides,
stored in the run's ``state.json`` so ``--resume`` continues with the same ones), :func:`training_loop` (the loop),
``training/checkpoint.py`` (save / resume / export, shared with ``warmup``), ``training/loss.py`` (:class:`GANLoss`
with its adversarial, imitative and contrastive phases).

Real images: ``training.data.load_aligned("train", size)`` (``python -m training prepare``), a training pack
(``--data file.npz``) or ``--data synthetic:N`` (3DMM renders over random backgrounds, for tests).
Checkpoints (``<out>/ckpt-<images>.safetensors`` with G, G_ema, D and both Adam states, plus ``<out>/state.json``
with images seen, stage, RNG states) are written atomically every ``ckpt_every`` images and at the end/on Ctrl-C;
``--resume`` continues from the last one. Sample grids go to ``<out>/samples/``. ``--init FILE`` starts G (and
G_ema, and the factor decoders) from an exported generator file instead of from scratch: the fine-tuning path.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.face.head import default_head
from engine.face.model import FaceModel, FaceModelError
from engine.generator.networks import FactorDecoders, Generator, sample_latents
from engine.io.files import WeightsError, save_image
from engine.render import FaceRenderer
from training.checkpoint import (STATE_FILE, CheckpointError, build_generator, export_gan_run, load_gan_checkpoint,
                                 load_init_generator, read_state, run_decoders, save_gan_checkpoint)
from training.data import DataError, load_aligned, load_pack
from training.loss import DiscoLoss, GANLoss, Perception
from training.networks_d import build_discriminator
from training.presets import get_preset


class TrainError(ValueError):
    """A user-facing problem (bad arguments, missing data, unusable checkpoint)."""


# ----------------------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (a preset from ``training/presets.py`` plus command-line overrides)."""

    resolution: int = 64
    g_channels: dict = field(default_factory=dict)
    d_channels: dict = field(default_factory=dict)
    w_dim: int = 256
    map_layers: int = 4
    batch: int = 16
    lr: float = 0.0025
    r1_gamma: float = 10.0
    r1_every: int = 16
    ema_kimg: float = 2.0
    l1_kimg: float = 200.0
    stage2_kimg: float = 300.0
    total_kimg: float = 500.0
    ckpt_every: int = 1024
    sample_every: int = 2048
    l1_res: int = 32
    lm_weight_stage2: float = 100.0
    pair_every: int = 2
    # fine-tuning knobs (defaults = the original recipe)
    d_arch: str = "resnet"          # resnet | patch | patch-hp
    d_lr: float | None = None       # D's learning rate (default: lr)
    augment: str = ""               # DiffAugment policy, e.g. "color,translation"
    lm_kimg: float | None = None    # R-Net/identity terms from here (default: when the L1 stops)
    loss_weights: dict = field(default_factory=dict)  # overrides of DiscoLoss.WEIGHTS
    adv_weight: float = 1.0
    imit_yaw: float = 0.0
    imit_expr: float = 0.0
    noise_mode: str = "random"
    imitate_head: bool = False      # L1 target: the full head render (mouth interior, eyes) instead of the face
    id_every: int = 2               # identity triplets every N G steps (when id_diversity / id_keep weights are on)
    id_pairs: int = 4
    init: str | None = None         # generator file G starts from (fine-tuning)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainError(f"unknown config key(s) {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.g_channels = {int(k): int(v) for k, v in cfg.g_channels.items()}
        cfg.d_channels = {int(k): int(v) for k, v in cfg.d_channels.items()}
        return cfg

    @classmethod
    def from_preset(cls, name: str) -> "TrainConfig":
        try:
            return cls.from_dict(get_preset(name))
        except KeyError as exc:
            raise TrainError(exc.args[0]) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def override(self, **values) -> "TrainConfig":
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


# ----------------------------------------------------------------------------------------------- data


def synthetic_images(n: int, res: int, model: FaceModel, renderer: FaceRenderer, seed: int = 0) -> torch.Tensor:
    """(n, 3, res, res) uint8: prior-sampled 3DMM renders over smooth random-colour backgrounds."""
    g = torch.Generator().manual_seed(seed)
    dec = FactorDecoders.prior(model.albedo_dim, model.exp_names)
    out = []
    for i in range(0, n, 32):
        m = min(32, n - i)
        with torch.no_grad():
            c = dec.decode(sample_latents(m, generator=g))
            bg = F.interpolate(torch.rand(m, 3, 2, 2, generator=g), size=(res, res), mode="bilinear",
                               align_corners=False)
            img = renderer(c, res, background=bg.permute(0, 2, 3, 1)).image
            img = torch.where(renderer(c, res).mask > 0, img, bg)
        out.append((img * 255 + 0.5).clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_real(spec: str, res: int, limit: int | None, model, renderer) -> tuple[torch.Tensor, str]:
    """Real images as uint8 (N, 3, res, res) and a description string."""
    if spec.startswith("synthetic"):
        n = int(spec.split(":", 1)[1]) if ":" in spec else 256
        return synthetic_images(n, res, model, renderer), f"synthetic:{n}"
    try:
        if spec.endswith(".npz") or Path(spec).is_file():
            d = load_pack(spec, limit)
        else:
            d, last = None, None
            for size in dict.fromkeys([res, 128, 256, 64]):
                try:
                    d = load_aligned("train", size, limit)
                    break
                except DataError as exc:
                    last = last or exc
            if d is None:
                raise last
    except DataError as exc:
        raise TrainError(str(exc)) from None
    imgs = d["images"]  # (N, H, W, 3) uint8
    out = []
    for i in range(0, imgs.shape[0], 512):
        x = imgs[i:i + 512].permute(0, 3, 1, 2).float()
        if x.shape[-1] != res:
            x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out), f"{spec} ({imgs.shape[0]} images, {imgs.shape[1]} px → {res} px)"


def to_model_range(batch_u8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return batch_u8.to(dtype) * (2.0 / 255.0) - 1.0


@torch.no_grad()
def sample_grid(G_ema, decoders, renderer, path: Path, n: int = 8, seed: int = 0) -> None:
    """Rows: render R(λ), G(λ) at ψ=1, G(λ) at ψ=0.7 for n fixed latents."""
    dev = G_ema.coeff_mean.device
    lat = sample_latents(n, seed=seed, device=dev)
    c = decoders.decode(lat)
    res = G_ema.resolution
    rows = [renderer(c, res).image,
            (G_ema(c, lat.noise, 1.0).float() * 0.5 + 0.5).clamp(0, 1),
            (G_ema(c, lat.noise, 0.7).float() * 0.5 + 0.5).clamp(0, 1)]
    grid = torch.cat([torch.cat(list(r), 2) for r in rows], 1)  # (3, 3*res, n*res)
    save_image(path, grid.cpu())


def sync_grads(module, world: int) -> None:
    """Average gradients over the torchrun processes: one flattened all-reduce (no-op on one process)."""
    if world <= 1:
        return
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world
    torch.nan_to_num_(flat, nan=0.0, posinf=1e5, neginf=-1e5)
    off = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[off:off + n].view_as(p.grad))
        off += n



def choose_decoders(model: FaceModel, path: str | None) -> tuple[FactorDecoders, str]:
    p = Path(path) if path else Path(__file__).resolve().parent.parent / "assets" / "decoders.safetensors"
    if p.exists():
        try:
            dec = FactorDecoders.load(p)
        except WeightsError as exc:
            raise TrainError(str(exc)) from None
        if dec.albedo_dim != model.albedo_dim:
            raise TrainError(f"{p} decodes {dec.albedo_dim} albedo coefficients but the face model has "
                             f"{model.albedo_dim}; retrain the VAEs (python -m training vae)")
        return dec, str(p)
    if path:
        raise TrainError(f"decoders file not found: {p}")
    print("note: no trained factor decoders (assets/decoders.safetensors); using the hand-made prior "
          "(run python -m training vae after fitting)", file=sys.stderr)
    return FactorDecoders.prior(model.albedo_dim, model.exp_names), "prior"



# ----------------------------------------------------------------------------------------------- the loop


@dataclass
class Device:
    device: torch.device
    use_cuda: bool
    world: int
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_device(args) -> Device:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise TrainError("--device cuda requested but no CUDA device is available")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(device)
    return Device(device, use_cuda, world, rank)


def resolve_config(args, prev: dict | None) -> TrainConfig:
    """The run's config: the stored one when resuming, else the preset with the command line's overrides."""
    if prev:
        cfg = TrainConfig.from_dict(prev["config"])
    else:
        cfg = TrainConfig.from_preset(args.preset).override(init=args.init)
    cfg = cfg.override(batch=args.batch, ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                       total_kimg=args.kimg, lr=None if prev else args.lr, augment=None if prev else args.augment,
                       r1_gamma=args.r1_gamma)
    if args.imitate_head:
        cfg = cfg.override(imitate_head=True)
    if args.loss_weight:  # NAME=VALUE overrides, also on --resume (a recipe change mid-run is stored in state.json)
        weights = dict(cfg.loss_weights)
        for item in args.loss_weight:
            name, sep, val = item.partition("=")
            try:
                weights[name.strip()] = float(val)
            except ValueError:
                raise TrainError(f"--loss-weight wants NAME=NUMBER, got {item!r}") from None
            if not sep:
                raise TrainError(f"--loss-weight wants NAME=NUMBER, got {item!r}")
        cfg = cfg.override(loss_weights=weights)
    return cfg


def build_networks(cfg: TrainConfig, decoders: FactorDecoders, init_G: Generator | None, dev: Device):
    """(G, G_ema, D): G from ``init_G`` (fine-tuning) or fresh with the decoders' coefficient statistics."""
    if init_G is not None:
        G = init_G
    else:
        G = build_generator(cfg.to_dict(), decoders.albedo_dim)
        G.set_coeff_stats(*decoders.coefficient_stats())
    G = G.to(dev.device)
    try:
        D = build_discriminator(cfg.resolution, cfg.d_arch, cfg.d_channels or None).to(dev.device)
    except (ValueError, KeyError) as exc:
        raise TrainError(f"discriminator: {exc}") from None
    if dev.use_cuda:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return G, G_ema, D


def ema_update(G_ema, G, images_seen: int, batch: int, ema_kimg: float) -> None:
    """G_ema ← lerp towards G with a half-life of ``ema_kimg`` thousand images (ramped up over the first 5 %)."""
    ema_nimg = min(ema_kimg * 1000, images_seen * 0.05) if ema_kimg > 0 else 0
    beta = 0.5 ** (batch / max(ema_nimg, 1e-8)) if ema_nimg > 0 else 0.0
    with torch.no_grad():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p.detach(), 1.0 - beta)
        for be, b in zip(G_ema.buffers(), G.buffers()):
            be.copy_(b)


def training_loop(args) -> int:
    out = Path(args.out or f"runs/{args.preset}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = setup_device(args)
    device, world, is_main = dev.device, dev.world, dev.is_main

    # -- config -----------------------------------------------------------------------------------------
    prev = read_state(out) if args.resume else None
    if args.resume and prev is None and is_main:
        print(f"note: --resume but no checkpoint in {out}; starting a new run", file=sys.stderr)
    if prev is None and (out / STATE_FILE).exists() and not args.resume:
        raise TrainError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg = resolve_config(args, prev)
    if cfg.batch % world:
        raise TrainError(f"batch {cfg.batch} does not split over {world} processes")
    local_batch = cfg.batch // world
    torch.manual_seed(args.seed * 1000 + dev.rank)

    # -- models -----------------------------------------------------------------------------------------
    model = FaceModel.load().to(device)
    renderer = FaceRenderer(model)
    init_G = None
    if prev:
        decoders, dec_src = run_decoders(out), prev.get("decoders_source", "?")  # G's shape is in cfg already
    elif cfg.init:
        fg = load_init_generator(cfg.init)
        if fg.albedo_dim != model.albedo_dim:
            raise TrainError(f"{cfg.init} has albedo K={fg.albedo_dim} but the face model has K={model.albedo_dim}")
        decoders, dec_src, init_G = fg.decoders, f"{cfg.init} (init)", fg.G
        gc = fg.G.cfg
        cfg = cfg.override(resolution=gc["resolution"], g_channels=dict(gc["channels"]), w_dim=gc["w_dim"],
                           map_layers=gc["map_layers"])
    else:
        decoders, dec_src = choose_decoders(model, args.decoders)
    decoders = decoders.to(device).eval().requires_grad_(False)
    G, G_ema, D = build_networks(cfg, decoders, init_G, dev)
    mb = cfg.r1_every / (cfg.r1_every + 1)
    optG = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.0, 0.99), eps=1e-8)
    optD = torch.optim.Adam(D.parameters(), lr=(cfg.d_lr or cfg.lr) * mb, betas=(0.0, 0.99 ** mb), eps=1e-8)

    images_seen, step = 0, 0
    if is_main and out.exists():  # temporaries left by a run killed mid-write are never valid
        for tmp in [*out.glob(".ckpt-*.part*"), *out.glob(".state.*.part*")]:
            with contextlib.suppress(OSError):
                tmp.unlink()
    if prev:
        try:
            load_gan_checkpoint(out, prev, G, G_ema, D, optG, optD, device)
        except CheckpointError as exc:
            raise TrainError(str(exc)) from None
        images_seen, step = prev["images_seen"], int(prev.get("step", 0))
        if world > 1:  # the checkpoint holds rank 0's RNG: give every rank its own stream again
            torch.manual_seed(args.seed * 1000 + dev.rank + 7919 * images_seen)
        if is_main:
            print(f"resumed {out} at images_seen={images_seen} (step {step}, stage {prev.get('stage', 1)})",
                  flush=True)

    # -- data -------------------------------------------------------------------------------------------
    data_spec = prev.get("data_spec", args.data) if prev else args.data
    real, data_desc = load_real(data_spec, cfg.resolution, args.limit, model.cpu(), FaceRenderer(model))
    model.to(device)
    real = real.to(device)  # the whole set lives on the device (uint8): no per-step host transfers
    if dev.use_cuda:
        real = real.contiguous(memory_format=torch.channels_last)
    n_real = real.shape[0]
    if n_real < local_batch:
        raise TrainError(f"only {n_real} real images; need at least a batch ({local_batch})")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        if not (out / "decoders.safetensors").exists():
            decoders.save(out / "decoders.safetensors", {"source": dec_src})
        print(f"data: {data_desc}; G {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M params, "
              f"D ({cfg.d_arch}) {sum(p.numel() for p in D.parameters()) / 1e6:.2f}M; batch {cfg.batch}; "
              f"device {device}; world {world}" + (f"; G from {cfg.init}" if cfg.init else ""), flush=True)

    # -- loss -------------------------------------------------------------------------------------------
    perception = Perception(load=not args.no_perception).to(device)
    head = None
    if cfg.imitate_head:
        if dev.use_cuda:
            raise TrainError("--imitate-head runs on the CPU only for now (the head model has no device transfer)")
        try:
            head = default_head(model)
        except FaceModelError as exc:
            raise TrainError(f"--imitate-head needs the head parts: {exc}") from None
    try:
        disco = DiscoLoss(renderer, perception, cfg.resolution, cfg.l1_res, cfg.l1_kimg, cfg.stage2_kimg,
                          cfg.lm_weight_stage2, cfg.lm_kimg, cfg.loss_weights, head)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.use_cuda else None
        loss = GANLoss(G, D, decoders, disco, cfg.r1_gamma, cfg.r1_every, cfg.pair_every, cfg.augment,
                       cfg.adv_weight, cfg.imit_yaw, cfg.imit_expr, cfg.noise_mode, autocast, cfg.id_every,
                       cfg.id_pairs)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    if world > 1:  # same start on every rank; gradients are all-reduced after each backward (StyleGAN3 style)
        import torch.distributed as dist

        for m in (G, D):
            for t in [*m.parameters(), *m.buffers()]:
                dist.broadcast(t.data, src=0)
        G_ema.load_state_dict(G.state_dict())

    total = int(cfg.total_kimg * 1000)
    deadline = time.time() + args.minutes * 60 if args.minutes else None
    stop = {"flag": False}

    def _stop(signum, frame):
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def state_dict():
        return {"images_seen": images_seen, "step": step, "stage": disco.stage(images_seen),
                "phases": list(loss.phases(images_seen)), "preset": args.preset if not prev else prev.get("preset"),
                "config": cfg.to_dict(), "data_spec": data_spec, "data": data_desc, "decoders_source": dec_src,
                "seed": args.seed, "world": world}

    next_ckpt = (images_seen // cfg.ckpt_every + 1) * cfg.ckpt_every
    next_sample = (images_seen // cfg.sample_every + 1) * cfg.sample_every
    bar = tqdm(total=total, initial=min(images_seen, total), unit="img", disable=not is_main, dynamic_ncols=True,
               mininterval=5.0)
    t0, seen0 = time.time(), images_seen
    logs = {}
    try:
        while images_seen < total and not stop["flag"] and not (deadline and time.time() > deadline):
            # ---- D step (adversarial phase, lazy R1)
            idx = torch.randint(0, n_real, (local_batch,), device=device)
            d_losses = loss.d_loss(to_model_range(real[idx]), step)
            optD.zero_grad(set_to_none=True)
            d_losses["d_total"].backward()
            sync_grads(D, world)
            optD.step()
            logs.update({k: v.detach() for k, v in d_losses.items() if k != "d_total"})

            # ---- G step (adversarial + imitative [+ contrastive])
            D.requires_grad_(False)
            g_losses = loss.g_loss(local_batch, images_seen, step, device)
            optG.zero_grad(set_to_none=True)
            g_losses["g_total"].backward()
            sync_grads(G, world)
            optG.step()
            D.requires_grad_(True)
            logs.update({k: v.detach() for k, v in g_losses.items()})

            ema_update(G_ema, G, images_seen, cfg.batch, cfg.ema_kimg)
            images_seen += cfg.batch
            step += 1
            bar.update(cfg.batch)
            if args.log_every and step % args.log_every == 0 and is_main:
                vals = " ".join(f"{k}={float(v):.3f}" for k, v in sorted(logs.items()))
                rate = (images_seen - seen0) / max(time.time() - t0, 1e-6)
                print(f"progress images_seen={images_seen} stage={disco.stage(images_seen)} "
                      f"img_s={rate:.1f} {vals}", flush=True)
            if is_main and images_seen >= next_sample:
                sample_grid(G_ema, decoders, renderer, out / "samples" / f"img{images_seen:010d}.png")
                next_sample += cfg.sample_every
            if images_seen >= next_ckpt:
                if is_main:
                    save_gan_checkpoint(out, G, G_ema, D, optG, optD, state_dict())
                next_ckpt += cfg.ckpt_every
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        bar.close()
    if is_main:
        if step > 0:
            save_gan_checkpoint(out, G, G_ema, D, optG, optD, state_dict())
            sample_grid(G_ema, decoders, renderer, out / "samples" / f"img{images_seen:010d}.png")
        rate = (images_seen - seen0) / max(time.time() - t0, 1e-6)
        print(f"done: images_seen={images_seen} ({rate:.1f} img/s this session); run folder {out}", flush=True)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0

# ----------------------------------------------------------------------------------------------- command line


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m training gan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu64", help="tiny | cpu64 | cpu64ft | gpu128 | gpu256")
    ap.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    ap.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    ap.add_argument("--init", default=None, metavar="GENERATOR",
                    help="start G, G_ema and the decoders from this generator file (e.g. assets/generator.safetensors)"
                         "; its architecture replaces the preset's")
    ap.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    ap.add_argument("--kimg", type=float, default=None, help="total thousands of real images to train to")
    ap.add_argument("--data", default="aligned", help="aligned | synthetic[:N] | path/to/pack.npz")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many real images")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--r1-gamma", type=float, default=None, help="R1 weight γ (allowed with --resume)")
    ap.add_argument("--augment", default=None, help="DiffAugment policy (color,translation,cutout; '' for none)")
    ap.add_argument("--loss-weight", action="append", default=None, metavar="NAME=VALUE",
                    help="override one DiscoLoss weight (repeatable; e.g. id_diversity=2 id_keep=1); allowed with "
                         "--resume")
    ap.add_argument("--imitate-head", action="store_true",
                    help="imitate the full head render (face + mouth interior + eyes; engine.face.head) instead of "
                         "the face-only render; allowed with --resume")
    ap.add_argument("--ckpt-every", type=int, default=None, help="images between checkpoints")
    ap.add_argument("--sample-every", type=int, default=None, help="images between sample grids")
    ap.add_argument("--decoders", default=None, help="decoders file (default assets/decoders.safetensors or prior)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=0, help="print 'progress images_seen=N ...' every N steps")
    ap.add_argument("--no-perception", action="store_true", help="do not load the R-Net / identity net")
    ap.add_argument("--export", nargs="?", const="assets", default=None, metavar="DIR",
                    help="export the run's G_ema + decoders + w̄_id to DIR (default assets/) and exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    try:
        if args.export is not None:
            target = export_gan_run(Path(args.out or f"runs/{args.preset}"), Path(args.export))
            print(f"exported {target} ({target.stat().st_size / 2 ** 20:.2f} MiB)")
            return 0
        return training_loop(args)
    except (TrainError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
