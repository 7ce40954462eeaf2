"""The identity sampler (issue 25): random faces kept by the density ratio of their descriptors, one home for the
editor's and the benches' random faces."""
import numpy as np
import pytest
import torch

from engine.generator.idsampler import IdentitySampler
from engine.io.files import WeightsError

torch.set_num_threads(1)


def _gauss(n, mean, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, len(mean), generator=g, dtype=torch.float64) * scale


def test_resampling_by_the_fitted_ratio_moves_plain_draws_onto_the_target():
    """Draws N(0, diag s²) and a target off in mean and spread: the kept candidates' mean and per-direction variance
    land near the target's, where plain draws are far off."""
    from training.idsampler import fit_sampler

    d = 6
    scale_f = torch.tensor([1.0, 0.8, 1.0, 1.5, 1.0, 1.0], dtype=torch.float64)
    mean_r = torch.tensor([0.6, 0.0, -0.4, 0.0, 0.0, 0.0], dtype=torch.float64)
    scale_r = torch.tensor([1.0, 1.0, 0.7, 1.0, 1.0, 1.0], dtype=torch.float64)
    real = _gauss(4000, mean_r, scale_r, 0)
    fake = _gauss(4000, torch.zeros(d, dtype=torch.float64), scale_f, 1)
    s = fit_sampler(real, fake, dims=d, candidates=32)
    cand = _gauss(600 * 32, torch.zeros(d, dtype=torch.float64), scale_f, 2)
    pick = s.choose(s.log_weights(cand).view(600, 32), torch.Generator().manual_seed(3))
    kept = cand.view(600, 32, d)[torch.arange(600), pick]
    plain = cand[:600]
    for x, near in ((kept, True), (plain, False)):
        err_mean = float((x.mean(0) - mean_r).norm())
        err_sd = float((x.std(0) - scale_r).abs().max())
        assert (err_mean < 0.15 and err_sd < 0.15) if near else (err_mean > 0.5 and err_sd > 0.3), (err_mean, err_sd)


def test_the_photos_mean_is_moved_by_the_upsampler_shift_and_beta_zero_keeps_plain_draws():
    from training.idsampler import fit_sampler

    real = _gauss(2000, torch.zeros(4, dtype=torch.float64), 1.0, 0)
    fake = _gauss(2000, torch.zeros(4, dtype=torch.float64), 1.0, 1)
    shift = torch.tensor([0.3, 0.0, 0.0, 0.0], dtype=torch.float64)
    a, b = fit_sampler(real, fake, 4), fit_sampler(real, fake, 4, shift)
    moved = (b.real_mean - a.real_mean) @ b.basis  # back in descriptor space: the target moved by −shift
    assert torch.allclose(moved, -shift, atol=1e-6)
    flat = fit_sampler(real, fake, 4, beta=0.0)
    assert float(flat.log_weights(fake[:10]).abs().max()) == 0.0
    wide = fit_sampler(real, fake, 4, widen=1.3)
    assert torch.allclose(wide.real_cov, 1.3 * a.real_cov, atol=1e-5)


def test_the_shipped_sampler_is_attached_only_to_the_weights_it_was_fitted_for(face_model, tmp_path, monkeypatch):
    from engine import config
    from engine.generator.idsampler import generator_fingerprint, load_default_sampler
    from training.idsampler import fit_sampler

    fg = _small_gen(face_model)
    other = _small_gen(face_model)
    with torch.no_grad():
        other.decoders.nets["identity"].mlp[0].weight.mul_(1.01)  # an identity prior refitted: other people
    s = fit_sampler(_gauss(300, torch.zeros(8, dtype=torch.float64), 1.0, 0),
                    _gauss(300, torch.zeros(8, dtype=torch.float64), 1.0, 1), 3,
                    meta={"generator_fingerprint": generator_fingerprint(fg)})
    monkeypatch.setattr(config, "ASSETS_DIR", tmp_path)
    assert load_default_sampler(fg) is None  # no file: plain draws
    s.save(tmp_path / "identity_sampler.safetensors")
    assert load_default_sampler(fg) is not None
    assert load_default_sampler(other) is None


def test_sampler_file_round_trip_and_bad_files(tmp_path):
    from training.idsampler import fit_sampler

    s = fit_sampler(_gauss(500, torch.zeros(8, dtype=torch.float64), 1.0, 0),
                    _gauss(500, torch.ones(8, dtype=torch.float64), 0.5, 1), 3, candidates=5, beta=0.8,
                    meta={"generator_sha256": "ab"})
    s.save(tmp_path / "s.safetensors")
    t = IdentitySampler.load(tmp_path / "s.safetensors")
    assert (t.candidates, t.beta, t.psi, t.dims, t.meta["generator_sha256"]) == (5, 0.8, 0.7, 3, "ab")
    x = _gauss(7, torch.zeros(8, dtype=torch.float64), 1.0, 2)
    assert torch.allclose(t.log_weights(x), s.log_weights(x), atol=1e-4)
    from engine.io.files import save_safetensors

    save_safetensors(tmp_path / "nan.safetensors", {k: torch.full_like(getattr(s, k).float(), float("nan"))
                                                     for k in ("centre", "basis", "real_mean", "real_cov",
                                                               "fake_mean", "fake_cov")},
                     "discoface.identity-sampler", 1)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    for bad in ("nan.safetensors", "junk.safetensors", "missing.safetensors"):
        with pytest.raises(WeightsError):
            IdentitySampler.load(tmp_path / bad)


def _small_gen(face_model):
    from tests.test_idprior import small_gen

    g = small_gen(face_model)
    return g


def test_generator_sample_keeps_one_candidate_per_face_chosen_by_the_weights(face_model, monkeypatch):
    """With a sampler attached, ``FaceGenerator.sample`` returns, per face, the one of its candidates the sampler's
    choice names — here a sampler whose weights single out the candidate nearest a chosen descriptor — with the
    face's one expression / light / pose draw, and the same seed gives the same faces."""
    from engine.generator.networks import sample_latents
    from engine.perception.identity import default_identity_net

    fg = _small_gen(face_model)
    M, n = 6, 3
    lat = sample_latents(n * M, generator=torch.Generator().manual_seed(11))
    # a face's candidates share its first draw's expression, light and pose: only who they are differs
    first = torch.arange(n).repeat_interleave(M) * M
    lat = lat.replace(expression=lat.expression[first], light=lat.light[first], pose=lat.pose[first])
    c = fg.decoders.decode(lat)
    with torch.no_grad():
        desc = default_identity_net().embed_crops(fg.synthesize(c, lat.noise, 0.7, upsample=False)).double()
    want = torch.tensor([4, 0, 2])  # the candidate each face should keep
    target = desc.view(n, M, -1)[torch.arange(n), want]

    class Nearest(IdentitySampler):
        def log_weights(self, d):  # by far the highest weight at each face's wanted descriptor
            return -1e4 * torch.cdist(d.double(), target).min(1).values

    d = desc.shape[1]
    s = Nearest(torch.zeros(d), torch.eye(d)[:2], torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2),
                candidates=M)
    fg.attach_sampler(s)
    c1, z1 = fg.sample(n, seed=11)
    keep = torch.arange(n) * M + want
    assert torch.allclose(c1.identity, c.identity[keep]) and torch.allclose(z1, lat.noise[keep])
    for k in ("expression", "light", "pose"):  # the face's own plain draw, whichever candidate is kept
        assert torch.allclose(getattr(c1, k), getattr(c, k)[first[keep]]), k
    c2, z2 = fg.sample(n, seed=11)
    assert torch.equal(c1.identity, c2.identity) and torch.equal(z1, z2)
    plain = fg.decoders.decode(sample_latents(n, seed=11)).identity  # the first n latents of the seed
    import engine.perception.identity as ident

    def missing():
        raise ident.IdentityModelError("no model file")
    monkeypatch.setattr(ident, "default_identity_net", missing)
    c0, _ = fg.sample(n, seed=11)  # no descriptor network: plain draws, no error
    assert torch.allclose(c0.identity, plain)
    monkeypatch.undo()
    fg.attach_sampler(None)
    c0, _ = fg.sample(n, seed=11)  # plain draws again
    assert torch.allclose(c0.identity, plain)


def test_new_random_face_is_the_generators_sampled_face_with_its_own_code(face_model):
    """The editor's New random face takes identity, albedo, expression, light and — for an identity-code
    generator — the noise latent from one ``FaceGenerator.sample`` draw: the face the benches measure."""
    from engine.editing.session import Session
    from engine.generator.networks import FaceGenerator, Generator, default_channels

    base = _small_gen(face_model)
    G = Generator(32, face_model.albedo_dim, default_channels(32, 32, 8), w_dim=32, map_layers=2,
                  identity_noise=True)
    G.set_coeff_stats(base.G.coeff_mean, base.G.coeff_std)
    fg = FaceGenerator(base.decoders, G).eval().requires_grad_(False)
    calls = []
    real_sample = fg.sample

    def counted(n, seed=None):
        calls.append(seed)
        return real_sample(n, seed)
    fg.sample = counted
    s = Session(face_model, generator=fg)
    snap = s.new_random_face(seed=21)
    c, z = real_sample(1, 21)
    assert calls == [21]  # one draw for every factor (a sampler's candidates are read once)
    for k in ("identity", "albedo", "expression", "light"):
        assert torch.allclose(getattr(snap.coeffs, k), getattr(c, k), atol=1e-5), k
    assert torch.allclose(snap.noise, z)
    assert np.allclose(snap.coeffs.pose.numpy(), 0.0)  # frontal, as before
