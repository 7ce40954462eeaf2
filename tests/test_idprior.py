"""``python -m training idprior``: the identity prior of a trained generator, folded into its decoders."""
import json

import numpy as np
import torch

from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, default_channels, sample_latents

torch.set_num_threads(1)


def small_gen(face_model, res=32):
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    torch.manual_seed(0)
    for net in dec.nets.values():  # a non-linear decoder (the prior's MLP part is zero)
        for m in net.mlp:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0, 0.1)
    G = Generator(res, face_model.albedo_dim, default_channels(res, 32, 8), w_dim=32, map_layers=2)
    G.set_coeff_stats(*dec.coefficient_stats(256))
    G.compute_w_avg_id(dec, n=64)
    return FaceGenerator(dec, G).eval().requires_grad_(False)


def test_fold_is_exact_and_the_kl_is_zero_at_the_standard_prior(face_model):
    from training.idprior import fold_identity_map, kl_to_standard

    fg = small_gen(face_model)
    lat = sample_latents(5, seed=1)
    g = torch.Generator().manual_seed(2)
    mu = 0.3 * torch.randn(128, generator=g)
    A = torch.eye(128) + 0.1 * torch.randn(128, 128, generator=g)
    moved = sample_latents(5, seed=1)
    moved.identity = mu + lat.identity @ A.t()
    want = fg.decoders.decode(moved).as_vector()
    assert (want - fg.decoders.decode(lat).as_vector()).abs().max() > 0.05  # the map does change the faces
    fold_identity_map(fg.decoders, mu, A)
    assert torch.allclose(fg.decoders.decode(lat).as_vector(), want, atol=1e-4)
    assert abs(float(kl_to_standard(torch.zeros(128), torch.eye(128)))) < 1e-5
    assert float(kl_to_standard(mu, A)) > 0.01


def test_moments_loss_is_zero_on_matching_statistics():
    from training.idprior import moments_loss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    assert float(moments_loss(x, x.mean(0), torch.cov(x.t()))) < 1e-9
    assert float(moments_loss(x * 0.5, x.mean(0), torch.cov(x.t()))) > 0.1


def test_idprior_runs_resumes_and_exports(tmp_path, monkeypatch, face_model, capsys):
    import training.idprior as T
    from training.__main__ import main as cli

    gen = tmp_path / "g.safetensors"
    fg = small_gen(face_model)
    fg.save(gen)
    real = np.random.default_rng(0).normal(0, 0.05, (64, 128)).astype(np.float32)
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: real)
    out = tmp_path / "run"
    args = ["idprior", "--out", str(out), "--generator", str(gen), "--batch", "4", "--steps", "10", "--lr", "0.05"]
    assert cli(args) == 0
    assert cli(args) == 1 and "add --resume" in capsys.readouterr().err
    assert cli(args + ["--resume", "--steps", "12"]) == 0
    log = (out / "log.txt").read_text()
    assert "run 2: step 10" in log and "checkpoint at step 12" in log
    dest = tmp_path / "folded.safetensors"
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--export", str(dest)]) == 0
    back = FaceGenerator.load(dest)
    assert json.loads(back.meta["training"])["step"] == 12
    assert back.G.trunc_layers == fg.G.trunc_layers
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--export", str(tmp_path / "t2.st"),
                "--trunc-layers", "2"]) == 0
    assert FaceGenerator.load(tmp_path / "t2.st").G.trunc_layers == 2 != fg.G.trunc_layers
    lat = sample_latents(3, seed=5)
    # only the identity decoder changed: the same latents give other identities, the same expression
    a, b = fg.decoders.decode(lat), back.decoders.decode(lat)
    assert (a.identity - b.identity).abs().max() > 1e-3
    assert torch.equal(a.expression, b.expression)
    assert all(torch.equal(p, q) for p, q in zip(fg.G.state_dict().values(), back.G.state_dict().values()))
    assert cli(["idprior", "--out", str(tmp_path / "none"), "--generator", str(gen), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert cli(["idprior", "--out", str(tmp_path / "bad"), "--batch", "1"]) == 2


def test_spread_hinge_counts_only_close_pairs_of_different_faces():
    from training.idprior import spread_hinge

    far = torch.eye(4, 8, dtype=torch.float64)  # pairwise distance sqrt(2) > margin
    assert float(spread_hinge(far, torch.zeros(0, 8, dtype=torch.float64), 0.65)) == 0  # self-pairs not counted
    close = far.clone()
    close[1] = close[0] + 0.1
    assert float(spread_hinge(close, torch.zeros(0, 8, dtype=torch.float64), 0.65)) > 0
    assert float(spread_hinge(far, far[:1] + 0.05, 0.65)) > 0  # close to a recent face
    x = close.clone().requires_grad_(True)
    spread_hinge(x, far[:2], 0.65).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _face_image(size=64, seed=0):
    """A skin-coloured disc on a grey background with soft noise, and the 68 landmarks of the mean face."""
    from engine.face.model import default_model
    from engine.render import FaceRenderer

    lm = FaceRenderer(default_model()).landmarks(default_model().zeros(1), size).numpy()
    rng = np.random.default_rng(seed)
    img = np.full((1, size, size, 3), 120, np.float64) + rng.normal(0, 6, (1, size, size, 3))
    yy, xx = np.mgrid[:size, :size] - size / 2
    img[0][np.hypot(xx, yy) < 0.45 * size] = (200, 150, 125)
    return img.clip(0, 255).astype(np.uint8), lm


def test_colour_stats_match_the_bench_and_see_magenta_eyes_and_tinted_borders(face_model):
    import sys
    from pathlib import Path

    from training.colour import colour_stats, face_masks

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from generator import colour_stats as bench_stats

    img, lm = _face_image()
    as01 = lambda u8: torch.from_numpy(u8).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    masks = face_masks(lm, 64)
    ours = colour_stats(as01(img), *masks).numpy()
    theirs = bench_stats(img, lm)
    # borders to OpenCV's integer a*b* rounding; skin and eyes within a unit or two (mean vs median skin colour)
    assert np.abs(ours[:, 2:5] - theirs[:, 2:5]).max() < 0.3
    assert np.abs(ours - theirs).max() < 1.5
    magenta = img.copy()
    magenta[0][masks[0][0].numpy()] = (190, 60, 200)
    tinted = img.copy()
    tinted[0, :8] = tinted[0, :8] // 2 + np.array([0, 0, 127], np.uint8)  # a blue top band
    m, t = colour_stats(as01(magenta), *masks)[0], colour_stats(as01(tinted), *masks)[0]
    assert m[0] > ours[0, 0] + 30 and abs(float(m[2] - ours[0, 2])) < 1e-6
    assert t[3] < ours[0, 3] - 3 and abs(float(t[0] - ours[0, 0])) < 1e-6


def test_range_penalty_is_zero_inside_the_real_range_and_pulls_outliers_back():
    from training.colour import range_penalty, stat_ranges

    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 7, generator=g, dtype=torch.float64) * 4
    lo, hi = stat_ranges(real, 5.0)
    assert torch.isinf(lo[[0, 1, 4]]).all() and torch.isfinite(lo[[2, 3, 5, 6]]).all()
    width = torch.full((7,), 10.0, dtype=torch.float64)
    assert float(range_penalty(torch.zeros(3, 7, dtype=torch.float64), lo, hi, width)) == 0
    out = torch.zeros(2, 7, dtype=torch.float64)
    out[0, 0] = 100.0  # very magenta eyes: only an upper bound
    out[1, 0] = -100.0  # very un-magenta eyes: no penalty
    out[1, 3] = -50.0  # a very blue border
    x = out.clone().requires_grad_(True)
    p = range_penalty(x, lo, hi, width)
    p.backward()
    assert float(p.detach()) > 5
    assert x.grad[0, 0] > 0 and x.grad[1, 0] == 0 and x.grad[1, 3] < 0


def test_idprior_decoder_and_colour_terms_run_resume_and_export(tmp_path, monkeypatch, face_model):
    """--decoder-lr fine-tunes the identity decoder (kept in the checkpoint with the decoder it started from) and
    the export carries it; --colour-weight adds the colour hinge."""
    import training.idprior as T
    from training.__main__ import main as cli

    gen = tmp_path / "g.safetensors"
    fg = small_gen(face_model)
    fg.save(gen)
    real = np.random.default_rng(0).normal(0, 0.05, (64, 128)).astype(np.float32)
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: real)
    stats = np.random.default_rng(1).normal(0, 1, (64, 7)).astype(np.float32)  # faces far outside: a pull
    monkeypatch.setattr(T, "real_colour_stats", lambda limit, size, cache: stats)
    out = tmp_path / "run"
    base = ["idprior", "--out", str(out), "--generator", str(gen), "--batch", "4", "--lr", "0.05"]
    assert cli(base + ["--steps", "10"]) == 0  # affine only, as before
    assert cli(base + ["--resume", "--steps", "20", "--decoder-lr", "0.01", "--colour-weight", "1"]) == 0
    log = (out / "log.txt").read_text()
    assert "colour" in log.split("run 2:")[1] and "anchor" in log.split("run 2:")[1]
    t, _ = T.load_safetensors(out / T.CKPT_NAME, T.CKPT_FORMAT, T.CKPT_VERSION)
    dec = {k[4:]: v for k, v in t.items() if k.startswith("dec.")}
    anchor = {k[7:]: v for k, v in t.items() if k.startswith("anchor.")}
    orig = fg.decoders.nets["identity"].state_dict()
    assert dec and all(torch.equal(anchor[k], orig[k]) for k in orig)  # the anchor: the decoder as loaded
    assert any(not torch.equal(dec[k], orig[k]) for k in orig)  # the decoder itself moved
    # a later affine-only run keeps the tuned decoder in the checkpoint
    assert cli(base + ["--resume", "--steps", "22"]) == 0
    t2, _ = T.load_safetensors(out / T.CKPT_NAME, T.CKPT_FORMAT, T.CKPT_VERSION)
    assert all(torch.equal(t2[f"dec.{k}"], dec[k]) for k in dec)
    dest = tmp_path / "folded.safetensors"
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--export", str(dest)]) == 0
    back = FaceGenerator.load(dest)
    # the export = the tuned decoder behind the affine map
    from training.idprior import fold_identity_map

    ref = small_gen(face_model)
    ref.decoders.nets["identity"].load_state_dict(dec)
    fold_identity_map(ref.decoders, t2["mu"], t2["A"])
    lat = sample_latents(3, seed=5)
    assert torch.allclose(back.decoders.decode(lat).identity, ref.decoders.decode(lat).identity, atol=1e-5)
    assert cli(base + ["--resume", "--colour-q", "60"]) == 2


def test_frechet_loss_is_the_benchmarks_frechet_distance_with_a_gradient():
    from training.evaluate import frechet_distance
    from training.idprior import frechet_loss, sqrtm_psd

    g = np.random.default_rng(0)
    real = g.normal(0, 1, (400, 16))
    fake = g.normal(0.2, 1.0, (300, 16)) @ g.normal(0, 0.5, (16, 16))
    r = torch.from_numpy(real)
    f = torch.from_numpy(fake).requires_grad_(True)
    loss = frechet_loss(f, r.mean(0), sqrtm_psd(torch.cov(r.t())))
    loss.backward()
    assert abs(float(loss.detach()) - frechet_distance(real, fake)) < 1e-6 * frechet_distance(real, fake)
    assert float(frechet_loss(r, r.mean(0), sqrtm_psd(torch.cov(r.t())))) < 1e-6
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_idprior_frechet_loss_with_the_upsampler_shift(tmp_path, monkeypatch, face_model, capsys):
    import training.idprior as T
    from engine.generator.sr import FaceSR
    from training.__main__ import main as cli

    gen = tmp_path / "g.safetensors"
    small_gen(face_model).save(gen)
    real = np.random.default_rng(0).normal(0, 0.05, (64, 128)).astype(np.float32)
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: real)
    sr = tmp_path / "sr.safetensors"
    torch.manual_seed(0)
    net = FaceSR(32, channels=8, blocks=1, up_channels=4)
    with torch.no_grad():
        net.to_rgb.weight.normal_(0, 0.5)  # an upsampler that changes the faces
    net.save(sr)
    out = tmp_path / "run"
    args = ["idprior", "--out", str(out), "--generator", str(gen), "--batch", "4", "--steps", "10", "--loss", "frechet"]
    assert cli(args + ["--sr-shift", str(sr)]) == 0
    log = (out / "log.txt").read_text()
    assert "upsampler shift" in log and '"loss": "frechet"' in log and "frechet " in log.split("run 1:")[1]
    assert float(log.split("|δ|² = ")[1].split()[0]) > 0
    FaceSR(64).save(tmp_path / "sr64.safetensors")
    assert cli(args + ["--resume", "--sr-shift", str(tmp_path / "sr64.safetensors")]) == 1
    assert cli(args + ["--resume", "--sr-shift", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "upsamples 64 px" in err and "Traceback" not in err


def test_idprior_mapping_fine_tune_runs_resumes_and_exports(tmp_path, monkeypatch, face_model):
    """--mapping-lr also fine-tunes G's mapping network (checkpointed with the mapping it started from, exported in
    the generator file; the synthesis layers untouched); its anchor is zero for the mapping it started from."""
    import copy

    import training.idprior as T
    from training.__main__ import main as cli

    gen = tmp_path / "g.safetensors"
    fg = small_gen(face_model)
    fg.save(gen)
    real = np.random.default_rng(0).normal(0, 0.05, (64, 128)).astype(np.float32)
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: real)
    c, noise = fg.sample(4, seed=2)
    same = copy.deepcopy(fg.G.mapping)
    assert float(T.mapping_anchor(fg.G, same, c, noise)) == 0.0
    with torch.no_grad():
        same[0].weight.mul_(-1)
    assert float(T.mapping_anchor(fg.G, same, c, noise)) > 1e-3
    out = tmp_path / "run"
    base = ["idprior", "--out", str(out), "--generator", str(gen), "--batch", "4", "--lr", "0.05"]
    assert cli(base + ["--steps", "5"]) == 0
    assert cli(base + ["--resume", "--steps", "15", "--mapping-lr", "0.5"]) == 0
    assert "map_anchor" in (out / "log.txt").read_text().split("run 2:")[1]
    t, meta = T.load_safetensors(out / T.CKPT_NAME, T.CKPT_FORMAT, T.CKPT_VERSION)
    orig = fg.G.mapping.state_dict()
    mapped = {k[4:]: v for k, v in t.items() if k.startswith("map.")}
    anchor = {k[10:]: v for k, v in t.items() if k.startswith("mapanchor.")}
    assert set(mapped) == set(orig) and all(torch.equal(anchor[k], orig[k]) for k in orig)
    assert any(not torch.equal(mapped[k], orig[k]) for k in orig)  # the mapping moved
    # its Adam moments are checkpointed, and a resumed --mapping-lr run goes on from them (no fresh-Adam jump)
    assert float(t["mapopt.step"]) == 10 and all(f"mapopt.exp_avg.{k}" in t for k, _ in
                                                  fg.G.mapping.named_parameters())
    assert cli(base + ["--resume", "--steps", "16", "--mapping-lr", "0.5"]) == 0
    t1, _ = T.load_safetensors(out / T.CKPT_NAME, T.CKPT_FORMAT, T.CKPT_VERSION)
    assert float(t1["mapopt.step"]) == 11
    mapped = {k[4:]: v for k, v in t1.items() if k.startswith("map.")}
    assert cli(base + ["--resume", "--steps", "17"]) == 0  # a later run without the flag keeps the tuned mapping
    t2, _ = T.load_safetensors(out / T.CKPT_NAME, T.CKPT_FORMAT, T.CKPT_VERSION)
    assert all(torch.equal(t2[f"map.{k}"], mapped[k]) for k in mapped)
    dest = tmp_path / "folded.safetensors"
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--export", str(dest)]) == 0
    back = FaceGenerator.load(dest)
    assert all(torch.equal(back.G.mapping.state_dict()[k], mapped[k]) for k in mapped)
    assert all(torch.equal(v, back.G.state_dict()[k]) for k, v in fg.G.state_dict().items()
               if not k.startswith("mapping."))  # synthesis, w̄_id and the statistics as they were


def test_same_person_standard_error_matches_the_spread_over_random_face_sets():
    """bench/generator.py's pair_share_se: the spread of the same-person share over sets of 48 faces drawn from one
    population (a U-statistic: a face near many others enters many close pairs), not the binomial of n(n-1)/2
    independent pairs, which is too narrow when faces cluster."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from generator import pair_share_se

    rng = np.random.default_rng(0)
    # a population with "look-alike" clusters of varying size: some faces have many near neighbours
    centres = rng.normal(0, 0.2, (60, 16))
    sizes = rng.integers(1, 30, 60)
    pop = np.concatenate([c + rng.normal(0, 0.05, (k, 16)) for c, k in zip(centres, sizes)])
    thr = np.quantile(np.linalg.norm(pop[:400, None] - pop[None, :400], axis=-1)[np.triu_indices(400, 1)], 0.09)
    shares, ses = [], []
    for _ in range(300):
        x = pop[rng.choice(len(pop), 48, replace=False)]
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(48, 1)]
        shares.append(np.mean(d < thr))
        ses.append(pair_share_se(x, thr))
    empirical, estimated = np.std(shares), np.mean(ses)
    p = np.mean(shares)
    binomial = np.sqrt(p * (1 - p) / (48 * 47 / 2))
    assert 0.75 < estimated / empirical < 1.3, (estimated, empirical)
    assert empirical > 1.5 * binomial  # the independent-pairs answer would be far too confident here
    assert np.isnan(pair_share_se(pop[:2], thr))


def test_code_loss_is_zero_for_the_codes_own_descriptor_and_needs_an_identity_code_generator(
        tmp_path, monkeypatch, face_model, capsys):
    """--code-weight: a face whose descriptor is what its identity code stands for scores 0; another descriptor
    scores > 0 with a gradient to the descriptor; a generator whose noise is not an identity code is refused."""
    import training.idprior as T
    from training.__main__ import main as cli
    from training.idcodes import fit_codes

    G = Generator(32, face_model.albedo_dim, default_channels(32, 32, 8), w_dim=32, map_layers=2, noise_dim=8,
                  identity_noise=True)
    rng = np.random.default_rng(0)
    pca = fit_codes(torch.from_numpy(rng.normal(0, 0.1, (200, 128)) * np.linspace(2, 0.1, 128)).float(), 8)
    G.set_identity_pca(pca.mean, pca.basis, pca.std)
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    own = pca.descriptors(z).double()
    assert float(T.code_loss(G, own, z)) < 1e-8
    other = own[torch.randperm(6, generator=torch.Generator().manual_seed(2))].clone().requires_grad_(True)
    loss = T.code_loss(G, other, z)
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert float(other.grad.abs().sum()) > 0
    # the contrastive form: low when each face reads back as its own code, and it does not reward shrinking
    assert float(T.code_nce(G, own, z)) < float(T.code_nce(G, other.detach(), z))
    shrunk = pca.descriptors(0.3 * z).double()
    assert float(T.code_nce(G, shrunk, z)) > float(T.code_nce(G, own, z))
    gen = tmp_path / "g.safetensors"
    small_gen(face_model).save(gen)  # noise is not an identity code
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: rng.normal(0, 0.05, (64, 128)))
    out = tmp_path / "run"
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--steps", "2", "--code-weight", "1"]) == 1
    assert "identity code" in capsys.readouterr().err and not (out / T.CKPT_NAME).exists()
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--steps", "2", "--code-weight", "-1"]) == 2
    # an identity-code generator trains with the term (logged) and resumes
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    k = Generator().noise_dim
    G2 = Generator(32, face_model.albedo_dim, default_channels(32, 32, 8), w_dim=32, map_layers=2, identity_noise=True)
    pca2 = fit_codes(torch.from_numpy(rng.normal(0, 0.1, (200, 128))).float(), k)
    G2.set_identity_pca(pca2.mean, pca2.basis, pca2.std)
    G2.set_coeff_stats(*dec.coefficient_stats(256))
    G2.compute_w_avg_id(dec, n=64)
    gen2 = tmp_path / "g2.safetensors"
    FaceGenerator(dec, G2).eval().save(gen2)
    out2 = tmp_path / "run2"
    base = ["idprior", "--out", str(out2), "--generator", str(gen2), "--batch", "4", "--code-weight", "0.5",
            "--mapping-lr", "0.5"]
    assert cli(base + ["--steps", "10"]) == 0 and cli(base + ["--resume", "--steps", "20", "--code-loss", "nce"]) == 0
    log = (out2 / "log.txt").read_text()
    assert "code" in log.split("run 2:")[1] and "step 20 " in log and '"code_loss": "nce"' in log


def test_sharpness_hinge_is_the_benchs_laplacian_energy_and_runs_with_the_upsampler(tmp_path, monkeypatch, face_model):
    """--sharp-weight: training.idprior.laplacian_energy is bench/generator.py's sharpness measure per face (with a
    gradient); a run logs its reference (after the upsampler when --sr-shift gives one) and the term."""
    import sys
    from pathlib import Path

    import training.idprior as T
    from engine.generator.sr import FaceSR
    from training.__main__ import main as cli

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from generator import laplacian_energy as bench_energy

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    u8[1] = 128  # a flat face: no energy
    x = (torch.from_numpy(u8).permute(0, 3, 1, 2).double() / 255).requires_grad_(True)
    ours = T.laplacian_energy(x)
    assert abs(float(ours[1].detach())) < 1e-9
    assert np.allclose(ours.detach().numpy(), [bench_energy(u8[i:i + 1]) for i in range(3)], atol=1e-6)
    ours.sum().backward()
    assert float(x.grad.abs().sum()) > 0
    gen = tmp_path / "g.safetensors"
    small_gen(face_model).save(gen)
    srf = tmp_path / "sr.safetensors"
    FaceSR(in_res=32).save(srf)
    monkeypatch.setattr(T, "real_descriptors", lambda idnet, limit, cache: rng.normal(0, 0.05, (64, 128)))
    out = tmp_path / "run"
    assert cli(["idprior", "--out", str(out), "--generator", str(gen), "--batch", "4", "--steps", "10",
                "--sharp-weight", "3", "--sr-shift", str(srf)]) == 0
    log = (out / "log.txt").read_text()
    assert "after the upsampler (64 px)" in log and " sharp " in log.split("run 1:")[1]
    assert cli(["idprior", "--out", str(tmp_path / "r2"), "--generator", str(gen), "--steps", "1",
                "--sharp-weight", "1", "--sharp-ref", str(tmp_path / "missing.safetensors")]) == 1
