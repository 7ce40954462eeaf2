"""Benchmark: 3DMM fitting (images/s, landmark NME) and the R-Net (ms/image, held-out accuracy).

    OMP_NUM_THREADS=1 python bench/fit.py [--n 64] [--threads 1]

Fitting: the landmark stage + linear light on the ffhq-samples crops (ground-truth FAN landmarks) and on ``--n``
held-out UTKFace crops (dlib landmarks from ``training prepare``). R-Net: latency at batch 1 and 16 and, when the
test fits exist, landmark NME and yaw/pitch error against the fits on the held-out split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ffhq():
    from engine.config import ffhq_samples_dir
    from engine.perception.align import align_with_landmarks, load_image
    from engine.fit import crops_to_tensor

    d = ffhq_samples_dir()
    crops, lms = [], []
    for i in range(10):
        c, al = align_with_landmarks(load_image(d / "images" / f"{i:05d}.png"), np.load(d / "landmarks" / f"{i:05d}.npy"), 128)
        crops.append(c)
        lms.append(al.landmarks_crop)
    return crops_to_tensor(np.stack(crops)), torch.from_numpy(np.stack(lms)).float()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="held-out UTKFace crops to fit")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from engine import fit as fitting
    from engine.face.model import FaceModel
    from engine.render import FaceRenderer

    model = FaceModel.load()
    r = FaceRenderer(model)
    print(f"threads {args.threads}, albedo K={model.albedo_dim}")
    crops, lms = _ffhq()
    for steps in ((200, 0), (200, 40)):
        t = time.perf_counter()
        res = fitting.fit_coefficients(crops, lms, model, r, steps=steps, size=64)
        dt = time.perf_counter() - t
        print(f"ffhq-samples (10, GT landmarks) steps {steps}: NME {res.landmark_nme.mean():.4f} "
              f"(max {res.landmark_nme.max():.4f}), {10 / dt:.2f} img/s")
    try:
        from training.data import load_aligned

        data = load_aligned("test", 128, args.n)
    except Exception as exc:  # noqa: BLE001 - optional part
        print(f"UTKFace held-out: skipped ({exc})")
        data = None
    if data is not None:
        x = fitting.crops_to_tensor(data["images"])
        t = time.perf_counter()
        res = fitting.fit_coefficients(x, data["landmarks"], model, r, steps=(200, 0), size=64)
        light, gain, resid = fitting.solve_light(x, res.coeffs, model, r)
        dt = time.perf_counter() - t
        print(f"UTKFace test ({len(x)}, dlib landmarks) landmarks+linear light, batch {len(x)}: NME "
              f"{res.landmark_nme.mean():.4f} (median {res.landmark_nme.median():.4f}), residual "
              f"{np.nanmean(resid.numpy()):.4f}, {len(x) / dt:.2f} img/s")
    try:
        from engine.perception.rnet import RNet

        net = RNet.load()
    except Exception as exc:  # noqa: BLE001
        print(f"R-Net: skipped ({exc})")
        return 0
    from training.rnet import evaluate, time_inference

    print("R-Net latency: " + ", ".join(f"{k} {v:.2f}" for k, v in time_inference(net, reps=30).items()))
    from engine.fit import LandmarkGeometry, landmark_nme

    with torch.no_grad():
        c = net.predict(crops)
    nme = landmark_nme(LandmarkGeometry(model, r)(c.identity, c.expression, c.pose, 128), lms)
    print(f"R-Net on ffhq-samples (GT landmarks): NME {nme.mean():.4f} (max {nme.max():.4f})")
    try:
        from training.rnet import load_split

        m = evaluate(net, load_split("test", model), model, r)
        print(f"R-Net held-out UTKFace ({m['n']}): NME {m['nme']:.4f}, yaw err {m['yaw_err_deg']:.2f} deg, "
              f"pitch err {m['pitch_err_deg']:.2f} deg (vs the fits)")
    except Exception as exc:  # noqa: BLE001
        print(f"R-Net held-out: skipped ({exc})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
