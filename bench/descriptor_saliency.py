"""Where in a face the dlib-port descriptor is most sensitive: why v2's identity-spread term coloured eyelids.

    python bench/descriptor_saliency.py [--generator FILE ...] [--n 24]

For N random faces of each generator (64 px, seed 2026, ψ 0.7) it estimates the per-pixel squared Jacobian norm of
the 128-d face descriptor (8 random unit projections, E‖Jᵀu‖² summed over RGB) and prints its mean over the eye
regions (brow to under the lower lid, the faces' 3DMM landmarks), the rest of the face (jaw/brow hull) and the border
ring (1/8 of the size). A term that pushes descriptors apart gets the most distance per unit of pixel change where
this is largest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", nargs="*", default=["assets/generator.safetensors"])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import cv2

    from engine.face.model import default_model
    from engine.generator.networks import FaceGenerator
    from engine.perception.identity import default_identity_net
    from engine.render import FaceRenderer
    from training.sr import eye_region

    idn = default_identity_net()
    for path in args.generator:
        fg = FaceGenerator.load(path)
        c, n = fg.sample(args.n, seed=2026)
        with torch.no_grad():
            x = fg.synthesize(c, n, 0.7, upsample=False)
        res = x.shape[-1]
        lms = FaceRenderer(default_model()).landmarks(c, res).numpy()
        x = x.clone().requires_grad_(True)
        d = idn.embed_crops(x)
        g = torch.Generator().manual_seed(0)
        J = torch.zeros_like(x)
        for _ in range(8):
            u = torch.randn(d.shape, generator=g)
            u = u / u.norm(dim=1, keepdim=True)
            (gr,) = torch.autograd.grad((d * u).sum(), x, retain_graph=True)
            J += gr ** 2
        J = J.sum(1).detach().numpy()
        out = {"eyes": [], "rest of face": [], "border": []}
        w = max(2, res // 8)
        for i in range(args.n):
            eye = eye_region(lms[i], res)
            hull = np.zeros((res, res), np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lms[i][:27]).astype(np.int32)), 1)
            ring = np.ones((res, res), bool)
            ring[w:-w, w:-w] = False
            for k, m in (("eyes", eye), ("rest of face", hull.astype(bool) & ~eye), ("border", ring)):
                out[k].append(J[i][m].mean())
        ratio = np.mean(np.array(out["eyes"]) / np.array(out["rest of face"]))
        print(f"{path}: mean squared descriptor Jacobian per pixel — "
              + ", ".join(f"{k} {np.mean(v):.2e}" for k, v in out.items()) + f"; eyes / rest of face {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
