"""Driving from a video (issue 16): closed-loop accuracy, jitter, per-frame cost and identity of the driven target.

Closed loop: a photo (ffhq-samples, fitted by photo mode) is animated with *known* per-frame coefficients — a still
segment (for jitter), a jawOpen curve, a smile curve (mouthSmile_L/R) and a yaw sweep of +-15 deg — rendered with
``engine.photo.renderer.PhotoRenderer`` into a 640x480 H.264 video with a little sensor noise. The video is then
tracked (``engine.drive.track_video``) and the read-back is compared with what was asked: mean abs error of jawOpen
and smile (absolute values), yaw relative to the first frame (degrees). Jitter: on the still segment, the std of
yaw / jawOpen and of their frame-to-frame differences, raw and smoothed. Cost: tracking + fit per frame (1 thread).
Identity: another photo is driven by the video (photo mode) and every 10th output frame is compared with the target
photo by the judges' dlib yardstick (``../shared/tools/judge.py identity``).

Also: the cost of looking for a lost face (around its last box vs the full frame) and of writing a track's
keyframes into a session (one ``Session.set_keyframes`` call vs one ``add_keyframe`` per frame).

    python bench/drive.py [--photos 00002 00005] [--target 00007] [--frames 150] [--keep DIR] [--quick]
    python bench/drive.py --speed [--frames 300] [--workers 1 2] [--repeat 3]

``--speed`` (issue 24): per-frame cost of ``discoface drive`` with start-up taken out — a 1 MP portrait
(front_man_darkskin_01, 910x1137) driven by a talking-heads clip scaled to 512 px (169 frames, played back and forth
to ``--frames``, default 300 = 12 s), end to end (tracking + rendering + writing) per frame: with 1 render worker,
and with N workers (engine/render/frame_pool.py) tracking first and rendering after, and tracking and rendering at
once (what ``drive`` does with workers on a clip of over IDENTITY_SPAN + 8 frames; interleaved A/B rounds); printed
with the machine's load, the goal table last.

Nothing from the shared data is written into the repository (videos go to a temporary folder, or --keep DIR).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import engine  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config  # noqa: E402
from judgetool import judge_path  # noqa: E402  (bench/ is the script folder)

FRAME_W, FRAME_H = 640, 480
FPS = 30.0


def curves(n: int) -> dict[str, np.ndarray]:
    """Known per-frame values: still | jawOpen | smile | yaw sweep (each a quarter of the clip)."""
    q = n // 4
    t = np.arange(n)
    jaw = np.zeros(n)
    smile = np.zeros(n)
    yaw = np.zeros(n)
    seg = (t >= q) & (t < 2 * q)
    jaw[seg] = 0.6 * np.sin(np.pi * (t[seg] - q) / q) ** 2 * (1 + 0.0 * t[seg])
    seg = (t >= 2 * q) & (t < 3 * q)
    smile[seg] = 0.7 * np.sin(np.pi * (t[seg] - 2 * q) / q)
    seg = t >= 3 * q
    yaw[seg] = 15.0 * np.sin(2 * np.pi * (t[seg] - 3 * q) / (n - 3 * q))
    return {"jawOpen": jaw, "smile": smile, "yaw": yaw, "still": t < q}


def photo_path(name: str) -> Path:
    p = config.ffhq_samples_dir() / "images" / f"{name}.png"
    if not p.exists():
        raise SystemExit(f"missing {p}")
    return p


def frame_canvas(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The photo (scaled to the frame height) centred on a 640x480 frame, with Gaussian sensor noise."""
    h = FRAME_H
    w = int(round(img.shape[1] * h / img.shape[0]))
    im = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if h > img.shape[0] else cv2.INTER_AREA)
    f = np.full((FRAME_H, FRAME_W, 3), 110, np.uint8)
    x0 = (FRAME_W - w) // 2
    f[:, max(0, x0):max(0, x0) + min(w, FRAME_W)] = im[:, max(0, -x0):max(0, -x0) + min(w, FRAME_W)]
    if noise > 0:
        f = np.clip(f.astype(np.float32) + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)
    return f


def make_video(photo: Path, n: int, out: Path, noise: float = 3.0, seed: int = 0, baseline: str = "fit"):
    """The clip and its known per-frame values. ``baseline`` "fit": the photo's own fitted coefficients plus the
    curves (neutral frames are the photo itself); "zero": jawOpen and smile requested absolutely from 0 (photo mode
    must first warp the photo's own expression away)."""
    from engine.drive.video import write_video
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer
    from engine.perception.align import load_image

    img = load_image(photo)
    if max(img.shape[:2]) < FRAME_H:
        img = cv2.resize(img, (FRAME_H * img.shape[1] // img.shape[0], FRAME_H), interpolation=cv2.INTER_CUBIC)
    fit = fit_photo(img)
    pr = PhotoRenderer(fit)
    cv_ = curves(n)
    rng = np.random.default_rng(seed)
    c0 = fit.coeffs.clone()
    if baseline == "zero":
        c0.expr["jawOpen"] = 0.0
        c0.expr["mouthSmile_L"] = 0.0
        c0.expr["mouthSmile_R"] = 0.0
    base = {k: float(c0.expr[k][0]) for k in ("jawOpen", "mouthSmile_L", "mouthSmile_R")}
    cv_ = dict(cv_)
    cv_["jawOpen"] = np.clip(base["jawOpen"] + cv_["jawOpen"], 0, 1)
    smile_l = np.clip(base["mouthSmile_L"] + cv_["smile"], 0, 1)
    smile_r = np.clip(base["mouthSmile_R"] + cv_["smile"], 0, 1)
    cv_["smile"] = 0.5 * (smile_l + smile_r)
    t0 = time.perf_counter()

    def frames():
        for i in range(n):
            c = c0.clone()
            c.expr["jawOpen"] = float(cv_["jawOpen"][i])
            c.expr["mouthSmile_L"] = float(smile_l[i])
            c.expr["mouthSmile_R"] = float(smile_r[i])
            c.pose[:, 0] = c0.pose[:, 0] + math.radians(float(cv_["yaw"][i]))
            yield frame_canvas(pr.render(c).image, rng, noise)

    write_video(frames(), out, FPS)
    return cv_, time.perf_counter() - t0


def lost_search_cost(video: Path, repeats: int = 12) -> dict:
    """ms per lost frame: the search around the last box and the full-frame detection, on a face-less 640x480
    frame (the tracker's box from the video's first frame)."""
    from engine.drive.track import FaceTracker
    from engine.drive.video import iter_frames, probe_video
    from engine.perception.rnet import default_rnet

    frames = iter_frames(probe_video(video))
    f0 = next(frames)
    frames.close()
    t = FaceTracker(default_rnet())
    if t.observe(f0, 0, need_rnet=False) is None:
        return {}
    box = t.box
    blank = np.clip(np.random.default_rng(1).normal(110, 3, f0.shape), 0, 255).astype(np.uint8)
    out = {}
    for name, fn in (("local", lambda: t._search_near(blank, box)), ("full", lambda: t._detect(blank))):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1000.0)
        out[name] = float(np.median(ts))
    return out


def keyframe_write_cost(n_values=(300, 1800)) -> list[tuple]:
    """(n, s one set_keyframes call, s one add_keyframe per frame) on a preview session."""
    from engine.editing.session import Session

    rows = []
    for n in n_values:
        s = Session(generator=None)
        faces = []
        for i in range(n):
            c = s.coeffs.clone()
            c.expr["jawOpen"] = (i % 30) / 30
            faces.append((i / FPS, c))
        t0 = time.perf_counter()
        s.set_keyframes(faces)
        bulk = time.perf_counter() - t0
        s = Session(generator=None)
        t0 = time.perf_counter()
        for t, c in faces:
            s.set_coefficients(c, commit=False)
            s.add_keyframe(t)
        rows.append((n, bulk, time.perf_counter() - t0))
    return rows


def judge_identity(reference: Path, images: list[Path]) -> list[float]:
    judge = judge_path()
    r = subprocess.run([sys.executable, str(judge), "identity", str(reference)] + [str(p) for p in images],
                       capture_output=True, text=True)
    vals = []
    for line in r.stdout.splitlines():
        parts = line.rsplit("\t", 1)
        if len(parts) == 2:
            try:
                vals.append(float(parts[1]))
            except ValueError:  # "no face"
                vals.append(float("nan"))
    return vals, r.stdout


def speed_clip(frames: int, work: Path) -> tuple[Path, Path, int]:
    """The talking-heads clip scaled to 512 px, ``frames`` long (played back and forth when it is shorter)."""
    src = config.data_dir() / "talking-heads" / "talk_man_older_05.mp4"
    clip = work / f"clip512_{frames}.mp4"
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    own = []
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        h, w = fr.shape[:2]
        s = 512 / max(h, w)
        own.append(cv2.resize(fr, (int(round(w * s)) // 2 * 2, int(round(h * s)) // 2 * 2),
                              interpolation=cv2.INTER_AREA))
        if len(own) >= frames:
            break
    cap.release()
    loop = own + own[-2:0:-1]  # forth and back: no jump where it repeats
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), fps, (own[0].shape[1], own[0].shape[0]))
    for i in range(frames):
        out.write(loop[i % len(loop)])
    out.release()
    n_own = int(cv2.VideoCapture(str(src)).get(cv2.CAP_PROP_FRAME_COUNT))
    return src, clip, n_own


def speed(frames: int, workers_list, keep: Path | None, repeat: int = 1) -> int:
    """Per-frame cost of a drive, start-up taken out (see the module doc)."""
    import resource

    from engine import runtime
    from engine.drive import IDENTITY_SPAN, drive, pipeline, probe_video, track_video
    from engine.drive.targets import load_target
    from engine.render import fast_raster

    runtime.apply_threads(1)
    work = Path(tempfile.mkdtemp(prefix="drive_speed_")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    src, clip, n_own = speed_clip(frames, work)
    photo = config.data_dir() / "portraits" / "front_man_darkskin_01.jpg"
    fast_raster.warm_up()
    t0 = time.perf_counter()
    target = load_target(photo)
    t_target = time.perf_counter() - t0

    def kids_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)  # the render workers (joined) and the encoder
        return r.ru_utime + r.ru_stime

    results = {}  # (mode, workers) -> [(wall per frame, this process CPU, children CPU, tracking wall)]
    n = None
    for rep in range(repeat):
        for workers in workers_list:
            os.environ["DISCOFACE_RENDER_WORKERS"] = str(workers)
            modes = ("tracking, then rendering", "at once") if workers > 1 else ("tracking, then rendering",)
            if "at once" in modes and not pipeline._streaming(probe_video(clip)):
                if rep == 0:
                    print(f"  (a {frames}-frame clip is too short to render while tracking: the identity needs its "
                          f"first {IDENTITY_SPAN} faces and the smoothing a window after them; only tracking first)")
                modes = modes[:1]
            for mode in (modes if rep % 2 == 0 else modes[::-1]):  # A/B, interleaved
                k0, t0, c0 = kids_cpu(), time.perf_counter(), time.process_time()
                if mode == "at once":
                    res = drive(clip, target, work / "out.mp4", keep_audio=False)
                    t_track = res.seconds["tracking"]
                else:
                    track = track_video(clip)
                    t_track = time.perf_counter() - t0
                    res = drive(clip, target, work / "out.mp4", track=track, keep_audio=False)
                wall = time.perf_counter() - t0
                n = res.n_frames
                row = (1e3 * wall / n, 1e3 * (time.process_time() - c0) / n, 1e3 * (kids_cpu() - k0) / n,
                       1e3 * t_track / n)
                results.setdefault((mode, workers), []).append(row)
                print(f"  {workers} render worker{'s' if workers > 1 else ''}, {mode}: end to end {row[0]:.1f} "
                      f"ms/frame "
                      f"(tracking done at {row[3]:.1f} ms/frame); CPU per frame: this process {row[1]:.1f} ms, "
                      f"workers + encoder {row[2]:.1f} ms; {runtime.machine_note()}", flush=True)
    print(f"\ndrive speed: {photo.name} ({target.size[0]}x{target.size[1]}) driven by {src.name} at 512 px, {n} "
          f"frames ({'played back and forth: the source has ' if n > n_own else 'of '}{n_own}); target "
          f"(fit + renderer, start-up, not counted) {t_target:.1f} s; median of {repeat}; {runtime.machine_note()}")
    print("| measure | value | goal |\n|---|---|---|")
    for (mode, workers), rows in results.items():
        med = np.median(np.array(rows), 0)
        print(f"| `discoface drive`, end to end per frame, {workers} render worker{'s' if workers > 1 else ''}, "
              f"{mode} | {med[0]:.1f} ms ({1e3 / med[0]:.1f} frames/s; CPU {med[1]:.1f} here + {med[2]:.1f} "
              f"workers/encoder) | ≤ 50 ms |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", action="store_true", help="per-frame cost of a drive with 1 and N render workers")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="--speed: render worker counts")
    ap.add_argument("--repeat", type=int, default=1, help="--speed: rounds (A/B order alternates), median reported")
    ap.add_argument("--photos", nargs="*", default=["00002", "00004", "00008"],
                    help="ffhq-samples with an unoccluded mouth (00005 holds a microphone over it)")
    ap.add_argument("--target", default="00007")
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--noise", type=float, default=3.0, help="sensor noise std (0-255 levels) added to each frame")
    ap.add_argument("--baseline", choices=("fit", "zero"), default="fit",
                    help="fit: the photo's fitted coefficients + the curves (neutral = the photo itself); zero: jawOpen "
                         "and smile requested from 0")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the videos in")
    ap.add_argument("--quick", action="store_true", help="one photo (00002), 96 frames")
    args = ap.parse_args(argv)
    if args.speed:
        return speed(args.frames if args.frames != 160 else 300, args.workers, args.keep, args.repeat)
    if args.quick:
        args.photos, args.frames = args.photos[:1], min(args.frames, 96)
    torch.set_num_threads(1)
    from engine.drive import IDENTITY_FRAMES, drive, track_video

    work = Path(tempfile.mkdtemp(prefix="drive_bench_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    ms = []
    ms_parts = {"track": [], "fit": []}
    video_for_identity = None
    for name in args.photos:
        vid = work / f"loop_{name}.mp4"
        cv_, secs = make_video(photo_path(name), args.frames, vid, args.noise, baseline=args.baseline)
        video_for_identity = video_for_identity or vid
        tr = track_video(vid)
        ms += [a + b for a, b in zip(tr.ms_track, tr.ms_fit)]
        ms_parts["track"] += tr.ms_track
        ms_parts["fit"] += tr.ms_fit
        q = args.frames // 4
        jaw = tr.series("jawOpen")
        smile = 0.5 * (tr.series("mouthSmile_L") + tr.series("mouthSmile_R"))
        yaw = tr.series("yaw") - tr.series("yaw")[0]
        jaw_raw = tr.series("jawOpen", False)
        yaw_raw = tr.series("yaw", False)
        jaw_rel = jaw - jaw[5:q].mean() + cv_["jawOpen"][5:q].mean()
        smile_rel = smile - smile[5:q].mean() + cv_["smile"][5:q].mean()
        yaw_s_raw = tr.series("yaw", False) - tr.series("yaw", False)[0]

        def lag_frames(raw, smooth, seg):
            """Delay (frames) of the smoothed curve behind the raw one on a moving segment (cross-correlation)."""
            a, b = raw[seg] - raw[seg].mean(), smooth[seg] - smooth[seg].mean()
            lags = range(0, 6)
            return max(lags, key=lambda k: float(np.dot(a[:len(a) - k], b[k:])))
        still = cv_["still"].copy()
        still[:5] = False  # let the filter settle
        row = {
            "photo": name,
            "lost": tr.n_lost,
            "err_jaw": float(np.abs(jaw - cv_["jawOpen"]).mean()),
            "err_jaw_seg": float(np.abs(jaw - cv_["jawOpen"])[q:2 * q].mean()),
            "err_smile": float(np.abs(smile - cv_["smile"]).mean()),
            "err_smile_seg": float(np.abs(smile - cv_["smile"])[2 * q:3 * q].mean()),
            "err_yaw": float(np.abs(yaw - cv_["yaw"]).mean()),
            "err_yaw_seg": float(np.abs(yaw - cv_["yaw"])[3 * q:].mean()),
            "jit_yaw": float(np.std(tr.series("yaw")[still])),
            "jit_yaw_d": float(np.std(np.diff(tr.series("yaw")[still]))),
            "jit_yaw_raw": float(np.std(yaw_raw[still])),
            "jit_jaw": float(np.std(jaw[still])),
            "jit_jaw_d": float(np.std(np.diff(jaw[still]))),
            "jit_jaw_raw": float(np.std(jaw_raw[still])),
            "rel_jaw": float(np.abs(jaw_rel - cv_["jawOpen"]).mean()),
            "rel_smile": float(np.abs(smile_rel - cv_["smile"]).mean()),
            "lag_yaw": lag_frames(yaw_s_raw, yaw, slice(3 * q, None)),
            "lag_jaw": lag_frames(jaw_raw, jaw, slice(q, 2 * q)),
            "peak_jaw": float(jaw[q:2 * q].max()), "peak_smile": float(smile[2 * q:3 * q].max()),
            "yaw_range": (float(yaw[3 * q:].min()), float(yaw[3 * q:].max())),
        }
        rows.append(row)
        np.savez(work / f"loop_{name}_track.npz", raw=tr.raw, smoothed=tr.smoothed, found=tr.found,
                 **{k: v for k, v in cv_.items()})
    print(f"\nclosed loop ({args.frames} frames at {FPS:g} fps, 640x480, noise {args.noise:g}; baseline "
          f"{args.baseline}, plus jawOpen 0..0.6, smile 0..0.7, yaw +-15 deg)")
    print("| photo | lost | jawOpen MAE (all / its segment) | smile MAE (all / seg) | yaw MAE deg (all / seg) | "
          "peak jaw / smile read | yaw read range |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['lost']} | {r['err_jaw']:.3f} / {r['err_jaw_seg']:.3f} | {r['err_smile']:.3f} / "
              f"{r['err_smile_seg']:.3f} | {r['err_yaw']:.2f} / {r['err_yaw_seg']:.2f} | {r['peak_jaw']:.2f} / "
              f"{r['peak_smile']:.2f} | {r['yaw_range'][0]:.1f} .. {r['yaw_range'][1]:.1f} |")
    print("\nrelative to the still segment's reading (what --relative-expression transfers), and smoothing lag")
    print("| photo | jawOpen MAE rel | smile MAE rel | lag yaw (frames) | lag jawOpen (frames) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['rel_jaw']:.3f} | {r['rel_smile']:.3f} | {r['lag_yaw']} | {r['lag_jaw']} |")
    print("\njitter on the still segment (std; smoothed, frame-to-frame difference of smoothed, raw)")
    print("| photo | yaw deg | yaw diff | yaw raw | jawOpen | jawOpen diff | jawOpen raw |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['jit_yaw']:.3f} | {r['jit_yaw_d']:.3f} | {r['jit_yaw_raw']:.3f} | {r['jit_jaw']:.4f} | "
              f"{r['jit_jaw_d']:.4f} | {r['jit_jaw_raw']:.4f} |")
    ms = np.asarray(ms)
    print(f"\ntracking + fit per frame at 640x480, 1 thread: median {np.median(ms):.1f} ms, p95 "
          f"{np.percentile(ms, 95):.1f} ms, mean {ms.mean():.1f} ms ({len(ms)} frames; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  of which tracking (landmarks on the tracked box, alignment, loss check; R-Net on {IDENTITY_FRAMES} identity "
          f"frames and re-detections, dlib detection only on loss): median {np.median(ms_parts['track']):.1f} ms; "
          f"expression + pose solve: median {np.median(ms_parts['fit']):.1f} ms. (Decoding runs in the ffmpeg "
          f"process, not counted.)")

    lc = lost_search_cost(video_for_identity)
    if lc:
        print(f"looking for a lost face at 640x480 (face-less frame, median): around the last box {lc['local']:.1f} ms, "
              f"full frame {lc['full']:.1f} ms (the full frame only on the first lost frame and every 10th after)")
    for n, bulk, loop in keyframe_write_cost():
        print(f"writing {n} keyframes into a session: set_keyframes {bulk * 1000:.0f} ms (one undo step), "
              f"add_keyframe per frame {loop * 1000:.0f} ms ({n} undo steps)")

    # identity of a driven photo
    target = photo_path(args.target)
    out = work / f"driven_{args.target}.mp4"
    t0 = time.perf_counter()
    res = drive(video_for_identity, target, out, side_by_side=True, track_path=work / "track.json")
    secs = time.perf_counter() - t0
    import imageio_ffmpeg

    from engine.drive.video import iter_frames, probe_video
    from engine.io.files import save_image

    frames_dir = work / "frames"
    frames_dir.mkdir(exist_ok=True)
    paths = []
    for i, f in enumerate(iter_frames(probe_video(out))):
        if i % 10 == 0:
            p = frames_dir / f"f{i:04d}.png"
            save_image(p, f)
            paths.append(p)
    ref = frames_dir / "target.png"
    save_image(ref, cv2.resize(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(target).convert("RGB")),
                               res.size, interpolation=cv2.INTER_AREA))
    d, text = judge_identity(ref, paths)
    print(f"\nidentity: drove {args.target} from {video_for_identity.name}: {res.summary()}; {secs:.1f} s "
          f"({res.seconds})")
    d = [v for v in d if np.isfinite(v)]
    if d:
        print(f"dlib distance target photo <-> every 10th driven frame: median {np.median(d):.3f}, max {max(d):.3f} "
              f"({len(d)} frames; judge.py identity)")
    else:
        print("judge output:\n" + text)
    print(f"\nfiles in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
