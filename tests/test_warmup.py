"""training.warmup's contrastive pairs (the stage-2 half of the stage-1 vs 1+2 ablation)."""
import math

import pytest
import torch

from engine.generator.networks import FactorDecoders, Generator, default_channels
from training.loss import DiscoLoss, Perception
from training.warmup import pair_coefficients, pair_loss

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def parts(face_model, renderer):
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    G = Generator(32, face_model.albedo_dim, default_channels(32, 32, 8), w_dim=32, map_layers=2)
    G.set_coeff_stats(*dec.coefficient_stats(256))
    disco = DiscoLoss(renderer, Perception(load=False), 32)
    return dec, G, disco


@pytest.mark.parametrize("factor", ["expression", "light"])
def test_pair_members_differ_only_in_their_factor(parts, factor):
    dec, _, _ = parts

    def wide_pose(c, gen):
        c.pose[:, 0] = (torch.rand(c.batch, generator=gen) * 2 - 1) * math.radians(40)

    lat, c = pair_coefficients(dec, 3, factor, torch.Generator().manual_seed(0), wide_pose)
    assert c.batch == 6 and lat.noise.shape[0] == 6
    for name in ("identity", "albedo", "expression", "light", "pose"):
        a, b = getattr(c, name)[:3], getattr(c, name)[3:]
        if name == factor:
            assert (a - b).abs().max() > 1e-3, f"{name} should differ inside a pair"
        else:
            torch.testing.assert_close(a, b, msg=f"{name} should be shared inside a {factor} pair")
    assert c.pose[:3, 0].abs().max() > math.radians(5)  # the override reached both members


@pytest.mark.parametrize("factor", ["expression", "light"])
def test_pair_loss_is_positive_and_trains_G(parts, factor):
    dec, G, disco = parts
    G.zero_grad(set_to_none=True)
    loss = pair_loss(disco, G, dec, 2, factor, torch.Generator().manual_seed(1))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad.abs().sum() for p in G.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0


def test_pair_loss_refuses_other_factors(parts):
    dec, G, disco = parts
    with pytest.raises(ValueError, match="expression or light"):
        pair_loss(disco, G, dec, 2, "pose", torch.Generator())


def test_strong_expressions_reach_the_chosen_share(face_model):
    from training.warmup import strong_expressions

    c = face_model.zeros(400)
    strong_expressions(c, 0.5, torch.Generator().manual_seed(0))
    changed = (c.expression > 0).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    jaw = c.expr["jawOpen"]
    assert (jaw[changed] > 0).all() and (jaw[~changed] == 0).all()
    assert c.expression.max() <= 1 and (c.expression > 0).sum(1)[changed].min() >= 2
