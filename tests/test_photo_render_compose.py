"""The photo renderer's fast paths (issue 24) give what the plain computation gives: the layered head composed only where
it can show (bands of rows, each over the columns it can reach) equals composing the whole box; cached / subset geometry
(expression deltas, subset normals), the no-gradient interpolation, pull-push and the cached part masks equal their
direct computation."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

ASTRONAUT = Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def astronaut():
    from engine.perception.align import load_image
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer

    fit = fit_photo(load_image(ASTRONAUT))
    return fit, PhotoRenderer(fit)


@pytest.fixture
def compiled(monkeypatch):
    """The compiled kernels loaded and in use, whatever an earlier test left (a command line run in this process
    defers them: engine.cli), restored afterwards."""
    from engine.render import fast_raster

    assert fast_raster.available(), "numba (a dependency) does not import"
    monkeypatch.setattr(fast_raster, "_deferred", False)
    fast_raster.warm_up()
    return fast_raster


def _edits(c0):
    turn = c0.clone()
    turn.pose[0, 0] += math.radians(14)
    turn.pose[0, 1] += math.radians(-5)
    turn.expr["mouthSmile_L"] = turn.expr["mouthSmile_R"] = 0.5
    blink = turn.clone()
    blink.pose[0, 0] -= math.radians(25)
    blink.expr["eyeBlink_L"] = 1.0
    return [turn, blink]


@pytest.mark.parametrize("max_side", [None, 300])
def test_banded_composition_equals_the_full_one(astronaut, max_side):
    fit, r = astronaut
    for c in _edits(fit.coeffs):
        fast = r.render(c, max_side=max_side).image
        rr = r.preview_renderer() if max_side is not None else r
        try:
            rr.compose_bands = False
            full = r.render(c, max_side=max_side).image
        finally:
            rr.compose_bands = True
        assert fast.shape == full.shape
        # the edit really moved the head (the comparison is not between two copies of the photo)
        photo = fit.image if max_side is None else r._photo_at(fast.shape[0] / fit.image.shape[0])
        assert np.abs(full.astype(int) - photo).max() > 60
        assert np.abs(fast.astype(int) - full).max() <= 1


def test_compiled_head_blend_equals_opencv_s(astronaut, monkeypatch, compiled):
    """The head layer blended by the compiled kernel (fast_raster.blend_over) gives OpenCV's blend (multiply,
    blendLinear) within one grey level on a turn + smile and a turn + blink frame (the layer fills, such as the model
    skin, by fast_raster.fill_over: numpy's bytes)."""
    from engine.photo import renderer as R
    from engine.render import fast_raster

    fit, r = astronaut
    calls = []
    real = fast_raster.blend_over
    monkeypatch.setattr(fast_raster, "blend_over", lambda *a: calls.append(1) or real(*a))
    for c in _edits(fit.coeffs):
        fast = r.render(c).image
        assert calls, "the compiled blend was not used"
        monkeypatch.setattr(R, "COMPILED_BLEND", False)
        ref = r.render(c).image
        monkeypatch.setattr(R, "COMPILED_BLEND", True)
        assert np.abs(ref.astype(int) - fit.image).max() > 60  # the head moved
        assert np.abs(fast.astype(int) - ref).max() <= 1


def test_the_head_layer_upsampled_twice_gives_the_bicubic_remap(astronaut, monkeypatch):
    """The sharp frame resamples the head layer bilinearly from its 2x bicubic upsampling (made once, kept for the
    next frames) instead of OpenCV's 4-channel bicubic remap: the same frame within one grey level but on a few pixels
    along the layer's hard edges; an eye edit (whose head layer is made per frame) is remapped directly, as before."""
    from engine.photo import renderer as R

    fit, r = astronaut
    turn, blink = _edits(fit.coeffs)
    r._fg2 = None
    r.prepare_sharp()  # (the editor's open job)
    assert r._fg2 is not None
    kept = r._fg2[1]
    fast = r.render(turn).image
    assert r._fg2[1] is kept, "the 2x head layer was not used"
    assert kept.shape[:2] == tuple(2 * (n + 2 * R._FG2_PAD) for n in r.layers.fg.shape[:2])
    other = turn.clone()
    other.pose[0, 0] -= math.radians(4)
    r.render(other)
    assert r._fg2[1] is kept  # made once
    eyes = r.render(blink).image
    monkeypatch.setattr(R, "HEAD_REMAP_2X_MAX_PX", r.layers.fg.shape[0] * r.layers.fg.shape[1] - 1)
    r._fg2 = None
    big = r.render(turn).image  # a layer over the size limit: the direct remap
    assert r._fg2 is None
    monkeypatch.setattr(R, "HEAD_REMAP_2X", False)
    ref = r.render(turn).image
    assert np.array_equal(big, ref)
    assert np.abs(ref.astype(int) - fit.image).max() > 60  # the head moved
    d = np.abs(fast.astype(int) - ref).max(-1)
    # (a real 512 px photo: ~2 % of pixels differ by 2 or more, 0.4 % by more than 3, along sharp edges: the 2x path
    # is a little softer there; the bench's upscaled photos: 0.02 %)
    assert (d > 1).mean() < 0.04 and (d > 3).mean() < 0.01 and (d > 8).mean() < 0.002, \
        [float((d > k).mean()) for k in (1, 3, 8)]
    import cv2

    def sharpness(im):
        return float(np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)).mean())

    assert sharpness(fast) > 0.95 * sharpness(ref)  # (a bilinear remap: 20-30 % softer)
    assert np.array_equal(r.render(blink).image, eyes)


def test_compiled_splat_equals_the_sorted_scatter(astronaut, monkeypatch, compiled):
    """The head layer's forward splat without a sort (fast_raster.splat_nearest: per corner the nearest point, the
    later among equals) gives exactly what the far-first sorted scatter gives, for turns and a driven placement."""
    from engine.photo import layers as photo_layers
    from engine.render import fast_raster

    fit, r = astronaut
    gl = r.grid_layers
    assert gl is not None
    calls = []
    real = fast_raster.splat_nearest
    monkeypatch.setattr(fast_raster, "splat_nearest", lambda *a: calls.append(1) or real(*a))
    cases = []
    for yaw, pitch in ((14, -5), (-25, 0), (30, 8)):
        c = fit.coeffs.clone()
        c.pose[0, 0] += math.radians(yaw)
        c.pose[0, 1] += math.radians(pitch)
        cases.append((c.pose[0], None))
    cases.append((cases[0][0], np.array([[1.1, 0.05, -20.0], [-0.05, 1.1, 12.0]])))
    for pose, placement in cases:
        disp, cover = gl.splat(pose, placement)
        assert calls, "the compiled splat was not used"
        monkeypatch.setattr(photo_layers, "SPLAT_COMPILED", False)
        want_disp, want_cover = gl.splat(pose, placement)
        monkeypatch.setattr(photo_layers, "SPLAT_COMPILED", True)
        assert cover.mean() > 0.05 and np.abs(want_disp).max() > 5  # the head layer moved
        assert np.array_equal(disp, want_disp) and np.array_equal(cover, want_cover)


def test_fill_over_kernel_gives_numpy_s_bytes(compiled):
    """fast_raster.fill_over (a colour layer over the photo: the model skin, the layer fills) writes exactly the
    bytes of the renderer's numpy expression, on a view into a wider image."""
    from engine.render import fast_raster

    rng = np.random.default_rng(9)
    a = np.clip(rng.random((25, 31)).astype(np.float32) * 1.4 - 0.2, 0, 1)
    col = (rng.random((25, 31, 3)).astype(np.float32) * 255 * a[..., None] * 1.2).astype(np.float32)
    big = rng.integers(0, 256, (25, 40, 3), dtype=np.uint8)
    want = big[:, 4:35].astype(np.float32)
    want *= 1 - a[..., None]
    want += col
    want += 0.5
    want = np.clip(want, 0, 255).astype(np.uint8)
    keep = big.copy()
    assert fast_raster.fill_over(a, col, big[:, 4:35])
    assert np.array_equal(big[:, 4:35], want)
    assert np.array_equal(big[:, :4], keep[:, :4]) and np.array_equal(big[:, 35:], keep[:, 35:])


def test_blend_over_kernel_matches_the_formula(compiled):
    """fast_raster.blend_over: a = max(alpha/255 · cover, solid placed at its offset), rgb·a + region·(1 − a)
    rounded, on a view into a wider image (as the renderer passes); a = 0 keeps the region."""
    from engine.render import fast_raster

    rng = np.random.default_rng(5)
    head = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    head[..., 3][rng.random((20, 30)) < 0.3] = 0
    cover = np.clip(rng.random((20, 30)).astype(np.float32) * 1.5, 0, 1)
    cover[:, :4] = 0
    solid = rng.random((6, 9)).astype(np.float32)
    big = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    region = big[:, 5:35]
    want = region.astype(np.float64)
    a = head[..., 3] * cover.astype(np.float64) / 255.0
    a[3:9, -4:] = np.maximum(a[3:9, -4:], solid[:, :4])  # solid at (row 3, column 26): its last 5 columns outside
    want = want * (1 - a[..., None]) + head[..., :3] * a[..., None]
    keep = big.copy()
    assert fast_raster.blend_over(head, cover, region, solid, (3, 26))
    assert np.abs(region.astype(np.float64) - want).max() <= 0.5 + 1e-3
    assert (big[:, :5] == keep[:, :5]).all() and (big[:, 35:] == keep[:, 35:]).all()
    assert (region[a == 0] == keep[:, 5:35][a == 0]).all()


@pytest.mark.parametrize("scale", [1.0, 0.37, 3.3])
def test_sub_bands_cover_every_pixel_a_sparse_layer_reaches_once(scale):
    """A layer's bands (:meth:`PhotoRenderer._sub_bands`) must hold every output pixel its upsampled alpha reaches and
    none twice: scattered specks on the work grid, upsampled like the renderer does."""
    import cv2

    from engine.photo.flow import WorkGrid
    from engine.photo.renderer import PhotoRenderer

    rng = np.random.default_rng(3)
    g = WorkGrid((-40.3, 25.7), 2.9, 64)
    active = np.zeros((64, 64), bool)
    active[rng.integers(5, 60, 25), rng.integers(5, 60, 25)] = True
    sx = sy = scale
    h = w = int(round(260 * scale))
    box = (0, 0, w, h)
    m = np.array([[1.0 / (sx * g.step), 0, (0.5 / sx - g.origin[0]) / g.step - 0.5],
                  [0, 1.0 / (sy * g.step), (0.5 / sy - g.origin[1]) / g.step - 0.5]])
    reach = cv2.warpAffine(active.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 0
    assert reach.any()
    count = np.zeros((h, w), int)
    bands = PhotoRenderer._sub_bands(active, g, box, sx, sy, band=7)
    for x0, y0, x1, y1 in bands:
        count[y0:y1, x0:x1] += 1
    assert count.max() == 1
    assert count[reach].min() == 1
    if scale > 1:  # and on a large output they are tighter than the whole box
        whole = PhotoRenderer._sub_box(active, g, box, sx, sy)
        assert count.sum() < 0.6 * (whole[2] - whole[0]) * (whole[3] - whole[1])


def test_cached_geometry_equals_the_direct_computation(astronaut):
    """The per-frame shortcuts of a drag: an expression change multiplies only the blendshapes that differ from the
    reference expression, and the fill / model-skin normals come from the faces around those vertices only."""
    import torch

    fit, r = astronaut
    head, proj = r.head, r.proj
    c = fit.coeffs.clone()
    c.expr["mouthSmile_L"] = c.expr["mouthSmile_R"] = 0.7
    c.expr["jawOpen"] = 0.4
    proj.model_vertices(fit.coeffs)  # the reference
    got = proj.model_vertices(c)
    want = head.identity_shape(c)[0] + head.expression_offsets(c)[0] + proj._teeth_offset
    assert float((got - want).abs().max()) < 1e-4
    assert float((got - proj.model_vertices(fit.coeffs)).abs().max()) > 0.1  # the smile moved vertices
    full = head.vertex_normals(got.unsqueeze(0))[0]
    r._skin_setup()
    for which in ("fill", "skin"):
        idx = r._subsets[which][0]
        assert len(idx) > 100
        sub = r._normals_of(got.clone(), which)  # a new tensor: computed, not taken from the full normals
        assert float((sub - full[idx]).abs().max()) < 1e-4
        some = idx[::7]  # a few of them (the fill's vertices a frame shows)
        assert float((r._normals_at(got.clone(), some, which) - full[some]).abs().max()) < 1e-4


def test_no_grad_interpolation_equals_the_rasterizer_s(astronaut):
    """flow.interpolate_attrs writes the covered pixels' sums straight into the grid: the same numbers as
    engine.render.rasterizer.interpolate (and 0 off the head)."""
    import torch

    from engine.photo import flow
    from engine.render.rasterizer import interpolate

    fit, r = astronaut
    c = fit.coeffs.clone()
    c.pose[0, 0] += math.radians(12)
    c.expr["jawOpen"] = 0.5
    t = flow.rasterize_target(r.head, r.proj, r.src, c, r.grid, r.neck)
    attr = torch.randn(r.head.n_vertices, 7, generator=torch.Generator().manual_seed(0))
    want = interpolate(attr.unsqueeze(0), t.frags, t.tris)[0].permute(1, 2, 0).numpy()
    got = flow.interpolate_attrs(attr, t, r.head)
    assert got.shape == want.shape and t.covered.mean() > 0.05
    assert np.abs(got - want).max() < 1e-6
    assert (got[~t.covered] == 0).all()


def test_mask_bounds_equals_nonzero_s_extent():
    from engine.photo import flow

    rng = np.random.default_rng(7)
    for density in (0.0, 0.0005, 0.05, 0.9):
        m = rng.random((70, 90)) < density
        got = flow.mask_bounds(m)
        if not m.any():
            assert got is None
            continue
        ys, xs = np.nonzero(m)
        assert got == (ys.min(), ys.max(), xs.min(), xs.max())


def test_pull_push_keeps_the_known_values_and_stays_within_their_range():
    """flow.pull_push (the in-place push step): known pixels (weight 1) keep their values, the continuation stays
    inside the known values' range and is smooth (a constant known region continues as that constant)."""
    from engine.photo import flow

    rng = np.random.default_rng(1)
    v = rng.normal(0, 5, (90, 110, 2)).astype(np.float32)
    w = np.zeros((90, 110), np.float32)
    w[20:50, 30:60] = 1.0
    w[70:80, 5:15] = 1.0
    est = flow.pull_push(v, w)
    known = w > 0
    assert np.abs(est[known] - v[known]).max() < 1e-5
    assert est.min() >= v[known].min() - 1e-4 and est.max() <= v[known].max() + 1e-4
    const = flow.pull_push(np.full((64, 64, 1), 3.25, np.float32), (rng.random((64, 64)) > 0.7).astype(np.float32))
    assert np.abs(const - 3.25).max() < 1e-5


def test_vertex_in_is_cached_but_callers_get_their_own_copy(head):
    from engine.face.head import SKIN_PARTS

    want = head.vertex_in(SKIN_PARTS).clone()
    assert want.any() and not want.all()
    got = head.vertex_in(SKIN_PARTS)
    got[:] = False  # a caller editing its mask in place must not change the next caller's
    assert torch.equal(head.vertex_in(list(SKIN_PARTS)), want)
    assert torch.equal(head.vertex_in(["teeth"]), head.vertex_part == head.part_names.index("teeth"))


@pytest.mark.parametrize("relit", [False, True])
def test_mouth_fill_colours_equal_the_whole_mesh_computation(astronaut, relit):
    """The open mouth's fill colours, computed on the vertices the frame shows only (with subset normals, or the
    relit frame's posed normals), equal the whole-mesh computation, turned and relit alike."""
    import cv2

    from engine.photo import fill, flow
    from engine.render.camera import rotation_matrix

    fit, r = astronaut
    c = fit.coeffs.clone()
    c.pose[0, 0] += math.radians(15)
    c.expr["jawOpen"] = 0.7
    if relit:
        c.light[0, 1] += 0.3
    f = r.flow_field(c)
    assert f.fill_rgb is not None
    t = f.target
    rot = rotation_matrix(c.pose)[0]
    n = r.head.vertex_normals(t.verts.unsqueeze(0))[0] @ rot.T
    col = fill.part_colors(r.head, r._mouth_base, t.verts, n, r.coeffs0.light[0], c.light[0]) \
        * r.src.render_fill.unsqueeze(1)
    want = cv2.GaussianBlur(flow.interpolate_attrs(col, t, r.head)[..., :3], (0, 0), 0.6)
    if r.gray:
        want = np.repeat(want.mean(-1, keepdims=True), 3, -1)
    assert np.abs(f.fill_rgb - want).max() < 1e-4


def test_model_skin_and_mirror_fill_on_their_box_equal_the_whole_grid(astronaut, monkeypatch):
    """The model's skin a turn reveals (its blur, the colour match on a ring of the photo's skin and that gain's
    continuation) and the mirror fill are computed on the grid's box around the pixels that carry them
    (``skin_crop``): the same fields as over the whole grid, and the same frame."""
    from engine.photo import renderer as R

    fit, r = astronaut
    matched = []
    real = R.PhotoRenderer._skin_match
    monkeypatch.setattr(R.PhotoRenderer, "_skin_match",
                        lambda self, *a: matched.append(out := real(self, *a)) or out)
    c = fit.coeffs.clone()
    c.pose[0, 0] += math.radians(-30)
    c.pose[0, 1] += math.radians(10)
    fields, frames = [], []
    for crop in (True, False):
        r.skin_crop = crop
        try:
            fields.append(r.flow_field(c))
            frames.append(r.render(c).image)
        finally:
            r.skin_crop = True
    (a, b), res = fields, r.grid.res
    assert len(a.extra) == len(b.extra) == 1
    sa, sb = a.extra[0], b.extra[0]
    assert sa.alpha.shape == (res, res) and sa.rgb.shape == (res, res, 3)
    assert (sa.alpha > 0.5).sum() > 30  # a revealed cheek of model skin ...
    assert any(np.abs(g - 1).max() > 0.05 for g in matched)  # ... matched to the photo's skin on a ring
    assert np.allclose(sa.alpha, sb.alpha, atol=1e-6) and np.allclose(sa.rgb, sb.rgb, atol=1e-6)
    assert np.array_equal(frames[0], frames[1])
    assert np.abs(frames[0].astype(int) - fit.image).max() > 60  # the head moved

    # the mirror fill on a blob of mirrored skin in the grid's corner region and in its middle
    rng = np.random.default_rng(3)
    cov = np.zeros((res, res), bool)
    cov[20:200, 2:150] = True
    hidden = np.zeros((res, res), np.float32)
    mv = np.zeros((res, res, 6), np.float32)
    for y0, x0 in ((30, 4), (120, 90)):
        blob = (slice(y0, y0 + 25), slice(x0, x0 + 30))
        hidden[blob] = 1.0
        mv[blob + (slice(0, 2),)] = r._centres[blob] + rng.normal(0, 5, (25, 30, 2))
        mv[blob + (2,)] = rng.uniform(0, 1, (25, 30))
        mv[blob + (slice(3, 6),)] = rng.uniform(0.5, 1.5, (25, 30, 3))
    mv *= cov[..., None]
    out = []
    for crop in (True, False):
        r.skin_crop = crop
        try:
            out.append(r._mirror(mv, cov, hidden))
        finally:
            r.skin_crop = True
    for x, y in zip(*out):
        assert x.shape == y.shape and np.allclose(x, y, atol=1e-5)
    assert (out[0][1] > 0.1).sum() > 500 and np.abs(out[0][0]).max() > 1


def test_a_large_frame_s_head_layer_bands_shared_by_threads_give_the_same_frame(astronaut, monkeypatch):
    """Above SMALL_FRAME_PX a frame's head-layer bands are shared between the calling thread and torch's thread
    count - 1 helpers while cores are idle (renderer._run_bands, runtime.usable_threads): the same frame as on one
    thread, helpers really used (none on a busy machine); the work grid's steps run with torch and OpenCV on one
    thread (their counts restored after the frame)."""
    import threading

    import cv2

    from engine import runtime
    from engine.photo import renderer as R
    from engine.render import fast_raster

    fit, r = astronaut
    turn = _edits(fit.coeffs)[0]
    monkeypatch.setattr(R, "SMALL_FRAME_PX", 0)  # the astronaut's 512 px frame counts as large
    monkeypatch.setattr(runtime, "cpu_count", lambda: 4)
    load = [0.0]
    monkeypatch.setattr(runtime, "busy_cores", lambda: load[0])
    seen, counts = set(), []
    real_blend, real_flow = fast_raster.blend_over, R.PhotoRenderer.flow_field

    def slow_blend(*a):
        seen.add(threading.current_thread().name)
        threading.Event().wait(0.002)  # (a band long enough for a helper to take some)
        return real_blend(*a)

    monkeypatch.setattr(fast_raster, "blend_over", slow_blend)
    monkeypatch.setattr(R.PhotoRenderer, "flow_field",
                        lambda self, *a: counts.append((torch.get_num_threads(), cv2.getNumThreads()))
                        or real_flow(self, *a))
    n0, cv0 = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(3)
        cv2.setNumThreads(3)
        shared = r.render(turn).image
        helpers = {n for n in seen if n.startswith("photo-bands")}
        seen.clear()
        load[0] = 4.6  # every core busy: the calling thread alone
        busy = r.render(turn).image
        assert seen == {threading.current_thread().name}
        load[0] = 0.0
        seen.clear()
        r.band_threads = False
        alone = r.render(turn).image
        assert torch.get_num_threads() == 3 and cv2.getNumThreads() == 3
    finally:
        r.band_threads = True
        torch.set_num_threads(n0)
        cv2.setNumThreads(cv0)
    assert helpers, "no helper thread composed a band"
    assert seen == {threading.current_thread().name}
    assert counts == [(1, 1)] * 3
    assert np.abs(shared.astype(int) - fit.image).max() > 60  # the head moved
    assert np.array_equal(shared, alone) and np.array_equal(busy, alone)


def test_run_bands_runs_each_band_once_and_never_waits_for_a_helper_without_a_core():
    import threading

    from engine.photo import renderer as R

    got, lock = [], threading.Lock()

    def fn(i):
        threading.Event().wait(0.001)
        with lock:
            got.append(i)

    R._run_bands(fn, list(range(40)), 3)
    assert sorted(got) == list(range(40))
    # every helper busy elsewhere (as a helper that gets no core): the calling thread does every band itself
    pool = R._helper_pool(2)
    release = threading.Event()
    blockers = [pool.submit(release.wait) for _ in range(R._helpers_n)]
    try:
        got.clear()
        done = threading.Event()
        t = threading.Thread(target=lambda: (R._run_bands(fn, list(range(10)), 3), done.set()))
        t.start()
        assert done.wait(10), "_run_bands waited for a helper that never started"
        assert sorted(got) == list(range(10))
    finally:
        release.set()
        for b in blockers:
            b.result(10)

    def bad(i):
        if i == 7:
            raise ValueError("band 7")

    with pytest.raises(ValueError, match="band 7"):
        R._run_bands(bad, list(range(12)), 2)


def test_a_forked_child_makes_its_own_helper_threads():
    """Render worker processes are forked: the parent's helper threads do not exist in the child, which makes its
    own (else its bands' helper tasks would queue forever, holding their frames)."""
    import os

    from engine.photo import renderer as R

    parent = R._helper_pool(1)
    R._run_bands(lambda i: None, list(range(4)), 2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether a helper ran a band, then leave at once
        import threading

        names = set()
        try:
            pool_is_new = R._helper_pool(1) is not parent

            def fn(i):
                names.add(threading.current_thread().name)
                threading.Event().wait(0.003)

            R._run_bands(fn, list(range(30)), 2)
            ok = pool_is_new and any(n.startswith("photo-bands") for n in names)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    os.close(r)
    assert got == b"1"


def test_compiled_interpolation_equals_torch_s(astronaut, compiled):
    """The renderer's per-vertex values interpolated by the compiled kernel (fast_raster.interpolate) are torch's sums
    (flow.interpolate_attrs) to the bit, on a turn with random values; the frames are the same."""
    from engine.photo import flow

    fit, r = astronaut
    turn, blink = _edits(fit.coeffs)
    t = flow.rasterize_target(r.head, r.proj, r.src, turn, r.grid, r.neck)
    attr = torch.rand(r.head.n_vertices, 9, generator=torch.Generator().manual_seed(5))
    fast = r._interpolate(attr, t)
    ref = flow.interpolate_attrs(attr, t, r.head)
    assert fast.shape == ref.shape == (r.grid.res, r.grid.res, 9)
    assert (np.abs(ref).sum(-1) > 0).sum() > 5000  # the head covers the grid
    assert np.array_equal(fast, ref)
    for c in (turn, blink):
        a = r.render(c).image
        r.compiled_interp = False
        try:
            b = r.render(c).image
        finally:
            r.compiled_interp = True
        assert np.array_equal(a, b)


@pytest.mark.parametrize("max_side", [None, 256])
def test_a_layer_fill_that_resamples_the_photo_shows_it_shifted(astronaut, max_side):
    """A hook's LayerFill with a displacement (and a gain) composes the photo resampled there, band by band: opaque,
    a constant 6 photo px shift and gain 1 give the photo 6 px over inside it (3 px in a half-size preview: the
    displacement scaled to output pixels, once a frame)."""
    from engine.photo.layers import LayerFill

    fit, r = astronaut
    X0, X1, Y0, Y1 = 70, 150, 200, 280  # photo px: a box of the work grid beside the face

    def hook(renderer, coeffs, f):
        g = renderer.grid
        res = g.res
        a = np.zeros((res, res), np.float32)
        gx0, gx1 = [int(round((v - g.origin[0]) / g.step)) for v in (X0, X1)]
        gy0, gy1 = [int(round((v - g.origin[1]) / g.step)) for v in (Y0, Y1)]
        a[gy0:gy1, gx0:gx1] = 1.0
        disp = np.zeros((res, res, 2), np.float32)
        disp[..., 0] = 6.0
        return LayerFill(alpha=a, disp=disp, gain=np.ones((res, res, 3), np.float32))

    c = fit.coeffs.clone()
    c.expr["mouthSmile_L"] = 0.3
    r.layer_hooks.append(hook)
    try:
        out = r.render(c, max_side=max_side).image
    finally:
        r.layer_hooks.clear()
    k = out.shape[1] / fit.image.shape[1]
    photo = fit.image if max_side is None else r._photo_at(k)
    m = int(np.ceil(2 * r.grid.step * (2 if max_side else 1) * k)) + 2  # in from the box's edge (bilinear alpha)
    x0, x1, y0, y1 = (int(round(v * k)) for v in (X0, X1, Y0, Y1))
    x0, x1, y0, y1 = x0 + m, x1 - m, y0 + m, y1 - m
    assert y1 - y0 > 10 and x1 - x0 > 10
    s = int(round(6 * k))
    inner = out[y0:y1, x0:x1].astype(int)
    assert np.abs(inner - photo[y0:y1, x0 + s:x1 + s]).max() <= 1
    assert np.abs(inner - photo[y0:y1, x0:x1]).max() > 30  # it did move


def _eye_edits(c0):
    """A driven face's eyes: blinks, a wide eye and gazes, with and without a turn, one frame without an eye edit."""
    out = []
    for k, (blink, wide, gaze, yaw) in enumerate([(0.3, 0.0, 0.0, 6), (0.9, 0.0, 0.2, 6), (0.0, 0.0, 0.0, 8),
                                                   (0.0, 0.6, -0.3, 4), (0.5, 0.0, 0.4, -6), (1.0, 0.0, 0.0, 3)]):
        c = c0.clone()
        c.pose[0, 0] += math.radians(yaw)
        if k != 2:
            c.expr["eyeBlink_L"] = c.expr["eyeBlink_R"] = blink
            c.expr["eyeWide_L"] = wide
            c.expr["eyeLookOut_L"] = c.expr["eyeLookIn_R"] = max(gaze, 0.0)
            c.expr["eyeLookIn_L"] = c.expr["eyeLookOut_R"] = max(-gaze, 0.0)
        out.append(c)
    return out


@pytest.mark.parametrize("max_side", [None, 300])
def test_an_eye_edit_patched_into_the_kept_head_layer_gives_the_whole_layer_s_frame(astronaut, monkeypatch, max_side):
    """An eye edit's head layer: the eyes' change patched into a working copy of the unedited layer (padded beyond the
    photo: kept), the last frame's patch undone first, gives the bytes of the whole layer edited and padded anew;
    where a patch would not be exact (here: a margin wider than the layer), the whole layer is edited."""
    from engine.photo import renderer as R

    fit, r = astronaut
    rr = r.preview_renderer() if max_side is not None else r
    edits = _eye_edits(fit.coeffs)
    fast = [r.render(c, max_side=max_side).image for c in edits]
    assert rr._eye_work[0] is not None, "the patch was not used"
    monkeypatch.setattr(R, "EYE_PATCH", False)
    ref = [r.render(c, max_side=max_side).image for c in edits]
    monkeypatch.setattr(R, "EYE_PATCH", True)
    monkeypatch.setattr(R, "_EYE_PATCH_MARGIN", 10 ** 6)
    rr._eye_work = [None, None]
    whole = [r.render(c, max_side=max_side).image for c in edits]
    assert rr._eye_work == [None, None]
    for a, b, w, c in zip(fast, ref, whole, edits):
        assert np.array_equal(a, b) and np.array_equal(w, b)
    photo = fit.image if max_side is None else r._photo_at(fast[0].shape[0] / fit.image.shape[0])
    assert np.abs(ref[1].astype(int) - photo).max() > 60  # the head moved, the eyes changed
    assert not np.array_equal(ref[1], ref[0])


def test_an_eye_edit_patched_into_the_2x_head_layer_equals_its_whole_upsampling(astronaut, monkeypatch):
    """With EYE_PATCH_2X the eyes' change goes into the kept 2x head layer: the same bytes as upsampling the whole
    edited layer twice (the patch's margin covers the bicubic taps), and the frame the 2x layer gives."""
    import cv2

    from engine.photo import renderer as R

    fit, r = astronaut
    monkeypatch.setattr(R, "EYE_PATCH_2X", True)
    base = fit.image
    seen = 0
    for c in _eye_edits(fit.coeffs):
        frame = r.render(c).image
        if not eyes_changed(r, c):
            continue
        seen += 1
        eye_orig = base
        edited = r.eyes.apply(base, c, 1.0)
        _, fg, (lx, ly) = r._layers_at(base, 1.0, 1.0)
        whole = R.PhotoRenderer._eye_edited_fg(fg, lx, ly, edited, eye_orig)
        r._fg_pad = None
        pfg, _ = r._fg_beyond(whole, lx, ly, base.shape[:2], 1.0)
        p = R._FG2_PAD
        padded = cv2.copyMakeBorder(pfg, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
        want = cv2.resize(padded, (2 * padded.shape[1], 2 * padded.shape[0]), interpolation=R._FG2_INTERP)
        r._fg_pad = None
        assert r._eye_work[1] is not None
        assert np.array_equal(r._eye_work[1][1], want)
        assert not np.array_equal(want, r._fg2[1])  # the eyes really changed the layer
        assert frame.shape == base.shape
    assert seen >= 4


def eyes_changed(r, c):
    from engine.photo import eyes

    return eyes.eye_expression_change(c, r.coeffs0)


def test_head_layer_pixels_gathered_once_and_again_when_their_arrays_change(astronaut):
    """GridLayers.forward / splat take the head-layer pixels' arrays gathered once (not every frame); replaced
    arrays are gathered again, so the splat follows them."""
    fit, r = astronaut
    gl = r.grid_layers
    a = gl._selected()
    assert all(x is y for x, y in zip(a, gl._selected()))
    sel = gl.sel
    for got, want in zip(a, (gl.head_xyz.reshape(-1, 3)[sel], gl.posed0.reshape(-1, 3)[sel],
                             gl.stay.reshape(-1)[sel][:, None], gl._centres.reshape(-1, 2)[sel])):
        assert np.array_equal(got, want)
    pose = fit.coeffs.pose[0].clone()
    pose[0] += math.radians(10)
    g0, _ = gl.forward(pose)
    stay = gl.stay
    try:
        gl.stay = np.ones_like(stay)  # everything stays with the torso: the turn moves nothing
        g1, _ = gl.forward(pose)
        g2, _ = gl.forward(fit.coeffs.pose[0])
    finally:
        gl.stay = stay
    assert np.abs(g0 - g2).max() > 1 and np.allclose(g1, g2, atol=1e-3)
    assert np.array_equal(gl.forward(pose)[0], g0)
