"""Every photo-mode control at the ends of the UI's range, on many photos: contact sheets to look at, and a count.

    OMP_NUM_THREADS=1 python bench/controls_sheet.py [--groups expr,identity,light,pose] [--only name,...]
        [--fits out/controls_fits.pkl] [--out out/controls] [--tile 256] [--per-sheet 6]

Photos: ../shared/data/portraits (11: 3/4 views, black-and-white, a painting), the astronaut, ffhq-samples 0 2 3 and
two UTKFace test crops. Each photo is fitted once (``--fits`` caches the fits), then edited at full resolution by
each control of a group at the ends of the slider's normal range (the control table, ``engine/editing/controls.py``):

- ``expr``: smile, mouth_open, brows_up, jawOpen, mouthPucker, mouthFunnel, cheekPuff (both sides), mouthLeft,
  jawForward, noseSneer (both sides), each at 1 (0 is the photo itself);
- ``identity``: the named traits at -3 and +3 σ;
- ``light``: azimuth ±90°, elevation ±60°, intensity 0 and 1.5, ambient 0 and 1.5;
- ``pose``: pitch at the ends of the photo's believable range (inside the slider's normal ±20°), roll ±20°;
  ``pose40``: pitch ±40°, what the believable range (``PhotoRenderer.turn_range``) reported for most photos
  before it counted the neck (issue 20; now about −20…+18°).

Sheets (``<out>/<group>_<k>.png``): a row per photo, the photo then every edit, each a square around the head and
shoulders (``--tile`` px). Printed per edit: ``far_changed`` — the share of pixels beyond 1.6× the fitted head's box
that changed by more than 8/255 (the background must stay: a non-zero share outside the pose group is a defect),
and ``changed`` — the share of the head box that changed (an edit must happen).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402
from turns import load_fits  # noqa: E402  (bench/ is the script folder; the fits cache is turns.py's)

GROUPS = {
    "expr": [("smile", 1.0), ("mouth_open", 1.0), ("brows_up", 1.0), ("jawOpen", 1.0), ("mouthPucker", 1.0),
             ("mouthFunnel", 1.0), (("cheekPuff_L", "cheekPuff_R"), 1.0), ("mouthLeft", 1.0), ("jawForward", 1.0),
             (("noseSneer_L", "noseSneer_R"), 1.0)],
    "identity": [(k, v) for k in ("face_width", "face_length", "jaw_width", "nose_length", "nose_width",
                                  "eye_spacing", "lip_fullness") for v in (-3.0, 3.0)],
    "light": [("light_azimuth", -90.0), ("light_azimuth", 90.0), ("light_elevation", -60.0),
              ("light_elevation", 60.0), ("light_intensity", 0.0), ("light_intensity", 1.5),
              ("light_ambient", 0.0), ("light_ambient", 1.5)],
    "pose": [("pitch", "lo"), ("pitch", "hi"), ("roll", -20.0), ("roll", 20.0)],
    "pose40": [("pitch", -40.0), ("pitch", 40.0)],
}


def photo_paths() -> list[tuple[str, Path]]:
    out = []
    for p in sorted((config.data_dir() / "portraits").glob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            out.append((p.stem, p))
    out.append(("astronaut", config.ASSETS_DIR / "astronaut.jpg"))
    ff = config.ffhq_samples_dir() / "images"
    out += [(f"ffhq{i:05d}", ff / f"{i:05d}.png") for i in (0, 2, 3)]
    sp = config.utkface_dir() / "splits.json"
    if sp.exists():
        test = json.loads(sp.read_text())["test"]
        for n in test[::max(1, len(test) // 4)][:2]:
            out.append(("utk:" + n.split(".")[0][:14], config.utkface_dir() / "images" / n))
    return out


def head_box(pr) -> tuple[float, float, float, float]:
    xy = pr.src.photo_xy.numpy()
    sel = pr.src.verts[:, 1].numpy() > -7.0
    x0, y0 = xy[sel].min(0)
    x1, y1 = xy[sel].max(0)
    return float(x0), float(y0), float(x1), float(y1)


def tile(img: np.ndarray, box, size: int) -> np.ndarray:
    """A square of the head and shoulders (2.1× the head box, centred a little below the head)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.25 * (y1 - y0)
    side = 2.1 * max(x1 - x0, y1 - y0)
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(img, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(40, 40, 40))


def label(t: np.ndarray, text: str) -> np.ndarray:
    t = t.copy()
    cv2.putText(t, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(t, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
    return t


def changed_shares(a: np.ndarray, b: np.ndarray, box) -> tuple[float, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 8
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * (x1 - x0), 0.8 * (y1 - y0)
    far = np.ones(a.shape[:2], bool)
    far[max(0, int(cy - hh)):max(0, int(cy + hh)), max(0, int(cx - hw)):max(0, int(cx + hw))] = False
    inner = d[max(0, int(y0)):max(0, int(y1)), max(0, int(x0)):max(0, int(x1))]
    return (float(d[far].mean()) if far.any() else 0.0), (float(inner.mean()) if inner.size else 0.0)


def edited(table, fit, key, value, own, lim):
    c = fit.coeffs.clone()
    keys = key if isinstance(key, tuple) else (key,)
    if value in ("lo", "hi"):  # the end of this photo's believable range, inside the slider's normal range
        lo, hi = table[key].trained
        value = max(lo, lim[key][0]) if value == "lo" else min(hi, lim[key][1])
    for k in keys:
        v = own[k] + value if k in own else value
        table[k].set(c, v)
    name = "+".join(keys) if len(keys) == 1 else keys[0].split("_")[0]
    return c, f"{name}={value:+g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default="expr,identity,light,pose")
    ap.add_argument("--only", default=None, help="comma-separated photo name prefixes")
    ap.add_argument("--fits", default="out/controls_fits.pkl")
    ap.add_argument("--out", default="out/controls")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--per-sheet", type=int, default=6)
    ap.add_argument("--save-full", action="store_true", help="also write every full-size edit as PNG")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from engine.editing.controls import controls_for
    from engine.face.model import default_model
    from engine.photo.renderer import PhotoRenderer, own_pose_degrees

    model = default_model()
    table = controls_for(model.exp_names, model)
    paths = photo_paths()
    if args.only:
        paths = [p for p in paths if p[0].startswith(tuple(args.only.split(",")))]
    fits = load_fits(paths, Path(args.fits) if args.fits else None)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    groups = args.groups.split(",")
    rows = {g: [] for g in groups}
    print(f"load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for name, fit in fits.items():
        t0 = time.perf_counter()
        pr = PhotoRenderer(fit, model=model, preview_res=None)
        box = head_box(pr)
        own = {k: v for k, v in own_pose_degrees(fit).items()}
        lim = {"pitch": pr.turn_range()["pitch"]}
        print(f"{name}: believable pitch {lim['pitch']}", flush=True)
        photo = pr.image
        for g in groups:
            tiles = [label(tile(photo, box, args.tile), name[:24])]
            notes = []
            for key, value in GROUPS[g]:
                c, tag = edited(table, fit, key, value, own, lim)
                img = pr.render(c).image
                far, inner = changed_shares(photo, img, box)
                notes.append(f"{tag}: far {far:.4f} head {inner:.3f}")
                tiles.append(label(tile(img, box, args.tile), tag))
                if args.save_full:
                    cv2.imwrite(str(outdir / f"{name.replace(':', '_')}_{tag}.png"), cv2.cvtColor(img,
                                                                                                  cv2.COLOR_RGB2BGR))
            rows[g].append(np.concatenate(tiles, 1))
            print(f"{name} [{g}] " + "; ".join(notes), flush=True)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    for g, rs in rows.items():
        for k in range(0, len(rs), args.per_sheet):
            sheet = np.concatenate(rs[k:k + args.per_sheet], 0)
            p = outdir / f"{g}_{k // args.per_sheet}.png"
            cv2.imwrite(str(p), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            print("wrote", p)
    print(f"load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
