"""Each photo's believable turn range (``PhotoRenderer.turn_range``: yaw and pitch, degrees from its own pose), on
the controls sheet's 17 photos (``bench/controls_sheet.py``; the same ``--fits`` cache).

    OMP_NUM_THREADS=1 python bench/turn_ranges.py [--only name,...] [--fits out/controls_fits.pkl]

Look at where each photo visibly breaks with ``bench/controls_sheet.py --groups pose`` (pitch at the range's ends).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from controls_sheet import load_fits, photo_paths  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated photo name prefixes")
    ap.add_argument("--fits", default="out/controls_fits.pkl")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from engine.face.model import default_model
    from engine.photo.renderer import PhotoRenderer, own_pose_degrees

    paths = photo_paths()
    if args.only:
        paths = [p for p in paths if p[0].startswith(tuple(args.only.split(",")))]
    fits = load_fits(paths, Path(args.fits) if args.fits else None)
    model = default_model()
    print(f"load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    got = {"yaw": [], "pitch": []}
    for name, fit in fits.items():
        t0 = time.perf_counter()
        r = PhotoRenderer(fit, model=model).turn_range()
        own = own_pose_degrees(fit)
        for k in got:
            got[k].append(r[k])
        print(f"{name:32s} own yaw {own['yaw']:+6.1f} pitch {own['pitch']:+6.1f} | yaw {r['yaw'][0]:+6.1f} "
              f"{r['yaw'][1]:+6.1f} | pitch {r['pitch'][0]:+6.1f} {r['pitch'][1]:+6.1f} | "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    for k, v in got.items():
        lo, hi = [a for a, _ in v], [b for _, b in v]
        print(f"{k}: lo median {statistics.median(lo):+.1f} ({min(lo):+.1f}..{max(lo):+.1f}), hi median "
              f"{statistics.median(hi):+.1f} ({min(hi):+.1f}..{max(hi):+.1f})")
    print(f"load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
