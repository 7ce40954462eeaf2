"""Compiled forward rasterizer (no autograd) for the no-gradient paths: photo mode, driving, previews.

Same contract as :func:`engine.render.rasterizer.rasterize` (a :class:`Fragments` with ``face_id``, ``bary``,
``depth`` and the packed ``pix_*`` arrays), same conventions (pixel centres at ``i + 0.5``, y down, front faces have
negative signed area, triangles with a vertex closer than 1e-3 dropped, nearest perspective-correct depth wins, ties
go to the lower triangle id), but drawn by a numba z-buffer: one pass over the triangles, each walking its clipped
bounding box with incremental edge functions, then one pass over the pixels for the perspective-correct
barycentrics of the winners. Nothing carries a gradient; fitting and training keep the differentiable rasterizer.

The kernels are compiled once per machine (``cache=True``: numba keeps the machine code next to this file, or in
``NUMBA_CACHE_DIR``) and release the GIL (``nogil=True``), so frames can be drawn from worker threads. Even cached,
a process pays ~0.5-1 s of CPU to import numba and load them; the policy:

- by default the first call loads them (benches, tests, library use);
- :func:`defer` (one-shot CLI commands: a handful of frames) draws with the torch rasterizer until someone asks for
  the kernels — the results agree (tests/test_fast_raster.py), only the speed differs;
- :func:`warm_up` loads them now (the editor's start-up job), ``warm_up(background=True)`` in a daemon thread (drive
  and video export, before their frames); frames drawn meanwhile use the torch rasterizer.

Tensors on a GPU, or a machine without numba, go to the torch rasterizer.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from engine.render.rasterizer import Fragments
from engine.render.rasterizer import rasterize as _torch_rasterize

_kernels = None
_lock = threading.Lock()
_loader: threading.Thread | None = None
_deferred = False
Z_NEAR = 1e-3  # the torch rasterizer's near limit (camera depth)


def _compile():
    import numba

    @numba.njit(cache=True, nogil=True, fastmath=False)
    def zbuffer(xy, z, tris, h, w, cull, face_id, zbuf):  # pragma: no cover - compiled
        """xy (B, V, 2) f32, z (B, V) f32, tris (F, 3) i64 → face_id (B, H, W) i64 (-1 empty), zbuf (B, H, W) f64."""
        nb = xy.shape[0]
        nf = tris.shape[0]
        for b in range(nb):
            for f in range(nf):
                i0 = tris[f, 0]
                i1 = tris[f, 1]
                i2 = tris[f, 2]
                z0 = np.float64(z[b, i0])
                z1 = np.float64(z[b, i1])
                z2 = np.float64(z[b, i2])
                if not (z0 > Z_NEAR and z1 > Z_NEAR and z2 > Z_NEAR):
                    continue
                x0 = np.float64(xy[b, i0, 0])
                y0 = np.float64(xy[b, i0, 1])
                x1 = np.float64(xy[b, i1, 0])
                y1 = np.float64(xy[b, i1, 1])
                x2 = np.float64(xy[b, i2, 0])
                y2 = np.float64(xy[b, i2, 1])
                area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if cull:
                    if not area < 0.0:
                        continue
                elif area == 0.0 or area != area:
                    continue
                # pixel index range whose centres (i + 0.5) fall inside the box
                fx0 = np.ceil(min(x0, x1, x2) - 0.5)
                fx1 = np.floor(max(x0, x1, x2) - 0.5)
                fy0 = np.ceil(min(y0, y1, y2) - 0.5)
                fy1 = np.floor(max(y0, y1, y2) - 0.5)
                if fx0 < 0.0:
                    fx0 = 0.0
                if fy0 < 0.0:
                    fy0 = 0.0
                if fx1 > w - 1:
                    fx1 = w - 1.0
                if fy1 > h - 1:
                    fy1 = h - 1.0
                if fx1 < fx0 or fy1 < fy0:
                    continue
                bx0 = int(fx0)
                bx1 = int(fx1)
                by0 = int(fy0)
                by1 = int(fy1)
                inv = 1.0 / area
                iz0 = 1.0 / z0
                iz1 = 1.0 / z1
                iz2 = 1.0 / z2
                # w0(cx, cy) = ((x1 - cx)(y2 - cy) - (x2 - cx)(y1 - cy)) / area, linear in cx and cy
                a0 = (y1 - y2) * inv
                b0 = (x2 - x1) * inv
                c0 = (x1 * y2 - x2 * y1) * inv
                a1 = (y2 - y0) * inv
                b1 = (x0 - x2) * inv
                c1 = (x2 * y0 - x0 * y2) * inv
                for py in range(by0, by1 + 1):
                    cy = py + 0.5
                    cx = bx0 + 0.5
                    w0 = a0 * cx + b0 * cy + c0
                    w1 = a1 * cx + b1 * cy + c1
                    for px in range(bx0, bx1 + 1):
                        w2 = 1.0 - w0 - w1
                        if w0 >= 0.0 and w1 >= 0.0 and w2 >= 0.0:
                            d = 1.0 / (w0 * iz0 + w1 * iz1 + w2 * iz2)
                            if d < zbuf[b, py, px]:
                                zbuf[b, py, px] = d
                                face_id[b, py, px] = f
                        w0 += a0
                        w1 += a1

    @numba.njit(cache=True, nogil=True)
    def barycentrics(xy, z, tris, face_id, pix_index, pix_face, pix_bary, bary, depth):  # pragma: no cover
        """Perspective-correct barycentrics and depth of every covered pixel (the torch path's formula)."""
        nb, h, w = face_id.shape
        n = 0
        for b in range(nb):
            for py in range(h):
                for px in range(w):
                    f = face_id[b, py, px]
                    if f < 0:
                        continue
                    i0 = tris[f, 0]
                    i1 = tris[f, 1]
                    i2 = tris[f, 2]
                    x0 = np.float64(xy[b, i0, 0])
                    y0 = np.float64(xy[b, i0, 1])
                    x1 = np.float64(xy[b, i1, 0])
                    y1 = np.float64(xy[b, i1, 1])
                    x2 = np.float64(xy[b, i2, 0])
                    y2 = np.float64(xy[b, i2, 1])
                    cx = px + 0.5
                    cy = py + 0.5
                    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                    w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) / area
                    w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) / area
                    p0 = w0 / np.float64(z[b, i0])
                    p1 = w1 / np.float64(z[b, i1])
                    p2 = (1.0 - w0 - w1) / np.float64(z[b, i2])
                    s = p0 + p1 + p2
                    pix_index[n] = (b * h + py) * w + px
                    pix_face[n] = f
                    pix_bary[n, 0] = bary[b, py, px, 0] = p0 / s
                    pix_bary[n, 1] = bary[b, py, px, 1] = p1 / s
                    pix_bary[n, 2] = bary[b, py, px, 2] = p2 / s
                    depth[b, py, px] = 1.0 / s
                    n += 1
        return n

    @numba.njit(cache=True, nogil=True)
    def blend_over(head, cover, solid, sr0, sc0, region):  # pragma: no cover - compiled
        """region (H, W, 3) u8 ← head's RGB over it at a = max(head alpha / 255 · cover, solid[i - sr0, j - sc0]
        where that lies inside solid), rounded (as cv2.blendLinear(rgb, region, a, 1 - a) within one grey level);
        pixels with a = 0 keep region's value, those with a ≥ 1 take head's."""
        h, w = cover.shape
        sh, sw = solid.shape
        inv = np.float32(1.0 / 255.0)
        half = np.float32(0.5)
        for i in range(h):
            si = i - sr0
            ins = 0 <= si < sh
            for j in range(w):
                a = np.float32(head[i, j, 3]) * cover[i, j] * inv
                if ins:
                    sj = j - sc0
                    if 0 <= sj < sw and solid[si, sj] > a:
                        a = solid[si, sj]
                if a <= 0:
                    continue
                if a >= 1:
                    region[i, j, 0] = head[i, j, 0]
                    region[i, j, 1] = head[i, j, 1]
                    region[i, j, 2] = head[i, j, 2]
                    continue
                r0 = np.float32(region[i, j, 0])
                r1 = np.float32(region[i, j, 1])
                r2 = np.float32(region[i, j, 2])
                region[i, j, 0] = np.uint8(np.int32(r0 + (np.float32(head[i, j, 0]) - r0) * a + half))
                region[i, j, 1] = np.uint8(np.int32(r1 + (np.float32(head[i, j, 1]) - r1) * a + half))
                region[i, j, 2] = np.uint8(np.int32(r2 + (np.float32(head[i, j, 2]) - r2) * a + half))

    @numba.njit(cache=True, nogil=True)
    def splat_nearest(gx, gy, zc, d, res, disp, hit, zbuf):  # pragma: no cover - compiled
        """Each point (gx, gy) f32 grid coordinates written to the 4 grid pixels around it, one corner
        (ox, oy) = (0, 0), (0, 1), (1, 0), (1, 1) after the other: per corner the nearest (smallest zc) point wins,
        the later one among equals, and a later corner overwrites an earlier one's — as writing the points sorted
        far first (stable) corner by corner does. disp (R·R, 2) ← d, hit (R·R) ← 1."""
        n = gx.shape[0]
        for ox in range(2):
            for oy in range(2):
                zbuf[:] = np.inf
                for i in range(n):
                    x = np.int64(np.floor(gx[i])) + ox
                    y = np.int64(np.floor(gy[i])) + oy
                    if x < 0 or x >= res or y < 0 or y >= res:
                        continue
                    li = y * res + x
                    if zc[i] <= zbuf[li]:
                        zbuf[li] = zc[i]
                        disp[li, 0] = d[i, 0]
                        disp[li, 1] = d[i, 1]
                        hit[li] = 1.0

    @numba.njit(cache=True, nogil=True)
    def fill_over(a, col, region):  # pragma: no cover - compiled
        """region (H, W, 3) u8 ← region·(1 − a) + col + 0.5, clipped to 0..255 and truncated (col: premultiplied
        colour × 255, float32; the same float32 operations as the numpy expression, so the same bytes)."""
        h, w = a.shape
        one = np.float32(1.0)
        half = np.float32(0.5)
        top = np.float32(255.0)
        zero = np.float32(0.0)
        for i in range(h):
            for j in range(w):
                b = one - a[i, j]
                for c in range(3):
                    v = np.float32(region[i, j, c]) * b + col[i, j, c] + half
                    region[i, j, c] = np.uint8(min(max(v, zero), top))

    @numba.njit(cache=True, nogil=True)
    def interpolate(attr, tris, pix_face, pix_bary, pix_index, out):  # pragma: no cover - compiled
        """out (H·W, C) f32 at each covered pixel pix_index[n] ← Σ_k pix_bary[n, k] · attr[tris[pix_face[n], k]]
        (attr (V, C) f32; the products summed in corner order, as torch's (N, 3, C) sum over the corners)."""
        n = pix_face.shape[0]
        c = attr.shape[1]
        for i in range(n):
            f = pix_face[i]
            a, b, d = tris[f, 0], tris[f, 1], tris[f, 2]
            w0, w1, w2 = pix_bary[i, 0], pix_bary[i, 1], pix_bary[i, 2]
            o = pix_index[i]
            for k in range(c):
                out[o, k] = attr[a, k] * w0 + attr[b, k] * w1 + attr[d, k] * w2

    @numba.njit(cache=True, nogil=True)
    def rotate_about(v, r, p, out):  # pragma: no cover - compiled
        """out (N, 3) f32 ← (v − p) rᵀ + p, each row's three products summed in order (as torch's (N, 3) @ (3, 3)
        gives them here), float32 throughout."""
        for i in range(v.shape[0]):
            x = v[i, 0] - p[0]
            y = v[i, 1] - p[1]
            z = v[i, 2] - p[2]
            for j in range(3):
                out[i, j] = (x * r[j, 0] + y * r[j, 1] + z * r[j, 2]) + p[j]

    return zbuffer, barycentrics, blend_over, splat_nearest, fill_over, interpolate, rotate_about


_available: bool | None = None


def available() -> bool:
    """Whether numba imports (the compiled path can run)."""
    global _available
    if _available is None:
        try:
            import numba  # noqa: F401
            _available = True
        except Exception:
            _available = False
    return _available


def _get_kernels():
    global _kernels
    if _kernels is None:
        with _lock:
            if _kernels is None:
                _kernels = _compile()
    return _kernels


def _load() -> None:
    """Compile (first run on a machine) or load the cached kernels, and run both once (float32 and float64)."""
    zbuffer, barycentrics, blend, splat, fill, interp, rot = _get_kernels()
    rot(np.zeros((2, 3), np.float32), np.eye(3, dtype=np.float32), np.zeros(3, np.float32), np.zeros((2, 3), np.float32))
    fill(np.zeros((2, 2), np.float32), np.zeros((2, 2, 3), np.float32), np.zeros((2, 3, 3), np.uint8)[:, :2])
    interp(np.zeros((3, 2), np.float32), np.array([[0, 1, 2]], np.int64), np.zeros(1, np.int64),
           np.full((1, 3), 1 / 3, np.float32), np.zeros(1, np.int64), np.zeros((4, 2), np.float32))
    one = np.zeros(1, np.float32)
    splat(one, one, one, np.zeros((1, 2), np.float32), 2, np.zeros((4, 2), np.float32), np.zeros(4, np.float32),
          np.zeros(4, np.float32))
    blend(np.zeros((2, 2, 4), np.uint8), np.ones((2, 2), np.float32), np.zeros((1, 1), np.float32), 0, 0,
          np.zeros((2, 3, 3), np.uint8)[:, :2])  # a view into a wider image, as the renderer passes
    tri = np.array([[0, 1, 2]], np.int64)
    for dt in (np.float32, np.float64):
        xy = np.array([[[1.0, 1.0], [1.0, 6.0], [6.0, 1.0]]], dt)
        z = np.full((1, 3), 2.0, dt)
        fid = np.full((1, 8, 8), -1, np.int64)
        zbuffer(xy, z, tri, 8, 8, False, fid, np.full((1, 8, 8), np.inf))
        n = int((fid >= 0).sum())
        barycentrics(xy, z, tri, fid, np.empty(n, np.int64), np.empty(n, np.int64), np.empty((n, 3), dt),
                     np.zeros((1, 8, 8, 3), dt), np.zeros((1, 8, 8), dt))


def ready() -> bool:
    """Whether the compiled kernels are loaded (rasterize_forward draws with them)."""
    return _kernels is not None and (_loader is None or not _loader.is_alive())


def defer() -> None:
    """Draw with the torch rasterizer until :func:`warm_up` is called (one-shot commands: the kernels' load would
    cost more than the few frames gain)."""
    global _deferred
    _deferred = True


def warm_up(background: bool = False) -> float:
    """Load the kernels now (returns the seconds it took), or in a daemon thread (returns 0 at once)."""
    global _loader, _deferred
    import time

    _deferred = False
    if ready():
        return 0.0
    if background:
        with _lock:
            if _loader is None:
                _loader = threading.Thread(target=lambda: available() and _load(), name="fast-raster-warm-up",
                                           daemon=True)
                _loader.start()
        return 0.0
    t0 = time.perf_counter()
    if _loader is not None:
        _loader.join()
    elif available():
        _load()
    return time.perf_counter() - t0


def rasterize_forward(xy: torch.Tensor, z: torch.Tensor, tris: torch.Tensor, size: int | tuple[int, int],
                      cull_backfaces: bool = True) -> Fragments:
    """:func:`engine.render.rasterizer.rasterize` without gradients, compiled: xy (B, V, 2) pixels, z (B, V) camera
    depth, tris (F, 3), size H or (H, W). The result's tensors carry no gradient (use the torch rasterizer to fit)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if xy.device.type != "cpu" or _deferred or (_loader is not None and _loader.is_alive()) or not available():
        with torch.no_grad():
            return _torch_rasterize(xy.detach(), z.detach(), tris, (h, w), cull_backfaces)
    zbuffer, barycentrics = _get_kernels()[:2]
    fdt = np.float64 if xy.dtype == torch.float64 else np.float32
    xy_n = np.ascontiguousarray(xy.detach().numpy(), dtype=fdt)
    z_n = np.ascontiguousarray(z.detach().numpy(), dtype=fdt)
    tri_n = np.ascontiguousarray(tris.numpy(), dtype=np.int64)
    b = xy_n.shape[0]
    face_id = np.full((b, h, w), -1, np.int64)
    zbuf = np.full((b, h, w), np.inf, np.float64)
    if tri_n.shape[0]:
        zbuffer(xy_n, z_n, tri_n, h, w, bool(cull_backfaces), face_id, zbuf)
    n_cov = int(np.count_nonzero(face_id >= 0))
    pix_index = np.empty(n_cov, np.int64)
    pix_face = np.empty(n_cov, np.int64)
    pix_bary = np.empty((n_cov, 3), fdt)
    bary = np.zeros((b, h, w, 3), fdt)
    depth = np.zeros((b, h, w), fdt)
    if n_cov:
        barycentrics(xy_n, z_n, tri_n, face_id, pix_index, pix_face, pix_bary, bary, depth)
    f = torch.from_numpy
    return Fragments(f(face_id), f(bary), f(depth), f(pix_index), f(pix_face), f(pix_bary))


_NO_SOLID = np.zeros((1, 1), np.float32)


def blend_over(head: np.ndarray, cover: np.ndarray, region: np.ndarray, solid: np.ndarray | None = None,
               solid_at: tuple[int, int] = (0, 0)) -> bool:
    """The photo renderer's head-layer blend in one compiled pass, in place: ``region`` (H, W, 3) uint8 ←
    ``head`` (H, W, 4) uint8's colour over it at a = max(head alpha / 255 · ``cover`` (H, W) float32, ``solid``
    (float32, its [0, 0] at ``solid_at`` = (row, column) of ``region``)). Returns False (nothing done) where the
    kernels are not to be used now (see :func:`defer`); the caller then blends with OpenCV (the same values within
    one grey level: tests/test_photo_render_compose.py)."""
    if _deferred or (_loader is not None and _loader.is_alive()) or not available():
        return False
    blend = _get_kernels()[2]
    s = _NO_SOLID if solid is None else np.ascontiguousarray(solid, np.float32)
    blend(head, np.ascontiguousarray(cover, np.float32), s, int(solid_at[0]), int(solid_at[1]), region)
    return True


def splat_nearest(gx: np.ndarray, gy: np.ndarray, zc: np.ndarray, d: np.ndarray, res: int, disp: np.ndarray,
                  hit: np.ndarray) -> bool:
    """The head layer's forward splat (:meth:`engine.photo.layers.PhotoLayers.splat`) in one compiled pass, no sort:
    points (gx, gy) float32 grid coordinates (pixel corners at integers), camera depth zc, value d (N, 2) float32
    written into disp (R·R, 2) and hit (R·R) float32 at the 4 grid pixels around each, per corner the nearest point
    (the later one among equal depths), corner after corner. Returns False (nothing done) where the kernels are not
    to be used now; the caller then sorts and scatters with numpy (the same result: tests/test_photo_render_compose.py)."""
    if _deferred or (_loader is not None and _loader.is_alive()) or not available():
        return False
    k = _get_kernels()[3]
    k(np.ascontiguousarray(gx, np.float32), np.ascontiguousarray(gy, np.float32), np.ascontiguousarray(zc, np.float32),
      np.ascontiguousarray(d, np.float32), int(res), disp, hit, np.empty(res * res, np.float32))
    return True


def fill_over(a: np.ndarray, col: np.ndarray, region: np.ndarray) -> bool:
    """A colour layer over the photo in place (the photo renderer's model-skin fill): ``region`` (H, W, 3) uint8 ←
    region·(1 − ``a``) + ``col`` + 0.5, clipped and truncated, ``a`` (H, W) and ``col`` (H, W, 3) (premultiplied,
    × 255) float32 — the bytes numpy's float32 expression gives. False (nothing done) where the kernels are not to be
    used now."""
    if _deferred or (_loader is not None and _loader.is_alive()) or not available():
        return False
    _get_kernels()[4](np.ascontiguousarray(a, np.float32), np.ascontiguousarray(col, np.float32), region)
    return True


def interpolate(attr: np.ndarray, tris: np.ndarray, pix_face: np.ndarray, pix_bary: np.ndarray,
                pix_index: np.ndarray, n_pixels: int) -> np.ndarray | None:
    """Per-vertex values ``attr`` (V, C) float32 interpolated at the covered pixels of a :class:`Fragments`
    (``pix_face`` (N,) indexing ``tris`` (F, 3), ``pix_bary`` (N, 3) float32, ``pix_index`` (N,) into the
    ``n_pixels`` of the image): an (n_pixels, C) float32 array, 0 where nothing covers, in one compiled pass — the
    sums :func:`engine.photo.flow.interpolate_attrs` takes with torch (tests/test_photo_render_compose.py). None
    where the kernels are not to be used now (see :func:`defer`) or the dtypes are not these."""
    if _deferred or (_loader is not None and _loader.is_alive()) or not available():
        return None
    if attr.dtype != np.float32 or pix_bary.dtype != np.float32:
        return None
    out = np.zeros((int(n_pixels), attr.shape[1]), np.float32)
    _get_kernels()[5](np.ascontiguousarray(attr), np.ascontiguousarray(tris, np.int64),
                      np.ascontiguousarray(pix_face, np.int64), np.ascontiguousarray(pix_bary),
                      np.ascontiguousarray(pix_index, np.int64), out)
    return out


def rotate_about(verts: torch.Tensor, rot: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor | None:
    """(V, 3) float32 ``verts`` rotated by (3, 3) ``rot`` about ``pivot`` (3,): ``(verts − pivot) @ rot.T + pivot`` in
    one compiled pass (torch's (V, 3) @ (3, 3) matmul is ~10x slower for so few columns); None where the kernels are
    not to be used now, a gradient is wanted or the dtypes are not float32 (the caller computes it with torch)."""
    if _deferred or (_loader is not None and _loader.is_alive()) or not available():
        return None
    if verts.requires_grad or rot.requires_grad or verts.dtype != torch.float32 or rot.dtype != torch.float32 \
            or verts.device.type != "cpu" or verts.dim() != 2:
        return None
    v = np.ascontiguousarray(verts.detach().numpy())
    out = np.empty_like(v)
    _get_kernels()[6](v, np.ascontiguousarray(rot.detach().numpy()), np.ascontiguousarray(pivot.detach().numpy(),
                                                                                          np.float32), out)
    return torch.from_numpy(out)
