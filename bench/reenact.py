"""Self-reenactment (issues 20 and 21, DESIGN.md §9): drive the first frame of each real talking-head clip with the
clip itself and ask the judges' yardstick (``../shared/tools/judge.py reenact``) how close the driven video is to
the real one, and how its motion follows the real motion.

For each clip of ``talking-heads`` (``DISCOFACE_DATA``): the first ``--seconds`` are re-encoded as the driver
(``<out>/<clip>/driver.mp4``, near-lossless), frame 0 of the original is the photo (``frame0.png``), ``discoface
drive``'s API (:func:`engine.drive.drive`) writes ``driven.mp4`` at the photo's size, and ``judge.py reenact``
compares it with the *original* clip (it uses as many frames as the driven video has; every 5th). Printed per clip
and as a mean: the PSNR gain over frame 0 held still inside the real head box and on crops aligned by each frame's
own eyes and mouth, and the read-back of the driven motion against the real one (correlation r and slope of
driven on real: eye opening, iris x, head x, head size, yaw, roll; 1 = same size), and the same PSNR gains with the
driven frame cropped by the *real* frame's landmarks and on the real eyes' band (:func:`fidelity`: pixels without
the judge's landmark reading of the driven frame, which moves its alignment). The load average is printed (the
machine is shared). The judges' head size is taken apart (:func:`size_parts`: the eye-centre distance on frames with
open eyes, the jaw width, the eye distance's share that follows the lids; per frame in ``<out>/<clip>/size.csv``).
A contact sheet per clip (real above, driven below, a few frames) is written to
``<out>/<clip>/sheet.png``.

    python bench/reenact.py [--clips turn_woman_02 mouth_woman_08] [--seconds 5] [--out out/reenact]
                            [--keep-placement] [--absolute-expression] [--expression-strength 1]
                            [--pose-strength 1] [--no-residual] [--stages] [--iris] [--iris-gain] [--iris-stages]
                            [--mouth-stages]

Nothing from the shared data is written into the repository (everything goes to ``--out``, git-ignored by default).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from engine import config  # noqa: E402
from judgetool import judge_path, load_judge  # noqa: E402  (bench/ is the script folder)

SERIES = ("eye opening", "iris x", "head x", "head size", "yaw", "roll")


def clips_dir() -> Path:
    return config.data_dir() / "talking-heads"


def read_frames(path: Path, n: int | None = None) -> list[np.ndarray]:
    import imageio.v3 as iio

    out = []
    for f in iio.imiter(path):
        out.append(np.asarray(f)[..., :3])
        if n is not None and len(out) >= n:
            break
    return out


def prepare(clip: Path, folder: Path, seconds: float | None) -> tuple[Path, Path, int]:
    """The driver (first ``seconds`` of ``clip``, re-encoded near-lossless, no audio) and frame 0 as a PNG."""
    import imageio_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    f0 = read_frames(clip, 1)[0]
    photo = folder / "frame0.png"
    cv2.imwrite(str(photo), cv2.cvtColor(f0, cv2.COLOR_RGB2BGR))
    driver = folder / "driver.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", "-i", str(clip)]
    if seconds:
        cmd += ["-t", f"{seconds:.3f}"]
    cmd += ["-an", "-c:v", "libx264", "-crf", "8", "-pix_fmt", "yuv444p", str(driver)]
    subprocess.run(cmd, check=True)
    return driver, photo, len(read_frames(driver))


def judge(clip: Path, driven: Path) -> dict:
    """``judge.py reenact`` on (the original clip, the driven video), parsed."""
    r = subprocess.run([sys.executable, str(judge_path()), "reenact", str(clip), str(driven)], capture_output=True,
                       text=True, timeout=3600)
    text = r.stdout.strip()
    res: dict = {"text": text}
    m = re.search(r"frames (\d+); head box: PSNR driven ([\d.]+) vs still ([\d.]+) \(gain ([+-][\d.]+) dB\).*?"
                  r"aligned face: PSNR ([\d.]+) vs ([\d.]+) \(gain ([+-][\d.]+) dB\)", text)
    if m:
        res.update(frames=int(m[1]), box_driven=float(m[2]), box_still=float(m[3]), box_gain=float(m[4]),
                   al_driven=float(m[5]), al_still=float(m[6]), al_gain=float(m[7]))
    for name in SERIES:
        m = re.search(re.escape(name) + r" r (-?[\d.]+|nan) slope (-?[\d.]+|nan)", text)
        if m:
            res[name] = (float(m[1]), float(m[2]))
    return res


def contact_sheet(clip: Path, driven: Path, path: Path, n: int, cols: int = 6, height: int = 256) -> None:
    """Real frames (top row) above the driven ones (bottom row) at ``cols`` evenly spaced times."""
    real = read_frames(clip, n)
    drv = read_frames(driven, n)
    n = min(len(real), len(drv))
    idx = np.linspace(0, n - 1, cols).round().astype(int)
    rows = []
    for frames in (real, drv):
        tiles = []
        for i in idx:
            f = frames[i]
            w = round(f.shape[1] * height / f.shape[0])
            t = cv2.resize(f, (w, height), interpolation=cv2.INTER_AREA)
            cv2.putText(t, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(t)
        rows.append(np.concatenate(tiles, 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


MODEL_SERIES = ("eye opening", "mouth", "head x", "head size", "yaw", "roll")


def _measures(L: np.ndarray) -> dict:
    from engine.perception.iris import eye_opening

    e1, e2 = L[36:42].mean(0), L[42:48].mean(0)
    return {"eye opening": (eye_opening(L[36:42]) + eye_opening(L[42:48])) / 2,
            "mouth": float(np.linalg.norm(L[66] - L[62]) / (np.linalg.norm(L[64] - L[60]) + 1e-6)),
            "head x": float(L[27:36, 0].mean()), "head size": float(np.linalg.norm(e2 - e1)),
            "roll": float(np.degrees(np.arctan2(e2[1] - e1[1], e2[0] - e1[0]))),
            "outer corners": float(np.linalg.norm(L[45] - L[36])), "inner corners": float(np.linalg.norm(L[42] - L[39])),
            "eye opening R": eye_opening(L[36:42]), "eye opening L": eye_opening(L[42:48])}


def model_readback(clip: Path, target, track, kw: dict, keep_placement: bool, every: int = 5,
                   residual: bool = True) -> dict:
    """What the driving *coefficients* ask for, before any pixel is drawn: the target head's own 68 model landmarks
    (photo mode's projection of the retargeted coefficients and placement) against the judges' landmarks on the
    real frame, every ``every``-th frame: {measure: (r, slope)}. Separates retargeting (this) from rendering
    (judge.py on the pixels)."""
    from engine.drive import retarget, retarget_placement
    from engine.drive.retargeting import retarget_residual

    jd = load_judge()
    real = read_frames(clip, track.n_frames)
    lm68 = target.renderer.model.lm68
    if kw.get("relative_expression") and hasattr(target, "gaze_read_gain"):  # as engine.drive.drive does
        kw = dict(kw, gaze_gain=target.gaze_read_gain())
    def model_lm(t):
        c = retarget(target.coeffs, track, t, **kw)
        move = None if keep_placement else retarget_placement(track, t, kw.get("pose_strength", 1.0))
        res = retarget_residual(track, t, kw.get("expression_strength", 1.0)) if residual else None
        f = target.renderer.flow_field(c, target.placement_matrix(move), target.residual_offsets(res))
        return f.target.photo_xy[lm68].double().numpy()

    a, b = {}, {}
    La0, Lm0 = jd._landmarks(real[0]), model_lm(0)
    ls = track.placement[:, 2] if track.placement is not None else np.zeros(track.n_frames)
    rows = []  # the stages' per-frame readings: frame, real eye opening R / L
    for t in range(every, min(len(real), track.n_frames), every):
        La = jd._landmarks(real[t])
        if La is None:
            continue
        Lm = model_lm(t)
        for k, v in _measures(La).items():
            a.setdefault(k, []).append(v)
        for k, v in _measures(Lm).items():
            b.setdefault(k, []).append(v)
        a.setdefault("yaw", []).append(jd._pose_of(La, real[t].shape)[0])
        b.setdefault("yaw", []).append(jd._pose_of(Lm, real[t].shape)[0])
        if La0 is not None:  # the head's own size (lids and lips left out) since frame 0: the model's, and the
            # placement's log scale (what the drive carries as a size), both on the real frame's
            a.setdefault("rigid size", []).append(rigid_scale(La, La0))
            b.setdefault("rigid size", []).append(rigid_scale(Lm, Lm0))
            a.setdefault("placement scale", []).append(a["rigid size"][-1])
            b.setdefault("placement scale", []).append(float(ls[t] - ls[0]))
        rows.append([t, a["eye opening R"][-1], a["eye opening L"][-1]])
    out = {}
    for k in a:
        x, y = np.array(a[k]), np.array(b[k])
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) > 5 and x.std() > 1e-6 and y.std() > 1e-9:
            out[k] = (float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0]))
    out["_real_eyes"] = np.array(rows).reshape(-1, 3)
    if La0 is not None:
        from engine.perception.iris import eye_opening

        out["_real_eyes0"] = (eye_opening(La0[36:42]), eye_opening(La0[42:48]))
    return out


def fidelity(clip: Path, driven: Path, every: int = 5) -> dict:
    """Pixel fidelity without the judge's landmark reading of the *driven* frame: every ``every``-th frame, the driven
    frame cropped and aligned by the *real* frame's own landmarks (the judge's ``_aligned``) and the eye band (the
    real eyes' box, 0.1 eye-span wider, 0.12 taller), PSNR gain over frame 0 held still. The judge's aligned gain
    aligns each driven frame by dlib's landmarks on it: a small change of the eyes or mouth moves that alignment and
    the gain by up to ±0.7 dB on a clip while the pixels here move by hundredths of a dB."""
    jd = load_judge()
    real = read_frames(clip)
    drv = read_frames(driven)
    f0 = real[0]
    L0 = jd._landmarks(f0)
    if L0 is None:
        return {}
    S = jd._aligned(f0, L0)
    al, eye = [], []
    for t in range(every, min(len(real), len(drv)), every):
        a, b = real[t], drv[t][:real[t].shape[0], :real[t].shape[1]]
        La = jd._landmarks(a)
        if La is None or b.shape != a.shape:
            continue
        A = jd._aligned(a, La)
        al.append(jd._psnr(A, jd._aligned(b, La)) - jd._psnr(A, S))
        e = La[36:48]
        w = e[:, 0].max() - e[:, 0].min()
        ys = slice(max(0, int(e[:, 1].min() - 0.12 * w)), int(e[:, 1].max() + 0.12 * w))
        xs = slice(max(0, int(e[:, 0].min() - 0.1 * w)), int(e[:, 0].max() + 0.1 * w))
        eye.append(jd._psnr(a[ys, xs], b[ys, xs]) - jd._psnr(a[ys, xs], f0[ys, xs]))
    return {"al_real_lm": float(np.mean(al)), "eye_band": float(np.mean(eye))} if al else {}


OPEN_EAR = 0.2  # eye aspect ratio above which both eyes count as open (closed ~0.1, open 0.25-0.4)


def _slope(x, y) -> tuple[float, float] | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) <= 5 or x.std() < 1e-9 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0])


# dlib's points the lids and lips do not move: the jaw outline, the brows, the nose, the eye corners (brows that lower
# pull it in, ~2.5 % at browDown 0.7 on glasses_07's fit; without the brows and the chin it followed the turns)
RIGID_POINTS = list(range(0, 36)) + [36, 39, 42, 45]


def rigid_scale(L: np.ndarray, L0: np.ndarray) -> float:
    """log of the scale of the similarity (least median of squares: a few points that slide do not count) that
    takes the rigid points ``RIGID_POINTS`` of the landmarks ``L0`` to those of ``L``: the head's size change with
    the lids and lips left out (a turn shortens the far jaw line: read on both videos alike)."""
    src, dst = np.asarray(L0, np.float32)[RIGID_POINTS], np.asarray(L, np.float32)[RIGID_POINTS]
    M, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    return float("nan") if M is None else float(0.5 * np.log(abs(np.linalg.det(M[:, :2]))))


def size_parts(clip: Path, driven: Path, folder: Path | None = None, every: int = 5) -> dict:
    """What the judges' head size (the distance of the eye centres, dlib) is made of, on both videos every ``every``-th
    frame: the slope of driven on real over the frames where both videos' eyes are open (eye aspect ratio >=
    ``OPEN_EAR``: the lids' share taken out), the same for the jaw width (landmarks 0-16: a size the lids do not move),
    and how far the eye-centre distance moves with the eye opening (d log distance / d eye aspect ratio, real and
    driven: dlib's eye corners move inward on closing or squinting lids), and the rigid size (:func:`rigid_scale`
    since the first frame, driven on real: the head's own growing and shrinking). ``folder``: the per-frame readings
    are written to ``<folder>/size.csv``."""
    jd = load_judge()
    real, drv = read_frames(clip), read_frames(driven)
    rows, lms = [], []
    for t in range(0, min(len(real), len(drv)), every):
        a, b = real[t], drv[t][:real[t].shape[0], :real[t].shape[1]]
        La, Lb = jd._landmarks(a), jd._landmarks(b)
        if La is None or Lb is None:
            continue
        rows.append([t] + [v for L in (La, Lb) for v in (np.linalg.norm(L[42:48].mean(0) - L[36:42].mean(0)),
                                                           np.linalg.norm(L[16] - L[0]), jd._ear(L))])
        lms.append((La, Lb))
    if not rows:
        return {}
    r = np.array(rows)
    # the rigid size: the scale of the similarity (robust fit) taking the first compared frame's rigid points to
    # this frame's, per video
    rig = np.array([[rigid_scale(L, lms[0][k]) for k, L in enumerate(pair)] for pair in lms])
    r = np.concatenate([r, rig], 1)
    if folder is not None:
        np.savetxt(folder / "size.csv", r, delimiter=",", fmt="%.4f",
                   header="frame,real_eye_distance,real_jaw_width,real_eye_opening,driven_eye_distance,"
                          "driven_jaw_width,driven_eye_opening,real_rigid_log_size,driven_rigid_log_size")
    ed_a, jw_a, ear_a, ed_b, jw_b, ear_b, rs_a, rs_b = r[:, 1:].T
    op = (ear_a >= OPEN_EAR) & (ear_b >= OPEN_EAR)
    out = {"size_open": _slope(ed_a[op], ed_b[op]), "jaw": _slope(jw_a, jw_b),
           "lid_real": _slope(ear_a, np.log(ed_a)), "lid_driven": _slope(ear_b, np.log(ed_b)),
           "rigid": _slope(rs_a[np.isfinite(rs_a + rs_b)], rs_b[np.isfinite(rs_a + rs_b)]),
           # dlib's eye corners alone (no lid points): outer 36-45, inner 39-42, driven on real
           "outer": _slope(*[[np.linalg.norm(p[k][45] - p[k][36]) for p in lms] for k in (0, 1)]),
           "inner": _slope(*[[np.linalg.norm(p[k][42] - p[k][39]) for p in lms] for k in (0, 1)])}
    if np.isfinite(rs_a).any():
        out["rigid_range"] = (float(np.nanmin(rs_a)), float(np.nanmax(rs_a)))
    return {k: v for k, v in out.items() if v is not None}


def track_stages(track, model: dict) -> dict:
    """The tracked side of ``--stages``: the placement filter (the smoothed log scale on the raw one, r / slope over
    the tracked frames) and, at the compared frame where the tracked yaw has moved most since the first tracked frame,
    each eye's fitted lid weights (smoothed eyeBlink / eyeWide / eyeSquint, change since that frame) beside dlib's eye
    aspect ratio of that eye on the real frame (and on frame 0): a fit that reads a turned open eye as closing."""
    out = {}
    if track.placement is not None and track.placement_raw is not None:
        raw, sm = track.placement_raw[:, 2], track.placement[:, 2]
        ok = np.isfinite(raw) & np.isfinite(sm)
        out["filter"] = _slope(raw[ok], sm[ok])
    rows = model.get("_real_eyes")
    f0 = track.first_found
    if rows is not None and len(rows):
        yaw = track.series("yaw")
        t = [int(x) for x in rows[:, 0]]
        i = int(np.argmax([abs(yaw[k] - yaw[f0]) for k in t]))
        k = t[i]
        out["turn"] = {"frame": k, "yaw": float(yaw[k] - yaw[f0])}
        for j, side in enumerate(("R", "L")):  # "R": the subject's right eye, dlib 36-41
            d = {w: float(track.series(f"eye{w}_{side}")[k] - track.series(f"eye{w}_{side}")[f0])
                 for w in ("Blink", "Wide", "Squint")}
            out["turn"][side] = dict(d, ear=float(rows[i, 1 + j]),
                                     ear0=float(model.get("_real_eyes0", (np.nan, np.nan))[j]))
    return out


def stages_table(results: list[dict]) -> str:
    """``--stages``: the judges' head size (dlib's eye-centre distance, lid points included) followed stage by stage,
    driven (or tracked, or modelled) on real, r / slope, and the fitted lids at the largest turn."""
    lines = ["Head size stage by stage (r / slope on the real frames' dlib reading, every 5th frame): the placement "
             "filter (smoothed log scale on the raw), the placement's log scale and the retargeted model landmarks' "
             "rigid size on the real rigid size, the model landmarks' eye-centre / outer-corner / inner-corner "
             "distance on the real ones, the same on the rendered video (dlib), and the judges' head size:", "",
             "| clip | filter | placement scale | model rigid | model eye centres | model outer | model inner | "
             "rendered rigid | rendered outer | rendered inner | judge head size |", "|" + "---|" * 11]

    def cell(v):
        return "—" if v is None else f"{v[0]:.2f} / {v[1]:.2f}"

    for r in results:
        m, z, tr = r.get("model", {}), r.get("size", {}), r.get("track", {})
        lines.append("| " + " | ".join([r["clip"], cell(tr.get("filter")), cell(m.get("placement scale")),
                                        cell(m.get("rigid size")), cell(m.get("head size")),
                                        cell(m.get("outer corners")), cell(m.get("inner corners")),
                                        cell(z.get("rigid")), cell(z.get("outer")), cell(z.get("inner")),
                                        cell(r.get("head size"))]) + " |")
    lines += ["", "Fitted lids at the largest turn (the compared frame where the tracked yaw moved most since the first "
              "tracked frame; smoothed weights' change since then; dlib's eye aspect ratio of the same eye on the real "
              "frame, frame 0's in brackets; R = the subject's right eye, dlib 36-41):", "",
              "| clip | frame | yaw change deg | R: blink / wide / squint | R: real eye aspect ratio | "
              "L: blink / wide / squint | L: real eye aspect ratio |", "|" + "---|" * 7]
    for r in results:
        tn = r.get("track", {}).get("turn")
        if not tn:
            continue
        cells = [r["clip"], str(tn["frame"]), f"{tn['yaw']:+.1f}"]
        for side in ("R", "L"):
            d = tn[side]
            cells += [f"{d['Blink']:+.2f} / {d['Wide']:+.2f} / {d['Squint']:+.2f}", f"{d['ear']:.2f} ({d['ear0']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_clip(clip: Path, out: Path, args) -> dict:
    from engine.drive import drive, load_target, track_video

    folder = out / clip.stem
    driver, photo, n = prepare(clip, folder, args.seconds)
    driven = folder / "driven.mp4"
    kw = dict(expression_strength=args.expression_strength, pose_strength=args.pose_strength,
              relative_expression=not args.absolute_expression)
    t0 = time.perf_counter()
    target = load_target(photo)
    track = track_video(driver)
    residual = not (args.no_residual or args.absolute_expression)
    drive(driver, target, driven, track=track, keep_audio=False, keep_placement=args.keep_placement,
          landmark_residual=residual, **kw)
    secs = time.perf_counter() - t0
    res = judge(clip, driven)
    res.update(clip=clip.stem, n=n, seconds=secs)
    res["model"] = model_readback(clip, target, track, kw, args.keep_placement, residual=residual)
    res.update(fidelity(clip, driven))
    if getattr(args, "stages", False):
        res["track"] = track_stages(track, res["model"])
    res["size"] = size_parts(clip, driven, folder)
    contact_sheet(clip, driven, folder / "sheet.png", n)
    return res


def iris_check(clips: list[Path], seconds: float | None, every: int = 5) -> str:
    """engine.perception.iris against the judges' iris reading (``judge._iris``) on every ``every``-th frame of the
    real clips (dlib landmarks from the judge): correlation and slope of x, for the centroid and the refined centre."""
    from engine.perception import iris

    jd = load_judge()
    lines = ["| clip | frames | judge iris x range | centroid r / slope | refined r / slope |", "|---|---|---|---|---|"]
    for clip in clips:
        frames = read_frames(clip)
        if seconds:
            import imageio.v3 as iio

            fps = float(iio.immeta(clip).get("fps", 25.0))
            frames = frames[:max(1, int(round(seconds * fps)))]
        ref, a, b = [], [], []
        for f in frames[::every]:
            L = jd._landmarks(f)
            if L is None:
                continue
            j = jd._iris(f, L)
            g0, g1 = iris.gaze(f, L), iris.gaze(f, L, refine=True)
            if j is None or g0 is None or g1 is None:
                continue
            ref.append(j[0]), a.append(g0[0]), b.append(g1[0])
        ref, a, b = map(np.array, (ref, a, b))
        cells = [clip.stem, str(len(ref)), f"{ref.min():+.3f} … {ref.max():+.3f}" if len(ref) else "—"]
        for v in (a, b):
            ok = len(ref) > 5 and ref.std() > 1e-6
            cells.append(f"{np.corrcoef(ref, v)[0, 1]:.2f} / {np.polyfit(ref, v, 1)[0]:.2f}" if ok else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_LOOK_H = ("eyeLookOut_L", "eyeLookIn_R", "eyeLookIn_L", "eyeLookOut_R")
_LOOK_V = ("eyeLookUp_L", "eyeLookUp_R", "eyeLookDown_L", "eyeLookDown_R")


def _carried_shift(track, t: int) -> float:
    """The sideways iris shift (eye widths) the track's smoothed eyeLook weights of frame ``t`` stand for (the
    subject's left eye: both eyes carry the same)."""
    from engine.drive.retargeting import _iris_shift

    names = list(track.exp_names)
    v = track.smoothed[t]
    return _iris_shift(v[names.index("eyeLookOut_L")] - v[names.index("eyeLookIn_L")])


def iris_stages(clips: list[Path], out: Path, seconds: float | None, every: int = 5) -> str:
    """Where the horizontal iris motion is lost, stage by stage, against the judges' iris x on the real frames
    (``judge._iris``, every ``every``-th frame; r / slope of each stage on it): the tracker's reading
    (``Track.gaze``); the shift the smoothed eyeLook weights carry (:func:`_carried_shift`); the judge's reading of
    the retargeted frame (with the target's iris read gain, as a drive) rendered on frame 0 (no placement) with the
    frame's whole expression, with its vertical gaze put back to the photo's, and with the gaze and pose only (every
    other weight the photo's). Each render is read relative to the same frame rendered without the horizontal gaze
    change, so the stages compare the iris shift itself."""
    from engine.drive import load_target, retarget, track_video

    jd = load_judge()
    lines = ["| clip | frames | tracker | carried (smoothed eyeLook) | render: whole expression | ... vertical gaze "
             "the photo's | ... gaze and pose only |", "|---|---|---|---|---|---|---|"]
    for clip in clips:
        folder = out / clip.stem
        driver, photo, n = prepare(clip, folder, seconds)
        target, track = load_target(photo), track_video(driver)
        real = read_frames(clip, n)
        c0 = target.coeffs
        cols = {k: [] for k in ("judge", "tracker", "carried", "full", "novert", "only")}

        def read(c):
            img = target.render(c)
            L = jd._landmarks(img)
            ir = None if L is None else jd._iris(img, L)
            return None if ir is None else float(ir[0])

        def without(c, names):
            c = c.clone()
            for k in names:
                c.expr[k] = c0.expr[k]
            return c

        for t in range(every, min(len(real), track.n_frames), every):
            La = jd._landmarks(real[t])
            j = None if La is None else jd._iris(real[t], La)
            if j is None or not np.isfinite(track.gaze[t]).all():
                continue
            c = retarget(c0, track, t, relative_expression=True, gaze_gain=target.gaze_read_gain())
            only = without(c0, ())
            only.pose = c.pose.clone()
            for k in _LOOK_H + _LOOK_V:
                only.expr[k] = c.expr[k]
            reads = {}
            for name, x in (("full", c), ("novert", without(c, _LOOK_V)), ("only", only)):
                a, b = read(x), read(without(x, _LOOK_H))
                reads[name] = None if a is None or b is None else a - b
            if any(v is None for v in reads.values()):
                continue
            cols["judge"].append(float(j[0]))
            cols["tracker"].append(float(track.gaze[t, 0] - track.gaze[track.first_found, 0]))
            cols["carried"].append(_carried_shift(track, t) - _carried_shift(track, track.first_found))
            for k, v in reads.items():
                cols[k].append(v)
        x = np.array(cols["judge"])
        cells = [clip.stem, str(len(x))]
        for k in ("tracker", "carried", "full", "novert", "only"):
            v = _slope(x, cols[k])
            cells.append("—" if v is None else f"{v[0]:.2f} / {v[1]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


MOUTH_MEASURES = ("corner spread", "lip opening", "teeth")


def _mouth_measures(img: np.ndarray | None, L: np.ndarray) -> tuple[float, float, float]:
    """The mouth of one face, in the eye-centre distance (scale and roll free): the corner spread |48-54|, the
    inner-lip opening |62-66|, and (with ``img``) the share of teeth-like pixels (bright, little colour: HSV V >
    0.55, S < 0.35) inside the inner-lip polygon 60-67 (NaN without an image or with a closed mouth)."""
    eyes = np.linalg.norm(L[42:48].mean(0) - L[36:42].mean(0)) + 1e-6
    spread = float(np.linalg.norm(L[54] - L[48]) / eyes)
    opening = float(np.linalg.norm(L[66] - L[62]) / eyes)
    teeth = float("nan")
    if img is not None:
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(L[60:68]).astype(np.int32)], 1)
        if m.sum() >= 6:
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)[m > 0].astype(float) / 255.0
            teeth = float(((hsv[:, 2] > 0.55) & (hsv[:, 1] < 0.35)).mean())
    return spread, opening, teeth


def mouth_stages(clips: list[Path], out: Path, seconds: float | None, every: int = 5) -> str:
    """Where the mouth's strength is lost, stage by stage, against the real mouth (the judges' dlib landmarks on the
    real frame, every ``every``-th frame): corner spread, lip opening (in eye-centre distances) and the teeth share
    (:func:`_mouth_measures`), each as its change since frame 0; per stage r / slope of that change on the real one
    (1 = the real size). Stages: the tracker's fitted expression (the source model's own 68 landmarks for the raw and
    the smoothed fit of the frame, its identity and pose: what the fit reads of the clip's landmarks); the retargeted
    coefficients on the photo (photo mode's projection of the target's model landmarks, no placement); the rendered
    photo (the judges' landmarks on the frame rendered on frame 0, no placement). The teeth share is compared real vs
    rendered only. The last column: frame 0's mouth itself (not a change), read on the real frame, by the track's
    fit and by the photo's fit (the target's own expression, which the changes are added to). A contact sheet of the frames with the widest real mouth (real above, rendered below) goes to
    ``<out>/<clip>/mouth.png``."""
    from engine.drive import load_target, retarget, track_video
    from engine.face.model import N_EXP
    from engine.fit.common import renderer_for
    from engine.fit.expression import ExpressionPoseSolver

    jd = load_judge()
    stages = ("fit raw", "fit smoothed", "retargeted", "rendered")
    head = ["clip", "frames"] + [f"{m}: {s}" for m in ("corner spread", "lip opening") for s in stages] + [
        "teeth: rendered", "teeth share real / rendered (widest 5)",
        "frame 0 spread / opening: real, track's fit, photo's fit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for clip in clips:
        folder = out / clip.stem
        driver, photo, n = prepare(clip, folder, seconds)
        target, track = load_target(photo), track_video(driver)
        real = read_frames(clip, n)
        solver = ExpressionPoseSolver(target.renderer.model, renderer_for(target.renderer.model),
                                      track.base.identity, track.crop_size)
        lm68 = target.renderer.model.lm68

        def fit_lm(row):
            return solver.landmarks(np.concatenate([row[:N_EXP], row[N_EXP:N_EXP + 3]]))

        def model_lm(c):
            return target.renderer.flow_field(c, None).target.photo_xy[lm68].double().numpy()

        def read(img):
            L = jd._landmarks(img)
            return None if L is None else _mouth_measures(img, L)

        f0 = track.first_found
        L0 = jd._landmarks(real[0])
        if L0 is None:
            lines.append(f"| {clip.stem} | 0 |" + " — |" * (len(head) - 2))
            continue
        ref = {"real": _mouth_measures(real[0], L0), "fit raw": _mouth_measures(None, fit_lm(track.raw[f0])),
               "fit smoothed": _mouth_measures(None, fit_lm(track.smoothed[f0])),
               "retargeted": _mouth_measures(None, model_lm(target.coeffs)), "rendered": read(target.render(target.coeffs))}
        rows = {k: [] for k in ("real",) + stages}
        shown = []
        for t in range(every, min(len(real), track.n_frames), every):
            La = jd._landmarks(real[t])
            if La is None or not track.found[t]:
                continue
            c = retarget(target.coeffs, track, t, relative_expression=True)
            img = target.render(c)
            r = read(img)
            if r is None or ref["rendered"] is None:
                continue
            vals = {"real": _mouth_measures(real[t], La), "fit raw": _mouth_measures(None, fit_lm(track.raw[t])),
                    "fit smoothed": _mouth_measures(None, fit_lm(track.smoothed[t])),
                    "retargeted": _mouth_measures(None, model_lm(c)), "rendered": r}
            for k, v in vals.items():
                rows[k].append(np.array(v) - np.array(ref[k]))
            shown.append((vals["real"][0] + vals["real"][1], t, img, vals["real"][2], r[2]))
        cells = [clip.stem, str(len(rows["real"]))]
        if len(rows["real"]) > 5:
            R = {k: np.array(v) for k, v in rows.items()}
            for j in (0, 1):
                for s in stages:
                    v = _slope(R["real"][:, j], R[s][:, j])
                    cells.append("—" if v is None else f"{v[0]:.2f} / {v[1]:.2f}")
            ok = np.isfinite(R["real"][:, 2]) & np.isfinite(R["rendered"][:, 2])
            v = _slope(R["real"][ok, 2], R["rendered"][ok, 2])
            cells.append("—" if v is None else f"{v[0]:.2f} / {v[1]:.2f}")
            top = sorted(shown, key=lambda q: -q[0])[:5]
            tr = np.nanmean([q[3] for q in top]) if top else float("nan")
            td = np.nanmean([q[4] for q in top]) if top else float("nan")
            cells.append(f"{fmt(float(tr), '.2f')} / {fmt(float(td), '.2f')}")
            tiles = []
            for _, t, img, _, _ in sorted(top, key=lambda q: q[1]):
                h = 256
                pair = []
                for f in (real[t], img[:real[t].shape[0], :real[t].shape[1]]):
                    w = round(f.shape[1] * h / f.shape[0])
                    tile = cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=cv2.INTER_AREA)
                    cv2.putText(tile, str(t), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
                    pair.append(tile)
                tiles.append(np.concatenate(pair, 0))
            if tiles:
                cv2.imwrite(str(folder / "mouth.png"), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))
            cells.append(", ".join(f"{ref[k][0]:.2f} / {ref[k][1]:.2f}" for k in ("real", "fit raw", "retargeted")))
        else:
            cells += ["—"] * (len(head) - 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def iris_gain_check(clips: list[Path], out: Path, weights=(-0.4, -0.2, 0.0, 0.2, 0.4)) -> str:
    """How much of a known sideways iris shift the iris reader sees: frame 0 of
    each clip as a photo, photo mode's eye layer turns both eyes sideways by eyeLook ``weights`` (the iris disc moves
    by the eyeball radius × sin(angle) eye widths), and :func:`engine.perception.iris.gaze` reads the rendered frame
    (dlib landmarks on it): slope of the reading on the true shift, per clip and pooled; and the target's own read
    gain a drive divides the sideways gaze change by (:meth:`engine.drive.targets.PhotoTarget.gaze_read_gain`: the
    same reader with the photo's landmarks, the eye layer alone, small glances)."""
    import math

    from engine.drive import load_target
    from engine.editing.controls import controls_for
    from engine.perception import align, iris
    from engine.photo import eyes

    radius, deg = eyes.EYEBALL_RADIUS, eyes.GAZE_MAX_DEG["horizontal"]
    lines = ["| clip | reader's slope on the true shift | the target's read gain (a drive's) |", "|---|---|---|"]
    pooled_x, pooled_y = [], []
    for clip in clips:
        folder = out / clip.stem
        folder.mkdir(parents=True, exist_ok=True)
        photo = folder / "frame0.png"
        cv2.imwrite(str(photo), cv2.cvtColor(read_frames(clip, 1)[0], cv2.COLOR_RGB2BGR))
        target = load_target(photo)
        xs, ys = [], []
        for w in weights:
            c = target.coeffs.clone()
            controls_for(c.exp_names)["look_horizontal"].set(c, w)  # the editor's control (eyeLook* pairs)
            img = target.render(c)
            boxes = align.detect_faces(img)
            g = iris.gaze(img, align.landmarks68(img, boxes[0])) if boxes else None
            if g is not None:
                xs.append(math.copysign(radius * math.sin(math.radians(abs(w) * deg)), w))
                ys.append(float(g[0]))
        if len(xs) >= 3:
            xs, ys = np.array(xs), np.array(ys)
            lines.append(f"| {clip.stem} | {np.polyfit(xs, ys, 1)[0]:.2f} | {target.gaze_read_gain():.2f} |")
            pooled_x += list(xs - xs.mean())
            pooled_y += list(ys - ys.mean())
        else:
            lines.append(f"| {clip.stem} | — | {target.gaze_read_gain():.2f} |")
    if len(pooled_x) >= 3:
        lines.append(f"| pooled | {np.polyfit(pooled_x, pooled_y, 1)[0]:.2f} | |")
    return "\n".join(lines)


def fmt(v, spec="+.2f") -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def table(results: list[dict]) -> str:
    head = ["clip", "frames", "s/frame", "box gain dB", "aligned gain dB"] + [f"{s} r / slope" for s in SERIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["clip"], str(r["n"]), fmt(r["seconds"] / max(r["n"], 1), ".2f"), fmt(r.get("box_gain")),
                 fmt(r.get("al_gain"))]
        for s in SERIES:
            v = r.get(s)
            cells.append("—" if v is None else f"{v[0]:.2f} / {v[1]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    ok = [r for r in results if "box_gain" in r]
    if ok:
        cells = [f"mean of {len(ok)}", str(sum(r["n"] for r in ok)), "",
                 fmt(float(np.mean([r["box_gain"] for r in ok]))), fmt(float(np.mean([r["al_gain"] for r in ok])))]
        for s in SERIES:
            v = np.array([r[s] for r in ok if s in r], float).reshape(-1, 2)
            cells.append("—" if not len(v) else f"{np.nanmean(v[:, 0]):.2f} / {np.nanmean(v[:, 1]):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pixels without the judge's landmarks on the driven frame (PSNR gain over the still frame 0, dB): the "
              "driven frame aligned by the real frame's own landmarks, and the real eyes' band:", "",
              "| clip | aligned by the real's landmarks | eye band |", "|---|---|---|"]
    for r in results + ([{"clip": f"mean of {len(ok)}", **{k: float(np.mean([q[k] for q in ok if k in q]))
                                                            for k in ("al_real_lm", "eye_band")
                                                            if any(k in q for q in ok)}}] if ok else []):
        lines.append(f"| {r['clip']} | {fmt(r.get('al_real_lm'))} | {fmt(r.get('eye_band'))} |")
    lines += ["", "Head size (the judges' eye-centre distance) taken apart, every 5th frame: driven on real over the frames "
              f"where both videos' eyes are open (eye aspect ratio >= {OPEN_EAR}), the jaw width (0-16) on all, and "
              "how much the eye-centre distance moves with the eye opening (slope of its log on the eye aspect ratio; "
              "r / slope), and the rigid size (the similarity taking frame 0's jaw outline, brows, nose and eye "
              "corners to each frame's, robust fit; driven on real, r / slope; the real log size's range):", "",
              "| clip | eye distance, open eyes | jaw width | eye distance on eye opening, real | "
              "... driven | rigid size | real rigid log size |", "|---|---|---|---|---|---|---|"]
    keys = ("size_open", "jaw", "lid_real", "lid_driven", "rigid")
    for r in results + ([{"clip": f"mean of {len(ok)}", "size": {
            k: tuple(np.mean([q["size"][k] for q in ok if k in q.get("size", {})], 0))
            for k in keys if any(k in q.get("size", {}) for q in ok)}}] if ok else []):
        m = r.get("size", {})
        rr = m.get("rigid_range")
        lines.append("| " + " | ".join([r["clip"]] + [f"{m[k][0]:.2f} / {m[k][1]:.2f}" if k in m else "—"
                                                       for k in keys]
                                       + [f"{rr[0]:+.3f} … {rr[1]:+.3f}" if rr else ""]) + " |")
    lines += ["", "Retargeted coefficients before rendering (the target's model landmarks vs the judges' landmarks on the "
              "real frame; r / slope):", "",
              "| clip | " + " | ".join(MODEL_SERIES) + " |", "|" + "---|" * (len(MODEL_SERIES) + 1)]
    for r in results + ([{"clip": f"mean of {len(ok)}", "model": {
            k: tuple(np.mean([q["model"][k] for q in ok if k in q.get("model", {})], 0))
            for k in MODEL_SERIES if any(k in q.get("model", {}) for q in ok)}}] if ok else []):
        m = r.get("model", {})
        lines.append("| " + " | ".join([r["clip"]] + [f"{m[k][0]:.2f} / {m[k][1]:.2f}" if k in m else "—"
                                                       for k in MODEL_SERIES]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", help="clip names (stems) in talking-heads; default: all")
    ap.add_argument("--seconds", type=float, default=5.0, help="drive the first this many seconds (0 = all)")
    ap.add_argument("--out", default="out/reenact")
    ap.add_argument("--keep-placement", action="store_true", help="keep the photo's head placement in the frame")
    ap.add_argument("--expression-strength", type=float, default=1.0)
    ap.add_argument("--pose-strength", type=float, default=1.0)
    ap.add_argument("--absolute-expression", action="store_true")
    ap.add_argument("--no-residual", action="store_true", help="drive without the landmark residual (the part of "
                                                               "the clip's landmark motion its model fit misses)")
    ap.add_argument("--iris", action="store_true", help="only check the iris tracker against the judge's iris reading "
                                                        "on the real clips")
    ap.add_argument("--iris-stages", action="store_true", help="only measure, stage by stage, how much of the real "
                                                               "horizontal iris motion each step of a drive carries")
    ap.add_argument("--mouth-stages", action="store_true", help="only measure, stage by stage (fit, retargeting, "
                                                                "render), how much of the real mouth a drive carries")
    ap.add_argument("--stages", action="store_true", help="also print the head size stage by stage (placement "
                                                          "filter, model landmarks, render) and the fitted lids at "
                                                          "the largest turn")
    ap.add_argument("--iris-gain", action="store_true", help="only measure how much of a known (rendered) sideways "
                                                             "iris shift the iris reader sees")
    args = ap.parse_args(argv)
    folder = clips_dir()
    if not folder.is_dir():
        print(f"error: no talking-heads folder at {folder} (set DISCOFACE_DATA)", file=sys.stderr)
        return 2
    clips = sorted(folder.glob("*.mp4"))
    if args.clips:
        want = {Path(c).stem for c in args.clips}
        clips = [c for c in clips if c.stem in want]
        missing = want - {c.stem for c in clips}
        if missing:
            print(f"error: no such clip(s): {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
    if args.iris_stages:
        print(iris_stages(clips, Path(args.out), args.seconds))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
        return 0
    if args.mouth_stages:
        print(mouth_stages(clips, Path(args.out), args.seconds))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
        return 0
    if args.iris_gain:
        print(iris_gain_check(clips, Path(args.out)))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
        return 0
    if args.iris:
        print(iris_check(clips, args.seconds))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    loads = []
    for clip in clips:
        r = run_clip(clip, out, args)
        loads.append(os.getloadavg()[0])
        print(f"{clip.stem}: {r['n']} frames, drive {r['seconds']:.0f} s\n  {r['text'].replace(chr(10), chr(10) + '  ')}",
              flush=True)
        results.append(r)
    print()
    print(table(results))
    if args.stages:
        print()
        print(stages_table(results))
    print(f"\n{'keep placement' if args.keep_placement else 'head placement driven'}; first {args.seconds:g} s of "
          f"each clip; judge.py reenact (every 5th frame); load average {np.mean(loads):.1f} on {os.cpu_count()} "
          f"cores (shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
