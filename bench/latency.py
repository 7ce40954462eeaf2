"""Editor latency: slider → frame, p50/p95, preview (3DMM) and generator mode, and where the time goes.

    python bench/latency.py [--sizes 64 128] [--n 40] [--threads 1] [--no-qt] [--photo [PHOTO ...]]

Three measurements per size and mode:
  * engine   — an edit (pose: geometry cached; expression: vertices + normals recomputed) + ``Session.render``
               (what the render worker does per frame);
  * qt       — the whole editor (offscreen Qt): slider value change → frame shown on screen, one change at a time,
               through the coalescing render worker thread;
  * stages   — a per-stage split of one preview render (vertices, pose+projection, normals, shading, rasterize,
               interpolate, to uint8).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def pct(xs):
    a = np.asarray(xs)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def engine_latency(session, size: int, n: int, preview: bool, what: str):
    times = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        if what == "pose":  # geometry unchanged: the cached vertices/normals are reused
            session.set_pose_degrees(yaw=-30 + 60 * (i % 13) / 12, commit=False)
        else:  # the shape changes: vertices and normals are recomputed
            session.set_expression("jawOpen", (i % 7) / 7, commit=False)
        session.render(size, preview=preview)
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - t0) * 1000)
    session.commit()
    return times


def stage_split(session, size: int, n: int):
    """Where a preview frame's time goes, stage by stage (the public render stages FrameRenderer is built on)."""
    from engine.io.files import to_uint8_image
    from engine.render import interpolate, rasterize, rotation_matrix, shade

    m, cam_model, c = session.model, session.frames.camera, session.coeffs
    acc = {k: 0.0 for k in ("blendshapes", "pose+project", "normals", "albedo+shading", "rasterize", "interpolate",
                            "to uint8")}
    with torch.no_grad():
        for _ in range(n):
            t = time.perf_counter()

            def lap(key):
                nonlocal t
                now = time.perf_counter()
                acc[key] += (now - t) * 1000
                t = now
            verts = m.vertices(c)
            lap("blendshapes")  # (cached by the frame renderer when only pose / light change)
            cam = cam_model.to_camera(verts, c.pose)
            screen = cam_model.project(cam, size)
            lap("pose+project")
            normals = m.vertex_normals(verts) @ rotation_matrix(c.pose).transpose(1, 2)
            lap("normals")  # (cached with the blendshapes)
            colors = shade(m.albedo(c), normals, c.light)
            lap("albedo+shading")
            frags = rasterize(screen, cam[..., 2], m.triangles, size)
            lap("rasterize")
            img = interpolate(colors, frags, m.triangles, 0.35).clamp(0, 1)
            lap("interpolate")
            to_uint8_image(img[0])
            lap("to uint8")
    return {k: v / n for k, v in acc.items()}


def photo_latency(session, n: int):
    """Photo mode: a yaw edit + frame, as a drag preview (final=False) and as the full frame (final=True)."""
    y0 = session.control_value("yaw")
    out = {}
    for final in (False, True):
        times = []
        for i in range(n + 2):
            snap = session.set_control("yaw", y0 + 1 + (i % 9) * 2, commit=False)
            t0 = time.perf_counter()
            session.render_snapshot(snap, final=final)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
        out["full" if final else "drag"] = times
    session.commit()
    return out


def qt_latency(session, size: int, n: int, centre: float = 0.0):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from app.window import MainWindow

    w = MainWindow(session, display_size=size, drag_size=size or 128)
    w.show()

    def wait_settled(timeout=30.0):
        t0 = time.perf_counter()
        while not (w.settled and w.last_frame is not None):
            app.processEvents()
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("no frame")
            time.sleep(0.0005)
    wait_settled()
    times = []
    slider = w.sliders["yaw"]
    for i in range(n + 3):
        v = centre - 15 + 30 * ((i * 7) % 13) / 12
        if abs(v - slider.value()) < 1e-6:
            v += 1
        t0 = time.perf_counter()
        slider.set_user_value(v)
        wait_settled()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    # a fast drag: 100 changes without waiting; how many frames are rendered
    before = w.worker.render_count
    t0 = time.perf_counter()
    slider.slider.setSliderDown(True)
    for v in np.linspace(centre - 20, centre + 20, 100):
        slider.set_user_value(float(v))
        app.processEvents()
    slider.slider.setSliderDown(False)
    wait_settled()
    drag = (w.worker.render_count - before, (time.perf_counter() - t0) * 1000)
    w.close()
    return times, drag


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-qt", action="store_true")
    ap.add_argument("--photo", nargs="*", default=None, metavar="PHOTO",
                    help="also time photo mode on these photos (no value: the bundled assets/astronaut.jpg)")
    ap.add_argument("--random-generator", action="store_true",
                    help="also time generator mode with randomly initialised weights of the default architecture "
                         "at each size (the cost, not the quality: e.g. 128 px when the shipped weights are 64 px)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from engine.editing.session import Session

    session = Session()
    modes = [("preview", True)] + ([("generator", False)] if session.generator is not None else [])
    random_gen = args.random_generator
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; "
          f"generator: {'yes' if session.generator is not None else 'no weights (preview mode only)'}")
    print(f"{'mode':<10} {'size':>5} {'what':<8} {'p50 ms':>8} {'p95 ms':>8}  note")
    splits = {}
    for mode, preview in modes:
        for size in args.sizes:
            for what in ("pose", "expression"):
                p50, p95 = pct(engine_latency(session, size, args.n, preview, what))
                print(f"{mode:<10} {size:>5} {'engine':<8} {p50:8.1f} {p95:8.1f}  {what} edit + render")
            if preview:
                splits[size] = stage_split(session, size, args.n)
            if not args.no_qt and preview:
                times, (renders, drag_ms) = qt_latency(Session(), size, args.n)
                p50, p95 = pct(times)
                print(f"{mode:<10} {size:>5} {'qt':<8} {p50:8.1f} {p95:8.1f}  slider -> frame shown; fast drag of "
                      f"100 changes: {renders} renders, {drag_ms:.0f} ms to the final frame")
    if random_gen:
        import engine.generator.networks as gm

        # the shipped generator's widths carried to each size (else the default 256-wide architecture)
        base = session.generator.G.cfg["channels"][4] if session.generator is not None else 256
        w_dim = session.generator.G.cfg["w_dim"] if session.generator is not None else 256
        for size in args.sizes:
            torch.manual_seed(0)
            m = session.model
            gen = gm.FaceGenerator(gm.FactorDecoders.prior(m.albedo_dim, m.exp_names),
                                   gm.Generator(resolution=size, albedo_dim=m.albedo_dim, w_dim=w_dim,
                                                channels=gm.default_channels(size, base))).eval()
            gs = Session(model=m, generator=gen)
            for what in ("pose", "expression"):
                p50, p95 = pct(engine_latency(gs, size, args.n, False, what))
                print(f"{'gen(rand)':<10} {size:>5} {'engine':<8} {p50:8.1f} {p95:8.1f}  {what} edit + render "
                      f"(random weights, widths {base} → 16)")
    if args.photo is not None:
        photos = args.photo or [str(Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg")]
        for path in photos:
            ps = Session(model=session.model, generator=None)
            t0 = time.perf_counter()
            ps.open_photo(path)
            open_s = time.perf_counter() - t0
            w, h = ps.photo.size
            for kind, times in photo_latency(ps, args.n).items():
                p50, p95 = pct(times)
                print(f"{'photo':<10} {max(w, h):>5} {'engine':<8} {p50:8.1f} {p95:8.1f}  yaw edit + {kind} frame "
                      f"({w}x{h} photo, opened in {open_s:.1f} s)")
            if not args.no_qt:
                ps.history.commit()
                times, (renders, drag_ms) = qt_latency(ps, None, args.n, centre=ps.control_value("yaw"))
                p50, p95 = pct(times)
                print(f"{'photo':<10} {max(w, h):>5} {'qt':<8} {p50:8.1f} {p95:8.1f}  slider -> full frame shown; "
                      f"fast drag of 100 changes: {renders} renders, {drag_ms:.0f} ms to the final frame")
    for size, sp in splits.items():
        total = sum(sp.values())
        print(f"\n# where the time goes, preview render at {size} px (mean of {args.n}, total {total:.1f} ms)")
        for k, v in sp.items():
            print(f"  {k:<20} {v:7.2f} ms  {100 * v / total:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
