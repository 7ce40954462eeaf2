"""Whole-head turns in photo mode (issue 20): contact sheet, identity, pose read-back, background, drag latency.

    OMP_NUM_THREADS=1 python bench/turns.py [--quick] [--sheet docs/turns.png] [--fits out/fits.pkl] [--no-judge]

Photos (22, none used to tune anything but the sheet is looked at): ../shared/data/portraits (black-and-white,
a painting, 3/4 views, 590–2048 px), the astronaut, ffhq-samples 0 2 3 7 8 and 5 UTKFace test photos (one a baby).
Each photo is fitted once (``--fits`` caches the fits in a pickle: repeat runs skip the fitting), then turned by −20 −10 +10 +20°
(and ±30° for identity) *from its own fitted yaw*.

Prints per photo and as medians:
- **layers**: seconds of the per-photo layer build (matte + plate + 3D points; part of the renderer's constructor);
- **identity**: dlib descriptor distance original ↔ turned (../shared/tools/judge.py's ``descriptor``), ±20° and
  ±30°;
- **pose**: judge.py's yaw read-back of the ±20° turns minus the original's, / 20 (its sign is opposite to ours);
- **background PSNR**: the turned photo vs the photo beyond 1.5× the head box (the fitted head's projected box,
  ears and scalp, no neck) and outside the person (the head layer's matte before and after the turn, grown by 2 %:
  long hair and shoulders that turn with the head are not background); ``beyond_psnr`` the same without leaving
  out the person;
- **latency**: a yaw drag rendered at ``max_side=512`` (the editor's drag preview) on the first photo ≥ 1000 px,
  p50/p95 ms, wall and CPU time of the (one-thread) process — on a shared machine the CPU time is the number to
  compare; the load average is printed with it.
The sheet (``--sheet``): per row the photo and the four turns, each a square around the head (whole head visible).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402
from judgetool import load_judge  # noqa: E402  (bench/ is the script folder)

TURNS = (-20, -10, 10, 20)
SHEET_TILE = 168
SHEET_ROWS = 12


def photo_paths(quick: bool) -> list[tuple[str, Path]]:
    out = []
    pdir = config.data_dir() / "portraits"
    for p in sorted(pdir.glob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            out.append((p.stem, p))
    out.append(("astronaut", config.ASSETS_DIR / "astronaut.jpg"))
    ff = config.ffhq_samples_dir() / "images"
    out += [(f"ffhq{i:05d}", ff / f"{i:05d}.png") for i in (0, 2, 3, 7, 8)]
    sp = config.utkface_dir() / "splits.json"
    if sp.exists():
        test = json.loads(sp.read_text())["test"]
        picks = test[::max(1, len(test) // 4)][:4]
        picks += [n for n in test if n.split("_")[0] == "1"][:1]  # a baby: a short neck under a big head
        for n in picks:
            out.append(("utk:" + n.split(".")[0][:14], config.utkface_dir() / "images" / n))
    if quick:
        keep = ("bw_threequarter", "painting", "threequarter_man_06", "astronaut", "front_woman_07", "ffhq00003")
        out = [o for o in out if o[0].startswith(keep)]
    return out


def load_fits(paths, cache: Path | None):
    from engine.photo.fit import fit_photo

    fits = {}
    if cache is not None and cache.exists():
        fits = pickle.loads(cache.read_bytes())
    changed = False
    for name, p in paths:
        if name not in fits:
            fits[name] = fit_photo(str(p))
            changed = True
    if cache is not None and changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(fits))
    return {n: fits[n] for n, _ in paths}


def turned(c0, deg: float):
    c = c0.clone()
    c.pose[0, 0] += math.radians(deg)
    return c


def head_box(pr) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 photo px of the fitted head (face + scalp + ears, not the neck) as projected."""
    xy = pr.src.photo_xy.numpy()
    y = pr.src.verts[:, 1].numpy()
    sel = y > -7.0
    x0, y0 = xy[sel].min(0)
    x1, y1 = xy[sel].max(0)
    return float(x0), float(y0), float(x1), float(y1)


def tile(img: np.ndarray, box, size: int = SHEET_TILE) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.05 * (y1 - y0)
    side = 1.55 * max(x1 - x0, y1 - y0)
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(40, 40, 40))


def bg_psnr(a: np.ndarray, b: np.ndarray, box, person: np.ndarray | None = None) -> float:
    """PSNR of ``b`` vs ``a`` beyond 1.5× the head box (and, given ``person`` (H, W) bool, outside it)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * (x1 - x0), 0.75 * (y1 - y0)
    m = np.ones(a.shape[:2], bool)
    m[max(0, int(cy - hh)):max(0, int(cy + hh)), max(0, int(cx - hw)):max(0, int(cx + hw))] = False
    if person is not None:
        m &= ~person
    if not m.any():
        return float("nan")
    d = (a[m].astype(np.float64) - b[m].astype(np.float64)) ** 2
    return float(10 * np.log10(255.0 ** 2 / max(d.mean(), 1e-10)))


def target_person(pr, c, k: int) -> np.ndarray:
    """(H, W) bool: where the turned head layer lands (its matte carried by the edit's flow), grown by ``k`` px."""
    if pr.grid_layers is None:
        return np.zeros(pr.image.shape[:2], bool)
    f = pr.flow_field(c)
    g = pr.grid
    res = g.res
    idx = np.stack(np.meshgrid(np.arange(res, dtype=np.float32), np.arange(res, dtype=np.float32)), -1)
    m = idx + f.displacement / g.step
    warped = cv2.remap(pr.grid_layers.matte.astype(np.float32), m[..., 0], m[..., 1], cv2.INTER_LINEAR)
    warped = np.maximum(warped * f.layer_cover, f.covered.astype(np.float32))
    tp = f.in_photo(warped, pr.image.shape[:2]) > 0.02
    return cv2.dilate(tp.astype(np.uint8), np.ones((k, k), np.uint8)) > 0


def latency(fit, n: int = 30):
    from engine.photo.renderer import PhotoRenderer

    pr = PhotoRenderer(fit)
    pr.preview_renderer()
    c0 = fit.coeffs
    ts, cpu = [], []
    for i in range(n + 3):
        c = turned(c0, -15 + 30 * i / n)
        t, tc = time.perf_counter(), time.process_time()
        pr.render(c, max_side=512)
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - tc)
    ts, cpu = np.array(ts[3:]) * 1000, np.array(cpu[3:]) * 1000
    return (float(np.percentile(ts, 50)), float(np.percentile(ts, 95)), float(np.percentile(cpu, 50)),
            float(np.percentile(cpu, 95)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sheet", default=None, help="contact sheet PNG (e.g. docs/turns.png)")
    ap.add_argument("--fits", default=None, help="pickle cache of the fits (e.g. out/fits.pkl)")
    ap.add_argument("--no-judge", action="store_true", help="skip identity / pose read-back")
    ap.add_argument("--only", default=None, help="comma-separated name prefixes")
    ap.add_argument("--turns", default=None, help="comma-separated yaw turns for the sheet (default -20,-10,10,20)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--tile", type=int, default=SHEET_TILE, help="sheet tile side, px (look at larger ones)")
    ap.add_argument("--rows", type=int, default=SHEET_ROWS,
                    help=f"sheet rows, photo by photo (default {SHEET_ROWS}; 0: every photo; with --only: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from engine.photo.renderer import PhotoRenderer

    paths = photo_paths(args.quick)
    if args.only:
        pre = tuple(args.only.split(","))
        paths = [p for p in paths if p[0].startswith(pre)]
    fits = load_fits(paths, Path(args.fits) if args.fits else None)
    judge = None if args.no_judge else load_judge()
    turns = tuple(float(v) for v in args.turns.split(",")) if args.turns else TURNS
    rows, res = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="turns_"))
    for name, fit in fits.items():
        t0 = time.perf_counter()
        pr = PhotoRenderer(fit, preview_res=None)
        t_layers = getattr(getattr(pr, "layers", None), "seconds", float("nan"))
        box = head_box(pr)
        photo = pr.image
        # the person: the head layer's matte (hair, neck, whatever of the body it took), grown by 2 %
        person = np.zeros(photo.shape[:2], bool)
        k = max(3, int(0.02 * max(photo.shape[:2])))
        if pr.layers is not None:
            lx0, ly0, lx1, ly1 = pr.layers.box
            person[ly0:ly1, lx0:lx1] = pr.layers.fg[..., 3] > 5
            person = cv2.dilate(person.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        tiles = [tile(photo, box, args.tile)]
        r = {"layers_s": t_layers, "ctor_s": time.perf_counter() - t0}
        outs = {}
        for d in sorted(set(turns) | ({-30, 30, -20, 20} if judge else set())):
            img = pr.render(turned(fit.coeffs, d)).image
            outs[d] = img
            r[f"beyond_psnr{d:+g}"] = bg_psnr(photo, img, box)
            r[f"bg_psnr{d:+g}"] = bg_psnr(photo, img, box, person | target_person(pr, turned(fit.coeffs, d), k))
        tiles += [tile(outs[d], box, args.tile) for d in turns]
        rows.append(np.concatenate(tiles, 1))
        if judge is not None:
            po = tmp / f"{len(res)}_orig.png"
            cv2.imwrite(str(po), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
            d0 = judge.descriptor(str(po))
            p0 = judge.pose(str(po))
            for d in (-30, -20, 20, 30):
                pe = tmp / f"{len(res)}_{d}.png"
                cv2.imwrite(str(pe), cv2.cvtColor(outs[d], cv2.COLOR_RGB2BGR))
                de = judge.descriptor(str(pe))
                r[f"id{d:+d}"] = float(np.linalg.norm(d0 - de)) if d0 is not None and de is not None else float("nan")
                if abs(d) == 20:
                    pe_pose = judge.pose(str(pe))
                    r[f"pose{d:+d}"] = (-(pe_pose[0] - p0[0]) / d) if p0 and pe_pose else float("nan")
        res[name] = r
        print(name, " ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)

    def med(keys):
        v = [res[n][k] for n in res for k in keys if k in res[n] and math.isfinite(res[n][k])]
        return statistics.median(v) if v else float("nan")

    summary = {"photos": len(res), "layers_s_median": med(["layers_s"]),
               "bg_psnr_min": min((res[n][k] for n in res for k in res[n] if k.startswith("bg_psnr")),
                                  default=float("nan")),
               "bg_psnr_median": med([k for k in next(iter(res.values())) if k.startswith("bg_psnr")]),
               "beyond_psnr_median": med([k for k in next(iter(res.values())) if k.startswith("beyond_psnr")])}
    if judge is not None:
        summary.update({"identity_20_median": med(["id-20", "id+20"]), "identity_30_median": med(["id-30", "id+30"]),
                        "pose_readback_20_median": med(["pose-20", "pose+20"])})
    big = next((f for f in fits.values() if max(f.image.shape[:2]) >= 1000), None)
    if big is not None:
        p50, p95, c50, c95 = latency(big)
        summary.update({"drag512_wall_p50_ms": p50, "drag512_wall_p95_ms": p95, "drag512_cpu_p50_ms": c50,
                        "drag512_cpu_p95_ms": c95, "load_avg_1min": os.getloadavg()[0]})
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "photos": res}, indent=1))
    if args.sheet:
        rows = rows[:args.rows] if args.rows > 0 and not args.only else rows
        sheet = np.concatenate(rows, 0)
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.sheet), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {args.sheet} ({Path(args.sheet).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
