"""Generator speed: editor latency (batch 1, channels_last) at 64/128 px and CPU training throughput (img/s).

    python bench/generator.py [--threads 2] [--repeat 60] [--train-kimg 0.16] [--no-train]

Latency uses the shipped generator (assets/generator.safetensors) when its resolution matches, otherwise randomly
initialised networks with the preset widths (speed does not depend on the weight values). It times the whole
``FaceGenerator.synthesize`` call (mapping twice for the truncation, synthesis, [0,1] conversion) and, separately,
the synthesis alone. Training throughput runs ``python -m training gan --preset cpu64`` on synthetic data for a few
hundred images in a subprocess (images shown to D per second; G step includes the 3DMM render and imitative loss).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.generator.networks import (FaceGenerator, FactorDecoders, Generator, default_channels,  # noqa: E402
                              load_default_generator)
from training.presets import get_preset  # noqa: E402


def build(res: int):
    shipped = None
    try:
        shipped = load_default_generator()
    except Exception as exc:  # a bad shipped file should not stop the benchmark
        print(f"(shipped generator unusable: {exc})")
    if shipped is not None and shipped.resolution == res:
        return shipped, "shipped weights"
    preset = {64: "cpu64", 128: "gpu128", 256: "gpu256"}.get(res)
    ch = get_preset(preset)["g_channels"] if preset else default_channels(res)
    w_dim = get_preset(preset)["w_dim"] if preset else 256
    dec = FactorDecoders.prior(0, ())
    G = Generator(res, 0, ch, w_dim, 8 if res > 64 else 4)
    G.set_coeff_stats(*dec.coefficient_stats(1024))
    return FaceGenerator(dec, G).eval(), f"random init, {preset or 'default'} widths {ch}"


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def latency(res: int, repeat: int, channels_last: bool = True):
    fg, what = build(res)
    if channels_last:
        fg = fg.to(memory_format=torch.channels_last)
    c, n = fg.sample(1, seed=0)
    ts, ts_syn = [], []
    with torch.inference_mode():
        ws = fg.G.ws(c, n, 0.7)
        for _ in range(5):
            fg.synthesize(c, n)
        for i in range(repeat):
            c.light[:, 1] = 0.01 * (i % 7)  # a slider drag: one factor changes each frame
            t = time.perf_counter()
            fg.synthesize(c, n, 0.7)
            ts.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            fg.G.synthesis(ws)
            ts_syn.append((time.perf_counter() - t) * 1e3)
    return what, ts, ts_syn


def train_throughput(kimg: float, threads: int):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "training", "gan", "--preset", "cpu64", "--data", "synthetic:128", "--out",
               str(Path(tmp) / "run"), "--kimg", str(kimg), "--threads", str(threads), "--no-perception",
               "--sample-every", "1000000", "--ckpt-every", "1000000"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
        t = time.time()
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t
    m = re.search(r"\(([\d.]+) img/s this session\)", res.stdout)
    if res.returncode != 0 or not m:
        return None, wall, res.stderr[-500:]
    return float(m.group(1)), wall, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--train-kimg", type=float, default=0.16)
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    print("editor latency, batch 1, truncation ψ=0.7 (ms): full synthesize median / p95 | synthesis only median / p95")
    for res in (64, 128):
        for cl in (True, False):
            what, ts, ts_syn = latency(res, args.repeat, cl)
            print(f"  {res:4d} px {'channels_last' if cl else 'contiguous   '}: {statistics.median(ts):6.1f} / "
                  f"{percentile(ts, 0.95):6.1f} | {statistics.median(ts_syn):6.1f} / {percentile(ts_syn, 0.95):6.1f}"
                  f"   ({what})")
    if not args.no_train:
        for th in sorted({1, args.threads}):
            rate, wall, err = train_throughput(args.train_kimg, th)
            if rate is None:
                print(f"training throughput ({th} thread(s)): failed: {err}")
            else:
                print(f"training throughput cpu64 (64 px, batch 16, G+D+render+L1), {th} thread(s): {rate:.1f} img/s "
                      f"({args.train_kimg} kimg, {wall:.0f} s wall incl. start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
