"""Does the engine hold Python's lock long enough to freeze a GUI thread? The editor's heavy steps, without Qt.

    python bench/gil_probe.py [--photo P] [--side 1024] [--steps open drag export]

Runs each step in a worker thread (as the editor's jobs and render thread do) while the main thread ticks every
5 ms (a sleep, then Python code, as a GUI thread's timer callback needs the lock); prints, per step, the largest
tick gap and the gaps over 40 ms, with where the worker was when a late tick came back (the code that held the
lock, or ran while the machine's cores were taken). Compare with ``bench/gui_heartbeat.py``: gaps the heartbeat
sees and this probe does not are the window's own (painting, the X server), not the engine's.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def probe(name: str, fn) -> dict:
    """Run ``fn`` in a thread; tick the main thread every 5 ms until it ends."""
    done = threading.Event()
    err = []

    def run():
        try:
            fn()
        except Exception as exc:  # reported, not raised from the thread
            err.append(exc)
        finally:
            done.set()
    th = threading.Thread(target=run, name=f"probe-{name}")
    t_start = time.perf_counter()
    th.start()
    gaps, where = [], collections.Counter()
    while not done.is_set():
        t0 = time.perf_counter()
        time.sleep(0.005)
        g = 1000 * (time.perf_counter() - t0)
        gaps.append(g)
        if g > 40:
            frame = sys._current_frames().get(th.ident)
            if frame is not None:
                st = traceback.extract_stack(frame)
                mine = [f for f in st if str(REPO) in f.filename]
                at = f"{Path(mine[-1].filename).name}:{mine[-1].lineno} {mine[-1].name}" if mine else ""
                where[f"{at} | {Path(st[-1].filename).name}:{st[-1].lineno} {st[-1].name}"] += 1
    th.join()
    if err:
        raise err[0]
    return {"s": time.perf_counter() - t_start, "max_gap_ms": max(gaps or [0.0]),
            "gaps_over_40": sum(g > 40 for g in gaps), "where": where.most_common(5)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", help="photo to open (default: bench/gui_heartbeat.py's)")
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--steps", nargs="+", default=["open", "drag", "export"], choices=["open", "drag", "export"])
    ap.add_argument("--out", default=str(REPO / "out" / "gil_probe"))
    args = ap.parse_args(argv)

    from engine.runtime import setup_entry_point

    setup_entry_point("app")
    import PySide6.QtCore  # noqa: F401  (as in the editor: frame pools render in-process, one worker)

    from app.worker import load_before_showing, warm_up_engine
    from bench.gui_heartbeat import prepare_photo
    from engine.editing.session import Session
    from engine.face.model import default_model
    from engine.io.export import export_sequence

    class PhotoArgs:
        photo, side, out = args.photo, args.side, args.out
    photo = prepare_photo(PhotoArgs)
    load_before_showing()
    model = default_model()
    warm_up_engine(model)
    sess = Session(model=model, generator=None)
    res = {}

    def open_():
        sess.open_photo(str(photo))
        sess.render_snapshot(sess.state)  # the first full frame, as the window asks for it
    if "open" in args.steps or sess.photo is None:
        res["open"] = probe("open", open_)

    def drag():
        for i in range(1, 41):
            snap = sess.set_controls({"yaw": 15.0 * i / 40}, relative=True, commit=False)
            sess.render_snapshot(snap, None, final=False)
        sess.commit()
    if "drag" in args.steps:
        res["drag"] = probe("drag", drag)

    def export():
        sess.add_keyframe(0.0)
        sess.set_controls({"yaw": 12, "smile": 0.6}, relative=True)
        sess.add_keyframe(2.0)
        export_sequence(sess, Path(args.out) / "probe.mp4", fmt="mp4", fps=24, n_frames=12, size=max(sess.photo.size))
    if "export" in args.steps:
        res["export"] = probe("export", export)

    print(f"photo {photo.name}; load average {os.getloadavg()[0]:.2f} (2 shared cores)")
    print("| step (worker thread) | s | largest main-thread tick gap | gaps > 40 ms |")
    print("|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['s']:.1f} | {r['max_gap_ms']:.0f} ms | {r['gaps_over_40']} |")
    for k, r in res.items():
        for at, n in r["where"]:
            print(f"  {k}: late x{n} at {at}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
