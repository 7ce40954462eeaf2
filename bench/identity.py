"""dlib face-recognition ResNet port: speed, parity with dlib, and the cost of our canonical-crop framing.

    python bench/identity.py [--threads 2] [--repeat 5] [--device cpu|cuda]

Prints
- median ms per call / per image of ``forward`` (150 px chips) and ``embed_crops`` (128 px crops, forward+backward)
  at batch 1 and 16, and dlib's own ``compute_face_descriptor`` for comparison;
- max-abs descriptor difference to dlib on the 10 ffhq-samples chips;
- descriptor distance between ``embed_crops`` on our canonical crops (aligned from the provided landmarks)
  and dlib on the full photo (64/128/256 px), next to dlib's own descriptor of the chip cut from the same crop (what is left is
  alignment/resampling, not the port).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402
from engine.perception import identity as ident  # noqa: E402
from engine.perception.align import similarity_transform  # noqa: E402
from engine.perception.dlib_files import model_file  # noqa: E402


def timed(fn, repeat, sync=lambda: None):
    fn()
    sync()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def canonical_crop(img, lm, size):
    import cv2

    m = similarity_transform(lm[17:], ident._template_landmarks(size, size)[17:])
    m[:, 2] += 0.5 * m[:, :2].sum(1) - 0.5
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    net = ident.IdentityNet.load().to(dev)
    print(f"identity net: load + parse {1000 * (time.perf_counter() - t):.0f} ms, "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params, torch {torch.__version__}, "
          f"{args.device}, {args.threads} threads, median of {args.repeat}")
    for p in net.parameters():
        p.requires_grad_(False)
    print(f"{'batch':>5} {'fwd ms':>8} {'fwd ms/img':>11} {'crop fwd+bwd ms':>16} {'ms/img':>8}")
    for b in (1, 16):
        g = torch.Generator().manual_seed(0)
        chips = torch.rand(b, 3, 150, 150, generator=g).to(dev)
        with torch.no_grad():
            fwd = timed(lambda: net(chips), args.repeat, sync)
        crops = torch.rand(b, 3, 128, 128, generator=g).to(dev).requires_grad_(True)
        both = timed(lambda: net.embed_crops(crops).sum().backward(), args.repeat, sync)
        print(f"{b:>5} {fwd:>8.1f} {fwd / b:>11.1f} {both:>16.1f} {both / b:>8.1f}")

    try:
        import dlib
        from PIL import Image
    except ImportError:
        print("dlib / PIL not importable: parity part skipped")
        return 0
    ffhq = config.ffhq_samples_dir()
    if not ffhq.exists():
        print(f"ffhq-samples not found at {ffhq}: parity part skipped")
        return 0
    fr = dlib.face_recognition_model_v1(str(model_file(ident.MODEL_NAME)))
    photos, chips = [], []
    for f in sorted((ffhq / "images").glob("*.png")):
        img = np.asarray(Image.open(f).convert("RGB")).copy()
        lm = np.load(ffhq / "landmarks" / (f.stem + ".npy"))
        det = dlib.full_object_detection(dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1),
                                         [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in lm])
        photos.append((img, lm))
        chips.append(dlib.get_face_chip(img, det, ident.CHIP_SIZE, ident.CHIP_PADDING))
    chips = np.stack(chips)
    t = time.perf_counter()
    ref = np.stack([np.asarray(fr.compute_face_descriptor(c)) for c in chips])
    dlib_ms = 1000 * (time.perf_counter() - t) / len(chips)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float().div(255).to(dev)
    with torch.no_grad():
        ours = net(x).double().cpu().numpy()
    err = np.abs(ours - ref)
    print(f"\ndlib compute_face_descriptor: {dlib_ms:.1f} ms/img (one at a time)")
    print(f"parity on {len(chips)} ffhq chips: max-abs {err.max():.2e}, mean-abs {err.mean():.2e} "
          f"(descriptor max |value| {np.abs(ref).max():.3f}), max L2 {np.linalg.norm(ours - ref, axis=1).max():.2e}")
    grid = net.chip_grid(128)
    outside = float((grid.abs() > 1).any(-1).float().mean())
    print(f"fraction of the 150 px chip that lies outside our canonical crop: {100 * outside:.1f} %")
    for size in (64, 128, 256):
        crops = np.stack([canonical_crop(img, lm, size) for img, lm in photos])
        tpl = ident._template_landmarks(size, size)
        tdet = dlib.full_object_detection(dlib.rectangle(0, 0, size - 1, size - 1),
                                          [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in tpl])
        with torch.no_grad():
            d = net.embed_crops(torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(dev)).double()
        dist = np.linalg.norm(d.cpu().numpy() - ref, axis=1)
        own = np.array([np.linalg.norm(np.asarray(fr.compute_face_descriptor(
            dlib.get_face_chip(c, tdet, ident.CHIP_SIZE, ident.CHIP_PADDING))) - r) for c, r in zip(crops, ref)])
        print(f"{size} px canonical crop -> embed_crops vs dlib(photo): mean {dist.mean():.3f}, max {dist.max():.3f}; "
              f"dlib's own chip of the same crop vs dlib(photo): mean {own.mean():.3f}, max {own.max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
