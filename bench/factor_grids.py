"""One grid PNG per factor from the shipped generator: rows = identities, columns = that factor swept.

    python bench/factor_grids.py [--out docs] [--rows 4] [--psi 0.7] [--random-faces 32]

pose: yaw −30° … +30°; expression: jawOpen 0 → 0.8 then smile; light: azimuth −80° … +80°; identity: new identities
with the same expression/pose/light (each row keeps one pose/light; the noise too, unless the generator's noise is
an identity code, which then comes with the new identity). Also prints, per sweep, the mean
identity-net distance to the row's first image (identity kept < 0.6) and the R-Net's re-estimated yaw for the pose
sweep, so what the pictures show has numbers beside it. ``--random-faces N`` also writes ``random_faces.png``: N
random faces (seed 2026, ψ as given, 8 per row; below 128 px shown at 2× with nearest-neighbour so the pixels are
honest). The shipped upsampler (``assets/face_sr.safetensors``) is used when present: faces at its 128 px.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.io.files import save_image  # noqa: E402
from engine.render.shading import light_from_direction  # noqa: E402


def sweeps(gen, base, noise, n_cols: int):
    """{factor: list over columns of Coefficients (rows batch)}"""
    out = {}
    cols = []
    for yaw in torch.linspace(-30, 30, n_cols).tolist():
        c = base.clone()
        c.set_pose_degrees(yaw=yaw, pitch=0, roll=0)
        cols.append(c)
    out["pose"] = cols
    cols = []
    for t in torch.linspace(0, 1, n_cols).tolist():
        c = base.clone()
        c.expression.zero_()
        if t <= 0.5:
            c.expr["jawOpen"] = 1.6 * t
        else:
            c.expr["mouthSmile_L"] = c.expr["mouthSmile_R"] = 2 * (t - 0.5)
        cols.append(c)
    out["expression"] = cols
    cols = []
    for az in torch.linspace(-80, 80, n_cols).tolist():
        c = base.clone()
        c.light[:] = light_from_direction(az, 15, 0.6, ambient=0.75)
        cols.append(c)
    out["light"] = cols
    donors, donor_noise = gen.sample(n_cols, 777)
    cols = []
    for k in range(n_cols):
        c = base.clone()
        c.identity[:] = donors.identity[k]
        c.albedo[:] = donors.albedo[k]
        # an identity-code generator's noise is part of who it is: the donor's code comes along
        cols.append((c, donor_noise[k:k + 1].expand_as(noise)) if gen.G.identity_noise else c)
    out["identity"] = cols
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=7)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--generator", default=None, help="generator file (default: the shipped one, with the shipped "
                                                         "upsampler when assets/face_sr.safetensors is present)")
    ap.add_argument("--sr", default=None, help="upsampler file to attach ('none': the bare generator)")
    ap.add_argument("--random-faces", type=int, default=0, help="also write random_faces.png with this many faces")
    args = ap.parse_args(argv)
    from engine.generator.networks import FaceGenerator, load_default_generator
    from engine.generator.sr import FaceSR

    gen = FaceGenerator.load(args.generator) if args.generator else load_default_generator(upsampler=args.sr is None)
    if gen is None:
        print("error: no generator weights (assets/generator.safetensors)", file=sys.stderr)
        return 1
    if args.sr and args.sr != "none":
        gen.attach_sr(FaceSR.load(args.sr))
    try:
        from engine.perception.identity import default_identity_net
        from engine.perception.rnet import default_rnet

        idnet, rnet = default_identity_net(), default_rnet()
    except Exception as exc:  # noqa: BLE001 - numbers are optional beside the pictures
        print(f"(no identity net / R-Net: {exc})")
        idnet = rnet = None
    base, noise = gen.sample(args.rows, args.seed)
    out = Path(args.out)
    res = gen.resolution
    if args.random_faces > 0:
        n, per_row = args.random_faces, 8
        c, z = gen.sample(n, 2026)
        with torch.no_grad():
            faces = gen.synthesize(c, z, args.psi)
        rows = (n + per_row - 1) // per_row
        pad = torch.ones(rows * per_row - n, 3, res, res)
        grid = torch.cat([faces, pad]).view(rows, per_row, 3, res, res).permute(2, 0, 3, 1, 4)
        grid = grid.reshape(3, rows * res, per_row * res)
        if res < 128:  # small faces shown at 2× with nearest-neighbour (honest pixels)
            grid = grid.repeat_interleave(2, 1).repeat_interleave(2, 2)
        save_image(out / "random_faces.png", grid)
        print(f"random    -> {out / 'random_faces.png'} ({n} faces, seed 2026, psi {args.psi})")
    for factor, cols in sweeps(gen, base, noise, args.cols).items():
        with torch.no_grad():
            imgs = torch.stack([gen.synthesize(*(c if isinstance(c, tuple) else (c, noise)), args.psi)
                                for c in cols], 1)  # (R, C, 3, H, W)
        grid = imgs.permute(2, 0, 3, 1, 4).reshape(3, args.rows * res, args.cols * res)
        path = out / f"sweep_{factor}.png"
        save_image(path, grid)
        line = f"{factor:10s} -> {path}"
        if idnet is not None:
            with torch.no_grad():
                ref = idnet.embed_crops(imgs[:, 0])
                d = torch.stack([(idnet.embed_crops(imgs[:, k]) - ref).norm(dim=1) for k in range(1, args.cols)])
            line += f"   id distance to column 0: mean {float(d.mean()):.3f}, kept(<0.6) {float((d < 0.6).float().mean()):.0%}"
            if factor == "pose":
                with torch.no_grad():
                    yaw = torch.stack([rnet.predict(imgs[:, k]).pose[:, 0] for k in range(args.cols)]) * 57.2958
                line += "   R-Net yaw per column: " + " ".join(f"{v:.0f}" for v in yaw.mean(1).tolist())
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
