"""``render`` (the 3DMM), ``grid`` (the README figure) and ``generate`` (the trained generator)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from engine.cli.common import UsageError, add_set_args, apply_settings, check_size, out_path, settings

if TYPE_CHECKING:
    import torch

LIGHT_OPTIONS = ("light_azimuth", "light_elevation", "light_intensity", "light_ambient")


def cmd_render(args) -> int:
    """Render the 3DMM (the analytic image R(λ)) with named settings."""
    import torch

    from engine.face.model import default_model
    from engine.io.files import save_image
    from engine.render import FaceRenderer

    out = out_path(args.output)
    size = check_size(args.size)
    model = default_model()
    items = list(args.set or [])
    for k in ("yaw", "pitch", "roll"):
        if getattr(args, k) is not None:
            items.append(f"{k}={getattr(args, k)}")
    items += list(args.expr or [])
    for k in LIGHT_OPTIONS:
        if getattr(args, k) is not None:
            items.append(f"{k}={getattr(args, k)}")
    values = settings(items, model.exp_names, args.force)
    c = model.zeros(1)
    if args.identity_seed is not None:
        c.identity.normal_(generator=torch.Generator().manual_seed(args.identity_seed))
        if model.albedo_dim:
            c.albedo.normal_(generator=torch.Generator().manual_seed(args.identity_seed + 1))
    apply_settings(c, values)
    with torch.no_grad():
        img = FaceRenderer(model)(c, size, background=args.background).image
    save_image(out, img[0])
    print(f"wrote {out}")
    return 0


def render_grid(size: int = 128, seed: int = 0) -> torch.Tensor:
    """A 4 x 6 grid of 3DMM renders: rows vary identity; columns: neutral, yaw ±35°, jawOpen, smile+blink, side
    light."""
    import torch

    from engine.face.model import Coefficients, default_model
    from engine.render import FaceRenderer, light_from_direction

    model = default_model()
    rend = FaceRenderer(model)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(4):
        base = model.zeros(1)
        base.identity.normal_(generator=g)
        if model.albedo_dim:
            base.albedo.normal_(generator=g)
        base.light[:] = light_from_direction(20, 25, 0.35)
        cols = []
        for col in range(6):
            c = base.clone()
            if col == 1:
                c.set_pose_degrees(yaw=-35)
            elif col == 2:
                c.set_pose_degrees(yaw=35, pitch=10)
            elif col == 3:
                c.expr["jawOpen"] = 0.7
            elif col == 4:
                c.expr["mouthSmile_L"] = c.expr["mouthSmile_R"] = 0.9
                c.expr["eyeBlink_L"] = 1.0
                c.set_pose_degrees(roll=10)
            elif col == 5:
                c.light[:] = light_from_direction(-70, 10, 0.8, ambient=0.5, color=(1.0, 0.85, 0.7))
            cols.append(c)
        rows.append(Coefficients.cat(cols))
    batch = Coefficients.cat(rows)
    with torch.no_grad():
        img = rend(batch, size, background=0.12).image  # (24, 3, H, W)
    return img.view(4, 6, 3, size, size).permute(2, 0, 3, 1, 4).reshape(3, 4 * size, 6 * size)


def cmd_grid(args) -> int:
    from engine.io.files import save_image

    out = out_path(args.output)
    save_image(out, render_grid(check_size(args.size), args.seed))
    print(f"wrote {out}")
    return 0


def cmd_generate(args) -> int:
    """Generate a face with the shipped generator (seeded), with named settings applied, at ``--size``."""
    import torch

    from engine.editing.factors import generator_light_note, generator_light_ranges
    from engine.generator.networks import load_default_generator
    from engine.io.files import save_image

    out = out_path(args.output)
    size = check_size(args.size)
    gen = load_default_generator()
    if gen is None:
        raise UsageError("no generator weights in assets/ (assets/generator.safetensors); use `discoface render` "
                         "for the 3DMM preview")
    values = settings(args.set, gen.exp_names, args.force)
    ranges = generator_light_ranges(gen) if any(k.startswith("light_") for k in values) else None
    for k, v in values.items():  # the editor's generator-mode note: lights beyond the generator's own
        note = generator_light_note(ranges, k, v)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    with torch.no_grad():
        coeffs, noise = gen.sample(1, args.seed)
        apply_settings(coeffs, values)
        img = gen.synthesize(coeffs, noise, truncation_psi=args.psi)
        if size is not None and size != img.shape[-1]:
            img = torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic", align_corners=False,
                                                  antialias=True).clamp(0, 1)
    save_image(out, img[0])
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("render", help="render the 3D face model with named settings")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--yaw", type=float)
    p.add_argument("--pitch", type=float)
    p.add_argument("--roll", type=float)
    p.add_argument("--expr", action="append", metavar="NAME=VALUE", help="e.g. --expr jawOpen=0.8 (repeatable)")
    p.add_argument("--light-azimuth", dest="light_azimuth", type=float)
    p.add_argument("--light-elevation", dest="light_elevation", type=float)
    p.add_argument("--light-intensity", dest="light_intensity", type=float)
    p.add_argument("--light-ambient", "--ambient", dest="light_ambient", type=float)
    p.add_argument("--identity-seed", type=int, help="random identity (and albedo) from this seed")
    p.add_argument("--background", type=float, default=0.0)
    add_set_args(p)
    p.set_defaults(fn=cmd_render)

    p = sub.add_parser("grid", help="grid PNG of varied identities / poses / expressions / lights (3DMM)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_grid)

    p = sub.add_parser("generate", help="generate a face with the shipped generator")
    p.add_argument("--seed", type=int, default=0)
    add_set_args(p)
    p.add_argument("--psi", type=float, default=0.7, help="attribute-preserving truncation")
    p.add_argument("--size", type=int, default=None,
                   help="output size in px (default: the generator's own; larger sizes are upscaled)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_generate)


__all__ = ["register", "render_grid"]
