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


# ----------------------------------------------------------------------------------------------- generator v2 pieces
from training import warmup as W  # noqa: E402
from training.idcodes import fit_codes  # noqa: E402


def test_identity_codes_are_whitened_and_invert():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(128, 128, generator=g) * torch.linspace(2.0, 0.01, 128)
    desc = torch.randn(2000, 128, generator=g) @ mix.t() + 3.0
    idc = fit_codes(desc, 16)
    cov = torch.cov(idc.codes.t())
    assert torch.allclose(cov, torch.eye(16), atol=0.05)  # z ~ N(0, I) is the codes' own Gaussian
    assert 0.5 < idc.explained < 1.0
    # a code stands for the descriptor's projection on the 16 components; a generator carrying this PCA gives the
    # code back from that descriptor
    G = Generator(32, 0, default_channels(32, 32, 8), w_dim=32, map_layers=2, noise_dim=16, identity_noise=True)
    G.set_identity_pca(idc.mean, idc.basis, idc.std)
    assert torch.allclose(G.identity_code(idc.descriptors(idc.codes[:5])), idc.codes[:5], atol=1e-3)
    with pytest.raises(ValueError, match="more than 16"):
        fit_codes(desc[:10], 16)


def test_imitation_l1_below_G_size_ignores_pixel_texture():
    """At a lower comparison size a 1-px checkerboard on G's image costs nothing (the flat render must not teach
    blur); at G's own size it does; a colour difference costs at both."""
    img = torch.full((2, 3, 64, 64), 0.5)
    mask = torch.ones(2, 1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((yy + xx) % 2).float() * 0.2 - 0.1
    textured = img + checker
    assert W.imitation_l1(textured, img, mask, 32) < 1e-6
    assert W.imitation_l1(textured, img, mask, 64) > 0.09
    assert W.imitation_l1(img + 0.1, img, mask, 32) > 0.09
    # the head render comes at its own (smaller) size: it is brought to G's first
    assert W.imitation_l1(img[:, :, :32, :32] * 0 + 0.5, img[:, :, :32, :32], mask[:, :, :32, :32], 16) < 1e-6


def test_spread_term_pushes_only_pairs_closer_than_the_margin():
    far = torch.eye(4, 128)  # pairwise distance √2 > 0.75: nothing to push
    assert float(W.spread_term(far, 0.75)) == 0.0
    near = (torch.eye(4, 128) * 0.1).requires_grad_(True)  # distance 0.14: pushed apart
    t = W.spread_term(near, 0.75)
    assert abs(t.item() - (0.75 - 0.1 * 2 ** 0.5)) < 1e-4
    t.backward()
    moved = near.detach() - 0.1 * near.grad
    assert float(W.spread_term(moved, 0.75)) < t.item()
    assert float(W.spread_term(near.detach()[:1], 0.75)) == 0.0
    # rows of one person (twins) are not pushed apart; the other pairs still are
    person = torch.tensor([0, 1, 0, 1])
    assert float(W.spread_term(near.detach(), 0.75, person)) > 0
    assert float(W.spread_term(near.detach()[[0, 2]], 0.75, torch.tensor([0, 0]))) == 0.0


def test_with_identity_noise_keeps_the_images_and_carries_the_pca():
    G = Generator(32, 0, default_channels(32, 32, 8), w_dim=32, map_layers=2)
    dec = FactorDecoders.prior(0, tuple(f"e{i}" for i in range(53)))
    from engine.generator.networks import sample_latents

    lat = sample_latents(2, seed=1)
    c = dec.decode(lat)
    idc = fit_codes(torch.randn(300, 128), G.noise_dim)
    G2 = W.with_identity_noise(G, idc)
    with torch.no_grad():
        assert torch.equal(G(c, lat.noise, 1.0), G2(c, lat.noise, 1.0))
    assert G2.identity_noise and torch.equal(G2.id_basis, idc.basis)
    assert all(p.requires_grad for p in G2.parameters())


@pytest.mark.slow
def test_warmup_run_with_identity_codes_head_and_discriminator(tmp_path, monkeypatch, face_model, capsys):
    """A few steps of the v2 recipe on synthetic pairs: every term runs, the checkpoint keeps the discriminator,
    a resumed run continues, and the exported generator carries the identity PCA."""
    from engine.face.model import Coefficients
    from engine.generator.networks import FaceGenerator, sample_latents

    n = 40
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    c = dec.decode(sample_latents(n, seed=3))
    g = torch.Generator().manual_seed(0)
    pairs = {"images": torch.rand(n, 3, 32, 32, generator=g),
             "coeffs": {k: getattr(c, k).detach().clone() for k in Coefficients.FACTORS},
             "names": [f"p{i}.jpg" for i in range(n)]}
    monkeypatch.setattr(W, "load_pairs", lambda *a, **k: pairs)
    monkeypatch.setenv("DISCOFACE_CACHE", str(tmp_path / "cache"))
    fits = tmp_path / "fits.npz"
    fits.write_bytes(b"stand-in: load_pairs is replaced")
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--fits", str(fits), "--decoders", str(tmp_path / "none.safetensors"),
            "--out", str(out), "--batch", "4", "--steps", "4", "--ckpt-every", "2", "--imit-every", "1",
            "--head", "--imit-res", "16", "--id-codes", "--id-weight", "0.5", "--id-every", "1", "--id-spread", "1",
            "--id-keep", "1",
            "--adv-weight", "0.1", "--log-every", "2", "--threads", "1"]
    assert W.main(args + ["--export", str(tmp_path / "g.safetensors")]) == 0
    log = capsys.readouterr().out
    assert "identity codes: 32 components" in log and " spread " in log and " keep " in log and " adv " in log
    assert (out / "discriminator.safetensors").exists()
    fg = FaceGenerator.load(tmp_path / "g.safetensors")
    assert fg.G.identity_noise and fg.G.id_basis.abs().sum() > 0
    assert W.main(args + ["--resume", "--steps", "6"]) == 0
    assert "resumed at step 4" in capsys.readouterr().out
    assert W.main(["--preset", "tiny", "--fits", str(fits), "--out", str(out), "--id-weight", "1"]) == 2
    pairs.update(images=pairs["images"][:20], names=pairs["names"][:20],
                 coeffs={k: v[:20] for k, v in pairs["coeffs"].items()})
    assert W.main(args[:-2] + ["--out", str(tmp_path / "few")]) == 2  # too few photos for 32 codes: a message
    assert "need more than 32" in capsys.readouterr().err


def test_presets_are_typed_and_the_warmup_config_reads_them():
    """Every preset key is declared in ``training.presets.Preset`` (and the architecture keys are in all of them);
    the warm-up's config takes its generator architecture from the preset, its command line the rest."""
    import typing

    from training.presets import PRESETS, Preset

    declared = set(typing.get_type_hints(Preset))
    for name, p in PRESETS.items():
        assert set(p) <= declared, (name, set(p) - declared)
        assert Preset.__required_keys__ <= set(p), name
    cfg = W.config_from_args(W.parse_args(["--preset", "tiny", "--batch", "4", "--id-codes", "--steps", "3"]))
    assert (cfg.resolution, cfg.w_dim, cfg.batch, cfg.id_codes, cfg.steps) == (32, 64, 4, True, 3)
    assert cfg.g_channels == PRESETS["tiny"]["g_channels"] and cfg.arch()["map_layers"] == 2
    with pytest.raises(W.WarmupError, match="unknown preset"):
        W.WarmupConfig.from_preset("nope")
