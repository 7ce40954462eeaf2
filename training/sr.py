"""``python -m training sr``: train the face upsampler (64 → 128 px, ``engine/generator/sr.py``) on the CPU.

Why this and not a 128 px generator block: an upsampler's input already holds the face's structure, so it learns
from a few thousand steps what a generator would need millions of images for (DESIGN §8). Each step sees

* **pairs** — prepared UTKFace train crops (128 px, ``python -m training prepare``; flipped at random), degraded
  the way the generator's faces differ from photos (a random Gaussian blur before the area-downsampling to 64 px,
  random colour noise after it) → ``--l1-weight`` × L1 against the real 128 px crop;
* **generator faces** — random faces of the 64 px generator (``--generator``, ψ 0.7 as in the editor) upsampled;
  they have no 128 px truth, so they get a low-frequency consistency term (``--cons-weight`` × L1 at ``--cons-res``
  px: colours and layout are kept, the fine detail is the upsampler's) and, with ``--id-weight``, the dlib-port
  descriptor of the upsampled face kept near the bicubic one's (the person must not change);
* **a patch discriminator** (RGB + high-pass, DiffAugment colour + translation, R1) on real 128 px crops against
  both kinds of upsampled faces (``--adv-weight``, from step ``--adv-start``): the texture term L1 cannot give.

Resumable (``--resume``; a checkpoint every ``--ckpt-minutes``), time-boxed (``--minutes``), one thread by default,
logs to ``<out>/log.txt``; ``--export FILE`` writes the EMA weights as the editor's ``face_sr.safetensors``.
Validation numbers in the log (every ``--val-every`` steps, on 32 held-out test crops and 16 fixed generator faces):
L1 at 128 px against the truth, and the sharpness (mean |Laplacian| of the central half, as the judge measures)
relative to the real crops — for the pairs and for the generator's faces.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.generator.sr import FaceSR, param_count
from engine.io.files import WeightsError, load_safetensors, save_safetensors
from training.augment import diff_augment
from training.checkpoint import CheckpointError, pack_training, run_log, unpack_training
from training.loss import d_logistic, g_nonsaturating, r1_penalty
from training.networks_d import PatchDiscriminator, blur5

CKPT_FORMAT = "discoface.sr-checkpoint"
CKPT_VERSION = 1
CKPT_NAME = "sr_ckpt.safetensors"


# ----------------------------------------------------------------------------------------------- data + degradation
def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (sigma (B,) px, 0 = none), 7 taps, replicate border."""
    b, c = x.shape[:2]
    r = torch.arange(7, dtype=x.dtype, device=x.device) - 3
    s = sigma.to(x).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-r.view(1, 7) ** 2 / (2 * s * s))
    k = k / k.sum(1, keepdim=True)
    k = torch.where(sigma.view(b, 1) > 0.05, k, F.one_hot(torch.full((b,), 3), 7).to(x))
    xp = F.pad(x.reshape(1, b * c, *x.shape[2:]), (3, 3, 3, 3), mode="replicate")
    kk = k.repeat_interleave(c, 0)
    xp = F.conv2d(xp, kk.view(b * c, 1, 1, 7), groups=b * c)
    xp = F.conv2d(xp, kk.view(b * c, 1, 7, 1), groups=b * c)
    return xp.view_as(x)


def degrade(hr: torch.Tensor, lr_res: int, blur_max: float, noise_max: float, g: torch.Generator | None = None,
            blur_p: float = 0.5, blur_min: float = 0.0) -> torch.Tensor:
    """The 64 px input the upsampler learns from: blur (σ ~ U(blur_min, blur_max) at the high resolution, a share
    ``blur_p`` of the images), area-downsample, colour noise (σ ~ U(0, noise_max) per pixel and channel, a third of
    the images)."""
    b = hr.shape[0]
    u = torch.rand(b, 3, generator=g)
    sigma = torch.where(u[:, 0] < blur_p, blur_min + u[:, 1] * (blur_max - blur_min), torch.zeros(b))
    x = gaussian_blur(hr, sigma) if blur_max > 0 else hr
    x = F.interpolate(x, size=(lr_res, lr_res), mode="area")
    if noise_max > 0:
        amp = torch.where(u[:, 2] < 1 / 3, torch.rand(b, generator=g) * noise_max, torch.zeros(b))
        x = x + amp.view(b, 1, 1, 1) * torch.randn(x.shape, generator=g)
    return x


def rgb_to_lab(img01: torch.Tensor) -> torch.Tensor:
    """Differentiable sRGB (B, 3, H, W) in [0, 1] → CIELAB (D65) (B, 3, H, W): L 0..100, a*, b* around 0."""
    x = img01.clamp(0.0, 1.0)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp_min(1e-6) ** 2.4)
    m = torch.tensor([[0.4124 / 0.95047, 0.3576 / 0.95047, 0.1805 / 0.95047],
                      [0.2126, 0.7152, 0.0722],
                      [0.0193 / 1.08883, 0.1192 / 1.08883, 0.9505 / 1.08883]], dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def eye_colour_excess(img: torch.Tensor, eye: torch.Tensor, skin_ab: torch.Tensor, purple_max: float,
                      teal_max: float) -> torch.Tensor:
    """Mean over the eye-region pixels (``eye`` (B, 1, H, W)) of how far each pixel's colour is shifted from its
    face's skin (``skin_ab`` (B, 2)) towards magenta (Δa* − Δb*) beyond ``purple_max`` plus towards teal (−Δa*)
    beyond ``teal_max``; images (B, 3, H, W) in [-1, 1]."""
    ab = rgb_to_lab(img * 0.5 + 0.5)[:, 1:] - skin_ab[:, :, None, None]
    excess = F.relu(ab[:, 0] - ab[:, 1] - purple_max) + F.relu(-ab[:, 0] - teal_max)
    return (excess * eye[:, 0]).sum() / eye.sum().clamp_min(1.0)


def hf_energy(img: torch.Tensor, block: int = 8) -> torch.Tensor:
    """(B, 2, H/block, W/block) local high-frequency energy of images (B, 3, H, W) in [-1, 1]: the block means of
    |4-neighbour Laplacian| of the grey image at full size and at half size (the judge's sharpness measure is the
    first, averaged over the central half)."""
    g = (img * torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)).sum(1,
                                                                                                     keepdim=True)
    k = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=img.dtype,
                     device=img.device).view(1, 1, 3, 3)
    fine = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k).abs()
    half = F.avg_pool2d(g, 2)
    coarse = F.conv2d(F.pad(half, (1, 1, 1, 1), mode="replicate"), k).abs()
    return torch.cat([F.avg_pool2d(fine, block), F.avg_pool2d(coarse, block // 2)], 1)


def hf_energy_loss(up: torch.Tensor, truth: torch.Tensor, block: int = 8) -> torch.Tensor:
    """L1 between the local high-frequency energies (:func:`hf_energy`) of an upsampled image and its truth: the
    upsampler must put as much fine detail where the photo has it, in any phase (L1 alone averages the phases
    away and leaves the face soft)."""
    return (hf_energy(up, block) - hf_energy(truth, block)).abs().mean()


def laplacian_energy(img: torch.Tensor) -> float:
    """Mean |4-neighbour Laplacian| of the grey central half, images (B, 3, S, S) in [-1, 1] scaled to 0..255."""
    g = ((img.clamp(-1, 1) * 0.5 + 0.5) * 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    n = g.shape[-1]
    c = g[:, n // 4: 3 * n // 4, n // 4: 3 * n // 4]
    lap = 4 * c[:, 1:-1, 1:-1] - c[:, :-2, 1:-1] - c[:, 2:, 1:-1] - c[:, 1:-1, :-2] - c[:, 1:-1, 2:]
    return float(lap.abs().mean())


EYE_POLYS = ([17, 18, 19, 20, 21, 39, 40, 41, 36], [22, 23, 24, 25, 26, 45, 46, 47, 42])  # brow → lower lid


def eye_region(lm: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: both eyes from the brow down to 0.35 eye widths under the lower lid (68-point
    landmarks in px)."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    for poly in EYE_POLYS:
        p = lm[poly].astype(np.float64).copy()
        p[5:] += np.array([0.0, 0.35 * np.linalg.norm(lm[poly[5]] - lm[poly[8]])])
        draw.polygon([tuple(q) for q in p.tolist()], fill=1)
    return np.asarray(im, bool)


def load_crops(split: str, limit: int | None) -> torch.Tensor:
    from training.data import load_aligned

    d = load_aligned(split, 128, limit)
    return d["images"]  # uint8 (N, 128, 128, 3)


def to_pm1(u8: torch.Tensor) -> torch.Tensor:
    return u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- checkpoints
def save_ckpt(path: Path, sr, ema, D, opt, optD, state: dict) -> None:
    t, meta = pack_training({"SR": sr, "EMA": ema, "D": D}, {"opt": opt, "optD": optD})
    save_safetensors(path, t, CKPT_FORMAT, CKPT_VERSION, dict(meta, state=json.dumps(state)))


def load_ckpt(path: Path, sr, ema, D, opt, optD) -> dict:
    try:
        t, meta = load_safetensors(path, CKPT_FORMAT, CKPT_VERSION)
        state = json.loads(meta["state"])
        unpack_training(path, t, meta, {"SR": sr, "EMA": ema, "D": D}, {"opt": opt, "optD": optD}, "cpu")
    except WeightsError as exc:
        raise CheckpointError(f"cannot resume: {exc}") from None
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint state is missing or malformed ({exc})") from None
    return state


def build_d() -> PatchDiscriminator:
    return PatchDiscriminator(128, {128: 16, 64: 32, 32: 64, 16: 64}, n_down=3, highpass=True)


def export(ema: FaceSR, dest: Path, state: dict, args_cfg: dict) -> None:
    ema.save(dest, {"training": json.dumps({"command": "python -m training sr", "step": state["step"],
                                            "images_seen": state["images_seen"], "args": args_cfg,
                                            "val": state.get("val")})})


# ----------------------------------------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training sr", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/sr", help="run folder (checkpoint, log.txt, samples)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--steps", type=int, default=100000, help="stop at this step count")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (checkpointed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="use at most N prepared train crops")
    ap.add_argument("--batch", type=int, default=8, help="real pairs per step")
    ap.add_argument("--gen-batch", type=int, default=4, help="generator faces per step (0: none)")
    ap.add_argument("--patch", type=int, default=0,
                    help="train on random aligned patches of this many input px (e.g. 32: 32 → 64 px, 4× cheaper "
                         "than whole faces); 0: whole faces")
    ap.add_argument("--generator", default=None, help="64 px generator file (default: the shipped one)")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--up-channels", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--d-lr", type=float, default=2e-3, help="the equalised-lr patch critic needs StyleGAN-size steps")
    ap.add_argument("--l1-weight", type=float, default=1.0)
    ap.add_argument("--hf-weight", type=float, default=0.0,
                    help="weight of the local high-frequency energy match on the real pairs (hf_energy_loss: the "
                         "|Laplacian| per 8 px block at full and half size must match the photo's)")
    ap.add_argument("--init", default=None,
                    help="start a new run from an exported upsampler file (e.g. assets/face_sr.safetensors): its "
                         "weights for the upsampler and its EMA; a fresh critic and optimiser state")
    ap.add_argument("--adv-weight", type=float, default=0.05)
    ap.add_argument("--adv-start", type=int, default=200, help="first step with the adversarial term on the upsampler")
    ap.add_argument("--cons-weight", type=float, default=1.0)
    ap.add_argument("--cons-res", type=int, default=32)
    ap.add_argument("--cons-free-eyes", action="store_true",
                    help="no consistency term inside the generator face's eye regions (brow to under the lower lid, "
                         "from its 3DMM landmarks): there the discriminator alone decides the colour (magenta / "
                         "teal eyelids of the 64 px generator)")
    ap.add_argument("--eye-colour-weight", type=float, default=0.0,
                    help="hinge on the upsampled generator faces' eye-region colour: pixels shifted from the face's "
                         "own skin colour towards magenta (Δa* − Δb*) beyond --eye-purple-max or towards teal (−Δa*) "
                         "beyond --eye-teal-max (CIELAB units; the real photos' per-face 95th percentiles sit at "
                         "~19 / ~17)")
    ap.add_argument("--eye-purple-max", type=float, default=15.0)
    ap.add_argument("--eye-teal-max", type=float, default=12.0)
    ap.add_argument("--id-weight", type=float, default=0.0)
    ap.add_argument("--id-every", type=int, default=4)
    ap.add_argument("--r1-gamma", type=float, default=0.1)
    ap.add_argument("--blur-max", type=float, default=1.2, help="largest blur σ (128 px) of the degradation")
    ap.add_argument("--blur-p", type=float, default=0.5, help="share of the pairs that are blurred")
    ap.add_argument("--blur-min", type=float, default=0.0, help="smallest blur σ of a blurred pair")
    ap.add_argument("--noise-max", type=float, default=0.04, help="largest colour-noise σ ([-1, 1] units)")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", default=None, help="write the EMA upsampler here (face_sr.safetensors) and exit")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.gen_batch < 0 or not (args.patch == 0 or 8 <= args.patch <= 64) or args.steps < 0:
        print("error: --batch must be >= 1, --gen-batch >= 0, --patch 0 or 8..64, --steps >= 0", file=sys.stderr)
        return 2
    if args.patch and args.id_weight > 0:
        print("error: --id-weight needs whole faces (--patch 0)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / CKPT_NAME
    log = run_log(out)

    arch = {"in_res": 64, "channels": args.channels, "blocks": args.blocks, "up_channels": args.up_channels}
    if (args.resume or args.export) and ck.exists():
        try:
            _, meta = load_safetensors(ck, CKPT_FORMAT, CKPT_VERSION)
            arch = json.loads(meta["state"])["arch"]
        except (WeightsError, KeyError, ValueError) as exc:
            print(f"error: cannot resume from {ck}: {exc}", file=sys.stderr)
            return 1
    init = None
    if args.init and not args.resume and not args.export:
        try:
            init = FaceSR.load(args.init)
        except WeightsError as exc:
            print(f"error: --init: {exc}", file=sys.stderr)
            return 1
        arch = dict(init.cfg)
    sr = FaceSR(**arch)
    if init is not None:
        sr.load_state_dict(init.state_dict())
    ema = FaceSR(**arch).requires_grad_(False)
    ema.load_state_dict(sr.state_dict())
    D = build_d()
    opt = torch.optim.Adam(sr.parameters(), lr=args.lr, betas=(0.9, 0.99))
    optD = torch.optim.Adam(D.parameters(), lr=args.d_lr, betas=(0.0, 0.99))
    state = {"step": 0, "images_seen": 0, "arch": arch, "runs": []}
    if args.resume:
        if not ck.exists():
            print(f"error: nothing to resume in {out} (no {CKPT_NAME})", file=sys.stderr)
            return 1
        try:
            state = load_ckpt(ck, sr, ema, D, opt, optD)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for grp in opt.param_groups:
            grp["lr"] = args.lr
        for grp in optD.param_groups:
            grp["lr"] = args.d_lr
    elif ck.exists() and not args.export:
        print(f"error: {out} already holds a run; add --resume to continue it or choose another --out",
              file=sys.stderr)
        return 1
    cfg = {k: v for k, v in vars(args).items() if k not in ("export", "resume", "out")}
    if init is not None:
        state["init"] = str(args.init)
    if args.export:
        if not ck.exists():
            print(f"error: nothing to export in {out} (no {CKPT_NAME})", file=sys.stderr)
            return 1
        if not args.resume:
            try:
                state = load_ckpt(ck, sr, ema, D, opt, optD)
            except CheckpointError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        export(ema, Path(args.export), state, state["runs"][-1]["args"] if state["runs"] else cfg)
        print(f"wrote {args.export} (step {state['step']}, {state['images_seen']} images)")
        return 0

    from training.data import DataError

    try:
        train = load_crops("train", args.limit)
        test = load_crops("test", None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    fg = None
    if args.gen_batch > 0:
        from engine.generator.networks import FaceGenerator, load_default_generator

        fg = FaceGenerator.load(args.generator) if args.generator else load_default_generator(upsampler=False)
        if fg is None or fg.resolution != 64:
            print("error: the generator faces need a 64 px generator (--generator)", file=sys.stderr)
            return 1
        fg = fg.to(memory_format=torch.contiguous_format)
    face_masks = None
    if (args.cons_free_eyes or args.eye_colour_weight > 0) and fg is not None:
        import cv2

        from engine.face.model import default_model
        from engine.render import FaceRenderer

        lm_renderer = FaceRenderer(default_model())

        def face_masks(c) -> tuple[torch.Tensor, torch.Tensor]:
            """(B, 1, 64, 64) eye regions and skin (jaw/brow hull minus the eyes) of the faces' 3DMM landmarks."""
            eyes, skin = [], []
            for lm in lm_renderer.landmarks(c, 64).numpy():
                e = eye_region(lm, 64)
                hull = np.zeros((64, 64), np.uint8)
                cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm[:27]).astype(np.int32)), 1)
                eyes.append(e)
                skin.append(hull.astype(bool) & ~e)
            return (torch.from_numpy(np.stack(eyes)).float().unsqueeze(1),
                    torch.from_numpy(np.stack(skin)).float().unsqueeze(1))
    idnet = None
    if args.id_weight > 0 and fg is not None:
        from engine.perception.identity import IdentityNet

        idnet = IdentityNet.load().requires_grad_(False)
    state["runs"].append({"from_step": state["step"], "args": cfg, "started": time.strftime("%Y-%m-%d %H:%M")})
    log(f"run {len(state['runs'])}: step {state['step']}, {len(train)} train crops, {len(test)} test crops, "
        f"upsampler {param_count(sr)} params {arch}, D {param_count(D)} params; args {json.dumps(cfg)}")

    # fixed validation: 32 test crops (clean area-downsampled input) + 16 generator faces
    vi = np.linspace(0, len(test) - 1, 32).round().astype(int)
    val_hr = to_pm1(test[vi])
    val_lr = F.interpolate(val_hr, size=(64, 64), mode="area")
    real_sharp = laplacian_energy(val_hr)
    val_gen = None
    if fg is not None:
        with torch.no_grad():
            c, n = fg.sample(16, seed=2026)
            val_gen = fg.synthesize(c, n, 0.7) * 2 - 1

    def validate() -> dict:
        with torch.no_grad():
            up = ema(val_lr)
            v = {"l1": float((up - val_hr).abs().mean()),
                 "l1_bicubic": float((F.interpolate(val_lr, scale_factor=2, mode="bicubic", align_corners=False)
                                      - val_hr).abs().mean()),
                 "sharp_pairs": laplacian_energy(up) / real_sharp}
            if val_gen is not None:
                v["sharp_gen"] = laplacian_energy(ema(val_gen)) / real_sharp
        return {k: round(x, 4) for k, x in v.items()}

    def on_term(*_):  # a plain `kill` saves like Ctrl+C
        raise KeyboardInterrupt

    import signal
    import threading

    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, on_term)
    g = torch.Generator().manual_seed(args.seed * 7919 + state["step"])
    t_start = time.time()
    t_ckpt = time.time()
    step0 = state["step"]
    acc: dict[str, float] = {}

    def checkpoint(final: bool = False) -> None:
        state["val"] = validate()
        save_ckpt(ck, sr, ema, D, opt, optD, state)
        log(f"{'final ' if final else ''}checkpoint at step {state['step']} ({state['images_seen']} images): "
            f"val {json.dumps(state['val'])}")

    try:
        while state["step"] < args.steps:
            if args.minutes is not None and time.time() - t_start > args.minutes * 60:
                break
            step = state["step"]
            idx = torch.randint(0, len(train), (args.batch,), generator=g)
            hr = to_pm1(train[idx])
            flip = torch.rand(args.batch, generator=g) < 0.5
            hr = torch.where(flip.view(-1, 1, 1, 1), hr.flip(-1), hr)
            lr = degrade(hr, 64, args.blur_max, args.noise_max, g, args.blur_p, args.blur_min)
            gen = None
            if fg is not None:
                with torch.no_grad():
                    lat_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))
                    c, n = fg.sample(args.gen_batch, seed=lat_seed)
                    gen = fg.synthesize(c, n, 0.7) * 2 - 1
            gmask = skin_ab = None
            if face_masks is not None and gen is not None:
                gmask, skin = face_masks(c)
                with torch.no_grad():  # each face's own skin colour (a*, b*)
                    ab = rgb_to_lab(gen * 0.5 + 0.5)[:, 1:]
                    skin_ab = (ab * skin).sum((2, 3)) / skin.sum((2, 3)).clamp_min(1.0)
            if 0 < args.patch < 64:  # the same random window of input and truth (and of each generator face)
                p = args.patch
                y, x = (int(v) for v in torch.randint(0, 64 - p + 1, (2,), generator=g))
                lr, hr = lr[..., y:y + p, x:x + p], hr[..., 2 * y:2 * (y + p), 2 * x:2 * (x + p)]
                if gen is not None:
                    y, x = (int(v) for v in torch.randint(0, 64 - p + 1, (2,), generator=g))
                    gen = gen[..., y:y + p, x:x + p]
                    gmask = gmask[..., y:y + p, x:x + p] if gmask is not None else None
            use_adv = args.adv_weight > 0 and step >= args.adv_start
            # -- upsampler step
            sr.requires_grad_(True)
            D.requires_grad_(False)
            up = sr.upsample_any(lr)
            terms = {"l1": (up - hr).abs().mean()}
            loss = args.l1_weight * terms["l1"]
            if args.hf_weight > 0:
                terms["hf"] = hf_energy_loss(up, hr)
                loss = loss + args.hf_weight * terms["hf"]
            fakes = [up]
            if gen is not None:
                up_g = sr.upsample_any(gen)
                cres = max(1, args.cons_res * gen.shape[-1] // 64)  # the same px scale on a patch
                diff = (F.adaptive_avg_pool2d(up_g, cres) - F.adaptive_avg_pool2d(gen, cres)).abs()
                if gmask is not None and args.cons_free_eyes:
                    keep = 1.0 - (F.adaptive_max_pool2d(gmask, cres) > 0).float()
                    terms["cons"] = (diff * keep).sum() / (keep.sum() * 3).clamp_min(1.0)
                else:
                    terms["cons"] = diff.mean()
                loss = loss + args.cons_weight * terms["cons"]
                if args.eye_colour_weight > 0 and gmask is not None:
                    terms["eyecol"] = eye_colour_excess(up_g, F.interpolate(gmask, scale_factor=2, mode="nearest"),
                                                        skin_ab, args.eye_purple_max, args.eye_teal_max)
                    loss = loss + args.eye_colour_weight * terms["eyecol"]
                fakes.append(up_g)
                if idnet is not None and step % args.id_every == 0:
                    with torch.no_grad():
                        ref = idnet.embed_crops(F.interpolate(gen, scale_factor=2, mode="bicubic",
                                                              align_corners=False).clamp(-1, 1) * 0.5 + 0.5)
                    d = idnet.embed_crops(up_g.clamp(-1, 1) * 0.5 + 0.5)
                    terms["id"] = (d - ref).norm(dim=1).mean()
                    loss = loss + args.id_weight * terms["id"]
            fake = torch.cat(fakes)
            if use_adv:
                terms["adv"] = g_nonsaturating(D(diff_augment(fake, "color,translation")))
                loss = loss + args.adv_weight * terms["adv"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), sr.parameters()):
                    pe.lerp_(p, 1 - args.ema)
            # -- discriminator step (every step, so it is ready when the adversarial term starts)
            sr.requires_grad_(False)
            D.requires_grad_(True)
            real = hr
            d_loss = d_logistic(D(diff_augment(real, "color,translation")),
                                D(diff_augment(fake.detach(), "color,translation")))
            terms["d"] = d_loss
            if args.r1_gamma > 0 and step % 8 == 0:
                r1, _ = r1_penalty(D, real, args.r1_gamma)
                d_loss = d_loss + 8 * r1
            optD.zero_grad(set_to_none=True)
            d_loss.backward()
            optD.step()
            state["step"] += 1
            state["images_seen"] += args.batch + (0 if gen is None else gen.shape[0])
            for k, v in terms.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            acc["n"] = acc.get("n", 0) + 1
            if state["step"] % 20 == 0:
                rate = (state["step"] - step0) / max(1e-6, time.time() - t_start)
                log(f"step {state['step']} " + " ".join(f"{k} {v / acc['n']:.4f}" for k, v in acc.items()
                                                         if k != "n") + f" ({rate * 60:.1f} steps/min)")
                acc = {}
            if state["step"] % args.val_every == 0:
                log(f"val at step {state['step']}: {json.dumps(validate())}")
            if time.time() - t_ckpt > args.ckpt_minutes * 60:
                checkpoint()
                t_ckpt = time.time()
    except KeyboardInterrupt:
        log("interrupted: saving")
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    checkpoint(final=True)
    if not math.isfinite(state["val"]["l1"]):
        print("error: the run diverged (NaN); resume from an earlier run folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
