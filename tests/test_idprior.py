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
