"""Benchmark: the CLI's fit / embed / export wall times with and without a concurrent load, with torch's default
thread count (one per core) and with the thread policy of ``engine/runtime.py``.

    python bench/load.py [--load 1] [--jobs fit embed export] [--repeat 1]

Each cell runs the real command in a fresh process (``python main.py fit|embed|export …``, what a user types),
so the times include start-up (imports, model load). "load" = ``--load`` busy-loop processes (``while True: pass``)
running alongside, as a browser or a second job would. "torch default" pins ``DISCOFACE_THREADS`` to the core count
(what torch does on its own); "policy" leaves the choice to ``engine.runtime.threads_for("batch")``, which counts
the cores the load average says are free. Prints a Markdown table (seconds, median of ``--repeat``).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import runtime  # noqa: E402
from engine.config import ffhq_samples_dir  # noqa: E402


def _spin() -> None:
    while True:
        pass


def _photo() -> Path:
    p = ffhq_samples_dir() / "images" / "00000.png"
    if not p.exists():
        raise SystemExit(f"error: benchmark photo not found: {p} (set DISCOFACE_DATA)")
    return p


def _session(tmp: Path) -> Path:
    """A 2-second yaw turn (49 frames at 24 fps), 3DMM preview session."""
    from engine.editing.session import Session

    s = Session(generator=None)
    s.set_pose_degrees(yaw=-20)
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=20)
    s.add_keyframe(2.0)
    path = tmp / "turn.json"
    s.save(path)
    return path


def _commands(tmp: Path) -> dict[str, list[str]]:
    photo = str(_photo())
    return {
        "fit": ["fit", photo, "-o", str(tmp / "fit.json")],
        "embed": ["embed", photo, "-o", str(tmp / "me.json")],
        "export": ["export", str(_session(tmp)), "--to", str(tmp / "clip.gif"), "--size", "128"],
    }


def _run(argv: list[str], threads: int | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.pop(runtime.ENV, None)
    if threads is not None:
        env[runtime.ENV] = str(threads)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "main.py"), *argv], cwd=REPO, env=env, capture_output=True,
                       text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv[:2])} failed: {r.stderr.strip().splitlines()[-1:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=1, help="busy-loop processes for the loaded rows")
    ap.add_argument("--jobs", nargs="*", default=["fit", "embed", "export"], choices=["fit", "embed", "export"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cores = runtime.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory(prefix="discoface-bench-") as d:
        cmds = _commands(Path(d))
        for loaded in (False, True):
            procs = []
            if loaded:
                procs = [mp.Process(target=_spin, daemon=True) for _ in range(args.load)]
                for p in procs:
                    p.start()
                time.sleep(2.0)
            try:
                for job in args.jobs:
                    cells = {}
                    for label, threads in (("torch default", cores), ("policy", None)):
                        times = [_run(cmds[job], threads) for _ in range(args.repeat)]
                        cells[label] = statistics.median(times)
                    policy_n = runtime.threads_for("batch")
                    rows.append((job, f"{args.load} busy" if loaded else "none", cells["torch default"],
                                 cells["policy"], policy_n, os.getloadavg()[0]))
                    print(f"  {rows[-1]}", file=sys.stderr, flush=True)
            finally:
                for p in procs:
                    p.terminate()
                    p.join()
    print(f"\n{cores} cores; CLI wall time in seconds (fresh process each, start-up included)\n")
    print(f"| job | concurrent load | torch default ({cores} threads) | thread policy | policy threads | "
          f"load avg |")
    print("|---|---|---:|---:|---:|---:|")
    for job, load, dflt, pol, n, la in rows:
        print(f"| {job} | {load} | {dflt:.1f} | {pol:.1f} | {n} | {la:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
