"""Renderer speed: forward and forward+backward at 64/128/256 px, batch 1 and 16 (shaded), and the forward
rasterisation of the full head (face + ict_parts, 48.8k triangles): compiled z-buffer vs the torch rasterizer.

    python bench/render.py [--threads 1] [--repeat 5] [--raster-only]

Prints a table (median ms) and where the time goes (geometry, shading, visibility, interpolation) for 128 px b16.
The raster table draws the full head at 128/256/512 px and three poses with both rasterizers in the same run
(``rasterize_forward`` vs ``rasterize``, back-face culling on, median ms of each), their ratio and how many covered
pixels got the same triangle. Every table is printed with the machine's load and torch's thread count.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import engine  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import torch  # noqa: E402

from engine import runtime  # noqa: E402
from engine.face.model import FaceModel  # noqa: E402
from engine.render import FaceRenderer, light_from_direction  # noqa: E402
from engine.render import rasterizer as R  # noqa: E402
from engine.render.camera import rotation_matrix  # noqa: E402
from engine.render.shading import shade  # noqa: E402


def coeffs(model, b, requires_grad):
    g = torch.Generator().manual_seed(0)
    c = model.zeros(b)
    c.identity.normal_(generator=g)
    c.expression.uniform_(0, 0.3, generator=g)
    c.pose[:, 0].uniform_(-0.5, 0.5, generator=g)
    c.pose[:, 1].uniform_(-0.2, 0.2, generator=g)
    c.light[:] = light_from_direction(30, 20, 0.5)
    return c.requires_grad_(requires_grad)


def timed(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def raster_table(repeat: int) -> None:
    """Full head, compiled forward rasterizer vs the torch one, same run."""
    import math

    from engine.face.head import default_head
    from engine.render.fast_raster import rasterize_forward, warm_up

    head = default_head()
    m = head.model
    first = warm_up()
    print(f"\nforward rasterisation of the full head ({head.triangles.shape[0]} triangles), median of {repeat}; "
          f"{runtime.machine_note()}; compiled kernels' first call in this process {first * 1e3:.0f} ms")
    print(f"{'size':>5} {'yaw':>5} {'compiled ms':>12} {'torch ms':>9} {'ratio':>6} {'same id':>8}")
    for size in (128, 256, 512):
        for yaw in (0, 30, -60):
            c = m.zeros(1)
            c.pose[0, 0] = math.radians(yaw)
            c.expr["jawOpen"] = 0.4
            with torch.no_grad():
                cam = rend_camera(m).to_camera(head.vertices(c), c.pose)
                xy, z = rend_camera(m).project(cam, size), cam[..., 2]
                fast = timed(lambda: rasterize_forward(xy, z, head.triangles, size), repeat)
                slow = timed(lambda: R.rasterize(xy, z, head.triangles, size), repeat)
                a, b = rasterize_forward(xy, z, head.triangles, size), R.rasterize(xy, z, head.triangles, size)
            both = (a.face_id >= 0) & (b.face_id >= 0)
            same = float((a.face_id == b.face_id)[both].float().mean())
            print(f"{size:>5} {yaw:>5} {fast:>12.2f} {slow:>9.1f} {slow / fast:>5.1f}x {100 * same:>7.2f}%", flush=True)


def rend_camera(model):
    from engine.render.camera import Camera

    return Camera.canonical(model.mean, model.lm68)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--raster-only", action="store_true", help="only the compiled-vs-torch rasterisation table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    raster_table(max(args.repeat, 5))
    if args.raster_only:
        return 0
    model = FaceModel.load()
    rend = FaceRenderer(model)
    print(f"renderer benchmark: {model.n_vertices} vertices, {model.triangles.shape[0]} triangles, "
          f"torch {torch.__version__}, median of {args.repeat}; {runtime.machine_note()}")
    print("forward: no gradient asked, so the compiled rasterizer draws it; fwd+bwd: the torch rasterizer")
    print(f"{'size':>5} {'batch':>5} {'forward ms':>11} {'fwd+bwd ms':>11} {'fwd+bwd ms/img':>15}")
    for size in (64, 128, 256):
        for b in (1, 16):
            c0 = coeffs(model, b, False)
            with torch.no_grad():
                fwd = timed(lambda: rend(c0, size), args.repeat)
            c1 = coeffs(model, b, True)

            def fb():
                out = rend(c1, size)
                (out.image.mean() + out.landmarks.mean() * 1e-3).backward()

            both = timed(fb, args.repeat)
            print(f"{size:>5} {b:>5} {fwd:>11.1f} {both:>11.1f} {both / b:>15.2f}")
    # where the time goes (128 px, batch 16, forward+backward)
    c = coeffs(model, 16, True)
    parts = {}

    def stage(name, fn):
        t = time.perf_counter()
        r = fn()
        parts[name] = parts.get(name, 0) + (time.perf_counter() - t) * 1000
        return r

    for _ in range(args.repeat):
        verts = stage("geometry (blendshapes, camera)", lambda: model.vertices(c))
        cam = stage("geometry (blendshapes, camera)", lambda: rend.camera.to_camera(verts, c.pose))
        scr = stage("geometry (blendshapes, camera)", lambda: rend.camera.project(cam, 128))
        col = stage("normals + SH shading", lambda: shade(model.albedo(c), model.vertex_normals(verts)
                                                         @ rotation_matrix(c.pose).transpose(1, 2), c.light))
        with torch.no_grad():
            keys = stage("visibility (no grad)", lambda: R._visible_keys(scr.detach(), cam[..., 2].detach(),
                                                                          model.triangles, 128, 128, True))
            pix = (keys != R._KEY_EMPTY).nonzero(as_tuple=True)[0]
            face = keys[pix] & 0xFFFFFFFF
        fr = stage("barycentrics + interpolation", lambda: R._fragments_from_visibility(
            scr, cam[..., 2], model.triangles, 128, 128, pix, face))
        img = stage("barycentrics + interpolation", lambda: R.interpolate(col, fr, model.triangles))
        stage("backward", lambda: img.mean().backward())
    total = sum(parts.values())
    print(f"\nwhere the time goes (128 px, batch 16, forward+backward, ms per call; {runtime.machine_note()}):")
    for k, v in parts.items():
        print(f"  {k:34s} {v / args.repeat:7.1f}  ({100 * v / total:4.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
