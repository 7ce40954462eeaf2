"""engine.shapes.assert_shape (stylegan2-ada's misc.assert_shape) and the boundaries that check with it: the
rasterizer's inputs, the generator's noise and per-layer latents."""
from __future__ import annotations

import pytest
import torch

from engine.shapes import ShapeError, assert_shape


def test_assert_shape_checks_rank_and_each_given_size():
    assert_shape(torch.zeros(2, 68, 2), [None, 68, 2])
    assert_shape(torch.zeros(3), [3])
    with pytest.raises(ShapeError, match=r"landmarks: dimension 1 is 67, expected 68 \(shape \(2, 67, 2\), contract "
                                         r"\(\*, 68, 2\)\)"):
        assert_shape(torch.zeros(2, 67, 2), [None, 68, 2], "landmarks")
    with pytest.raises(ShapeError, match=r"expected 3 dimensions \(\*, 68, 2\), got shape \(68, 2\)"):
        assert_shape(torch.zeros(68, 2), [None, 68, 2])
    assert issubclass(ShapeError, ValueError)  # a user-facing error type, one line


def test_the_rasterizer_refuses_mismatched_inputs():
    from engine.render.rasterizer import rasterize

    xy = torch.tensor([[[1.0, 1.0], [6.0, 1.0], [1.0, 6.0]]])
    z = torch.ones(1, 3)
    tris = torch.tensor([[0, 1, 2]])
    assert rasterize(xy, z, tris, 8).face_id.shape == (1, 8, 8)
    with pytest.raises(ShapeError, match="z: dimension 1 is 4"):
        rasterize(xy, torch.ones(1, 4), tris, 8)
    with pytest.raises(ShapeError, match="xy: dimension 2 is 3"):
        rasterize(torch.zeros(1, 3, 3), z, tris, 8)
    with pytest.raises(ShapeError, match="tris"):
        rasterize(xy, z, tris.reshape(3, 1), 8)


def test_the_generator_refuses_a_noise_of_the_wrong_size():
    from engine.generator.networks import FactorDecoders, Generator, default_channels, sample_latents

    G = Generator(32, 0, default_channels(32, 32, 8), w_dim=32, map_layers=2)
    dec = FactorDecoders.prior(0, tuple(f"e{i}" for i in range(53)))
    lat = sample_latents(2, seed=1)
    c = dec.decode(lat)
    with torch.no_grad():
        assert G(c, lat.noise).shape == (2, 3, 32, 32)
        with pytest.raises(ShapeError, match=f"noise: dimension 1 is 5, expected {G.noise_dim}"):
            G(c, lat.noise[:, :5])
        with pytest.raises(ShapeError, match="noise: dimension 0 is 1, expected 2"):
            G(c, lat.noise[:1])
        with pytest.raises(ShapeError, match="ws: dimension 2"):
            G.synthesis(torch.zeros(2, G.num_ws, G.w_dim + 1))
