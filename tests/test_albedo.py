"""The learned albedo (assets/albedo.safetensors) and the pieces of training/albedo.py."""
import numpy as np
import pytest
import torch

from engine import config


@pytest.fixture(scope="module")
def albedo_file():
    p = config.ASSETS_DIR / "albedo.safetensors"
    if not p.exists():
        pytest.skip("assets/albedo.safetensors not built yet (python -m training albedo)")
    return p


def test_shipped_albedo_loads_and_is_skin(ict_path, albedo_file):
    from engine.face.model import FaceModel

    m = FaceModel.load(ict_path, albedo_path=albedo_file)
    assert m.albedo_learned and m.albedo_dim >= 10
    assert m.albedo_basis.shape == (m.albedo_dim, m.n_vertices, 3)
    face = m.albedo_mean[:6706]  # narrow face region
    r, g, b = face.mean(0).tolist()
    assert r > g > b, (r, g, b)
    assert r - b > 0.1, "mean albedo is grey, not skin"
    assert 0.2 < g < 0.9
    # coefficients ~N(0, 1): one unit of the first component changes colours by a sensible amount
    rms = m.albedo_basis[0].pow(2).mean().sqrt().item()
    assert 0.005 < rms < 0.2, rms
    # later components carry less variance than the first
    assert m.albedo_basis[-1].pow(2).mean().sqrt().item() < rms
    # an albedo coefficient changes the rendered colour
    c = m.zeros(2)
    c.albedo[1, 0] = 2.0
    alb = m.albedo(c)
    assert (alb[0] - alb[1]).abs().mean() > 0.005


def test_corrupt_albedo_file_is_a_clear_error(ict_path, tmp_path, albedo_file):
    from engine.face.model import FaceModel, FaceModelError
    from engine.io.files import save_safetensors

    bad = tmp_path / "albedo.safetensors"
    bad.write_bytes(albedo_file.read_bytes()[:1000])
    with pytest.raises(FaceModelError, match="albedo"):
        FaceModel.load(ict_path, albedo_path=bad)
    wrong = tmp_path / "wrong.safetensors"
    save_safetensors(wrong, {"albedo_mean": torch.zeros(10, 3), "albedo_basis": torch.zeros(2, 10, 3)},
                     "discoface.albedo", 1)
    with pytest.raises(FaceModelError, match="do not match"):
        FaceModel.load(ict_path, albedo_path=wrong)
    other = tmp_path / "other.safetensors"
    save_safetensors(other, {"x": torch.zeros(1)}, "discoface.rnet", 1)
    with pytest.raises(FaceModelError):
        FaceModel.load(ict_path, albedo_path=other)


def test_diffusion_fill_and_em_pca():
    from training.albedo import diffuse_fill, em_pca, vertex_adjacency

    # a strip of 6 vertices (triangles 0-1-2, 1-2-3, ...): ends known, middle filled smoothly between them
    tris = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4]])
    adj = vertex_adjacency(tris, 6)
    vals = torch.zeros(6, 1)
    vals[0], vals[1] = 0.0, 0.0
    vals[4], vals[5] = 1.0, 1.0
    known = torch.tensor([True, True, False, False, True, True])
    out = diffuse_fill(vals, known, adj, iters=200)
    assert out[0] == 0 and out[5] == 1
    assert 0.1 < out[2, 0] < 0.9 and 0.1 < out[3, 0] < 0.9
    # EM-PCA with missing entries recovers a rank-2 structure
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 30))
    coef = rng.normal(size=(400, 2))
    x = coef @ basis + 0.5
    x_missing = x.copy()
    x_missing[rng.random(x.shape) < 0.2] = np.nan
    mean, comps, std = em_pca(x_missing.astype(np.float32), 2, rounds=6)
    # the recovered subspace spans the true one
    q, _ = np.linalg.qr(comps.T)
    resid = basis.T - q @ (q.T @ basis.T)
    assert np.abs(resid).max() < 0.1 * np.abs(basis).max()
    assert np.allclose(mean, 0.5 + coef.mean(0) @ basis, atol=0.35)
