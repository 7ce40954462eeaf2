"""Photo mode latency: slider → frame for ``PhotoRenderer.render`` (issue 13), wall and CPU time, p50/p95.

    python bench/photo_latency.py [--reps 40] [--threads 1 2] [--rounds 3]   (--rounds: 1 2 1 2 1 2, medians, ratios)
                                  [--interleave]   (each frame at 1 and 2 threads in turn: noise falls on both alike)
                                  [--min-of 4] [--only 1MP drag]           (each frame's fastest of 4; some cases)
    python bench/photo_latency.py --steps [--only sharp]                   (CPU ms per step of the frames)
    python bench/photo_latency.py --animate [1 2]   (the animated turn's frames, 1 and 2 render worker processes; then
                                                    the real command, encoding in, start-up out)

Cases (issue 24's targets, p95, one thread): a 512 px photo dragged (``max_side=512``, as the editor's drag preview
asks: ≤ 15 ms) and its sharp frame (``max_side=None``, no target), a 1024 px photo dragged (``max_side=512``, ≤ 50 ms)
and its sharp frame (1 MP, ≤ 40 ms), a 2048 px photo's sharp frame (the frame at the end of a drag, ≤ 100 ms). Drag
previews run on the renderer's coarser preview grid (made during the warm-up call).
Photos: the bundled astronaut (512 px) and ffhq-samples 00000/00002 upscaled (cubic) to 1024/2048 px; each is fitted
once. The edit is a yaw drag from -10° to +10° with a smile that grows along the way (every frame differs).
CPU time (``time.process_time``, all threads of this process) is printed next to wall time: on a machine loaded by
other jobs, wall time includes waiting for a core.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import engine  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import config, runtime  # noqa: E402
from engine.perception.align import load_image  # noqa: E402
from engine.photo import PhotoRenderer  # noqa: E402
from engine.photo.fit import fit_photo  # noqa: E402


def cases():
    ff = config.ffhq_samples_dir() / "images"
    up = lambda img, s: cv2.resize(img, (s, s), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    astronaut = load_image(config.ASSETS_DIR / "astronaut.jpg")
    mp1 = up(load_image(ff / "00000.png"), 1024)
    return [("512 px photo, drag (max_side 512)", astronaut, 512, 15.0),
            ("512 px photo, sharp frame", astronaut, None, None),
            ("1024 px photo, drag (max_side 512)", mp1, 512, 50.0),
            ("1024 px photo (1 MP), sharp frame", mp1, None, 40.0),
            ("2048 px photo, sharp frame", up(load_image(ff / "00002.png"), 2048), None, 100.0)]


def drag(c0, n: int):
    out = []
    y0 = math.degrees(float(c0.pose[0, 0]))
    for i in range(n):
        c = c0.clone()
        c.set_pose_degrees(yaw=y0 - 10 + 20 * i / max(1, n - 1))
        c.expr["mouthSmile_L"] = c.expr["mouthSmile_R"] = 0.6 * i / max(1, n - 1)
        out.append(c)
    return out


def measure(renderer: PhotoRenderer, coeffs, max_side, min_of: int = 1):
    """wall and CPU p50 / p95 (ms) over the frames; ``min_of`` > 1: each frame's time is its fastest of that many
    renders (the passes interleaved): on a loaded machine, the frame's own cost with less of the other jobs in it."""
    renderer.render(coeffs[-1], max_side=max_side)  # warm-up
    wall, cpu = [math.inf] * len(coeffs), [math.inf] * len(coeffs)
    for _ in range(max(1, min_of)):
        for i, c in enumerate(coeffs):
            t0, p0 = time.perf_counter(), time.process_time()
            renderer.render(c, max_side=max_side)
            wall[i] = min(wall[i], time.perf_counter() - t0)
            cpu[i] = min(cpu[i], time.process_time() - p0)
    pct = lambda a, q: 1e3 * float(np.percentile(a, q))  # noqa: E731
    return pct(wall, 50), pct(wall, 95), pct(cpu, 50), pct(cpu, 95)


def _new_frame(renderer: PhotoRenderer) -> None:
    """Forget the renderer's (and its preview renderer's) vertices of the last coefficients, as a new drag frame
    finds them: rendering the same frame at another thread count right after would otherwise reuse them."""
    for r in (renderer, getattr(renderer, "_preview", None)):
        if r is not None:
            r.proj._verts_key = None


def measure_interleaved(renderer: PhotoRenderer, coeffs, max_side, threads_list, min_of: int = 1) -> dict:
    """:func:`measure` for each thread count in ``threads_list``, frame by frame in turn (each frame rendered at
    every count right after the other, the order alternating from frame to frame), so that the host's noise falls
    on all counts alike: {threads: (wall p50, p95, CPU p50, p95, per-frame wall times)}."""
    def at(t):
        runtime.apply_threads(t)
        cv2.setNumThreads(t)

    for t in threads_list:  # warm-up
        at(t)
        renderer.render(coeffs[-1], max_side=max_side)
    wall = {t: [math.inf] * len(coeffs) for t in threads_list}
    cpu = {t: [math.inf] * len(coeffs) for t in threads_list}
    for rep in range(max(1, min_of)):
        for i, c in enumerate(coeffs):
            for t in (threads_list if (i + rep) % 2 == 0 else threads_list[::-1]):
                at(t)
                _new_frame(renderer)
                t0, p0 = time.perf_counter(), time.process_time()
                renderer.render(c, max_side=max_side)
                wall[t][i] = min(wall[t][i], time.perf_counter() - t0)
                cpu[t][i] = min(cpu[t][i], time.process_time() - p0)
    pct = lambda a, q: 1e3 * float(np.percentile(a, q))  # noqa: E731
    return {t: (pct(wall[t], 50), pct(wall[t], 95), pct(cpu[t], 50), pct(cpu[t], 95), wall[t]) for t in threads_list}


STEPS = (("engine.photo.renderer", "PhotoRenderer", ("flow_field", "_compose", "_compose_layers", "_compose_fill",
                                                     "_model_skin", "_mirror", "_interpolate")),
         ("engine.photo.flow", None, ("rasterize_target", "unstretch_rows", "pull_push_near")),
         ("engine.photo.layers", "GridLayers", ("splat",)))


def steps(renderer: PhotoRenderer, coeffs, max_side, min_of: int = 3) -> str:
    """CPU ms per step of a frame (each frame's fastest of ``min_of``; median / p95 over the frames); nested steps
    count in their callers too."""
    import collections
    import importlib

    acc: dict = collections.defaultdict(float)
    undo = []
    for mod_name, cls, names in STEPS:
        owner = importlib.import_module(mod_name)
        owner = getattr(owner, cls) if cls else owner
        for n in names:
            f = getattr(owner, n, None)
            if f is None:
                continue

            def timed(*a, _f=f, _n=n, **k):
                p0 = time.process_time()
                try:
                    return _f(*a, **k)
                finally:
                    acc[_n] += time.process_time() - p0

            setattr(owner, n, timed)
            undo.append((owner, n, f))
    try:
        renderer.render(coeffs[-1], max_side=max_side)
        best: dict = {}
        for _ in range(max(1, min_of)):
            for i, c in enumerate(coeffs):
                acc.clear()
                p0 = time.process_time()
                renderer.render(c, max_side=max_side)
                acc["frame"] = time.process_time() - p0
                for k, v in acc.items():
                    best[(k, i)] = min(best.get((k, i), math.inf), v)
    finally:
        for owner, n, f in undo:
            setattr(owner, n, f)
    names = ["frame"] + [n for _, _, ns in STEPS for n in ns if (n, 0) in best]
    return ", ".join(f"{n} {1e3 * np.median([best[(n, i)] for i in range(len(coeffs))]):.1f} / "
                     f"{1e3 * np.percentile([best[(n, i)] for i in range(len(coeffs))], 95):.1f}" for n in names)


def animate(workers_list, n: int = 49, size: int = 512) -> int:
    """``discoface edit astronaut.jpg --animate turn --size 512 -o turn.mp4``'s frames without the encoder: the
    session's keyframe frames (Session.iter_frames) with 1 and N render worker processes, per frame."""
    import resource

    from engine.cli.common import add_keyframes, parse_keyframes
    from engine.editing.session import Session

    runtime.apply_threads(1)
    sess = Session()
    sess.open_photo(str(config.ASSETS_DIR / "astronaut.jpg"), how="photo")
    add_keyframes(sess, parse_keyframes([], "turn", sess.model.exp_names, False))
    list(sess.iter_frames(2, size))  # warm
    print(f"animated turn of the astronaut photo, {n} frames at {size} px (no encoding); {runtime.machine_note()}")
    for w in workers_list:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0, c0 = time.perf_counter(), time.process_time()
        frames = list(sess.iter_frames(n, size, workers=w))
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        kids = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        print(f"  {w} worker{'s' if w > 1 else ''}: {1e3 * wall / n:.1f} ms/frame wall, CPU per frame: this process "
              f"{1e3 * (time.process_time() - c0) / n:.1f} ms, workers {1e3 * kids / n:.1f} ms ({len(frames)} frames "
              f"of {frames[0].shape[1]}x{frames[0].shape[0]}); {runtime.machine_note()}", flush=True)
    cli_per_frame(size)
    return 0


def cli_per_frame(size: int = 512, repeat: int = 3) -> None:
    """The real command, encoding included, start-up taken out: fresh processes (photo cache warm) of ``discoface
    edit astronaut.jpg --animate turn --size 512 -o turn.mp4`` at two frame rates (the same 2 s turn in 25 and in 97
    frames), interleaved; per frame = the difference over the frames it adds, wall and CPU (the process and its
    children: render workers, encoder). Everything paid once (imports, models, the photo cache, the compiled
    rasterizer, the workers' fork) cancels out."""
    import os
    import resource
    import statistics
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="animate_"))
    env = {**os.environ, "PYTHONPATH": str(root), "DISCOFACE_PHOTO_CACHE": str(work / "cache")}
    cli = "import sys; from engine.cli import main; sys.exit(main())"
    photo = str(config.ASSETS_DIR / "astronaut.jpg")

    def run(fps: int) -> tuple[float, float, int]:
        from engine.drive.video import probe_video

        out = work / f"turn{fps}.mp4"
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", cli, "edit", photo, "--size", str(size), "--animate", "turn",
                        "--fps", str(fps), "-o", str(out)],
                       cwd=root, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.perf_counter() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                probe_video(out).n_frames)

    run(12)  # fills the photo cache
    few, many = [], []
    for _ in range(repeat):
        few.append(run(12))
        many.append(run(48))
    med = lambda a, j: statistics.median(r[j] for r in a)  # noqa: E731
    dn = many[0][2] - few[0][2]
    wall, cpu = (med(many, 0) - med(few, 0)) / dn, (med(many, 1) - med(few, 1)) / dn
    print(f"  the command (encoding included, start-up taken out: {many[0][2]} frames {med(many, 0):.2f} s minus "
          f"{few[0][2]} frames {med(few, 0):.2f} s, median of {repeat}): {1e3 * wall:.1f} ms/frame wall, CPU "
          f"{1e3 * cpu:.1f} ms/frame (all processes); {runtime.machine_note()}")
    print(f"\n| measure | value | goal |\n|---|---|---|\n| `discoface edit --animate turn --size {size}`, per frame "
          f"(start-up out) | {1e3 * wall:.1f} ms wall (CPU {1e3 * cpu:.1f} ms) | ≤ 20 ms |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the thread counts interleaved (1 2 1 2 ...) this many times; medians and ratios")
    ap.add_argument("--min-of", type=int, default=1, metavar="K",
                    help="each frame's time: its fastest of K renders (a loaded machine's A/B)")
    ap.add_argument("--interleave", action="store_true",
                    help="each frame rendered at every thread count in turn (the host's noise falls on all alike); "
                         "per round: each count's p50 / p95 and its wall p95 and per-frame median against the first")
    ap.add_argument("--only", nargs="+", metavar="WORD", help="only the cases whose name holds one of these words")
    ap.add_argument("--steps", action="store_true",
                    help="instead: CPU ms per step of each case's frames (one thread, fastest of --min-of, default 3)")
    ap.add_argument("--animate", type=int, nargs="*", metavar="WORKERS",
                    help="instead: the animated turn's frames at 512 px with these render worker counts (default 1 2)")
    a = ap.parse_args(argv)
    if a.animate is not None:
        return animate(a.animate or [1, 2])
    torch.set_num_threads(1)
    renderers = []
    fits: dict[int, tuple] = {}
    for name, img, max_side, target in cases():
        if a.only and not any(w in name for w in a.only):
            continue
        t0 = time.perf_counter()
        if id(img) not in fits:
            f = fit_photo(img)
            fits[id(img)] = (f, PhotoRenderer(f))
        fit, r = fits[id(img)]
        print(f"{name}: fit + renderer {time.perf_counter() - t0:.1f} s", flush=True)
        renderers.append((name, r, drag(fit.coeffs, a.reps), max_side, target))
    if a.steps:
        runtime.apply_threads(1)
        cv2.setNumThreads(1)
        for name, r, coeffs, max_side, _ in renderers:
            print(f"{name}: CPU ms per step, median / p95 of each frame's fastest of {max(a.min_of, 3)}: "
                  f"{steps(r, coeffs, max_side, max(a.min_of, 3))}; {runtime.machine_note()}", flush=True)
        return 0
    if a.min_of > 1:
        print(f"(each frame's time: its fastest of {a.min_of} renders)")
    print(f"{'case':36s} {'threads':>7s} {'wall p50':>9s} {'wall p95':>9s} {'cpu p50':>8s} {'cpu p95':>8s}  target p95")
    got: dict = {}
    if a.interleave:
        return interleaved(renderers, a)
    for rnd in range(a.rounds):
        for threads in a.threads:
            runtime.apply_threads(threads)
            cv2.setNumThreads(threads)
            # (the renderer splits a large frame's head-layer bands over the threads that have an idle core now)
            print(f"-- {'round %d, ' % (rnd + 1) if a.rounds > 1 else ''}{runtime.machine_note()}; a large frame's "
                  f"bands on {runtime.usable_threads(threads)} thread(s) now", flush=True)
            for name, r, coeffs, max_side, target in renderers:
                w50, w95, c50, c95 = measure(r, coeffs, max_side, a.min_of)
                got.setdefault((name, threads), []).append((w50, w95, c50, c95))
                goal = f"{target:.0f} ms" if target else "-"
                print(f"{name:36s} {threads:7d} {w50:8.1f}ms {w95:8.1f}ms {c50:7.1f}ms {c95:7.1f}ms  {goal}", flush=True)
    if a.rounds > 1:
        import statistics

        t0 = a.threads[0]
        print(f"\nmedians over {a.rounds} interleaved rounds (wall p50 / p95, CPU p95), and each thread count's wall p95 "
              f"against {t0} thread(s) in the same round (median / worst); {runtime.machine_note()}")
        for name, *_ in renderers:
            parts = []
            for threads in a.threads:
                v = got[(name, threads)]
                med = [statistics.median(x[i] for x in v) for i in (0, 1, 3)]
                part = f"{threads}T {med[0]:.1f} / {med[1]:.1f} ({med[2]:.1f})"
                if threads != t0:
                    ratios = [x[1] / y[1] for x, y in zip(v, got[(name, t0)])]
                    part += f" x{statistics.median(ratios):.2f} / worst x{max(ratios):.2f}"
                parts.append(part)
            print(f"  {name:36s} " + "; ".join(parts), flush=True)
    return 0


def interleaved(renderers, a) -> int:
    """``--interleave``: every case's frames at each thread count in turn, frame by frame (see
    :func:`measure_interleaved`); per round and as medians over the rounds, each count's wall p95 and per-frame
    wall against the first count's."""
    import statistics

    t0 = a.threads[0]
    got: dict = {}
    for rnd in range(a.rounds):
        print(f"-- round {rnd + 1}, frames interleaved over {a.threads} threads; {runtime.machine_note(t0)}; a large "
              f"frame's bands on {runtime.usable_threads(max(a.threads))} thread(s) now", flush=True)
        for name, r, coeffs, max_side, target in renderers:
            res = measure_interleaved(r, coeffs, max_side, a.threads, a.min_of)
            for threads in a.threads:
                w50, w95, c50, c95, per = res[threads]
                ratio = ""
                if threads != t0:
                    pair = statistics.median(x / y for x, y in zip(per, res[t0][4]))
                    ratio = f"  p95 x{w95 / res[t0][1]:.2f}, per frame x{pair:.2f} vs {t0}T"
                    got.setdefault(name, []).append((w95 / res[t0][1], pair))
                goal = f"{target:.0f} ms" if target else "-"
                print(f"{name:36s} {threads:7d} {w50:8.1f}ms {w95:8.1f}ms {c50:7.1f}ms {c95:7.1f}ms  {goal}{ratio}",
                      flush=True)
    if len(a.threads) > 1:
        print(f"\n{a.threads[-1]} vs {t0} thread(s), frames interleaved, over {a.rounds} round(s): wall p95 ratio "
              f"median / worst, per-frame ratio median; {runtime.machine_note(t0)}")
        for name, *_ in renderers:
            v = got.get(name, [])
            if v:
                print(f"  {name:36s} p95 x{statistics.median(x for x, _ in v):.2f} / worst x{max(x for x, _ in v):.2f}; "
                      f"per frame x{statistics.median(y for _, y in v):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
