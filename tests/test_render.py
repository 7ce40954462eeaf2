"""Renderer: gradients, symmetry, landmarks, inverse rendering, pytorch3d parity (where installed)."""
import math

import pytest
import torch
import torch.nn.functional as F

from engine.render import interpolate, light_from_direction, rasterize
from engine.render.rasterizer import pytorch3d_available, rasterize_pytorch3d
from engine.render.shading import direction_from_light


def _small_mesh():
    # two overlapping triangles at different depths + one separate triangle (front-facing in pixel coords: area < 0)
    # coordinates chosen so that no pixel centre lies exactly on an edge (coverage is then locally constant)
    xy = torch.tensor([[[2.13, 2.07], [3.11, 13.37], [13.21, 3.19],
                        [5.17, 5.03], [5.61, 14.87], [14.93, 6.11],
                        [1.09, 10.13], [1.43, 15.29], [6.07, 14.17]]], dtype=torch.float64)
    z = torch.tensor([[10.0, 11.0, 12.0, 9.0, 9.5, 10.5, 20.0, 21.0, 22.0]], dtype=torch.float64)
    tris = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    attr = torch.rand(1, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return xy, z, tris, attr


def test_rasterizer_finite_difference_gradients():
    xy, z, tris, attr = _small_mesh()
    weights = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(xy_, z_, attr_):
        frags = rasterize(xy_, z_, tris, 16)
        return (interpolate(attr_, frags, tris) * weights).sum()

    xy_ = xy.clone().requires_grad_(True)
    z_ = z.clone().requires_grad_(True)
    attr_ = attr.clone().requires_grad_(True)
    loss(xy_, z_, attr_).backward()
    eps = 1e-6
    for tensor, grad, name in ((xy, xy_.grad, "xy"), (z, z_.grad, "z"), (attr, attr_.grad, "attr")):
        flat = tensor.view(-1)
        assert grad.abs().sum() > 0, name
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = loss(xy, z, attr).item()
            flat[i] = old - eps
            down = loss(xy, z, attr).item()
            flat[i] = old
            fd = (up - down) / (2 * eps)
            assert grad.view(-1)[i].item() == pytest.approx(fd, rel=1e-4, abs=1e-6), f"{name}[{i}]"


def test_depth_test_keeps_the_nearest_triangle():
    xy, z, tris, attr = _small_mesh()
    frags = rasterize(xy, z, tris, 16)
    # pixel (7, 7) is covered by triangles 0 (depth ~11) and 1 (depth ~9.5): the nearer one wins
    assert frags.face_id[0, 7, 7].item() == 1
    assert frags.face_id[0, 3, 3].item() == 0
    assert frags.face_id[0, 0, 15].item() == -1
    assert torch.allclose(frags.bary.sum(-1)[frags.face_id >= 0], torch.ones(1, dtype=torch.float64))


def test_yaw_mirror_symmetry(face_model, renderer):
    for deg in (15, 40):
        c = face_model.zeros(2)
        c.set_pose_degrees(yaw=deg)
        c.pose[1, 0] = -math.radians(deg)
        m = renderer(c, 128).mask[:, 0]
        a, b = m[0], m[1].flip(-1)
        iou = (a * b).sum() / ((a + b) > 0).sum()
        assert iou >= 0.98, (deg, float(iou))


def test_positive_yaw_turns_nose_to_viewers_right(face_model, renderer):
    c = face_model.zeros(1)
    c.set_pose_degrees(yaw=30)
    lm = renderer.landmarks(c, 128)[0]
    assert lm[30, 0] > (lm[36, 0] + lm[45, 0]) / 2 + 5


def test_landmarks_fall_inside_the_face_mask(face_model, renderer):
    g = torch.Generator().manual_seed(3)
    c = face_model.zeros(4)
    c.identity.normal_(generator=g)
    c.pose[:, 0] = torch.tensor([0.0, 0.2, -0.2, 0.1])
    out = renderer(c, 128)
    # 1-px tolerance: the eyelid landmarks 37/44 sit exactly on the rim of the eye holes
    mask = F.max_pool2d(out.mask, 3, 1, 1)[:, 0]
    for b in range(4):
        for x, y in out.landmarks[b].tolist():
            assert mask[b, int(y), int(x)] == 1


def test_canonical_framing(face_model, renderer):
    from engine.render import canonical_landmarks

    lm = canonical_landmarks(face_model, 200)
    assert lm[45, 0] - lm[36, 0] == pytest.approx(0.44 * 200, rel=1e-3)
    assert abs((lm[36, 0] + lm[45, 0]) / 2 - 100) < 1e-3
    assert torch.allclose(canonical_landmarks(face_model, 100), lm / 2, atol=1e-3)


def test_light_direction_brightens_that_side(face_model, renderer):
    c = face_model.zeros(2)
    c.light[0] = light_from_direction(60, 0, 0.7)[0]
    c.light[1] = light_from_direction(-60, 0, 0.7)[0]
    img = renderer(c, 64).image
    left, right = img[..., :, :28].mean(dim=(1, 2, 3)), img[..., :, 36:].mean(dim=(1, 2, 3))
    assert right[0] > left[0] + 0.05 and left[1] > right[1] + 0.05
    d = direction_from_light(c.light[0])
    assert d["azimuth"] == pytest.approx(60, abs=1e-3) and d["intensity"] == pytest.approx(0.7, abs=1e-4)


def test_inverse_rendering_recovers_pose_expression_light(face_model, renderer):
    torch.manual_seed(0)
    size = 64
    target = face_model.zeros(1)
    target.set_pose_degrees(yaw=20, pitch=5)
    target.expr["jawOpen"] = 0.6
    target.light[:] = light_from_direction(35, 15, 0.4, ambient=0.7)
    with torch.no_grad():
        ref = renderer(target, size)
    c = face_model.zeros(1).requires_grad_(True)
    opt = torch.optim.Adam([c.pose, c.expression, c.light], lr=0.03)
    for step in range(300):
        out = renderer(c, size)
        photo = (out.image - ref.image).abs().mean()
        lm = ((out.landmarks - ref.landmarks) / size).pow(2).sum(-1).mean()
        loss = photo + 10 * lm
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            c.expression.clamp_(0, 1)
        if step == 150:
            for gr in opt.param_groups:
                gr["lr"] = 0.01
    yaw_err = abs(math.degrees(c.pose[0, 0].item()) - 20)
    jaw_err = abs(c.expr["jawOpen"].item() - 0.6)
    assert yaw_err < 1.0, yaw_err
    assert jaw_err < 0.05, jaw_err
    # SH light is only identifiable through the normals the face shows (band 0, z and 3z^2-1 are nearly collinear
    # for a frontal face), so compare the irradiance the two lights give on the face's own normals
    from engine.render.shading import full_light, sh_basis

    from engine.render import rotation_matrix

    normals = face_model.vertex_normals(face_model.vertices(target)) @ rotation_matrix(target.pose).transpose(1, 2)
    basis = sh_basis(normals[0][normals[0, :, 2] > 0.3])  # the normals the camera sees
    irr = lambda light: basis @ full_light(light.detach())[0].T  # noqa: E731
    light_err = (irr(c.light) - irr(target.light)).abs().mean().item()
    assert light_err < 0.03, light_err


@pytest.mark.skipif(not pytorch3d_available() or not torch.cuda.is_available(),
                    reason="pytorch3d backend needs pytorch3d + a GPU (optional backend)")
def test_pytorch3d_backend_matches_torch(face_model, renderer):
    c = face_model.zeros(2).to("cuda")
    c.pose[1, 0] = 0.3
    verts, cam, screen = renderer.to("cuda").geometry(c, 128)
    a = rasterize(screen, cam[..., 2], face_model.triangles.cuda(), 128)
    b = rasterize_pytorch3d(screen, cam[..., 2], face_model.triangles.cuda(), 128)
    agree = (a.face_id == b.face_id).float().mean()
    assert agree > 0.99
