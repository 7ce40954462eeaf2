"""Eyes, light and teeth in photo edits (issue 21), measured with the judge's own yardsticks.

    OMP_NUM_THREADS=1 python bench/eyes_light.py [--quick] [--sheet docs/eyes_light.png] [--json out.json]
    OMP_NUM_THREADS=1 python bench/eyes_light.py --iris-gain [--quick]   (the judge's reading of a known iris shift)
    OMP_NUM_THREADS=1 python bench/eyes_light.py --blink-floor [--only ...]   (what a *real* blink reads, per photo)

Photos: the bundled astronaut, the 11 portraits of ``portraits/`` (a black-and-white one and a painting among them),
4 ffhq-samples and 3 held-out UTKFace photos (``--quick``: 6 of them). Each is fitted once, then edited *as a user
would*, through the control table (``engine.editing.controls``, the names the CLI's ``--set`` takes):
``blink=1``, ``eyeWide_L=1 eyeWide_R=1``, ``look_horizontal=±0.8``, ``light_azimuth=±60`` and ``jawOpen=0.5``.

Yardsticks: the functions of ``../shared/tools/judge.py`` (dlib 68 landmarks and face descriptor; loaded from that
file, not copied): eye opening (eye aspect ratio) vs the original, iris shift in eye widths, cheek log-ratio change
and the face's Lab a*b* colour cast, identity distance. Teeth (``jawOpen=0.5``): the brightest quarter of the pixels
inside the edited photo's inner-lip polygon, their Lab chroma against the photo's own eye whites (the least colourful
of the bright eye pixels; natural: a* within −4 … +8 and b* within −4 … +22 of the sclera's, i.e. neither green, blue
nor grey-purple; neutral-to-ivory; see :func:`teeth_chroma`).
Prints one row per photo and the medians against the issue's goals; ``--sheet`` writes a contact sheet (face crops
of every edit; < 2 MB).

``--blink-floor`` adds, per photo, what the judge reads on a *real* blink at that photo's eye size (see
:func:`blink_floor`): the closed frames of the talking-heads clips' own blinks, scaled to the photo's eye width, over
the photo's own open eye aspect ratio — the opening ratio blink = 1 would read if the photo's eyes closed exactly as
those people's do (dlib reads a closed eye less closed the smaller it is: a squeeze at 0.06 with 40 px eyes reads 0.28
at 24 px).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402
from judgetool import load_judge  # noqa: E402  (bench/ is the script folder)

EDITS = {
    "blink": {"blink": 1.0},
    "wide": {"eyeWide_L": 1.0, "eyeWide_R": 1.0},
    "look-": {"look_horizontal": -0.8},
    "look+": {"look_horizontal": 0.8},
    "light-60": {"light_azimuth": -60.0},
    "light+60": {"light_azimuth": 60.0},
    "jaw": {"jawOpen": 0.5},
}
TEETH_DA, TEETH_DB = (-4.0, 8.0), (-4.0, 22.0)
TEETH_TOP = 25  # % of the open mouth's pixels, the brightest, measured as teeth
TEETH_RIM = 0.04  # mouth widths of the inner-lip polygon's lower rim left out (the lower lip's wet inner edge)


def photo_set(quick: bool) -> list[tuple[str, np.ndarray]]:
    from engine.perception.align import load_image

    out = [("astronaut", load_image(config.ASSETS_DIR / "astronaut.jpg"))]
    pdir = config.data_dir() / "portraits"
    ports = sorted(p for p in pdir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    out += [(p.stem, load_image(p)) for p in (ports[:3] if quick else ports)]
    ff = config.ffhq_samples_dir() / "images"
    out += [(f"ffhq{i:05d}", load_image(ff / f"{i:05d}.png")) for i in ((0,) if quick else (0, 3, 5, 7))]
    sp = config.utkface_dir() / "splits.json"
    if sp.exists():
        test = json.loads(sp.read_text())["test"]
        n = 1 if quick else 3
        step = max(1, len(test) // n)
        for name in [test[i] for i in range(step // 2, len(test), step)][:n]:
            out.append((f"utk:{name.split('.')[0]}", load_image(config.utkface_dir() / "images" / name)))
    return out


def _descriptor(J, a, shape):
    return np.array(J._net.compute_face_descriptor(a, shape, 1))


def _shape(J, a):
    d = J._det(a, 1)
    return None if not d else J._sp(a, max(d, key=lambda r: r.area()))


def teeth_chroma(J, a, L, a0, L0):
    """(Δa*, Δb*) of the teeth in the open mouth of ``a`` against the eye whites of the original ``a0``.

    Teeth: the brightest quarter (``TEETH_TOP``) of the pixels inside the edited photo's inner-lip polygon, less its
    lower rim (``TEETH_RIM``; the lower lip's wet inner edge, where it is bright, is no tooth) (teeth
    are the brightest thing in an open mouth; the bright *half* of a small or tongue-filled mouth took in the tongue
    and the lips' inner edge: painting_threequarter_man_12's grey-ivory teeth band read +16.5 a* from the red
    tongue around it). Grey, blue, green or red teeth are still what that quarter measures. Eye whites: of the
    bright 40 % of the original's eye-opening pixels, the least colourful third (the sclera is the least colourful
    part of an eye; the brightest fifth alone was lid skin on narrow or smiling eyes: front_man_older_09's own,
    ivory teeth read -11 a* against a "white" of +20 a*)."""
    m = np.zeros(a.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(L[60:68]).astype(np.int32)], 1)
    if m.sum() < 12:
        return None
    # less the lower lip's inner rim (TEETH_RIM of the mouth width): its wet highlight is among the brightest pixels
    # when the teeth show as a thin band (front_woman_07: her own, natural teeth read +9.5 a* with it)
    k = int(round(TEETH_RIM * np.linalg.norm(L[64] - L[60])))
    if k >= 1:
        rim = np.zeros_like(m)
        cv2.polylines(rim, [np.round(L[[64, 65, 66, 67, 60]]).astype(np.int32)], False, 1, 2 * k + 1)
        if (m & (1 - rim)).sum() >= 12:
            m = m & (1 - rim)
    lab = cv2.cvtColor(a, cv2.COLOR_RGB2LAB).astype(float)[m > 0]
    lab = lab[lab[:, 0] >= np.percentile(lab[:, 0], 100 - TEETH_TOP)]
    e = np.zeros(a0.shape[:2], np.uint8)
    for s in (slice(36, 42), slice(42, 48)):
        cv2.fillPoly(e, [np.round(L0[s]).astype(np.int32)], 1)
    el = cv2.cvtColor(a0, cv2.COLOR_RGB2LAB).astype(float)[e > 0]
    if len(el) < 6:
        ref = np.array([128.0, 128.0])
    else:
        el = el[el[:, 0] >= np.percentile(el[:, 0], 60)]
        chroma = np.hypot(el[:, 1] - 128.0, el[:, 2] - 128.0)
        el = el[chroma <= np.percentile(chroma, 100 / 3)]
        ref = el[:, 1:].mean(0)
    return float(lab[:, 1].mean() - ref[0]), float(lab[:, 2].mean() - ref[1])


def measure(J, a0, a, blinks=None):
    a0, a = np.ascontiguousarray(a0), np.ascontiguousarray(a)
    s0, s1 = _shape(J, a0), _shape(J, a)
    if s0 is None or s1 is None:
        return None
    L0 = np.array([(p.x, p.y) for p in s0.parts()], float)
    L1 = np.array([(p.x, p.y) for p in s1.parts()], float)
    r = {"opening": J._ear(L1) / J._ear(L0), "ear0": float(J._ear(L0)), "ear": float(J._ear(L1)),
         "eye_px": eye_width(L0)}
    if blinks:
        r["real_blink"] = blink_floor(J, blinks, L0, float(J._ear(L0)))
    i0, i1 = J._iris(a0, L0), J._iris(a, L1)
    r["iris"] = float(i1[0] - i0[0]) if i0 is not None and i1 is not None else float("nan")
    c0, c1 = J._cheeks(a0, L0), J._cheeks(a, L0)
    r["cheek"] = float(np.log(c1[0] / c1[1]) - np.log(c0[0] / c0[1]))
    r["cast"] = float(np.linalg.norm(J._face_chroma(a, L0) - J._face_chroma(a0, L0)))
    r["id"] = float(np.linalg.norm(_descriptor(J, a, s1) - _descriptor(J, a0, s0)))
    r["teeth"] = teeth_chroma(J, a, L1, a0, L0)
    return r


BLINK_SCAN_S = 15.0  # seconds of each talking-heads clip searched for its most closed frame
BLINK_SCAN_EVERY = 3  # frames
BLINK_REAL_MAX = 0.45  # a clip's most closed frame counts as a blink when its eye aspect ratio is at most this share of
#                        the clip's median (open) one: a real blink, not a squint or a detector miss


def real_blinks(J, folder: Path | None = None) -> list[dict]:
    """Each talking-heads clip's own blink, as the judge reads it: dlib on every ``BLINK_SCAN_EVERY``-th frame of the
    first ``BLINK_SCAN_S`` seconds; the most closed frame (lowest eye aspect ratio) and the clip's open eye width (the
    median corner distance); kept where the closed frame reads ``BLINK_REAL_MAX`` of the clip's median or less."""
    import imageio.v3 as iio

    folder = folder or config.data_dir() / "talking-heads"
    out = []
    for clip in sorted(folder.glob("*.mp4")):
        fps = float(iio.immeta(clip).get("fps", 25.0) or 25.0)
        ears, widths, best = [], [], None
        for i, f in enumerate(iio.imiter(clip)):
            if i > BLINK_SCAN_S * fps:
                break
            if i % BLINK_SCAN_EVERY:
                continue
            a = np.ascontiguousarray(np.asarray(f)[..., :3])
            s = _shape(J, a)
            if s is None:
                continue
            L = np.array([(p.x, p.y) for p in s.parts()], float)
            e = float(J._ear(L))
            ears.append(e)
            widths.append(eye_width(L))
            if best is None or e < best[0]:
                best = (e, a)
        if len(ears) < 5:
            continue
        med = float(np.median(ears))
        if best[0] <= BLINK_REAL_MAX * med:
            out.append({"clip": clip.stem, "closed": best[1], "ear_closed": best[0], "ear_open": med,
                        "eye_width": float(np.median(widths))})
    return out


def eye_width(L) -> float:
    """dlib's eye width (corner to corner), the mean of both eyes, px."""
    return float((np.linalg.norm(L[39] - L[36]) + np.linalg.norm(L[45] - L[42])) / 2)


def blink_floor(J, blinks: list[dict], L0, ear0: float) -> float:
    """The opening ratio a real blink reads on a photo whose dlib landmarks are ``L0`` (eye aspect ratio ``ear0``):
    per clip of ``blinks`` (:func:`real_blinks`), its closed frame scaled (down only) so that its eye width is the
    photo's, read by the judge's dlib, over ``ear0``; the median over the clips (nan: none read)."""
    wp = eye_width(L0)
    vals = []
    for b in blinks:
        f = min(1.0, wp / max(b["eye_width"], 1e-6))
        a = b["closed"] if f >= 1.0 else cv2.resize(b["closed"], None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        s = _shape(J, np.ascontiguousarray(a))
        if s is not None:
            vals.append(float(J._ear(np.array([(p.x, p.y) for p in s.parts()], float))) / ear0)
    return float(np.median(vals)) if vals else float("nan")


GAIN_WEIGHTS = (-0.3, -0.15, -0.06, 0.0, 0.06, 0.15, 0.3)  # eyeLook weights of the known shifts (both eyes)


def iris_gain(J, photos, weights=GAIN_WEIGHTS) -> str:
    """How much of a known sideways iris shift the judge's iris reading (``judge._iris``) sees on the rendered photo:
    both eyes turned by eyeLook ``weights`` (the eye layer moves the iris disc by the eyeball radius × sin(angle) eye
    widths), each render read (a) as the judge reads it, with dlib's landmarks on that render, and (b) inside the
    unedited photo's own lid polygons (the pixels alone: dlib's polygon follows the iris part of the way). Per photo
    the slope of each reading on the true shift; the medians last. 1 = the whole shift read."""
    from engine.editing.controls import controls_for
    from engine.photo.eyes import EYEBALL_RADIUS, GAZE_MAX_DEG
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer

    def landmarks(a):
        s = _shape(J, a)
        return None if s is None else np.array([(p.x, p.y) for p in s.parts()], float)

    lines = ["| photo | judge's reading / true shift | same, the photo's own lid polygons |", "|---|---|---|"]
    slopes = {"judge": [], "fixed": []}
    for name, img in photos:
        fit = fit_photo(img)
        r = PhotoRenderer(fit)
        L0 = landmarks(np.ascontiguousarray(fit.image))
        xs, ys_j, ys_f = [], [], []
        for w in weights:
            c = fit.coeffs.clone()
            controls_for(c.exp_names)["look_horizontal"].set(c, w)  # the editor's control (eyeLook* pairs)
            a = np.ascontiguousarray(r.render(c).image)
            L = landmarks(a)
            if L is None or L0 is None:
                continue
            ij, i_f = J._iris(a, L), J._iris(a, L0)
            if ij is None or i_f is None:
                continue
            xs.append(EYEBALL_RADIUS * math.sin(math.radians(w * GAZE_MAX_DEG["horizontal"])))
            ys_j.append(float(ij[0]))
            ys_f.append(float(i_f[0]))
        if len(xs) < 3:
            lines.append(f"| {name[:28]} | — | — |")
            continue
        sj, sf = float(np.polyfit(xs, ys_j, 1)[0]), float(np.polyfit(xs, ys_f, 1)[0])
        slopes["judge"].append(sj)
        slopes["fixed"].append(sf)
        lines.append(f"| {name[:28]} | {sj:.2f} | {sf:.2f} |")
        print(lines[-1], flush=True)
    med = {k: (statistics.median(v) if v else float("nan")) for k, v in slopes.items()}
    lines.append(f"| median ({len(slopes['judge'])} photos) | {med['judge']:.2f} | {med['fixed']:.2f} |")
    return "\n".join(lines)


def crop_box(lm, shape):
    x0, y0 = lm[:27].min(0)
    x1, y1 = lm[:27].max(0)
    w = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * w
    side = 1.25 * max(w, y1 - y0 + 0.3 * w)
    h, ww = shape[:2]
    bx0 = int(max(0, cx - side / 2))
    by0 = int(max(0, cy - side / 2))
    return bx0, by0, int(min(ww, bx0 + side)), int(min(h, by0 + side))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sheet", type=Path, default=None)
    ap.add_argument("--tile", type=int, default=150)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated name prefixes (docs/ sheets: --only astronaut)")
    ap.add_argument("--iris-gain", action="store_true", help="only: how much of a known rendered sideways iris "
                    "shift the judge's iris reading sees, per photo (see iris_gain)")
    ap.add_argument("--blink-floor", action="store_true", help="also: what a real blink (the talking-heads clips' "
                    "closed frames at each photo's eye size) reads as the blink opening (see blink_floor)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from engine import runtime
    from engine.editing.controls import apply_controls, controls_for
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer

    J = load_judge()
    photos = photo_set(args.quick)
    if args.only:
        photos = [(n, im) for n, im in photos if n.startswith(tuple(args.only.split(",")))]
    if args.iris_gain:
        print(iris_gain(J, photos))
        print(runtime.machine_note())
        return 0
    rows, tiles = [], []
    t_all = time.perf_counter()
    blinks = real_blinks(J) if args.blink_floor else None
    if blinks is not None:
        print("real blinks: " + ", ".join(f"{b['clip']} {b['ear_closed']:.3f}/{b['ear_open']:.3f} "
                                          f"({b['eye_width']:.0f} px eyes)" for b in blinks), flush=True)
    for name, img in photos:
        fit = fit_photo(img)
        r = PhotoRenderer(fit)
        table = controls_for(fit.coeffs.exp_names)
        res = {"photo": name, "size": list(img.shape[:2])}
        box = crop_box(fit.alignment.landmarks_photo, fit.image.shape)
        row_tiles = [fit.image]
        for key, vals in EDITS.items():
            c = fit.coeffs.clone()
            apply_controls(c, vals, table, force=True)
            t0 = time.perf_counter()
            out = r.render(c).image
            res[f"{key}_s"] = time.perf_counter() - t0
            res[key] = measure(J, fit.image, out, blinks if key == "blink" else None)
            row_tiles.append(out)
        rows.append(res)
        x0, y0, x1, y1 = box
        tiles.append([cv2.resize(np.ascontiguousarray(t[y0:y1, x0:x1]), (args.tile, args.tile),
                                 interpolation=cv2.INTER_AREA) for t in row_tiles])
        print(_row_text(res), flush=True)
    print(summary(rows))
    print(f"{len(photos)} photos, {time.perf_counter() - t_all:.0f} s; {runtime.machine_note()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    if args.sheet:
        write_sheet(args.sheet, tiles)
    return 0


def _g(res, key, field):
    m = res.get(key)
    return None if m is None else m.get(field)


def _row_text(res) -> str:
    def f(v, fmt="{:+.2f}"):
        return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
    t = _g(res, "jaw", "teeth")
    teeth = "  -  " if t is None else f"{t[0]:+.1f}/{t[1]:+.1f}"
    ids = [_g(res, k, "id") for k in EDITS]
    rb = _g(res, "blink", "real_blink")
    real = "" if rb is None else f" (real {f(rb, '{:.2f}')})"
    return (f"{res['photo'][:28]:28s} blink {f(_g(res, 'blink', 'opening'), '{:.2f}')}{real}  wide "
            f"{f(_g(res, 'wide', 'opening'), '{:.2f}')}  iris {f(_g(res, 'look-', 'iris'))} {f(_g(res, 'look+', 'iris'))}"
            f"  cheek {f(_g(res, 'light-60', 'cheek'))} {f(_g(res, 'light+60', 'cheek'))}  cast "
            f"{f(max([v for v in (_g(res, 'light-60', 'cast'), _g(res, 'light+60', 'cast')) if v is not None], default=None), '{:.1f}')}"
            f"  teeth Δa/Δb {teeth}  id max {f(max([v for v in ids if v is not None], default=None), '{:.2f}')}")


def summary(rows) -> str:
    def col(key, field, fn=lambda v: v):
        vals = [fn(_g(r, key, field)) for r in rows if _g(r, key, field) is not None]
        return [v for v in vals if not (isinstance(v, float) and math.isnan(v))]

    def med(v):
        return statistics.median(v) if v else float("nan")
    blink, wide = col("blink", "opening"), col("wide", "opening")
    lm, lp = col("look-", "iris"), col("look+", "iris")
    cm, cp = col("light-60", "cheek"), col("light+60", "cheek")
    casts = col("light-60", "cast") + col("light+60", "cast")
    teeth = col("jaw", "teeth")
    # blink vs what a real blink reads at the same photo's eye size (--blink-floor)
    pairs = [(_g(r, "blink", "opening"), _g(r, "blink", "real_blink")) for r in rows]
    pairs = [(o, f) for o, f in pairs if o is not None and f is not None and not math.isnan(f)]
    nat = [TEETH_DA[0] <= a <= TEETH_DA[1] and TEETH_DB[0] <= b <= TEETH_DB[1] for a, b in teeth]
    ids = {k: col(k, "id") for k in EDITS}
    lines = ["", "| measure | median (worst) | goal |", "|---|---|---|",
             f"| blink = 1: eye opening vs the original | {med(blink):.2f} ({max(blink, default=float('nan')):.2f}) "
             f"| ≤ 0.35 |",
             f"| blink: eye width (dlib, px) | {med(col('blink', 'eye_px')):.0f} "
             f"({min(col('blink', 'eye_px'), default=float('nan')):.0f}) | |",
             f"| blink = 1: eye aspect ratio, original → closed (a real blink reads about 0.1) | "
             f"{med(col('blink', 'ear0')):.3f} → {med(col('blink', 'ear')):.3f} | |",
             *([f"| blink: a real blink at each photo's eye size (talking-heads clips' closed frames; --blink-floor) "
                f"| {med([f for _, f in pairs]):.2f} ({max(f for _, f in pairs):.2f}); ours at or under it on "
                f"{sum(o <= f for o, f in pairs)} of {len(pairs)} | |"] if pairs else []),
             f"| eyeWide = 1: eye opening | {med(wide):.2f} ({min(wide, default=float('nan')):.2f}) | ≥ 1.12 |",
             f"| look_horizontal −0.8 / +0.8: iris shift, eye widths | {med(lm):+.3f} / {med(lp):+.3f} "
             f"(right direction {sum(v < 0 for v in lm)}/{len(lm)}, {sum(v > 0 for v in lp)}/{len(lp)}) "
             f"| ≤ −0.15 / ≥ +0.15 |",
             f"| light_azimuth −60 / +60: cheek log-ratio change | {med(cm):+.3f} / {med(cp):+.3f} "
             f"(right sign {sum(v > 0 for v in cm)}/{len(cm)}, {sum(v < 0 for v in cp)}/{len(cp)}) "
             f"| ≥ +0.35 / ≤ −0.35 |",
             f"| face colour cast after relighting (Lab a*b*) | {med(casts):.2f} (max {max(casts, default=0):.2f}) "
             f"| ≤ 3 every face |",
             f"| teeth (jawOpen 0.5) chroma vs the eye whites, natural | {sum(nat)}/{len(nat)} "
             f"(Δa* {med([a for a, _ in teeth]):+.1f}, Δb* {med([b for _, b in teeth]):+.1f}) | every face |"]
    for k, v in ids.items():
        lines.append(f"| identity after {k} | {med(v):.3f} (max {max(v, default=float('nan')):.3f}) | ≤ 0.30 |")
    return "\n".join(lines)


def write_sheet(path: Path, tiles) -> None:
    """Rows = photos; columns = photo, blink, wide, look −0.8, look +0.8, light −60, light +60, jawOpen 0.5."""
    from PIL import Image

    sheet = np.vstack([np.hstack(r) for r in tiles])
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(sheet)
    im.save(path, optimize=True)
    if path.stat().st_size > 2_000_000:  # a palette keeps it under 2 MB
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    sys.exit(main())
