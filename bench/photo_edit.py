"""Photo-mode benchmark (issue 13): fit once, then edit the photo itself — time, fidelity, identity, control, latency.

    OMP_NUM_THREADS=1 python bench/photo_edit.py [--quick] [--utk 4] [--threads 1] [--json cache/bench_photo_edit.json]
                                                 [--figure docs/photo_edit.png]

Photos: the bundled astronaut portrait, the 10 ffhq-samples, ``--utk`` held-out UTKFace photos (the "test" list of
``utkface/splits.json``, evenly spaced) and three variants (ffhq 00000 upscaled ×4 to 1024 px, ffhq 00001 in grayscale,
ffhq 00002 upscaled ×8 to 2048 px). ``--quick``: astronaut, 3 ffhq samples, 1 UTKFace photo, the 1024 px variant.

Per photo:
- **fit**: seconds of ``engine.photo.fit.fit_photo`` (warm: models already loaded; the first, cold fit is printed
  apart) and the landmark NME (fitted 3D landmarks vs the detected ones, / outer-eye-corner distance);
- **zero edit**: PSNR of the photo rendered with its own coefficients — through the renderer's fast path and through
  the full warp path (``fast_path`` off);
- **identity**: dlib face-descriptor distance original ↔ edited (dlib + face_recognition_models, as
  ../shared/tools/judge.py measures it; < 0.6 "same person") for yaw ±15°, ±25° (relative to the fitted yaw), smile
  (mouthSmile_L/R 0.7), jawOpen 0.5 and relight (light from the viewer's left: azimuth −60°, elevation 15°);
- **control**: the edited photos are fitted again; the yaw read back (R-Net alone on the aligned crop, and the full
  fit) minus the original's, against the request; jawOpen read back by the fit, and the judge's mouth ratio
  (inner-lip gap / mouth width) before and after;
- **latency** (once per size): ``PhotoRenderer.render`` slider → frame for a yaw drag, p50/p95 — 512 px photo at full
  size, 1024 px photo with ``max_side=512`` (the drag preview), 2048 px photo at full size.
The figure (``--figure``): rows astronaut + 3 ffhq samples; columns photo | GAN-embed edit (PhotoEmbedder +
paste_into_photo) | photo-mode edit for yaw +20°, smile, jawOpen 0.5 with teeth, relight.
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

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402

EDIT_NAMES = ("yaw-15", "yaw+15", "yaw-25", "yaw+25", "smile", "jawOpen", "relight")


# ---------------------------------------------------------------------------------------------------- photos
def photo_set(quick: bool, n_utk: int) -> list[tuple[str, np.ndarray]]:
    from engine.perception.align import load_image

    ff = config.ffhq_samples_dir() / "images"
    out = [("astronaut", load_image(config.ASSETS_DIR / "astronaut.jpg"))]
    ids = (0, 3, 7) if quick else range(10)
    out += [(f"ffhq{i:05d}", load_image(ff / f"{i:05d}.png")) for i in ids]
    n_utk = 1 if quick else n_utk
    sp = config.utkface_dir() / "splits.json"
    if n_utk > 0 and sp.exists():
        test = json.loads(sp.read_text())["test"]
        step = max(1, len(test) // n_utk)
        for name in [test[i] for i in range(0, len(test), step)][:n_utk]:
            out.append((f"utk:{name.split('.')[0]}", load_image(config.utkface_dir() / "images" / name)))
    f0 = load_image(ff / "00000.png")
    out.append(("ffhq00000@1024", cv2.resize(f0, (1024, 1024), interpolation=cv2.INTER_CUBIC)))
    if not quick:
        out.append(("ffhq00001-gray", cv2.cvtColor(load_image(ff / "00001.png"), cv2.COLOR_RGB2GRAY)))
        out.append(("ffhq00002@2048", cv2.resize(load_image(ff / "00002.png"), (2048, 2048),
                                                 interpolation=cv2.INTER_CUBIC)))
    return out


# ------------------------------------------------------------------------------------------------- edits
def edits(c0) -> dict:
    """Target coefficients for each benchmark edit of the fitted ``c0``."""
    from engine.render.shading import light_from_direction

    out = {}
    y0 = math.degrees(float(c0.pose[0, 0]))
    for d in (-15, 15, -25, 25):
        c = c0.clone()
        c.set_pose_degrees(yaw=y0 + d)
        out[f"yaw{d:+d}"] = c
    c = c0.clone()
    c.expr["mouthSmile_L"] = 0.7
    c.expr["mouthSmile_R"] = 0.7
    out["smile"] = c
    c = c0.clone()
    c.expr["jawOpen"] = 0.5
    out["jawOpen"] = c
    c = c0.clone()
    c.light[:] = light_from_direction(-60, 15, 0.6, ambient=0.6)
    out["relight"] = c
    return out


# ----------------------------------------------------------------------------------------- dlib yardsticks
class Judge:
    """dlib's face descriptor and 68 landmarks, the way ../shared/tools/judge.py measures (independent of engine/)."""

    def __init__(self):
        import dlib
        import face_recognition_models as frm

        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    @staticmethod
    def _prep(img: np.ndarray, min_side: int = 160, max_side: int = 1024) -> np.ndarray:
        h, w = img.shape[:2]
        s = 1.0
        if min(h, w) < min_side:
            s = min_side / min(h, w)
        elif max(h, w) > max_side:  # (judge.py reads files as they are; big ones are shrunk here only for speed)
            s = max_side / max(h, w)
        if s != 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC if s > 1 else
                             cv2.INTER_AREA)
        return np.ascontiguousarray(img)

    def shape(self, img):
        a = self._prep(img)
        d = self.det(a, 1)
        return (None, a) if not d else (self.sp(a, max(d, key=lambda r: r.area())), a)

    def descriptor(self, img):
        s, a = self.shape(img)
        return None if s is None else np.array(self.net.compute_face_descriptor(a, s, 1))

    def mouth(self, img):
        s, _ = self.shape(img)
        if s is None:
            return None
        lm = np.array([(p.x, p.y) for p in s.parts()], float)
        return float(np.linalg.norm(lm[66] - lm[62]) / (np.linalg.norm(lm[64] - lm[60]) + 1e-6))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def rnet_yaw(img: np.ndarray) -> float | None:
    """Yaw (degrees) the R-Net reads on the aligned crop of ``img`` (None when no face is found)."""
    from engine.perception.align import align_with_landmarks, detect_faces, landmarks68
    from engine.perception.rnet import default_rnet
    from engine.photo.fit import pick_face

    boxes = detect_faces(img)  # the face fit_photo picks (align_face takes the largest box: the astronaut's patch)
    if not boxes:
        return None
    crop, _ = align_with_landmarks(img, landmarks68(img, pick_face(img, boxes)), 128)
    with torch.no_grad():
        c = default_rnet().predict(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0)
    return math.degrees(float(c.pose[0, 0]))


def refit(img: np.ndarray):
    from engine.perception.align import AlignError
    from engine.photo.fit import fit_photo

    try:
        return fit_photo(img)
    except AlignError:
        return None


# ---------------------------------------------------------------------------------------------- latency
def latency(fit, max_side, reps: int) -> tuple[float, float]:
    from engine.photo.renderer import PhotoRenderer

    r = PhotoRenderer(fit)
    y0 = math.degrees(float(fit.coeffs.pose[0, 0]))
    c = fit.coeffs.clone()
    c.set_pose_degrees(yaw=y0 + 1)
    r.render(c, max_side)  # warm
    ts = []
    for i in range(reps):  # a slider drag: a new yaw every frame
        c = fit.coeffs.clone()
        c.set_pose_degrees(yaw=y0 + 15.0 * (i + 1) / reps)
        t = time.perf_counter()
        r.render(c, max_side)
        ts.append(1000 * (time.perf_counter() - t))
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, int(math.ceil(0.95 * len(ts))) - 1)]


# ------------------------------------------------------------------------------------------------- figure
def figure(path: Path, judge: Judge | None = None, test_photos: bool = False) -> None:
    """photo | GAN-embed edit | photo-mode edit, for yaw +20, smile, jawOpen 0.5, relight: the bundled astronaut, plus
    3 ffhq samples with ``test_photos`` (those may not be redistributed: for a local figure under out/ only)."""
    from engine.editing.paste import paste_into_photo
    from engine.generator.embed import PhotoEmbedder
    from engine.generator.networks import load_default_generator
    from engine.io.files import save_image
    from engine.perception.align import load_image
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer
    from engine.render.shading import light_from_direction

    gen = load_default_generator()
    emb = PhotoEmbedder(gen) if gen is not None else None
    ff = config.ffhq_samples_dir() / "images"
    rows_src = [("astronaut", load_image(config.ASSETS_DIR / "astronaut.jpg"))] + [
        (f"ffhq{i:05d}", load_image(ff / f"{i:05d}.png")) for i in ((0, 3, 7) if test_photos else ())]

    def edit_fns():
        def yaw(c):
            c.set_pose_degrees(yaw=math.degrees(float(c.pose[0, 0])) + 20)
            return c

        def smile(c):
            c.expr["mouthSmile_L"] = 0.7
            c.expr["mouthSmile_R"] = 0.7
            return c

        def jaw(c):
            c.expr["jawOpen"] = 0.5
            return c

        def light(c):
            c.light[:] = light_from_direction(-60, 15, 0.6, ambient=0.6)
            return c
        return [("yaw +20", yaw), ("smile 0.7", smile), ("jawOpen 0.5", jaw), ("light from the left", light)]

    tile = 224
    rows = []
    for name, img in rows_src:
        fit = fit_photo(img)
        pr = PhotoRenderer(fit)
        res = emb.embed(img) if emb is not None else None
        # a square view around the face (the photos differ in framing): 2.2 eye-mouth spans around the face centre
        lm = fit.alignment.landmarks_photo
        cx, cy = lm[17:].mean(0)
        half = 1.25 * max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]))

        def view(a):
            h, w = a.shape[:2]
            x0, y0 = int(max(0, cx - half)), int(max(0, cy - half * 1.05))
            x1, y1 = int(min(w, cx + half)), int(min(h, cy + half * 0.95))
            return cv2.resize(np.ascontiguousarray(a[y0:y1, x0:x1]), (tile, tile), interpolation=cv2.INTER_AREA)

        cells = [view(img)]
        for _, fn in edit_fns():
            if res is not None:
                c = fn(res.coeffs.clone())
                mode = "replace" if _is_pose(c, res.coeffs) else "delta"
                gan = paste_into_photo(res, emb.render(res, c), img, coeffs=c, renderer=emb.renderer, mode=mode)
            else:
                gan = np.zeros_like(img)
            ours = pr.render(fn(fit.coeffs.clone())).image
            cells += [view(gan), view(ours)]
        rows.append(np.concatenate(cells, 1))
        print(f"figure row {name} done", flush=True)
    grid = np.concatenate(rows, 0)
    # header: column labels
    head = np.full((44, grid.shape[1], 3), 255, np.uint8)
    labels = ["photo"] + [f"{lab} {kind}" for lab, _ in edit_fns() for kind in ("GAN", "photo mode")]
    for k, lab in enumerate(labels):
        for j, part in enumerate(_wrap(lab)):
            cv2.putText(head, part, (k * tile + 6, 18 + 18 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                        cv2.LINE_AA)
    save_image(path, np.concatenate([head, grid], 0))
    print(f"wrote {path} ({len(rows)} rows: photo | then per edit: GAN-embed edit, photo-mode edit)")


def _is_pose(a, b) -> bool:
    return not torch.equal(a.pose, b.pose)


def _wrap(s: str) -> list[str]:
    if len(s) <= 22:
        return [s]
    k = s.rfind(" ", 0, 22)
    return [s[:k], s[k + 1:]]


# --------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (6 photos, fewer latency frames)")
    ap.add_argument("--utk", type=int, default=4, help="held-out UTKFace photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=None, help="latency frames per size (default 40, quick 12)")
    ap.add_argument("--no-refit", action="store_true", help="skip the read-back fits of the edited photos")
    ap.add_argument("--json", default=str(config.cache_dir() / "bench_photo_edit.json"))
    ap.add_argument("--figure", default=None, help="also write the side-by-side figure (e.g. docs/photo_edit.png)")
    ap.add_argument("--figure-only", action="store_true")
    ap.add_argument("--figure-test-photos", action="store_true",
                    help="add 3 ffhq rows to the figure (local only: test data is never committed)")
    ap.add_argument("--save-edits", default=None, help="folder to save every edited photo (PNG) for a look")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engine.io.files import save_image, write_json_atomic
    from engine.perception.align import AlignError
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer

    if args.figure_only:
        figure(Path(args.figure), test_photos=args.figure_test_photos)
        return 0
    judge = Judge()
    photos = photo_set(args.quick, args.utk)
    reps = args.reps or (12 if args.quick else 40)
    print(f"photo-mode bench: {len(photos)} photos, torch threads {torch.get_num_threads()}", flush=True)
    t = time.perf_counter()
    fit_photo(photos[0][1])
    print(f"cold fit (model, R-Net and dlib files loaded) {time.perf_counter() - t:.2f} s", flush=True)

    rows = []
    fits = {}
    for name, img in photos:
        try:
            fit = fit_photo(img)
        except AlignError as e:
            print(f"{name}: skipped ({e})")
            continue
        fits[name] = fit
        row = {"photo": name, "size": f"{img.shape[1]}x{img.shape[0]}", "fit_s": fit.seconds, "nme": fit.landmark_nme}
        t = time.perf_counter()
        pr = PhotoRenderer(fit)
        row["renderer_init_s"] = time.perf_counter() - t
        rgb = fit.image
        row["psnr_zero_fast"] = psnr(pr.render(fit.coeffs).image, rgb)
        pr.fast_path = False
        row["psnr_zero_full"] = psnr(pr.render(fit.coeffs.clone()).image, rgb)
        pr.fast_path = True
        d0 = judge.descriptor(rgb)
        m0 = judge.mouth(rgb)
        base_fit = refit(rgb) if not args.no_refit else None
        y_rnet0 = rnet_yaw(rgb)
        row["id"], row["yaw_rnet"], row["yaw_fit"] = {}, {}, {}
        for en, c in edits(fit.coeffs).items():
            out = pr.render(c).image
            if args.save_edits:
                save_image(Path(args.save_edits) / f"{name.replace(':', '_')}_{en}.png", out)
            d = judge.descriptor(out)
            row["id"][en] = None if (d is None or d0 is None) else float(np.linalg.norm(d - d0))
            if en.startswith("yaw"):
                yr = rnet_yaw(out)
                row["yaw_rnet"][en] = None if (yr is None or y_rnet0 is None) else yr - y_rnet0
                if base_fit is not None:
                    f2 = refit(out)
                    row["yaw_fit"][en] = None if f2 is None else math.degrees(
                        float(f2.coeffs.pose[0, 0] - base_fit.coeffs.pose[0, 0]))
            if en == "jawOpen":
                m1 = judge.mouth(out)
                row["mouth_ratio"] = [m0, m1]
                if base_fit is not None:
                    f2 = refit(out)
                    row["jaw_fit"] = [float(base_fit.coeffs.expr["jawOpen"][0]),
                                      None if f2 is None else float(f2.coeffs.expr["jawOpen"][0])]
        rows.append(row)
        ids = " ".join(f"{k} {'  -  ' if v is None else f'{v:.3f}'}" for k, v in row["id"].items())
        yr = " ".join(f"{k} {'-' if v is None else f'{v:+.1f}'}" for k, v in row["yaw_rnet"].items())
        yf = " ".join(f"{'-' if v is None else f'{v:+.1f}'}" for v in row["yaw_fit"].values())
        jf = row.get("jaw_fit")
        print(f"{name:22s} {row['size']:>9s} fit {fit.seconds:5.2f}s nme {fit.landmark_nme:.3f} "
              f"psnr0 {row['psnr_zero_fast']:.0f}/{row['psnr_zero_full']:.1f} dB | id {ids} | "
              f"R-Net yaw Δ {yr} | fit yaw Δ {yf} | jaw {'-' if not jf else f'{jf[0]:.2f}->{jf[1] if jf[1] is None else round(jf[1], 2)}'}"
              f" mouth {'-' if None in row['mouth_ratio'] else '%.2f->%.2f' % tuple(row['mouth_ratio'])}",
              flush=True)

    def med(vals):
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return (statistics.median(vals), len(vals)) if vals else (float("nan"), 0)

    summary = {"photos": len(rows), "threads": torch.get_num_threads()}
    print("\nsummary (median over photos; n = photos where dlib found the face in both)")
    fs, _ = med([r["fit_s"] for r in rows])
    summary["fit_s_median"] = fs
    summary["fit_s_1024"] = [r["fit_s"] for r in rows if r["size"] == "1024x1024"]
    summary["nme_median"] = med([r["nme"] for r in rows])[0]
    summary["nme_max"] = max(r["nme"] for r in rows)
    summary["psnr_zero_full_min"] = min(r["psnr_zero_full"] for r in rows)
    summary["psnr_zero_fast_min"] = min(r["psnr_zero_fast"] for r in rows)
    print(f"| metric | value |\n|---|---|")
    print(f"| fit time (warm), median / 1024 px | {fs:.2f} s / "
          f"{', '.join(f'{v:.2f}' for v in summary['fit_s_1024'])} s |")
    print(f"| landmark NME median / max | {summary['nme_median']:.3f} / {summary['nme_max']:.3f} |")
    print(f"| zero-edit PSNR min: fast path / full warp path | {summary['psnr_zero_fast_min']:.1f} / "
          f"{summary['psnr_zero_full_min']:.1f} dB |")
    for en in EDIT_NAMES:
        v, n = med([r["id"].get(en) for r in rows])
        summary[f"id_{en}_median"] = v
        print(f"| identity distance {en} (median, n={n}) | {v:.3f} |")
    for en in ("yaw-15", "yaw+15", "yaw-25", "yaw+25"):
        v, n = med([r["yaw_rnet"].get(en) for r in rows])
        w, m = med([r["yaw_fit"].get(en) for r in rows])
        summary[f"yaw_rnet_{en}_median"], summary[f"yaw_fit_{en}_median"] = v, w
        print(f"| yaw read-back {en}: R-Net / refit (median Δ, n={n}/{m}) | {v:+.1f} / {w:+.1f} deg |")
    jaws = [r["jaw_fit"] for r in rows if r.get("jaw_fit") and r["jaw_fit"][1] is not None]
    if jaws:
        summary["jaw_readback_median"] = [statistics.median(j[0] for j in jaws), statistics.median(j[1] for j in jaws)]
        print(f"| jawOpen 0.5 read back by the fit (median before -> after) | {summary['jaw_readback_median'][0]:.2f}"
              f" -> {summary['jaw_readback_median'][1]:.2f} |")
    mo = [r["mouth_ratio"] for r in rows if None not in r.get("mouth_ratio", [None])]
    if mo:
        summary["mouth_ratio_median"] = [statistics.median(m[0] for m in mo), statistics.median(m[1] for m in mo)]
        print(f"| judge mouth ratio before -> after jawOpen 0.5 (median) | {summary['mouth_ratio_median'][0]:.2f} -> "
              f"{summary['mouth_ratio_median'][1]:.2f} |")

    # latency: 512 px full, 1024 px drag preview (max_side 512), 2048 px full
    lat = {}
    f512 = fits.get("astronaut")
    f1024 = fits.get("ffhq00000@1024")
    f2048 = fits.get("ffhq00002@2048")
    if f2048 is None and not args.quick:
        f2048 = fit_photo(cv2.resize(fits["ffhq00002"].image, (2048, 2048), interpolation=cv2.INTER_CUBIC))
    for label, fit, ms in (("512 px, full", f512, None), ("1024 px, max_side 512", f1024, 512),
                           ("2048 px, full", f2048, None)):
        if fit is None:
            continue
        p50, p95 = latency(fit, ms, reps)
        lat[label] = [p50, p95]
        print(f"| render latency {label} (yaw drag, {reps} frames) p50 / p95 | {p50:.0f} / {p95:.0f} ms |", flush=True)
    summary["latency_ms"] = lat
    if args.json:
        write_json_atomic(args.json, {"summary": summary, "rows": rows})
        print(f"wrote {args.json}")
    if args.figure:
        figure(Path(args.figure), judge, test_photos=args.figure_test_photos)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
