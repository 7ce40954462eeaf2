"""Compiled forward rasterizer: agrees with the differentiable torch rasterizer (same Fragments contract) on the full
head at several poses and on edge cases; its z-test and back-face culling are checked on their own."""
import math

import numpy as np
import pytest
import torch

from engine.render.camera import Camera
from engine.render.fast_raster import available, rasterize_forward
from engine.render.rasterizer import interpolate, rasterize

pytestmark = pytest.mark.skipif(not available(), reason="numba is not installed")


def _head_screen(head, yaw_deg, pitch_deg, size, expr=None):
    m = head.model
    c = m.zeros(1)
    c.pose[0, 0] = math.radians(yaw_deg)
    c.pose[0, 1] = math.radians(pitch_deg)
    for k, v in (expr or {}).items():
        c.expr[k] = v
    cam = Camera.canonical(m.mean, m.lm68)
    with torch.no_grad():
        p = cam.to_camera(head.vertices(c), c.pose)
        return cam.project(p, size), p[..., 2]


def _agree(a, b, min_id=0.99):
    cov_a, cov_b = a.face_id >= 0, b.face_id >= 0
    either = cov_a | cov_b
    assert either.sum() > 0
    same_cov = (cov_a == cov_b).float()[either].mean().item()
    assert same_cov >= 0.995, same_cov
    both = cov_a & cov_b
    same_id = (a.face_id == b.face_id)[both].float().mean().item()
    assert same_id >= min_id, same_id
    hit = both & (a.face_id == b.face_id)
    assert torch.allclose(a.bary[hit], b.bary[hit].to(a.bary.dtype), atol=1e-3)
    assert torch.allclose(a.depth[both], b.depth[both].to(a.depth.dtype), rtol=2e-3)
    # the packed arrays describe the same pixels as the images
    assert torch.equal(a.face_id.reshape(-1)[a.pix_index], a.pix_face)
    assert torch.allclose(a.bary.reshape(-1, 3)[a.pix_index], a.pix_bary)
    return same_id


@pytest.mark.parametrize("yaw,pitch,size", [(0, 0, 256), (35, -10, 256), (-60, 15, 192), (120, 0, 128)])
def test_full_head_matches_torch(head, yaw, pitch, size):
    xy, z = _head_screen(head, yaw, pitch, size, {"jawOpen": 0.6})
    tris = head.triangles
    fast = rasterize_forward(xy, z, tris, size)
    ref = rasterize(xy, z, tris, size)
    _agree(fast, ref)
    # interpolation through either fragments gives the same image
    attr = torch.rand(1, xy.shape[1], 3, generator=torch.Generator().manual_seed(0))
    im_f = interpolate(attr, fast, tris)
    im_r = interpolate(attr, ref, tris)
    close = ((im_f - im_r).abs().amax(1) < 2e-2).float().mean().item()
    assert close >= 0.99


def test_no_culling_and_batches_match_torch(head):
    xy0, z0 = _head_screen(head, 20, 0, 128)
    xy1, z1 = _head_screen(head, -30, 10, 128)
    xy, z = torch.cat([xy0, xy1]), torch.cat([z0, z1])
    fast = rasterize_forward(xy, z, head.triangles, (128, 96), cull_backfaces=False)
    ref = rasterize(xy, z, head.triangles, (128, 96), cull_backfaces=False)
    assert fast.face_id.shape == (2, 128, 96)
    _agree(fast, ref)


def _pair():
    """Two overlapping front-facing triangles (area < 0 in pixel coords), the second nearer the camera."""
    xy = torch.tensor([[[2.13, 2.07], [3.11, 13.37], [13.21, 3.19],
                        [5.17, 5.03], [5.61, 14.87], [14.93, 6.11]]])
    z = torch.tensor([[10.0, 11.0, 12.0, 9.0, 9.5, 10.5]])
    return xy, z, torch.tensor([[0, 1, 2], [3, 4, 5]])


def test_z_test_keeps_the_nearest():
    xy, z, tris = _pair()
    for order in (tris, tris.flip(0)):
        f = rasterize_forward(xy, z, order, 16)
        near = int(torch.nonzero(order[:, 0] == 3).item())
        assert f.face_id[0, 7, 7].item() == near  # covered by both: the nearer one wins whatever the order
        assert f.face_id[0, 3, 3].item() == 1 - near
        assert f.depth[0, 7, 7].item() < 10.0
    # move the second one behind: the first one wins
    f = rasterize_forward(xy, z + torch.tensor([[0, 0, 0, 5.0, 5.0, 5.0]]), tris, 16)
    assert f.face_id[0, 7, 7].item() == 0


def test_back_faces_are_culled_only_when_asked():
    xy, z, tris = _pair()
    back = tris[:, [0, 2, 1]]  # reversed winding: both triangles now face away
    assert (rasterize_forward(xy, z, back, 16).face_id < 0).all()
    f = rasterize_forward(xy, z, back, 16, cull_backfaces=False)
    assert f.face_id[0, 7, 7].item() == 1
    assert torch.allclose(f.bary.sum(-1)[f.face_id >= 0], torch.ones(1))


def test_degenerate_behind_camera_and_empty():
    xy, z, tris = _pair()
    # a zero-area triangle, one with a vertex behind the camera, one fully off-screen, NaN coordinates
    xy2 = torch.cat([xy, torch.tensor([[[4.0, 4.0], [8.0, 8.0], [12.0, 12.0], [40.0, 40.0], [50.0, 40.0],
                                        [40.0, 50.0], [float("nan"), 1.0], [3.0, 9.0], [9.0, 3.0]]])], 1)
    z2 = torch.cat([z, torch.tensor([[5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])], 1)
    tris2 = torch.cat([tris, torch.tensor([[6, 8, 7], [9, 11, 10], [12, 14, 13], [0, 2, 1]])])
    behind = z2.clone()
    behind[0, 1] = -3.0  # triangle 0 has a vertex behind the camera
    for cull in (True, False):
        f = rasterize_forward(xy2, behind, tris2, 16, cull_backfaces=cull)
        r = rasterize(xy2, behind, tris2, 16, cull_backfaces=cull)
        assert torch.equal(f.face_id, r.face_id)
        assert not (f.face_id == 0).any()
        assert torch.isfinite(f.bary).all() and torch.isfinite(f.depth).all()
    # nothing to draw: no triangles, or an image of zero pixels
    e = rasterize_forward(xy, z, torch.zeros(0, 3, dtype=torch.int64), 16)
    assert (e.face_id < 0).all() and e.pix_index.numel() == 0 and e.mask.sum() == 0
    e = rasterize_forward(xy, z, tris, (0, 0))
    assert e.face_id.shape == (1, 0, 0)


def test_no_gradient_and_dtype(head):
    xy, z = _head_screen(head, 0, 0, 64)
    xy = xy.double().requires_grad_(True)
    f = rasterize_forward(xy, z.double(), head.triangles, 64)
    assert not f.bary.requires_grad and f.bary.dtype == torch.float64 and f.face_id.dtype == torch.int64
    assert f.pix_face.dtype == torch.int64 and np.all(f.pix_index.numpy()[1:] > f.pix_index.numpy()[:-1])


def test_face_renderer_uses_the_compiled_path_only_without_gradients(renderer, face_model, monkeypatch):
    import engine.render.renderer as R

    calls = []
    monkeypatch.setattr(R, "rasterize_forward", lambda *a, **k: calls.append(1) or rasterize_forward(*a, **k))
    c = face_model.zeros(1)
    c.pose[0, 0] = 0.3
    with torch.no_grad():
        fast = renderer(c, 96)
    assert calls == [1]
    c.identity.requires_grad_(True)
    ref = renderer(c, 96)
    assert calls == [1]  # a gradient was asked for: the differentiable rasterizer drew it
    ref.image.sum().backward()
    assert c.identity.grad.abs().sum() > 0
    assert ((fast.image - ref.image.detach()).abs().amax(1) < 1e-3).float().mean() > 0.99


def test_deferred_and_background_warm_up_draw_with_torch_until_ready(monkeypatch):
    import engine.render.fast_raster as FR

    xy, z, tris = _pair()
    used = []
    monkeypatch.setattr(FR, "_torch_rasterize", lambda *a: used.append("torch") or rasterize(*a))
    monkeypatch.setattr(FR, "_deferred", False)
    monkeypatch.setattr(FR, "_loader", None)
    FR.warm_up()
    ref = rasterize_forward(xy, z, tris, 16)
    assert used == [] and FR.ready()
    FR.defer()
    a = rasterize_forward(xy, z, tris, 16)
    assert used == ["torch"] and torch.equal(a.face_id, ref.face_id)
    FR.warm_up(background=True)  # already loaded in this process: the thread finishes at once
    FR._loader is None or FR._loader.join()
    b = rasterize_forward(xy, z, tris, 16)
    assert used == ["torch"] and torch.equal(b.face_id, ref.face_id)


def test_rotate_about_gives_torch_s_rotation(head, monkeypatch):
    """The compiled rotation of a mesh about a pivot (photo mode's HeadProjector.posed, every frame) gives
    ``(v - pivot) @ R.T + pivot`` as torch computes it; with a gradient wanted, or float64, it declines (None)."""
    from engine.render import fast_raster
    from engine.render.camera import rotation_matrix

    monkeypatch.setattr(fast_raster, "_deferred", False)
    fast_raster.warm_up()
    g = torch.Generator().manual_seed(2)
    v = head.vertices(head.model.zeros(1))[0] + torch.randn(head.n_vertices, 3, generator=g)
    pivot = torch.tensor([0.3, 1.9, -2.5])
    for pose in ([0.3, -0.2, 0.1], [-0.5, 0.05, 0.0], [0.0, 0.0, 0.0]):
        rot = rotation_matrix(torch.tensor([pose]))[0]
        got = fast_raster.rotate_about(v, rot, pivot)
        want = (v - pivot) @ rot.T + pivot
        assert got is not None and got.shape == want.shape and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert fast_raster.rotate_about(v.requires_grad_(True), rot, pivot) is None
    assert fast_raster.rotate_about(v.detach().double(), rot.double(), pivot.double()) is None
