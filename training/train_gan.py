"""``python -m training gan``: train the imitative-contrastive generator (stage 1 → stage 2 by images seen).

    python -m training gan --preset cpu64 --out runs/cpu64 [--minutes 60] [--kimg 500] [--resume]
    python -m training gan --preset gpu128 --data cache/pack128.npz --out runs/g128        # one GPU
    torchrun --nproc_per_node 4 -m training gan --preset gpu256 --data pack.npz --out runs/g256   # DDP
    python -m training gan --out runs/cpu64 --export [assets/]          # G_ema + decoders + w̄_id → assets

Real images: ``training.data.load_aligned("train", size)`` (``python -m training prepare``), a training pack
(``--data file.npz``) or ``--data synthetic:N`` (3DMM renders over random backgrounds, for tests).
Checkpoints (``<out>/ckpt-<images>.safetensors`` with G, G_ema, D and both Adam states, plus ``<out>/state.json``
with images seen, stage, RNG states) are written atomically every ``ckpt_every`` images and at the end/on Ctrl-C;
``--resume`` continues from the last one. Sample grids go to ``<out>/samples/``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.face.model import FaceModel
from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, sample_latents
from engine.io.files import (WeightsError, check_state_shapes, load_safetensors, save_image, save_safetensors,
                       write_json_atomic)
from engine.render import FaceRenderer
from training.loss import DiscoLoss, Perception, d_logistic, generator_step_loss, r1_penalty
from training.networks_d import Discriminator
from training.presets import get_preset

CKPT_FORMAT = "discoface.gan-checkpoint"
CKPT_VERSION = 1
STATE_FILE = "state.json"


class TrainError(RuntimeError):
    """A user-facing problem (bad arguments, missing data, unusable checkpoint)."""


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
    from training.data import DataError, load_aligned, load_pack

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


# ----------------------------------------------------------------------------------------------- checkpoints


def _opt_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _opt_load(opt: torch.optim.Optimizer, tensors: dict, prefix: str, groups: dict, device) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        pid, k = key[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(pid), {})[k] = v.to(device) if k != "step" else v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_checkpoint(out: Path, G, G_ema, D, optG, optD, state: dict, keep: int = 2) -> Path:
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"G_ema.{k}": v for k, v in G_ema.state_dict().items()})
    tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
    tg, gg = _opt_tensors(optG, "optG")
    td, gd = _opt_tensors(optD, "optD")
    tensors.update(tg)
    tensors.update(td)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name = f"ckpt-{state['images_seen']:010d}.safetensors"
    save_safetensors(out / name, tensors, CKPT_FORMAT, CKPT_VERSION,
                     {"optG": json.dumps(gg), "optD": json.dumps(gd)})
    st = dict(state, checkpoint=name, saved_at=time.time())
    write_json_atomic(out / STATE_FILE, st)
    old = sorted(p for p in out.glob("ckpt-*.safetensors") if p.name != name)
    for p in old[:max(0, len(old) - (keep - 1))]:
        with contextlib.suppress(OSError):
            p.unlink()
    return out / name


def read_state(out: Path) -> dict | None:
    p = out / STATE_FILE
    if not p.exists():
        return None
    try:
        st = json.loads(p.read_text())
        st["images_seen"] = int(st["images_seen"])
        st["checkpoint"] = str(st["checkpoint"])
        return st
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"{p} is unreadable ({exc}); delete {out} to start over") from None


def load_checkpoint(out: Path, st: dict, G, G_ema, D, optG, optD, device) -> None:
    path = out / st["checkpoint"]
    try:
        tensors, meta = load_safetensors(path, CKPT_FORMAT, CKPT_VERSION)
        G.load_state_dict(check_state_shapes(path, G, tensors, "G."))
        G_ema.load_state_dict(check_state_shapes(path, G_ema, tensors, "G_ema."))
        D.load_state_dict(check_state_shapes(path, D, tensors, "D."))
        _opt_load(optG, tensors, "optG", json.loads(meta["optG"]), device)
        _opt_load(optD, tensors, "optD", json.loads(meta["optD"]), device)
    except WeightsError as exc:
        raise TrainError(f"cannot resume: {exc}") from None
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


# ----------------------------------------------------------------------------------------------- samples / export


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


def export_generator(out: Path, dest: Path, device="cpu") -> Path:
    """Write ``dest/generator.safetensors`` (G_ema + decoders + w̄_id) from the run's last checkpoint."""
    st = read_state(out)
    if st is None:
        raise TrainError(f"nothing to export: no checkpoint in {out}")
    cfg = st["config"]
    dec = _load_decoders_from_state(out, st)
    G_ema = _build_G(cfg, dec.albedo_dim)
    path = out / st["checkpoint"]
    try:
        tensors, _ = load_safetensors(path, CKPT_FORMAT, CKPT_VERSION)
        G_ema.load_state_dict(check_state_shapes(path, G_ema, tensors, "G_ema."))
    except WeightsError as exc:
        raise TrainError(f"cannot export: {exc}") from None
    G_ema.compute_w_avg_id(dec)
    fg = FaceGenerator(dec, G_ema.eval())
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "generator.safetensors"
    fg.save(target, {"images_seen": st["images_seen"], "preset": st.get("preset", "?"), "data": st.get("data", "?"),
                     "decoders": st.get("decoders_source", "?")})
    size = target.stat().st_size
    if size > 16 * 2 ** 20:
        print(f"warning: {target} is {size / 2 ** 20:.1f} MiB (> 16 MiB budget)", file=sys.stderr)
    dpath = dest / "decoders.safetensors"
    if not dpath.exists():
        dec.save(dpath, {"source": st.get("decoders_source", "?")})
    return target


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


def _build_G(cfg: dict, albedo_dim: int) -> Generator:
    return Generator(cfg["resolution"], albedo_dim, cfg["g_channels"], cfg["w_dim"], cfg["map_layers"])


def _load_decoders_from_state(out: Path, st: dict) -> FactorDecoders:
    p = out / "decoders.safetensors"
    try:
        return FactorDecoders.load(p)
    except WeightsError as exc:
        raise TrainError(f"run folder lacks its decoders ({exc})") from None


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


# ----------------------------------------------------------------------------------------------- training


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m training gan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu64", help="tiny | cpu64 | gpu128 | gpu256")
    ap.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    ap.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    ap.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    ap.add_argument("--kimg", type=float, default=None, help="total thousands of real images to train to")
    ap.add_argument("--data", default="aligned", help="aligned | synthetic[:N] | path/to/pack.npz")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many real images")
    ap.add_argument("--batch", type=int, default=None)
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
        return train(args)
    except (TrainError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


def train(args) -> int:
    out = Path(args.out or f"runs/{args.preset}")
    if args.export is not None:
        target = export_generator(out, Path(args.export))
        print(f"exported {target} ({target.stat().st_size / 2 ** 20:.2f} MiB)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    # -- distributed ---------------------------------------------------------------------------------
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
    is_main = rank == 0

    # -- config ---------------------------------------------------------------------------------------
    prev = read_state(out) if args.resume else None
    if args.resume and prev is None and is_main:
        print(f"note: --resume but no checkpoint in {out}; starting a new run", file=sys.stderr)
    if prev is None and (out / STATE_FILE).exists() and not args.resume:
        raise TrainError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg = prev["config"] if prev else get_preset(args.preset)
    cfg["g_channels"] = {int(k): v for k, v in cfg["g_channels"].items()}
    cfg["d_channels"] = {int(k): v for k, v in cfg["d_channels"].items()}
    for key, val in (("batch", args.batch), ("ckpt_every", args.ckpt_every), ("sample_every", args.sample_every),
                     ("total_kimg", args.kimg)):
        if val is not None:
            cfg[key] = val
    res, batch = cfg["resolution"], int(cfg["batch"])
    if batch % world:
        raise TrainError(f"batch {batch} does not split over {world} processes")
    local_batch = batch // world
    torch.manual_seed(args.seed * 1000 + rank)

    # -- models ---------------------------------------------------------------------------------------
    model = FaceModel.load().to(device)
    renderer = FaceRenderer(model)
    if prev:
        decoders = _load_decoders_from_state(out, prev)
        dec_src = prev.get("decoders_source", "?")
    else:
        decoders, dec_src = choose_decoders(model, args.decoders)
    decoders = decoders.to(device).eval().requires_grad_(False)
    G = Generator(res, decoders.albedo_dim, cfg["g_channels"], cfg["w_dim"], cfg["map_layers"]).to(device)
    mean, std = decoders.coefficient_stats()
    G.set_coeff_stats(mean, std)
    D = Discriminator(res, cfg["d_channels"]).to(device)
    if use_cuda:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    lr = cfg["lr"]
    mb = cfg["r1_every"] / (cfg["r1_every"] + 1)
    optG = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8)
    optD = torch.optim.Adam(D.parameters(), lr=lr * mb, betas=(0.0, 0.99 ** mb), eps=1e-8)

    images_seen, step = 0, 0
    if is_main and out.exists():  # temporaries left by a run killed mid-write are never valid
        for tmp in [*out.glob(".ckpt-*.part*"), *out.glob(".state.*.part*")]:
            with contextlib.suppress(OSError):
                tmp.unlink()
    if prev:
        load_checkpoint(out, prev, G, G_ema, D, optG, optD, device)
        images_seen, step = prev["images_seen"], int(prev.get("step", 0))
        if world > 1:  # the checkpoint holds rank 0's RNG: give every rank its own stream again
            torch.manual_seed(args.seed * 1000 + rank + 7919 * images_seen)
        if is_main:
            print(f"resumed {out} at images_seen={images_seen} (step {step}, stage {prev.get('stage', 1)})",
                  flush=True)

    # -- data -----------------------------------------------------------------------------------------
    data_spec = prev.get("data_spec", args.data) if prev else args.data
    real, data_desc = load_real(data_spec, res, args.limit, model.cpu(), FaceRenderer(model))
    model.to(device)
    real = real.to(device)  # the whole set lives on the device (uint8): no per-step host transfers
    if use_cuda:
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
              f"D {sum(p.numel() for p in D.parameters()) / 1e6:.2f}M; batch {batch}; device {device}; world {world}",
              flush=True)

    perception = Perception(load=not args.no_perception).to(device)
    disco = DiscoLoss(renderer, perception, res, cfg["l1_res"], cfg["l1_kimg"], cfg["stage2_kimg"],
                      cfg["lm_weight_stage2"])
    if world > 1:  # same start on every rank; gradients are all-reduced after each backward (StyleGAN3 style)
        for m in (G, D):
            for t in [*m.parameters(), *m.buffers()]:
                dist.broadcast(t.data, src=0)
        G_ema.load_state_dict(G.state_dict())
    Gt, Dt = G, D
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else contextlib.nullcontext())

    total = int(cfg["total_kimg"] * 1000)
    deadline = time.time() + args.minutes * 60 if args.minutes else None
    stop = {"flag": False}

    def _stop(signum, frame):
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def state_dict():
        return {"images_seen": images_seen, "step": step, "stage": disco.stage(images_seen), "preset": args.preset
                if not prev else prev.get("preset"), "config": cfg, "data_spec": data_spec, "data": data_desc,
                "decoders_source": dec_src, "seed": args.seed, "world": world}

    next_ckpt = (images_seen // cfg["ckpt_every"] + 1) * cfg["ckpt_every"]
    next_sample = (images_seen // cfg["sample_every"] + 1) * cfg["sample_every"]
    ema_beta_base = cfg["ema_kimg"] * 1000
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(images_seen, total), unit="img", disable=not is_main,
                   dynamic_ncols=True, mininterval=5.0)
    except ImportError:  # pragma: no cover
        bar = None
    t0, seen0 = time.time(), images_seen
    logs = {}
    try:
        while images_seen < total and not stop["flag"] and not (deadline and time.time() > deadline):
            # ---- D step
            idx = torch.randint(0, n_real, (local_batch,), device=device)
            real_b = to_model_range(real[idx])
            with torch.no_grad():
                lat = sample_latents(local_batch, device=device)
                c = decoders.decode(lat)
                with autocast:
                    fake_b = Gt(c, lat.noise, noise_mode="random")
            do_r1 = step % cfg["r1_every"] == 0
            with autocast:
                d_fake = Dt(fake_b.detach())
                if do_r1:
                    r1, d_real = r1_penalty(Dt, real_b, cfg["r1_gamma"])
                else:
                    d_real = Dt(real_b)
            loss_d = d_logistic(d_real.float(), d_fake.float())
            if do_r1:
                loss_d = loss_d + r1 * cfg["r1_every"]
                logs["r1"] = r1.detach()
            optD.zero_grad(set_to_none=True)
            loss_d.backward()
            sync_grads(D, world)
            optD.step()
            logs["d"] = loss_d.detach()

            # ---- G step
            for p in D.parameters():
                p.requires_grad_(False)
            g_losses = generator_step_loss(Gt, Dt, decoders, disco, local_batch, images_seen, step, device,
                                           cfg.get("pair_every", 2), autocast)
            optG.zero_grad(set_to_none=True)
            g_losses["g_total"].backward()
            sync_grads(G, world)
            optG.step()
            for p in D.parameters():
                p.requires_grad_(True)
            logs.update({k: v.detach() for k, v in g_losses.items()})

            # ---- EMA
            ema_nimg = min(ema_beta_base, images_seen * 0.05) if ema_beta_base > 0 else 0
            beta = 0.5 ** (batch / max(ema_nimg, 1e-8)) if ema_nimg > 0 else 0.0
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.lerp_(p.detach(), 1.0 - beta)
                for be, b in zip(G_ema.buffers(), G.buffers()):
                    be.copy_(b)

            images_seen += batch
            step += 1
            if bar is not None:
                bar.update(batch)
            if args.log_every and step % args.log_every == 0 and is_main:
                vals = " ".join(f"{k}={float(v):.3f}" for k, v in sorted(logs.items()))
                rate = (images_seen - seen0) / max(time.time() - t0, 1e-6)
                print(f"progress images_seen={images_seen} stage={disco.stage(images_seen)} "
                      f"img_s={rate:.1f} {vals}", flush=True)
            if is_main and images_seen >= next_sample:
                sample_grid(G_ema, decoders, renderer, out / "samples" / f"img{images_seen:010d}.png")
                next_sample += cfg["sample_every"]
            if images_seen >= next_ckpt:
                if is_main:
                    save_checkpoint(out, G, G_ema, D, optG, optD, state_dict())
                next_ckpt += cfg["ckpt_every"]
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if bar is not None:
            bar.close()
    if is_main:
        if step > 0:
            save_checkpoint(out, G, G_ema, D, optG, optD, state_dict())
            sample_grid(G_ema, decoders, renderer, out / "samples" / f"img{images_seen:010d}.png")
        rate = (images_seen - seen0) / max(time.time() - t0, 1e-6)
        print(f"done: images_seen={images_seen} ({rate:.1f} img/s this session); run folder {out}", flush=True)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
