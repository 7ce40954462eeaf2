"""Face perception speed and accuracy: detection, 68-pt landmarks and alignment, on ffhq-samples and UTKFace.

    python bench/perception.py [--utk 300] [--size 128]

Prints median ms per image for each stage, the landmark NME against the ffhq-samples ground truth (normalised by
the inter-ocular distance, eye centres), the UTKFace detection failure rate on a random sample, and the mean
distance of aligned landmarks to the canonical template (stable points 17-67, crop px).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.config import ffhq_samples_dir, utkface_dir  # noqa: E402
from engine.perception import align as A  # noqa: E402


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, 1000 * (time.perf_counter() - t)


def run(paths, size, gt=None):
    det_ms, lm_ms, warp_ms, nme, dev, fails = [], [], [], [], [], 0
    tmpl = A.template(size)
    for i, p in enumerate(paths):
        img = A.load_image(p)
        boxes, t = timed(A.detect_faces, img)
        det_ms.append(t)
        if not boxes:
            fails += 1
            continue
        lm, t = timed(A.landmarks68, img, boxes[0])
        lm_ms.append(t)
        (crop, al), t = timed(A.align_with_landmarks, img, lm, size)
        warp_ms.append(t)
        dev.append(float(np.linalg.norm(al.landmarks_crop[17:] - tmpl[17:], axis=1).mean()))
        if gt is not None:
            g = gt[i]
            iod = np.linalg.norm(g[36:42].mean(0) - g[42:48].mean(0))
            nme.append(float(np.linalg.norm(lm - g, axis=1).mean() / iod))
    return dict(n=len(paths), fails=fails, det=statistics.median(det_ms), lm=statistics.median(lm_ms),
                warp=statistics.median(warp_ms), nme=nme, dev=dev)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utk", type=int, default=300, help="random UTKFace images to sample (default 300)")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    A.template(args.size)
    A.landmarks68(np.zeros((64, 64, 3), np.uint8), (8, 8, 56, 56))  # load dlib models before timing

    rows = []
    ff = ffhq_samples_dir()
    if (ff / "images").is_dir():
        paths = sorted((ff / "images").glob("*.png"))
        gt = [np.load(ff / "landmarks" / (p.stem + ".npy")) for p in paths]
        rows.append(("ffhq-samples 256px", run(paths, args.size, gt)))
    utk = utkface_dir()
    if (utk / "splits.json").is_file() and args.utk > 0:
        names = json.loads((utk / "splits.json").read_text())["train"]
        rng = np.random.default_rng(0)
        pick = [utk / "images" / names[i] for i in rng.choice(len(names), min(args.utk, len(names)), replace=False)]
        rows.append((f"UTKFace 200px (n={len(pick)})", run(pick, args.size)))
    if not rows:
        print("no data found (set DISCOFACE_DATA)")
        return 1
    print(f"{'set':28s} {'detect ms':>9s} {'lm68 ms':>8s} {'warp ms':>8s} {'no face':>8s} "
          f"{'tmpl dev px':>11s} {'NME mean':>8s} {'NME med':>8s}")
    for name, r in rows:
        nme = f"{np.mean(r['nme']):8.4f} {np.median(r['nme']):8.4f}" if r["nme"] else f"{'-':>8s} {'-':>8s}"
        print(f"{name:28s} {r['det']:9.1f} {r['lm']:8.1f} {r['warp']:8.2f} "
              f"{100 * r['fails'] / r['n']:7.2f}% {np.mean(r['dev']):11.2f} {nme}")
    print(f"(crop {args.size}px; NME vs FAN ground truth by inter-ocular distance; dlib HOG + 68-pt predictor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
