"""The training package's shape: config dataclass, checkpoint module, phased GAN loss, patch D, DiffAugment,
fine-tuning from an exported generator (``--init``), and no training.fit <-> training.albedo import cycle."""
import ast
import json
from pathlib import Path

import pytest
import torch

from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, default_channels
from training.augment import diff_augment, parse_policy
from training.checkpoint import CheckpointError, load_init_generator, write_generator
from training.loss import DiscoLoss, GANLoss, Perception
from training.networks_d import PatchDiscriminator, build_discriminator
from training.train_gan import TrainConfig, TrainError

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_fit_and_albedo_do_not_import_each_other_both_ways():
    fit, albedo = _imports(REPO / "training" / "fit.py"), _imports(REPO / "training" / "albedo.py")
    assert "training.fit" in albedo  # albedo reads the fits ...
    assert "training.albedo" not in fit  # ... and fit no longer reaches back into albedo


def test_train_gan_has_no_private_checkpoint_copy():
    src = (REPO / "training" / "train_gan.py").read_text()
    assert "def save_checkpoint" not in src and "def export_generator" not in src
    assert "training.checkpoint" in _imports(REPO / "training" / "train_gan.py")
    assert "training.checkpoint" in _imports(REPO / "training" / "warmup.py")


# ----------------------------------------------------------------------------------------------- config


def test_config_round_trips_through_json_and_refuses_unknown_keys():
    cfg = TrainConfig.from_preset("cpu64ft")
    assert cfg.d_arch == "patch-hp" and cfg.augment and cfg.lm_kimg == 0.0 and cfg.noise_mode == "const"
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # int dict keys become strings in JSON
    assert back == cfg
    assert cfg.override(batch=4, lr=None).batch == 4 and cfg.override(lr=None).lr == cfg.lr
    with pytest.raises(TrainError, match="unknown config key"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(TrainError, match="unknown preset"):
        TrainConfig.from_preset("nope")


# ----------------------------------------------------------------------------------------------- D and augment


def test_patch_discriminator_scores_patches_and_sends_gradients():
    D = PatchDiscriminator(64, {64: 8, 32: 8, 16: 16, 8: 16})
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    y = D(x)
    assert y.shape == (2, 64)  # an 8x8 map of patch logits
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    # a patch logit does not see the whole image: changing one corner leaves the far corner's logit alone
    x2 = x.detach().clone()
    x2[:, :, :8, :8] += 3.0
    d = (D(x2) - D(x.detach())).abs().view(2, 8, 8)
    assert d[:, 0, 0].min() > 1e-4 and d[:, -1, -1].max() < 1e-6
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator(64, "huge")
    hp = build_discriminator(64, "patch-hp", {64: 8, 32: 8, 16: 16, 8: 16})
    assert hp.fromrgb.weight.shape[1] == 6 and hp(x.detach()).shape == (2, 64)  # RGB + its high-pass
    from training.networks_d import blur5

    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur5(flat), flat)  # a flat image has no high-pass


def test_diff_augment_is_random_differentiable_and_checks_its_policy():
    torch.manual_seed(0)
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = diff_augment(x, "color,translation,cutout")
    assert a.shape == x.shape
    assert not torch.allclose(a, diff_augment(x, "color,translation,cutout"))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    torch.manual_seed(1)
    t = diff_augment(x.detach(), "translation")  # a shift moves values (zero fill at the border), never mixes them
    vals = set(x.detach().flatten().tolist()) | {0.0}
    assert set(t.flatten().tolist()) <= vals and not torch.equal(t, x.detach())
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        parse_policy("color,blur")


# ----------------------------------------------------------------------------------------------- loss phases


@pytest.fixture(scope="module")
def small_parts(face_model, renderer):
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    G = Generator(32, face_model.albedo_dim, default_channels(32, 16, 8), w_dim=32, map_layers=2)
    G.set_coeff_stats(*dec.coefficient_stats(256))
    return dec, G


def test_gan_loss_phases_and_terms(small_parts, renderer):
    dec, G = small_parts
    D = PatchDiscriminator(32, {32: 8, 16: 8, 8: 8, 4: 8})
    disco = DiscoLoss(renderer, Perception(load=False), 32, l1_res=16, l1_kimg=1e9, stage2_kimg=0.1, lm_kimg=0.0,
                      weights={"skin": 0.0})
    loss = GANLoss(G, D, dec, disco, r1_gamma=1.0, r1_every=2, augment="color,translation", imit_yaw=30,
                   imit_expr=0.5)
    assert loss.phases(0) == ("adversarial", "imitative")
    assert loss.phases(100) == ("adversarial", "imitative", "contrastive")
    d0 = loss.d_loss(torch.rand(4, 3, 32, 32) * 2 - 1, step=0)
    d1 = loss.d_loss(torch.rand(4, 3, 32, 32) * 2 - 1, step=1)
    assert "r1" in d0 and "r1" not in d1 and torch.isfinite(d0["d_total"])
    g = loss.g_loss(4, images_seen=0, step=0, device="cpu")
    assert {"g_adv", "l1", "g_total"} <= set(g) and "skin" not in g and "exp_pair" not in g
    g2 = loss.g_loss(4, images_seen=200, step=0, device="cpu")
    assert "exp_pair" in g2  # stage 2: the first pair batch is an expression pair
    G.zero_grad(set_to_none=True)
    g["g_total"].backward()
    assert sum(p.grad.abs().sum() for p in G.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="unknown loss weight"):
        DiscoLoss(renderer, Perception(load=False), 32, weights={"sharpness": 1.0})


def test_wide_poses_and_strong_expressions_reach_the_samples(small_parts):
    import math

    dec, G = small_parts
    loss = GANLoss(G, PatchDiscriminator(32, {32: 8, 16: 8, 8: 8, 4: 8}), dec, None, imit_yaw=40, imit_expr=1.0)
    from engine.generator.networks import sample_latents

    c = loss.sample_coefficients(sample_latents(64, seed=0))
    assert c.pose[:, 0].abs().max() > math.radians(30) and c.pose[:, 0].abs().max() <= math.radians(40) + 1e-6
    assert (c.expr["jawOpen"] > 0).all()


# ----------------------------------------------------------------------------------------------- fine-tuning


def _tiny_generator_file(tmp_path, face_model, res=32):
    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    from training.presets import get_preset

    p = get_preset("tiny")
    G = Generator(res, face_model.albedo_dim, p["g_channels"], p["w_dim"], p["map_layers"])
    G.set_coeff_stats(*dec.coefficient_stats(256))
    torch.manual_seed(3)
    with torch.no_grad():
        for prm in G.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)
    path = tmp_path / "init.safetensors"
    write_generator(G, dec, path, {"what": "test"})
    return path


def test_gan_fine_tunes_from_an_exported_generator(ict_path, face_model, tmp_path, capsys):
    from training.train_gan import main

    init = _tiny_generator_file(tmp_path, face_model)
    start = FaceGenerator.load(init)
    out = tmp_path / "ft"
    rc = main(["--preset", "tiny", "--init", str(init), "--data", "synthetic:16", "--out", str(out), "--kimg",
               "0.016", "--no-perception", "--threads", "1", "--augment", "color,translation"])
    assert rc == 0, capsys.readouterr().err
    assert "G from" in capsys.readouterr().out
    st = json.loads((out / "state.json").read_text())
    assert st["config"]["init"] == str(init) and st["config"]["augment"] == "color,translation"
    assert main(["--out", str(out), "--export", str(tmp_path / "exp")]) == 0
    done = FaceGenerator.load(tmp_path / "exp" / "generator.safetensors")
    # the run started from the file (same decoders, same coefficient normalisation) and then moved
    assert torch.equal(done.G.coeff_mean, start.G.coeff_mean)
    for k, v in start.decoders.state_dict().items():
        assert torch.equal(done.decoders.state_dict()[k], v)
    sd0, sd1 = start.G.state_dict(), done.G.state_dict()
    moved = [k for k in sd0 if sd0[k].is_floating_point() and not torch.equal(sd0[k], sd1[k]) and k != "w_avg_id"]
    assert moved
    # small steps from the start, not a fresh network: the synthesis weights stay close
    w0, w1 = sd0["blocks.1.conv1.weight"], sd1["blocks.1.conv1.weight"]
    assert (w1 - w0).norm() < 0.2 * w0.norm()


def test_init_with_a_bad_file_is_one_clear_message(ict_path, tmp_path, capsys):
    from training.train_gan import main

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["--preset", "tiny", "--init", str(bad), "--data", "synthetic:16", "--out", str(tmp_path / "r"),
                 "--no-perception"]) == 2
    err = capsys.readouterr().err
    assert "cannot start from" in err and "Traceback" not in err
    with pytest.raises(CheckpointError):
        load_init_generator(tmp_path / "missing.safetensors")


class _MeanColourId(torch.nn.Module):
    """Stand-in identity net: the descriptor is the image's mean colour (× scale), so distances are easy to reason
    about."""

    def __init__(self, scale=4.0):
        super().__init__()
        self.scale = scale

    def embed_crops(self, x, mask=None):
        return x.mean((2, 3)) * self.scale


def test_identity_triplets_push_identities_apart_and_keep_edits(small_parts, renderer):
    dec, G = small_parts
    disco = DiscoLoss(renderer, Perception(idnet=_MeanColourId(), load=False), 32,
                      weights={"id_diversity": 1.0, "id_keep": 1.0})
    a = torch.zeros(2, 3, 8, 8)
    same = disco.identity_pairs(a, a.clone(), a.clone())
    assert same["id_diversity"] == pytest.approx(disco.ID_MARGIN) and same["id_keep"] == 0
    far = disco.identity_pairs(a, a + 1.0, a + 1.0)  # to01 halves: mean colour +0.5 → distance 2·√3
    assert far["id_diversity"] == 0 and far["id_keep"] > 0
    off = DiscoLoss(renderer, Perception(idnet=_MeanColourId(), load=False), 32)
    assert off.identity_pairs(a, a, a) == {}  # weights 0 by default: the original recipe is unchanged
    near = DiscoLoss(renderer, Perception(idnet=_MeanColourId(0.01), load=False), 32,  # hinge active on G's faces
                     weights={"id_diversity": 1.0, "id_keep": 1.0})
    loss = GANLoss(G, PatchDiscriminator(32, {32: 8, 16: 8, 8: 8, 4: 8}), dec, near, id_every=2, id_pairs=2)
    g0 = loss.g_loss(2, images_seen=0, step=0, device="cpu")
    g1 = loss.g_loss(2, images_seen=0, step=1, device="cpu")
    assert "id_diversity" in g0 and "id_keep" in g0 and "id_diversity" not in g1
    assert g0["id_diversity"] > 0.9 * near.ID_MARGIN
    G.zero_grad(set_to_none=True)
    g0["id_diversity"].backward()
    assert sum(p.grad.abs().sum() for p in G.parameters() if p.grad is not None) > 0


def test_loss_weight_overrides_are_checked(ict_path, tmp_path, capsys):
    from training.train_gan import main

    args = ["--preset", "tiny", "--data", "synthetic:16", "--out", str(tmp_path / "r"), "--kimg", "0.016",
            "--no-perception", "--threads", "1"]
    assert main(args + ["--loss-weight", "id_diversity"]) == 2
    assert "NAME=NUMBER" in capsys.readouterr().err
    assert main(args + ["--loss-weight", "sharpness=1"]) == 2
    assert "unknown loss weight" in capsys.readouterr().err
    assert main(args + ["--loss-weight", "skin=0"]) == 0
    st = json.loads((tmp_path / "r" / "state.json").read_text())
    assert st["config"]["loss_weights"]["skin"] == 0.0
    # a resumed run keeps its stored recipe, with the overrides that are allowed on --resume applied
    more = [a if a != "0.016" else "0.032" for a in args]
    assert main(more + ["--resume", "--r1-gamma", "0.5", "--loss-weight", "id_keep=2", "--lr", "0.5"]) == 0
    st = json.loads((tmp_path / "r" / "state.json").read_text())
    assert st["images_seen"] == 32 and st["config"]["r1_gamma"] == 0.5
    assert st["config"]["loss_weights"] == {"skin": 0.0, "id_keep": 2.0}
    assert st["config"]["lr"] == 0.002  # the learning rate is not changed mid-run


def test_head_imitation_target_has_a_mouth_interior_and_no_neck(face_model, renderer):
    from engine.face.head import default_head

    try:
        head = default_head(face_model)
    except Exception as exc:  # noqa: BLE001 - the parts file is part of the shared data
        pytest.skip(f"no head parts: {exc}")
    c = face_model.zeros(2)
    c.expr["jawOpen"][1] = 0.9
    face = DiscoLoss(renderer, Perception(load=False), 64, l1_res=32)
    full = DiscoLoss(renderer, Perception(load=False), 64, l1_res=32, head=head)
    fi, fm = face.imitation_target(c)
    hi, hm = full.imitation_target(c)
    assert fi.shape[-1] == 64 and hi.shape[-1] == 32 and hm.shape == (2, 1, 32, 32)
    lm = renderer.landmarks(c, 32)[1, 60:68]  # inner lips of the open mouth, 32 px
    x0, y0 = lm.min(0).values.floor().long().tolist()
    x1, y1 = lm.max(0).values.ceil().long().tolist()
    face_small = (torch.nn.functional.adaptive_avg_pool2d(fm, 32) > 0.5).float()
    box = (slice(y0, y1 + 1), slice(x0, x1 + 1))
    # the face-only render has a hole in the open mouth; the head target fills it (teeth / tongue / socket)
    assert hm[1, 0][box].sum() > face_small[1, 0][box].sum() + 2
    # ... with a reddish mouth colour (tongue/gums), not the skin's
    inner = hm[1, 0].bool() & ~face_small[1, 0].bool()
    rgb = hi[1][:, inner].mean(1)
    assert rgb[0] > rgb[1] and rgb[0] > rgb[2]
    # the neck and the back of the head (hair in photos) are not imitated, on a turned head that shows them
    c.pose[1, 0], c.pose[1, 1] = 0.7, -0.25
    _, hm = full.imitation_target(c)
    fid = full.head_renderer(c, 32).fragments.face_id
    part = head.triangle_part[fid.clamp_min(0)]
    neck = (fid >= 0) & (part == head.part_names.index("head_neck"))
    assert neck.sum() > 0 and hm[:, 0][neck].sum() == 0
    assert hm[:, 0][(fid >= 0) & ~neck].min() == 1
