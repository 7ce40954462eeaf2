"""``python -m training rnet``: train the coefficient regressor (R-Net) on the fits.

Loss = coefficient regression against the fits (standardised per dimension; pose weighted most) + the
self-supervised terms of Deng et al. 2019: the landmarks of the predicted coefficients (sliding jaw contour,
no rasterizing) against the crop's detected landmarks, and, on a sub-batch, the photometric distance between
the render of the predicted coefficients and the crop inside the render mask (skin-weighted).
Augmentation: colour jitter and horizontal flips with the coefficients flipped (yaw/roll negated, _L/_R and
Left/Right expressions swapped, x-odd SH bands negated; identity/albedo regression skipped for flipped samples,
because the mirrored identity is not exactly representable). Checkpoints to ``cache/rnet/`` every epoch
(``--resume``), ships ``assets/rnet.safetensors`` at the end and reports held-out metrics.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MIRROR68 = ([16 - i for i in range(17)] + [26 - i for i in range(10)] + [27, 28, 29, 30]
            + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
            + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
SH_X_ODD = (3, 4, 7)  # SH bands odd in x: x, xy, xz


def expression_mirror(names) -> list[int]:
    names = list(names)
    out = []
    for n in names:
        m = n
        if n.endswith("_L"):
            m = n[:-2] + "_R"
        elif n.endswith("_R"):
            m = n[:-2] + "_L"
        elif "Left" in n:
            m = n.replace("Left", "Right")
        elif "Right" in n:
            m = n.replace("Right", "Left")
        out.append(names.index(m) if m in names else names.index(n))
    return out


def flip_targets(vec: torch.Tensor, sizes: list[int], exp_perm: list[int]) -> torch.Tensor:
    """Mirror a (B, D) coefficient vector (identity/albedo are left as they are; their loss is masked)."""
    ident, alb, expr, light, pose = torch.split(vec, sizes, dim=1)
    expr = expr[:, exp_perm]
    light = light.view(-1, 3, 9).clone()
    light[:, :, list(SH_X_ODD)] *= -1
    pose = pose * torch.tensor([-1.0, 1.0, -1.0])
    return torch.cat([ident, alb, expr, light.view(-1, 27), pose], 1)


def coeff_vector(fits: dict, idx=None) -> np.ndarray:
    from engine.face.model import Coefficients

    cols = [fits[k] if idx is None else fits[k][idx] for k in Coefficients.FACTORS]
    return np.concatenate(cols, 1).astype(np.float32)


def load_split(split: str, model) -> dict:
    """Fits + their crops (uint8) + detected landmarks, in the same order."""
    from training.data import DataError, load_aligned_by_names
    from training.fit import load_fits

    fits = load_fits(split)
    k = fits["albedo"].shape[1]
    if k != model.albedo_dim:
        raise DataError(f"the {split} fits have {k} albedo coefficients but the face model has {model.albedo_dim}; "
                        f"refit with: python -m training fit --split {split} --relight")
    names = fits["names"]
    imgs = load_aligned_by_names(names, split)
    ok = imgs["found"]
    return {"images": torch.from_numpy(imgs["images"][ok]), "landmarks": torch.from_numpy(imgs["landmarks"][ok]),
            "coeffs": torch.from_numpy(coeff_vector(fits)[ok]), "gain": torch.from_numpy(fits["gain"][ok]).float(),
            "names": [n for n, o in zip(names, ok) if o]}


@torch.no_grad()
def evaluate(net, data: dict, model, renderer, batch: int = 64) -> dict:
    from engine.fit import LandmarkGeometry, landmark_nme

    net.eval()
    geo = LandmarkGeometry(model, renderer)
    nmes, dyaw, dpitch = [], [], []
    for s in range(0, len(data["images"]), batch):
        x = data["images"][s:s + batch].permute(0, 3, 1, 2).float() / 255
        c = net.predict(x)
        lm = geo(c.identity, c.expression, c.pose, 128)
        nmes.append(landmark_nme(lm, data["landmarks"][s:s + batch]))
        tgt_pose = data["coeffs"][s:s + batch, -3:]
        dyaw.append((c.pose[:, 0] - tgt_pose[:, 0]).abs())
        dpitch.append((c.pose[:, 1] - tgt_pose[:, 1]).abs())
    nme = torch.cat(nmes)
    return {"nme": float(nme.mean()), "nme_median": float(nme.median()),
            "yaw_err_deg": math.degrees(float(torch.cat(dyaw).mean())),
            "pitch_err_deg": math.degrees(float(torch.cat(dpitch).mean())), "n": len(nme)}


def time_inference(net, reps: int = 20) -> dict:
    """Median ms per image at batch 1 and 16, at 1 thread and at the current thread count (a net this small is
    often faster on one thread at batch 1: the per-op threading overhead is larger than the work)."""
    net.eval()
    out = {}
    threads = torch.get_num_threads()
    try:
        for th in sorted({1, threads}):
            torch.set_num_threads(th)
            with torch.no_grad():
                for b in (1, 16):
                    x = torch.rand(b, 3, 128, 128)
                    for _ in range(3):
                        net.predict(x)
                    times = []
                    for _ in range(reps):
                        t = time.perf_counter()
                        net.predict(x)
                        times.append(time.perf_counter() - t)
                    out[f"ms_per_image_b{b}_t{th}"] = statistics.median(times) / b * 1000
    finally:
        torch.set_num_threads(threads)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training rnet", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=None, help="stop (and ship) after this much training time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--input-size", type=int, default=80)
    ap.add_argument("--w-lm", type=float, default=1000.0, help="self-supervised landmark loss weight")
    ap.add_argument("--photo", type=int, default=8, help="sub-batch size for the photometric loss (0 = off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default=None, help="default assets/rnet.safetensors")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from engine.config import ASSETS_DIR, cache_dir
    from engine.face.model import FaceModel, FaceModelError, Coefficients
    from engine.fit import LANDMARK_WEIGHTS, LandmarkGeometry, skin_weights
    from engine.io.files import write_json_atomic
    from engine.perception.rnet import RNet, RNetError
    from engine.render import FaceRenderer
    from training.data import DataError

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)
    try:
        model = FaceModel.load()
        train = load_split("train", model)
        test = load_split("test", model)
    except (DataError, FaceModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    renderer = FaceRenderer(model)
    geo = LandmarkGeometry(model, renderer)
    net = RNet(model.albedo_dim, args.input_size, model.exp_names)
    sizes = net.sizes
    y = train["coeffs"]
    mean, std = y.mean(0), y.std(0)
    floor = torch.cat([torch.full((s,), f) for s, f in zip(sizes, (0.05, 0.05, 0.02, 0.01, 0.02))])
    std = torch.maximum(std, floor)
    net.coeff_mean.copy_(mean)
    net.coeff_std.copy_(std)
    # per-dimension regression weights (standardised units)
    wdim = torch.cat([torch.full((s,), f) for s, f in zip(sizes, (0.5, 0.5, 1.0, 1.0, 5.0))])
    exp_perm = expression_mirror(model.exp_names)
    lw = torch.from_numpy(LANDMARK_WEIGHTS).clone()
    lw = lw / lw.mean()
    ident_mask = torch.zeros(sum(sizes), dtype=torch.bool)
    ident_mask[: sizes[0] + sizes[1]] = True

    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    n = len(y)
    steps_per_epoch = max(1, n // args.batch)
    total_steps = steps_per_epoch * args.epochs
    ck_dir = Path(cache_dir()) / "rnet"
    ck_dir.mkdir(parents=True, exist_ok=True)
    start_epoch = 0
    step = 0
    spent = 0.0  # training seconds before this run (resume)
    if args.resume and (ck_dir / "last.pt").exists():
        ck = torch.load(ck_dir / "last.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        start_epoch, step, spent = int(ck["epoch"]), int(ck["step"]), float(ck["spent"])
        print(f"resumed after epoch {start_epoch}")
    t0 = time.time()
    stop = False

    def progress_fraction() -> float:
        """Schedule position: by steps, or by time when --minutes is given (whichever is further)."""
        f = step / total_steps
        if args.minutes:
            f = max(f, (spent + time.time() - t0) / (args.minutes * 60))
        return min(1.0, f)

    for epoch in range(start_epoch, args.epochs):
        net.train()
        perm = torch.randperm(n)
        with tqdm(range(steps_per_epoch), desc=f"rnet epoch {epoch + 1}/{args.epochs}", unit="step") as bar:
            for it in bar:
                idx = perm[it * args.batch:(it + 1) * args.batch]
                x = train["images"][idx].permute(0, 3, 1, 2).float() / 255
                tgt = y[idx].clone()
                lm_t = train["landmarks"][idx].clone()
                b = len(idx)
                flip = torch.rand(b) < 0.5
                if flip.any():
                    x[flip] = x[flip].flip(-1)
                    tgt[flip] = flip_targets(tgt[flip], sizes, exp_perm)
                    lf = lm_t[flip][:, MIRROR68]
                    lf[..., 0] = 128.0 - lf[..., 0]
                    lm_t[flip] = lf
                # colour jitter (small: the light/albedo targets assume the photo's colours)
                x = (x * (1 + 0.06 * torch.randn(b, 1, 1, 1)) * (1 + 0.03 * torch.randn(b, 3, 1, 1))).clamp(0, 1)
                raw = net.forward_raw(x)
                tz = (tgt - net.coeff_mean) / net.coeff_std
                wmask = wdim.expand(b, -1).clone()
                wmask[flip.nonzero()[:, 0][:, None], ident_mask.nonzero()[:, 0][None]] = 0.0
                reg = (F.smooth_l1_loss(raw, tz, reduction="none", beta=0.5) * wmask).sum(1).mean() / wdim.sum() * 10
                c = net.to_coefficients(raw)
                lm = geo(c.identity, c.expression, c.pose, 128)
                lm_loss = ((((lm - lm_t) / 128.0) ** 2).sum(-1) * lw).mean() * args.w_lm
                loss = reg + lm_loss
                ph_val = 0.0
                if args.photo:
                    k = min(args.photo, b)
                    ck_ = c[0:k]
                    r = renderer(ck_, 64)
                    tgt_img = F.interpolate(x[:k], size=(64, 64), mode="area")
                    g = train["gain"][idx[:k]]
                    img = r.image * g[:, :, None, None]
                    with torch.no_grad():
                        sw = skin_weights(tgt_img, r.mask) * r.mask
                    dist = ((img - tgt_img) ** 2).sum(1, keepdim=True).add(1e-6).sqrt()
                    ph = ((dist * sw).sum((1, 2, 3)) / sw.sum((1, 2, 3)).clamp_min(1)).mean()
                    loss = loss + ph
                    ph_val = float(ph.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                frac = progress_fraction()
                for grp in opt.param_groups:  # warm-up, then cosine to 0
                    grp["lr"] = args.lr * min(1.0, frac / 0.05 + 0.02) * 0.5 * (1 + math.cos(math.pi * frac))
                opt.step()
                step += 1
                bar.set_postfix(reg=f"{float(reg):.3f}", lm=f"{float(lm_loss):.3f}", ph=f"{ph_val:.3f}")
                if progress_fraction() >= 1.0:
                    stop = True
                    break
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "step": step,
                    "spent": spent + time.time() - t0}, ck_dir / "last.pt")
        m = evaluate(net, test, model, renderer)
        print(f"epoch {epoch + 1}: held-out NME {m['nme']:.4f}, yaw err {m['yaw_err_deg']:.2f}°, "
              f"pitch err {m['pitch_err_deg']:.2f}° ({time.time() - t0:.0f} s)")
        if stop:
            print("schedule finished (time budget); stopping")
            break
    m = evaluate(net, test, model, renderer)
    m.update(time_inference(net))
    m["train_images"] = n
    m["train_seconds"] = round(time.time() - t0)
    out = Path(args.out) if args.out else ASSETS_DIR / "rnet.safetensors"
    net.eval()
    net.save(out, extra={"source": f"UTKFace fits ({n} train crops)",
                         "licence": "trained on UTKFace: non-commercial research only",
                         "metrics": json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()})})
    write_json_atomic(ck_dir / "metrics.json", m)
    try:
        RNet.load(out)
    except RNetError as exc:  # pragma: no cover - a write problem
        print(f"error: written file does not load back: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(m, indent=1))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
