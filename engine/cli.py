"""``discoface`` command line: render, grid, generate, fit, embed, export, train.

Every command exits 0 on success and, on a user mistake (bad file, bad value), prints one line
``error: …`` and exits 2 without writing a partial output.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from engine.runtime import setup_entry_point

EXIT_USER_ERROR = 2


class UsageError(ValueError):
    """A bad command-line value."""


# ------------------------------------------------------------------------------------------------ #
# settings: "yaw=20 jawOpen=0.5 light_azimuth=45"
# ------------------------------------------------------------------------------------------------ #
LIGHT_KEYS = ("light_azimuth", "light_elevation", "light_intensity", "ambient")


def parse_settings(items: list[str]) -> dict[str, float]:
    out = {}
    for it in items:
        if "=" not in it:
            raise UsageError(f"setting {it!r} must look like name=value (e.g. yaw=20 or jawOpen=0.5)")
        k, v = it.split("=", 1)
        try:
            val = float(v)
        except ValueError:
            raise UsageError(f"setting {k!r}: {v!r} is not a number") from None
        if not math.isfinite(val):
            raise UsageError(f"setting {k!r}: value must be finite")
        out[k.strip()] = val
    return out


def apply_settings(coeffs, settings: dict[str, float]):
    """Apply named settings in place: yaw/pitch/roll (degrees), expression names (0..1), id<k>, light_*."""
    from engine.render.shading import direction_from_light, light_from_direction

    light = None
    for k, v in settings.items():
        if k in ("yaw", "pitch", "roll"):
            coeffs.set_pose_degrees(**{k: v})
        elif k in coeffs.exp_names:
            if not -0.5 <= v <= 1.5:
                raise UsageError(f"expression {k!r} = {v} is outside the sensible range 0..1")
            coeffs.expr[k] = v
        elif k.startswith("id") and k[2:].isdigit():
            idx = int(k[2:])
            if idx >= coeffs.identity.shape[1]:
                raise UsageError(f"identity component {idx} does not exist (0..{coeffs.identity.shape[1] - 1})")
            coeffs.identity[:, idx] = v
        elif k in LIGHT_KEYS:
            if light is None:
                cur = direction_from_light(coeffs.light[:1])
                light = {"light_azimuth": cur["azimuth"], "light_elevation": cur["elevation"],
                         "light_intensity": cur["intensity"], "ambient": cur["ambient"]}
                if cur["intensity"] < 1e-6:
                    light["light_intensity"] = 0.5
            light[k] = v
        else:
            raise UsageError(f"unknown setting {k!r}: use yaw, pitch, roll, id<k>, {', '.join(LIGHT_KEYS)} or an "
                             f"expression name (e.g. jawOpen, mouthSmile_L, eyeBlink_R)")
    if light is not None:
        coeffs.light[:] = light_from_direction(light["light_azimuth"], light["light_elevation"],
                                               light["light_intensity"], light["ambient"])
    return coeffs


def _out_path(p: str, suffixes=(".png", ".jpg", ".jpeg", ".webp", ".bmp")) -> Path:
    path = Path(p)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"output {p!r} must end in one of {', '.join(suffixes)}")
    if path.exists() and path.is_dir():
        raise UsageError(f"output {p!r} is a folder")
    return path


# ------------------------------------------------------------------------------------------------ #
# commands
# ------------------------------------------------------------------------------------------------ #
def cmd_render(args) -> int:
    """Render the 3DMM (the analytic image R(λ)) with named settings."""
    from engine.face.model import default_model
    from engine.io.files import save_image
    from engine.render import FaceRenderer

    out = _out_path(args.output)
    model = default_model()
    c = model.zeros(1)
    if args.identity_seed is not None:
        c.identity.normal_(generator=torch.Generator().manual_seed(args.identity_seed))
        if model.albedo_dim:
            c.albedo.normal_(generator=torch.Generator().manual_seed(args.identity_seed + 1))
    settings = parse_settings(args.set or [])
    for k in ("yaw", "pitch", "roll"):
        if getattr(args, k) is not None:
            settings[k] = getattr(args, k)
    for e in args.expr or []:
        settings.update(parse_settings([e]))
    for k in LIGHT_KEYS:
        v = getattr(args, k)
        if v is not None:
            settings[k] = v
    apply_settings(c, settings)
    with torch.no_grad():
        img = FaceRenderer(model)(c, args.size, background=args.background).image
    save_image(out, img[0])
    print(f"wrote {out}")
    return 0


def render_grid(size: int = 128, seed: int = 0):
    """A 4 x 6 grid of 3DMM renders: rows vary identity; columns: neutral, yaw ±35°, jawOpen, smile+blink, side light."""
    from engine.face.model import default_model
    from engine.render import FaceRenderer, light_from_direction

    model = default_model()
    rend = FaceRenderer(model)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for r in range(4):
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
        rows.append(Coefficients_cat(cols))
    batch = Coefficients_cat(rows)
    with torch.no_grad():
        img = rend(batch, size, background=0.12).image  # (24, 3, H, W)
    img = img.view(4, 6, 3, size, size).permute(2, 0, 3, 1, 4).reshape(3, 4 * size, 6 * size)
    return img


def Coefficients_cat(items):  # noqa: N802 (small alias keeps render_grid readable)
    from engine.face.model import Coefficients

    return Coefficients.cat(items)


def cmd_grid(args) -> int:
    from engine.io.files import save_image

    out = _out_path(args.output)
    save_image(out, render_grid(args.size, args.seed))
    print(f"wrote {out}")
    return 0


def cmd_generate(args) -> int:
    """Generate a face with the shipped generator (seeded), with named settings applied."""
    from engine.io.files import save_image

    out = _out_path(args.output)
    settings = parse_settings(args.set or [])
    try:
        from engine.generator.networks import load_default_generator
    except ImportError:
        load_default_generator = None
    gen = load_default_generator() if load_default_generator else None
    if gen is None:
        raise UsageError("no generator weights in assets/ (assets/generator.safetensors); use `discoface render` "
                         "for the 3DMM preview")
    with torch.no_grad():
        coeffs, noise = gen.sample(1, args.seed)
        apply_settings(coeffs, settings)
        img = gen.synthesize(coeffs, noise, truncation_psi=args.psi)
    save_image(out, img[0])
    print(f"wrote {out}")
    return 0


def cmd_fit(args) -> int:
    """Fit the 3DMM to a photo: coefficients JSON (+ overlay PNG)."""
    from engine.io.files import save_image, write_json_atomic

    try:
        from engine.face.fitting import fit_photo
    except ImportError as exc:
        raise UsageError(f"3DMM fitting is not available in this build ({exc})") from None
    if not args.output.endswith(".json"):
        raise UsageError("output must be a .json file")
    if args.overlay:
        _out_path(args.overlay)
    coeffs, crop, alignment, result = fit_photo(args.photo)
    write_json_atomic(args.output, coeffs.to_json_dict())
    print(f"wrote {args.output} (landmark NME {float(result.landmark_nme.mean()):.3f})")
    if args.overlay:
        from engine.face.fitting import overlay_image

        save_image(args.overlay, overlay_image(crop, coeffs))
        print(f"wrote {args.overlay}")
    return 0


def cmd_embed(args) -> int:
    try:
        from engine.generator.embed import main_embed
    except ImportError as exc:
        raise UsageError(f"photo embedding is not available in this build ({exc})") from None
    return main_embed(args)


def cmd_export(args) -> int:
    try:
        from engine.io.export import export_session_file
    except ImportError as exc:
        raise UsageError(f"export is not available in this build ({exc})") from None
    return export_session_file(args.session, args.to, fps=args.fps, frames=args.frames, size=args.size)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="discoface", description="DiscoFace studio command line")
    sub = ap.add_subparsers(dest="command", required=True)

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
    p.add_argument("--ambient", type=float)
    p.add_argument("--identity-seed", type=int, help="random identity (and albedo) from this seed")
    p.add_argument("--background", type=float, default=0.0)
    p.add_argument("--set", nargs="*", metavar="NAME=VALUE")
    p.set_defaults(fn=cmd_render)

    p = sub.add_parser("grid", help="grid PNG of varied identities / poses / expressions / lights (3DMM)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_grid)

    p = sub.add_parser("generate", help="generate a face with the shipped generator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", metavar="NAME=VALUE", help="yaw=20 jawOpen=0.5 light_azimuth=40 ...")
    p.add_argument("--psi", type=float, default=0.7, help="attribute-preserving truncation")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("fit", help="fit the 3D face model to a photo")
    p.add_argument("photo")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overlay")
    p.set_defaults(fn=cmd_fit)

    p = sub.add_parser("embed", help="embed a photo into the generator's factor latents")
    p.add_argument("photo")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overlay", help="before/after grid PNG: photo | reconstruction | yaw -20 | yaw +20 | smile | relit")
    p.add_argument("--paste-back", dest="paste_back", metavar="OUT.png",
                   help="the reconstruction composited back into the original photo")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser("export", help="export a session's keyframes as PNG frames / GIF / MP4")
    p.add_argument("session")
    p.add_argument("--to", required=True, help="out.mp4, out.gif or a folder for PNG frames")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("train", help="training commands (same as python -m training)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=lambda a: __import__("training.__main__", fromlist=["main"]).main(a.rest))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_entry_point("cli")  # torch threads for this machine's free cores; SIGTERM removes partial outputs
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # every user-facing error type in the engine derives from ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
