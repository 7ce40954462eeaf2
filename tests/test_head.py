"""HeadModel: the ICT face region joined with ict_parts.npz (neck, back of head, mouth, teeth, eyes)."""
import numpy as np
import pytest
import torch

from engine.face.head import MOUTH_PARTS, PART_COLORS, load_parts_arrays
from engine.face.model import FaceModelError


def _coeffs(model, jaw=0.0, seed=0):
    c = model.zeros(1)
    g = torch.Generator().manual_seed(seed)
    c.identity[:] = torch.randn(1, 100, generator=g)
    c.expr["jawOpen"] = jaw
    return c


def test_face_vertices_identical_to_face_model(head, face_model):
    c = _coeffs(face_model, jaw=0.4, seed=3)
    v = head.vertices(c)
    assert v.shape == (1, head.n_vertices, 3) and head.n_vertices == face_model.n_vertices + 15182
    assert torch.equal(v[:, :face_model.n_vertices], face_model.vertices(c))
    # the cached-identity split gives the same result
    v2 = head.identity_shape(c) + head.expression_offsets(c)
    assert torch.allclose(v, v2, atol=1e-4)
    assert torch.equal(head.lm68, face_model.lm68)


def test_parts_move_with_jaw_open_and_eyes_do_not(head, face_model):
    v0 = head.vertices(_coeffs(face_model, 0.0))[0]
    v1 = head.vertices(_coeffs(face_model, 1.0))[0]
    move = (v1 - v0).norm(dim=-1)
    teeth = head.vertex_in(["teeth"])
    tongue = head.vertex_in(["gums_tongue"])
    eyes = head.vertex_in(["sclera_l", "sclera_r", "iris_l", "iris_r"])
    assert move[teeth].max() > 2.0  # lower teeth drop with the jaw (cm)
    assert move[teeth].min() < 0.05  # upper teeth stay with the skull
    assert move[tongue].max() > 2.0
    assert move[eyes].max() < 1e-3
    # lower teeth end up below where they were
    assert (v1[teeth, 1] - v0[teeth, 1]).min() < -2.0


def test_labels_colours_and_normals(head, face_model):
    assert head.part_names[0] == "face"
    assert head.triangles.shape[0] == face_model.triangles.shape[0] + 30376
    assert int((head.triangle_part == 0).sum()) == face_model.triangles.shape[0]
    assert int(head.triangles.max()) == head.n_vertices - 1
    c = _coeffs(face_model)
    alb = head.albedo(c)[0]
    assert torch.equal(alb[:face_model.n_vertices], face_model.albedo(c)[0])
    teeth = head.vertex_in(["teeth"])
    assert torch.allclose(alb[teeth], torch.tensor(PART_COLORS["teeth"]).expand(int(teeth.sum()), 3))
    neck = head.vertex_in(["head_neck"])
    skin = face_model.albedo(c)[0, :6706].mean(0)
    assert torch.allclose(alb[neck], skin.expand(int(neck.sum()), 3), atol=1e-6)
    mouth = head.vertex_in(MOUTH_PARTS)
    assert (alb[mouth][:, 0] > alb[mouth][:, 2]).all()  # reds / ivory, never blue
    n = head.vertex_normals(head.vertices(c))[0]
    assert torch.allclose(n.norm(dim=-1), torch.ones(head.n_vertices), atol=1e-4)
    nose_tip = int(face_model.lm68[30])
    assert n[nose_tip, 2] > 0.8  # faces the viewer
    back = head.vertex_in(["head_neck"]) & (head.vertices(c)[0, :, 2] < -5)
    assert n[back, 2].mean() < -0.5  # back of the head faces away


def test_mirror_maps_left_to_right(head, face_model):
    m = head.mirror()
    lm = face_model.lm68
    v = torch.cat([face_model.mean, head.parts_mean])
    # outer eye corners and mouth corners swap sides
    for a, b in ((36, 45), (48, 54), (31, 35)):
        j = int(m[int(lm[a])])
        assert (v[j] - v[int(lm[b])] * torch.tensor([1.0, 1, 1])).norm() < 0.5
        assert torch.sign(v[j, 0]) == -torch.sign(v[int(lm[a]), 0])
    sl, sr = head.vertex_in(["sclera_l"]), head.vertex_in(["sclera_r"])
    assert head.vertex_in(["sclera_r"])[m[sl]].all() and head.vertex_in(["sclera_l"])[m[sr]].all()


def test_bad_parts_file_is_a_clear_error(tmp_path, face_model):
    with pytest.raises(FaceModelError, match="not found"):
        load_parts_arrays(tmp_path / "nope.npz")
    p = tmp_path / "bad.npz"
    np.savez(p, mean=np.zeros((4, 3), np.float32))
    with pytest.raises(FaceModelError, match="missing arrays"):
        load_parts_arrays(p)


def test_expression_offsets_many_or_few_blendshapes_in_use(head, face_model, monkeypatch):
    """Every blendshape in use moves the mesh by its basis times its weight, whichever way the product is formed
    (a driven face uses most of the 53: the whole bases; an edit a few: the used rows)."""
    import engine.face.head as head_mod

    g = torch.Generator().manual_seed(5)
    for n_used in (3, 45):
        c = face_model.zeros(2)
        idx = torch.randperm(c.expression.shape[1], generator=g)[:n_used]
        c.expression[:, idx] = torch.rand(2, n_used, generator=g) - 0.3
        want = torch.zeros(2, head.n_vertices * 3, dtype=torch.float64)
        basis = torch.cat([face_model._exp_flat, head._pexp_flat], 1).double()
        for k in idx.tolist():
            want += c.expression[:, k:k + 1].double() * basis[k]
        want = torch.cat([want[:, :face_model._exp_flat.shape[1]].view(2, -1, 3),
                          want[:, face_model._exp_flat.shape[1]:].view(2, -1, 3)], 1)
        got = head.expression_offsets(c)
        assert got.shape == (2, head.n_vertices, 3)
        assert torch.allclose(got.double(), want, atol=1e-5)
        # both ways give the same numbers
        monkeypatch.setattr(head_mod, "EXPR_SUBSET_MAX", 1.0 if n_used > 26 else 0.0)
        assert torch.allclose(head.expression_offsets(c), got, atol=1e-6)
        monkeypatch.undo()
