"""engine.generator.networks (decoders, G, truncation, files), training.vae and the loss plumbing in training.loss."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from engine.face.model import N_EXP, N_ID, Coefficients
from engine.generator.networks import (LATENT_DIMS, FaceGenerator, FactorDecoders, Generator, default_channels,
                              load_default_generator, sample_latents)
from engine.io.files import WeightsError

torch.set_num_threads(1)


def _names():
    return tuple(f"e{i}" for i in range(N_EXP))


def small_G(res=32, albedo_dim=0):
    return Generator(res, albedo_dim, default_channels(res, 32, 8), w_dim=32, map_layers=2)


def make_face_generator(res=32, albedo_dim=0):
    dec = FactorDecoders.prior(albedo_dim, _names())
    G = small_G(res, albedo_dim)
    G.set_coeff_stats(*dec.coefficient_stats(512))
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial noise strengths so 'const' noise matters
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.3)
    G.compute_w_avg_id(dec, n=256)
    return FaceGenerator(dec, G).eval()


# ----------------------------------------------------------------------------------------------- latents, decoders


def test_latents_are_seeded_and_sized():
    a, b, c = sample_latents(3, seed=7), sample_latents(3, seed=7), sample_latents(3, seed=8)
    for k, n in LATENT_DIMS.items():
        assert getattr(a, k).shape == (3, n)
        assert torch.equal(getattr(a, k), getattr(b, k))
    assert not torch.equal(a.identity, c.identity)


def test_prior_decoders_give_plausible_coefficients():
    dec = FactorDecoders.prior(4, _names())
    c = dec.decode(sample_latents(2000, seed=0))
    assert isinstance(c, Coefficients) and c.albedo.shape == (2000, 4) and c.exp_names == _names()
    assert c.expression.min() >= 0 and c.expression.max() <= 1
    assert abs(float(c.identity.detach().std()) - 1.0) < 0.1  # ICT modes are std-scaled
    yaw_deg = torch.rad2deg(c.pose[:, 0]).std()
    assert 10 < float(yaw_deg) < 25
    assert (c.expression > 0).float().mean() > 0.2  # not all neutral


def test_decoders_file_round_trip(tmp_path):
    dec = FactorDecoders.prior(3, _names())
    with torch.no_grad():
        dec.nets["pose"].mlp[0].weight.normal_()
    p = tmp_path / "dec.safetensors"
    dec.save(p)
    back = FactorDecoders.load(p)
    lat = sample_latents(4, seed=1)
    assert torch.allclose(back.decode(lat).as_vector(), dec.decode(lat).as_vector())
    assert back.exp_names == _names()


# ----------------------------------------------------------------------------------------------- generator


def test_generator_shapes_and_gradients():
    G = small_G(32, albedo_dim=2)
    dec = FactorDecoders.prior(2, _names())
    lat = sample_latents(3, seed=0)
    c = dec.decode(lat)
    img = G(c, lat.noise, noise_mode="random")
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
    img.square().mean().backward()
    assert G.mapping[0].weight.grad.abs().sum() > 0
    assert G.blocks[0].const.grad.abs().sum() > 0
    assert G.blocks[-1].torgb.weight.grad.abs().sum() > 0
    # the coefficients condition the image: a different identity changes it
    c2 = c.clone()
    c2.identity += 1.0
    with torch.no_grad():
        assert (G(c2, lat.noise) - G(c, lat.noise)).abs().mean() > 1e-4


def test_batch_one_equals_batched():
    G = small_G(32)
    dec = FactorDecoders.prior(0, _names())
    lat = sample_latents(3, seed=2)
    c = dec.decode(lat)
    with torch.no_grad():
        full = G(c, lat.noise, 0.7)
        one = G(c[1], lat.noise[1:2], 0.7)
    assert torch.allclose(full[1:2], one, atol=1e-5)


def test_truncation_psi_one_is_identity_and_only_first_layers_move():
    G = small_G(64)
    dec = FactorDecoders.prior(0, _names())
    G.compute_w_avg_id(dec, n=256)
    lat = sample_latents(4, seed=3)
    c = dec.decode(lat)
    with torch.no_grad():
        ws1 = G.ws(c, lat.noise, 1.0)
        w = G.map(c, lat.noise)
        assert torch.equal(ws1, w.unsqueeze(1).expand_as(ws1))
        assert torch.equal(G(c, lat.noise, 1.0), G.synthesis(ws1))
        ws7 = G.ws(c, lat.noise, 0.7)
        L = G.trunc_layers
        assert G.num_ws == 10 and L == 8
        assert torch.equal(ws7[:, L:], ws1[:, L:])  # fine layers (64 px) untouched
        assert (ws7[:, :L] - ws1[:, :L]).abs().amax() > 1e-4
        # the shift is (1 - psi)(w̄_id - w_id), the same on every truncated layer
        delta = 0.3 * (G.w_avg_id - G.identity_w(c))
        assert torch.allclose(ws7[:, 0] - ws1[:, 0], delta, atol=1e-5)
        # psi = 0 sends an identity's w_id exactly to the mean
        ws0 = G.ws(c, lat.noise, 0.0)
        assert torch.allclose(ws0[:, 0] - w + G.identity_w(c), G.w_avg_id.expand(4, -1), atol=1e-5)


def test_identity_w_ignores_other_factors_and_noise():
    G = small_G(32)
    dec = FactorDecoders.prior(0, _names())
    lat = sample_latents(2, seed=4)
    c = dec.decode(lat)
    c2 = c.clone()
    c2.expression = torch.rand_like(c2.expression)
    c2.pose += 0.3
    c2.light += 0.2
    with torch.no_grad():
        assert torch.allclose(G.identity_w(c), G.identity_w(c2))
        assert not torch.allclose(G.map(c, lat.noise), G.map(c2, lat.noise))


def test_identity_noise_is_truncated_with_the_identity_and_maps_descriptors():
    """An identity-code generator: the noise belongs to the identity (w_id, truncation), expression still does not
    move w_id, and identity_code inverts the stored descriptor PCA."""
    G = Generator(32, 0, default_channels(32, 32, 8), w_dim=32, map_layers=2, identity_noise=True)
    plain = small_G(32)
    dec = FactorDecoders.prior(0, _names())
    lat = sample_latents(3, seed=11)
    c = dec.decode(lat)
    other = torch.randn_like(lat.noise)
    with torch.no_grad():
        assert not torch.allclose(G.identity_w(c, lat.noise), G.identity_w(c, other))
        assert torch.allclose(plain.identity_w(c, lat.noise), plain.identity_w(c, other))  # v1: noise ignored
        c2 = c.clone()
        c2.expression = torch.rand_like(c2.expression)
        assert torch.allclose(G.identity_w(c, lat.noise), G.identity_w(c2, lat.noise))
        G.compute_w_avg_id(dec, n=128)
        delta = 0.3 * (G.w_avg_id - G.identity_w(c, lat.noise))
        assert torch.allclose(G.ws(c, lat.noise, 0.7)[:, 0] - G.ws(c, lat.noise, 1.0)[:, 0], delta, atol=1e-5)
    q, _ = torch.linalg.qr(torch.randn(128, G.noise_dim))
    mean, std = torch.randn(128), torch.rand(G.noise_dim) + 0.5
    G.set_identity_pca(mean, q.t(), std)
    z = torch.randn(4, G.noise_dim)
    desc = mean + (z * std) @ q.t()
    assert torch.allclose(G.identity_code(desc), z, atol=1e-4)
    with pytest.raises(ValueError, match="not an identity code"):
        plain.identity_code(desc)


def test_identity_noise_generator_file_round_trip_and_old_files_still_load(tmp_path):
    dec = FactorDecoders.prior(0, _names())
    G = Generator(32, 0, default_channels(32, 32, 8), w_dim=32, map_layers=2, identity_noise=True)
    G.set_identity_pca(torch.randn(128), torch.randn(G.noise_dim, 128), torch.rand(G.noise_dim) + 0.1)
    G.compute_w_avg_id(dec, n=64)
    p = tmp_path / "g2.safetensors"
    FaceGenerator(dec, G).save(p)
    back = FaceGenerator.load(p)
    assert back.G.identity_noise and back.meta["version"] == "2"
    assert torch.equal(back.G.id_basis, G.id_basis) and torch.equal(back.G.w_avg_id, G.w_avg_id)
    old = tmp_path / "g1.safetensors"
    make_face_generator(32).save(old)
    assert not FaceGenerator.load(old).G.identity_noise


# ----------------------------------------------------------------------------------------------- FaceGenerator files


def test_face_generator_round_trip(tmp_path):
    fg = make_face_generator(32, albedo_dim=2)
    p = tmp_path / "generator.safetensors"
    fg.save(p)
    back = FaceGenerator.load(p)
    assert back.resolution == 32 and back.albedo_dim == 2 and back.exp_names == _names()
    c, n = back.sample(2, seed=5)
    c0, n0 = fg.sample(2, seed=5)
    assert torch.equal(c.as_vector(), c0.as_vector()) and torch.equal(n, n0)
    a, b = back.synthesize(c, n), fg.synthesize(c0, n0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-4)  # the loaded one runs channels_last
    assert torch.allclose(back.synthesize(c, n, 0.5), back.synthesize(c, n, 0.5))  # deterministic (const noise)
    assert not torch.allclose(back.synthesize(c, n, 1.0), back.synthesize(c, n, 0.5))


def test_bad_generator_files_raise_clear_errors(tmp_path):
    fg = make_face_generator(32)
    good = tmp_path / "g.safetensors"
    fg.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        FaceGenerator.load(trunc)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsError):
        FaceGenerator.load(junk)
    with pytest.raises(WeightsError, match="not found"):
        FaceGenerator.load(tmp_path / "absent.safetensors")
    other = tmp_path / "dec.safetensors"
    fg.decoders.save(other)
    with pytest.raises(WeightsError, match="expected 'discoface.generator'"):
        FaceGenerator.load(other)
    # a file whose tensors do not match its config (e.g. edited metadata) is refused by the shape check
    from engine.io.files import load_safetensors, save_safetensors
    import json

    tensors, meta = load_safetensors(good, "discoface.generator", 2)
    cfg = json.loads(meta["config"])
    cfg["generator"]["w_dim"] = 48
    save_safetensors(tmp_path / "bad.safetensors", tensors, "discoface.generator", 1, {"config": json.dumps(cfg)})
    with pytest.raises(WeightsError, match="shape"):
        FaceGenerator.load(tmp_path / "bad.safetensors")


def test_load_default_generator_absent(tmp_path, monkeypatch):
    from engine import config

    monkeypatch.setattr(config, "ASSETS_DIR", tmp_path)
    assert load_default_generator() is None
    (tmp_path / "generator.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError):
        load_default_generator()


# ----------------------------------------------------------------------------------------------- VAE


def test_vae_decoders_match_the_fits_statistics():
    from training.vae import sampling_check, synthetic_fits, train_decoders

    fits = synthetic_fits(3000, albedo_dim=4, seed=0)
    torch.manual_seed(0)
    dec, report = train_decoders(fits, _names(), steps=150, batch=128, lr=3e-3, log=None)
    assert dec.albedo_dim == 4
    for f in ("identity", "expression", "light", "pose"):
        r = report[f]
        assert r["mean_offset_sigma_mean"] < 0.25, (f, r)
        assert 0.25 < r["var_ratio_median"] < 1.6, (f, r)
    # an untrained decoder with the same normalisation is far off: the check can fail
    bad = FactorDecoders(4, _names())
    r = sampling_check(bad, fits, n=2000)
    assert max(r[f]["var_ratio_median"] for f in r) > 2 or min(r[f]["var_ratio_median"] for f in r) < 0.25 or \
        max(r[f]["mean_offset_sigma_mean"] for f in r) > 0.5


def test_vae_cli_reports_missing_fits(tmp_path, capsys):
    from training.vae import main

    assert main(["--fits", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "d.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "fits not found" in err and "Traceback" not in err
    assert not (tmp_path / "d.safetensors").exists()
    bad = tmp_path / "bad.npz"
    np.savez(bad, identity=np.zeros((5, 99)))
    assert main(["--fits", str(bad), "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "identity" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- losses


class _StubRNet(nn.Module):
    """Stands in for engine.perception.rnet.RNet (same call signature) while its module is absent."""

    def __init__(self, albedo_dim=0):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.fc = nn.Linear(8, N_ID + albedo_dim + N_EXP + 27 + 3)
        self.k = albedo_dim

    def forward(self, img):
        v = self.fc(self.conv(img).mean((2, 3))) * 0.1
        return Coefficients.from_vector(v, self.k)


def _rnet(albedo_dim):
    try:
        from engine.perception.rnet import RNet

        return RNet()
    except Exception:
        return _StubRNet(albedo_dim)


def _idnet():
    from engine.perception.identity import IdentityNet

    return IdentityNet()


def test_losses_run_and_send_gradients_to_G(face_model, renderer):
    from training.loss import DiscoLoss, Perception

    res = 64
    G = small_G(res, face_model.albedo_dim)
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    G.set_coeff_stats(*dec.coefficient_stats(512))
    perc = Perception(_rnet(face_model.albedo_dim), _idnet(), load=False)
    disco = DiscoLoss(renderer, perc, res, l1_res=32, l1_kimg=1.0, stage2_kimg=2.0)
    lat = sample_latents(2, seed=0)
    c = dec.decode(lat)
    img = G(c, lat.noise, noise_mode="random")
    early = disco.imitative(img, c, images_seen=0)
    assert set(early) == {"l1", "total"}
    late = disco.imitative(img, c, images_seen=1500)
    assert {"landmark", "light", "identity", "skin"} <= set(late) and "l1" not in late
    assert all(torch.isfinite(v) for v in late.values())
    assert late["identity"] >= 3 * 0.3 - 1e-6  # the 0.3 hinge
    (early["total"] + late["total"]).backward()
    assert G.mapping[0].weight.grad.abs().sum() > 0 and G.blocks[-1].torgb.weight.grad.abs().sum() > 0


def test_missing_perception_is_announced_once_and_l1_stays(renderer):
    from training.loss import DiscoLoss, Perception

    msgs = []
    perc = Perception(None, None, load=False, log=msgs.append)
    perc._tried = {"rnet": False, "idnet": False}  # pretend loading, with a module that fails
    perc._load = lambda which: perc.say(which, f"{which} unavailable") or None
    disco = DiscoLoss(renderer, perc, 32, l1_res=32, l1_kimg=0.001, stage2_kimg=1.0)
    model = renderer.model
    c = model.zeros(2)
    img = torch.zeros(2, 3, 32, 32, requires_grad=True)
    for _ in range(3):
        out = disco.imitative(img, c, images_seen=10)
    assert "l1" in out and "skin" in out and "landmark" not in out and "identity" not in out
    assert len(msgs) == 3 and len(set(msgs)) == 3  # rnet, idnet, l1-kept: each said exactly once


def test_expression_pair_flow_follows_the_jaw(face_model, renderer):
    from training.loss import DiscoLoss, Perception, warp_by_flow

    res = 64
    disco = DiscoLoss(renderer, Perception(load=False), res)
    c1 = face_model.zeros(1)
    c2 = c1.clone()
    c2.expr["jawOpen"] = 0.8
    flow, mask2, mask1 = disco.expression_flow(c1, c2)
    assert flow.shape == (1, 2, res, res)
    lm2 = renderer.landmarks(c2, res)[0]
    x, y = [int(v) for v in lm2[8]]  # chin of the open-mouth face
    fy = flow[0, 1, y - 3:y, x - 2:x + 3]
    assert float(fy.mean()) < -1.0  # that chin point sits higher (smaller y) in the closed-mouth image
    lm_forehead = renderer.landmarks(c2, res)[0, 27]
    fx, fyy = flow[0, :, int(lm_forehead[1]), int(lm_forehead[0])]
    assert abs(float(fx)) < 0.3 and abs(float(fyy)) < 0.3  # the nose bridge does not move
    # warping the closed-mouth render by the flow reproduces the open-mouth render inside face 2
    i1, i2 = renderer(c1, res).image, renderer(c2, res).image
    valid = mask2 * (1 - mask1 * (1 - mask2))
    warped_err = float(((warp_by_flow(i1, flow) - i2).abs() * valid).sum() / valid.sum())
    plain_err = float(((i1 - i2).abs() * valid).sum() / valid.sum())
    assert warped_err < 0.5 * plain_err
    same, _, _ = disco.expression_flow(c1, c1)
    assert same.abs().max() < 1e-4
    # warp by a constant flow = shift
    img = torch.rand(1, 3, res, res)
    shifted = warp_by_flow(img, torch.full((1, 2, res, res), 2.0))
    assert torch.allclose(shifted[..., 4:-4, 4:-4], img[..., 6:-2, 6:-2], atol=1e-5)
    # a pair of identical images has (almost) zero pair loss; different ones do not
    loss_same = disco.expression_pair(img * 2 - 1, img * 2 - 1, c1, c1)
    loss_diff = disco.expression_pair(img * 2 - 1, -img * 2 + 1, c1, c1)
    assert float(loss_same) < 1e-2 < float(loss_diff)


def test_light_pair_penalises_background_change(renderer):
    from training.loss import DiscoLoss, Perception

    disco = DiscoLoss(renderer, Perception(load=False), 32)
    c = renderer.model.zeros(1)
    mask = renderer(c, 32).mask
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    inside_only = a + 0.5 * mask
    outside_change = a + 0.5 * (1 - mask)
    assert float(disco.light_pair(a, inside_only, c, c, mask)) < 5e-3
    assert float(disco.light_pair(a, outside_change, c, c, mask)) > 1.0


def test_graft_albedo_prior_keeps_identity_and_adds_unit_albedo():
    from training.vae import VAEError, graft_albedo_prior

    d0 = FactorDecoders.prior(0, _names())
    with torch.no_grad():
        d0.nets["identity"].mlp[-1].weight.normal_(0, 0.01)  # a non-linear part that must be carried over
    d = graft_albedo_prior(d0, 6)
    lat = sample_latents(4000, seed=3)
    a, b = d0.decode(lat), d.decode(lat)
    assert torch.allclose(a.identity, b.identity, atol=1e-5) and torch.equal(a.light, b.light)
    assert b.albedo.shape == (4000, 6) and abs(float(b.albedo.detach().std()) - 1) < 0.1
    with pytest.raises(VAEError):
        graft_albedo_prior(FactorDecoders.prior(3, _names()), 6)
