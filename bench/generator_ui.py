"""What a user sees of a new face: the generator at the editor's control ranges, through the editor's own path.

    python bench/generator_ui.py [--generator FILE] [--sr FILE|none] [--psi 0.7 1.0] [--n 24] [--seed 555]
                                 [--sheet out/ui_sheet.png] [--sheet-seeds 3,1,7,11,23,42,77,101]

``bench/generator.py`` measures random faces as the decoders sample them (small poses, weak lights). The editor
then turns them with the sliders: this bench takes ``--n`` random faces (frontal, their own expression and light,
as *New random face* makes them) at truncation ``--psi`` and reads back, per ψ:

* **yaw**: the R-Net's yaw for the Pose slider at −30 −15 0 +15 +30° (the generator's trained range is ±40°), and
  the share of faces dlib still calls the same person at ±30° (distance < 0.6 to the frontal face);
* **border**: the texture (mean |Laplacian|) of the 12 px side bands at −30 / 0 / +30° — a turned face's
  streaked band at the image border shows as a higher value than the frontal face's;
* **smile / jawOpen**: what the R-Net reads back for Smile 0 → 1 and jawOpen 0 → 0.6;
* **light**: the face-centre luma at the session's start / Reset light (``factors.default_light(generator)``),
  at the editor's key light (``DEFAULT_LIGHT``) and at the faces' own sampled lights, against UTKFace test crops
  (share above their 95th percentile: washed out); and the left-minus-right luma of the face for light azimuth
  −60° vs +60° at the faces' own intensity (does the Light slider show?).

``--sheet`` writes a picture of ``--sheet-seeds`` faces × those settings, made by ``Session.new_random_face`` +
``set_controls`` / ``set_light`` + ``render_snapshot`` at the native size — exactly what the editor shows before
the view scales it. Needs the shipped weights, the R-Net / identity net and the aligned 128 px test crops
(``python -m training prepare --splits test --size 128``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

YAWS = (-30, -15, 0, 15, 30)
SHEET_COLS = (("new face", {}), ("yaw -30", {"yaw": -30}), ("yaw -15", {"yaw": -15}), ("yaw +15", {"yaw": 15}),
              ("yaw +30", {"yaw": 30}), ("smile 1", {"smile": 1.0}), ("jawOpen .6", {"jawOpen": 0.6}),
              ("light -60", {"light_azimuth": -60}), ("light +60", {"light_azimuth": 60}),
              ("yaw22 smile.7", {"yaw": 22, "pitch": 6, "smile": 0.7, "brows_up": 0.3, "light_azimuth": 25}))


def face_luma(img01: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] → mean luma (0..255) of the face centre (the middle 3/8 × 5/16 of the crop)."""
    s = img01.shape[-1]
    c = img01[..., int(s * 0.34):int(s * 0.66), int(s * 0.31):int(s * 0.69)]
    y = 0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
    return (y.mean((1, 2)) * 255).numpy()


def side_luma(img01: torch.Tensor) -> np.ndarray:
    """Left minus right half of the face centre (luma, 0..255)."""
    s = img01.shape[-1]
    c = img01[..., int(s * 0.34):int(s * 0.66), int(s * 0.25):int(s * 0.75)]
    y = 0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
    h = y.shape[-1] // 2
    return ((y[..., :h].mean((1, 2)) - y[..., h:].mean((1, 2))) * 255).numpy()


def border_texture(img01: torch.Tensor, band: int = 12) -> np.ndarray:
    x = img01
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2]
           - x[..., 1:-1, 2:]).abs().mean(1)
    return torch.cat([lap[..., :band], lap[..., -band:]], -1).mean((1, 2)).numpy()


def load(args):
    from engine.generator.networks import FaceGenerator, load_default_generator
    from engine.generator.sr import FaceSR

    if args.generator:
        fg = FaceGenerator.load(args.generator)
        if args.sr != "none":
            from engine.generator.sr import load_default_sr

            sr = FaceSR.load(args.sr) if args.sr else load_default_sr()
            if sr is not None:
                fg.attach_sr(sr)
    else:
        fg = load_default_generator(upsampler=args.sr != "none")
        if args.sr and args.sr != "none":
            fg.attach_sr(FaceSR.load(args.sr))
    return fg


def measure(fg, args) -> None:
    from engine.editing import factors
    from engine.editing.controls import apply_controls, controls_for
    from engine.face.model import default_model
    from engine.perception.identity import default_identity_net
    from engine.perception.rnet import default_rnet
    from training.data import load_aligned

    model = default_model()
    controls = controls_for(model.exp_names, model)
    rnet, idnet = default_rnet(), default_identity_net()
    real = load_aligned("test", 128, None)["images"][::3]
    real = torch.as_tensor(np.asarray(real)).permute(0, 3, 1, 2).float() / 255
    r_luma = face_luma(real)
    r95 = np.percentile(r_luma, 95)
    print(f"real test crops (n={len(r_luma)}): face-centre luma 5 / 50 / 95 % "
          f"{np.percentile(r_luma, 5):.0f} / {np.median(r_luma):.0f} / {r95:.0f}")
    c0, z = fg.sample(args.n, args.seed)
    c0.pose.zero_()
    names = list(model.exp_names)
    ism, ijaw = [names.index("mouthSmile_L"), names.index("mouthSmile_R")], names.index("jawOpen")

    def with_controls(values, base=None):
        c = (base if base is not None else c0).clone()
        apply_controls(c, values, controls, force=True)
        return c

    print(f"{args.n} faces (seed {args.seed}), {fg.resolution} px; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| ψ | R-Net yaw for −30 −15 0 +15 +30° | same person at ±30° | border texture −30 / 0 / +30° | "
          "smile 0→1 read | jawOpen 0→0.6 read | luma at start light (> real 95 %) | at key light 0.45 | "
          "own lights | light −60° vs +60° left−right |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for psi in args.psi:
            def synth(c):
                return torch.cat([fg.synthesize(c[i:i + 8], z[i:i + 8], psi) for i in range(0, args.n, 8)])
            ims = {y: synth(with_controls({"yaw": y})) for y in YAWS}
            yaw = [float(rnet.predict(ims[y]).pose[:, 0].mean()) * 57.2958 for y in YAWS]
            e0 = idnet.embed_crops(ims[0])
            kept = np.mean([float(((idnet.embed_crops(ims[y]) - e0).norm(dim=1) < 0.6).float().mean())
                            for y in (-30, 30)])
            tex = [float(border_texture(ims[y]).mean()) for y in (-30, 0, 30)]
            s0, s1 = synth(with_controls({"smile": 0.0})), synth(with_controls({"smile": 1.0}))
            jw = synth(with_controls({"jawOpen": 0.6}))
            e_s0 = rnet.predict(s0).expression
            smile = float(rnet.predict(s1).expression[:, ism].mean() - e_s0[:, ism].mean())
            jaw = float(rnet.predict(jw).expression[:, ijaw].mean() - e_s0[:, ijaw].mean())
            lumas = []
            for light in (factors.default_light(fg), factors.default_light(), None):
                c = c0.clone()
                if light is not None:
                    c.light[:] = light
                v = face_luma(synth(c))
                lumas.append(f"{np.median(v):.0f} ({np.mean(v > r95):.0%})")
            sides = [side_luma(synth(with_controls({"light_azimuth": a}))) for a in (-60, 60)]
            print(f"| {psi:g} | " + " ".join(f"{v:.1f}" for v in yaw) + f" | {kept:.0%} | "
                  + " / ".join(f"{v:.4f}" for v in tex) + f" | +{smile:.2f} | +{jaw:.2f} | " + " | ".join(lumas)
                  + f" | {np.median(sides[0]):+.1f} vs {np.median(sides[1]):+.1f} |", flush=True)


def sheet(args, path: Path) -> None:
    from PIL import Image, ImageDraw

    from engine.editing.session import Session

    fg = load(args)
    s = Session(generator=fg)
    seeds = [int(v) for v in args.sheet_seeds.split(",")]
    rows = []
    for seed in seeds:
        row = []
        for _, values in SHEET_COLS:
            s.new_random_face(seed)
            if values:
                s.set_controls(values)
            row.append(np.asarray(s.render_snapshot(s.state).image))
        rows.append(np.concatenate(row, 1))
    grid = Image.fromarray(np.concatenate(rows, 0))
    w = grid.width // len(SHEET_COLS)
    out = Image.new("RGB", (grid.width, grid.height + 14), "white")
    d = ImageDraw.Draw(out)
    for i, (name, _) in enumerate(SHEET_COLS):
        d.text((i * w + 2, 1), name, fill="black")
    out.paste(grid, (0, 14))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    print(f"sheet -> {path} (seeds {args.sheet_seeds} × {', '.join(n for n, _ in SHEET_COLS)}, "
          f"{fg.resolution} px, the editor's Session path)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generator", default=None, help="generator file (default: the shipped one)")
    ap.add_argument("--sr", default=None, help="upsampler file, or 'none' (default: the shipped upsampler)")
    ap.add_argument("--psi", type=float, nargs="+", default=[0.7])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=555)
    ap.add_argument("--sheet", default=None, help="also write the picture here")
    ap.add_argument("--sheet-seeds", default="3,1,7,11,23,42,77,101")
    ap.add_argument("--no-measure", action="store_true", help="only the sheet")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.n < 2 or args.n % 8:
        print("error: --n must be a positive multiple of 8", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    fg = load(args)
    if fg is None:
        print("error: no generator weights", file=sys.stderr)
        return 1
    if not args.no_measure:
        measure(fg, args)
    if args.sheet:
        sheet(args, Path(args.sheet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
