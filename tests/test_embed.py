"""Photo embedding mechanics with a tiny randomly initialised generator (32 px): the optimisation lowers the loss,
reports progress, cancels cleanly, is deterministic for a seed, gives an editable session latent, pastes back into
the photo, and the CLI writes all of its outputs or none."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine import cli
from engine.editing.paste import paste_into_photo
from engine.generator.embed import EmbedCancelled, EmbedError, PhotoEmbedder, psnr, synthesize_embedding

STEPS = 24


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The optimisation is many small ops: one thread avoids oversubscription on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_gen(face_model):
    from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, default_channels

    torch.manual_seed(0)
    G = Generator(32, face_model.albedo_dim, default_channels(32, 32, 8), w_dim=64, map_layers=2)
    fg = FaceGenerator(FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names), G).eval()
    fg.requires_grad_(False)
    return fg


@pytest.fixture(scope="module")
def photo(ffhq_dir):
    return ffhq_dir / "images" / "00000.png"


@pytest.fixture(scope="module")
def embedder(tiny_gen, face_model, renderer):
    return PhotoEmbedder(tiny_gen, rnet=False, model=face_model, renderer=renderer, steps=STEPS)


@pytest.fixture(scope="module")
def embedded(embedder, photo):
    calls = []
    res = embedder.embed(photo, seed=1, progress=lambda i, n, loss: calls.append((i, n, loss)))
    return res, calls


def test_loss_decreases_and_progress(embedded, tiny_gen):
    res, calls = embedded
    assert [c[0] for c in calls] == list(range(1, STEPS + 1)) and all(c[1] == STEPS for c in calls)
    assert [c[2] for c in calls] == pytest.approx(res.losses)
    first, last = np.mean(res.losses[:4]), np.mean(res.losses[-4:])
    assert last < 0.75 * first, f"loss {first:.3f} -> {last:.3f}"
    # the reconstruction is closer to the photo than the initialiser's image (same noise, no offsets)
    target = torch.from_numpy(res.crop).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        start = synthesize_embedding(tiny_gen, res.init_coeffs, torch.zeros_like(res.noise))
    assert psnr(res.reconstruction, target) > psnr(start, target) + 1.0


def test_result_shapes(embedded, tiny_gen):
    res, _ = embedded
    G = tiny_gen.G
    assert res.reconstruction.shape == (1, 3, 32, 32)
    assert 0 <= float(res.reconstruction.min()) and float(res.reconstruction.max()) <= 1
    assert res.crop.shape == (32, 32, 3) and res.crop.dtype == np.uint8
    assert res.noise.shape == (1, G.noise_dim)
    assert res.w_offsets.shape == (1, G.num_ws, G.w_dim)
    assert res.coeffs.albedo.shape[1] == tiny_gen.albedo_dim
    for k in ("seconds", "psnr_face", "psnr_all", "id_distance", "init"):
        assert k in res.metrics, k
    assert res.metrics["init"] == "fit"
    assert math.isfinite(res.metrics["psnr_face"])


def test_landmarks_keep_their_meaning(embedded, renderer, face_model):
    """The coefficients stay a 3DMM fit of the photo (landmark loss), so pose/expression edits mean what they say."""
    from engine.generator.embed import conform_albedo

    res, _ = embedded
    lm = renderer.landmarks(conform_albedo(res.coeffs, face_model.albedo_dim), 32)[0]
    target = torch.as_tensor(res.alignment.landmarks_crop)
    nme = float((lm[17:] - target[17:]).norm(dim=-1).mean()) / 32
    assert nme < 0.06, nme


def test_same_seed_same_result(embedder, photo):
    a = embedder.embed(photo, seed=5, steps=6)
    b = embedder.embed(photo, seed=5, steps=6)
    assert torch.equal(a.coeffs.as_vector(), b.coeffs.as_vector())
    assert torch.equal(a.noise, b.noise) and torch.equal(a.w_offsets, b.w_offsets)
    assert torch.equal(a.reconstruction, b.reconstruction)


def test_cancel(embedder, photo):
    seen = []
    with pytest.raises(EmbedCancelled):
        embedder.embed(photo, steps=STEPS, progress=lambda i, n, loss: seen.append(i), cancel=lambda: len(seen) >= 3)
    assert seen == [1, 2, 3]
    # cancelled while the 3DMM fit initialises (before any optimisation step)
    calls = []
    with pytest.raises(EmbedCancelled):
        embedder.embed(photo, steps=STEPS, progress=lambda i, n, loss: seen.append(i),
                       cancel=lambda: calls.append(1) or len(calls) > 5)
    assert seen == [1, 2, 3]


def test_rnet_initialiser(tiny_gen, face_model, renderer, photo):
    """With an R-Net (here an untrained one, whose output is its stored coefficient mean) the embedder starts from
    its prediction instead of the 3DMM fit."""
    from engine.perception.rnet import RNet

    net = RNet(albedo_dim=face_model.albedo_dim + 3, exp_names=face_model.exp_names).eval()  # other K: conformed
    net.coeff_mean[:100] = 0.5
    emb = PhotoEmbedder(tiny_gen, rnet=net, idnet=False, model=face_model, renderer=renderer)
    res = emb.embed(photo, steps=2)
    assert res.metrics["init"] == "rnet"
    assert torch.allclose(res.init_coeffs.identity, torch.full((1, 100), 0.5))
    assert res.coeffs.albedo.shape[1] == tiny_gen.albedo_dim


def test_edit_changes_only_that_factor(embedded, embedder):
    res, _ = embedded
    base = embedder.render(res)
    assert torch.allclose(base, res.reconstruction, atol=1e-6)
    c = res.coeffs.clone()
    c.set_pose_degrees(yaw=math.degrees(float(c.pose[0, 0])) + 20)
    turned = embedder.render(res, c)
    assert float((turned - base).abs().mean()) > 1e-3  # the yaw edit reaches the image
    for f in ("identity", "albedo", "expression", "light"):
        assert torch.equal(getattr(c, f), getattr(res.coeffs, f)), f
    assert not torch.equal(c.pose, res.coeffs.pose)
    # as a session: an edit touches that factor only; noise and offsets ride along; JSON round trip keeps them
    from engine.editing.session import Session

    s = Session.from_embedding(res, source="photo.png", generator=embedder.gen, model=embedder.model)
    assert torch.equal(s.coeffs.as_vector(), res.coeffs.as_vector()) and torch.equal(s.w_offsets, res.w_offsets)
    s.set_expression("jawOpen", 0.8)
    v0, v1 = res.coeffs.as_vector(), s.coeffs.as_vector()
    changed = torch.nonzero(v0[0] != v1[0]).flatten().tolist()
    j = 100 + res.coeffs.albedo.shape[1] + list(res.coeffs.exp_names).index("jawOpen")
    assert changed == [j], (changed, v0[0, changed], v1[0, changed])
    assert torch.equal(s.noise, res.noise) and torch.equal(s.w_offsets, res.w_offsets)


def test_paste_into_photo(embedded, photo, embedder):
    from engine.perception.align import load_image

    res, _ = embedded
    img = load_image(photo)
    white = torch.ones(1, 3, 32, 32)
    out = paste_into_photo(res, white, photo, renderer=embedder.renderer)
    assert out.shape == img.shape and out.dtype == np.uint8
    # corners (outside the crop footprint) untouched; the face centre (nose) replaced by the pasted image
    for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert np.array_equal(out[y, x], img[y, x])
    nx, ny = (int(v) for v in res.alignment.landmarks_photo[30])
    assert out[ny, nx].min() >= 250 and img[ny, nx].min() < 250
    changed = np.abs(out.astype(int) - img).sum(-1) > 0
    assert 0.05 < changed.mean() < 0.8
    with pytest.raises(EmbedError):
        paste_into_photo(res, white, np.zeros((100, 80, 3), np.uint8), renderer=embedder.renderer)


def test_paste_delta_keeps_the_photo(embedded, photo, embedder):
    """mode="delta": an unchanged reconstruction leaves the photo as it is; a brightening edit brightens the face."""
    from engine.perception.align import load_image

    res, _ = embedded
    img = load_image(photo)
    same = paste_into_photo(res, res.reconstruction, photo, renderer=embedder.renderer, mode="delta")
    assert np.abs(same.astype(int) - img).max() <= 1
    brighter = (res.reconstruction + 0.2).clamp(0, 1)
    out = paste_into_photo(res, brighter, photo, renderer=embedder.renderer, mode="delta")
    nx, ny = (int(v) for v in res.alignment.landmarks_photo[30])
    gain = out[ny - 2:ny + 3, nx - 2:nx + 3].astype(float).mean() - img[ny - 2:ny + 3, nx - 2:nx + 3].mean()
    assert 25 < gain < 60, gain
    assert np.array_equal(out[0, 0], img[0, 0])
    with pytest.raises(EmbedError):
        paste_into_photo(res, brighter, photo, renderer=embedder.renderer, mode="blend")


def _assets(tmp_path, gen):
    folder = tmp_path / "assets"
    folder.mkdir()
    if gen is not None:
        gen.save(folder / "generator.safetensors")
    return folder


def test_cli_embed_without_generator(photo, tmp_path, monkeypatch, capsys):
    from engine import config

    monkeypatch.setattr(config, "ASSETS_DIR", _assets(tmp_path, None))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["embed", str(photo), "-o", str(out / "me.json")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "generator" in lines[0]
    assert list(out.iterdir()) == []


def test_cli_embed_writes_all_outputs(photo, tiny_gen, tmp_path, monkeypatch, capsys):
    from engine import config
    from engine.editing.session import Session

    monkeypatch.setattr(config, "ASSETS_DIR", _assets(tmp_path, tiny_gen))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["embed", str(photo), "-o", str(out / "me.json"), "--overlay", str(out / "grid.png"),
                   "--paste-back", str(out / "pb.png"), "--steps", "3", "--seed", "2"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "me.json", "pb.png"]
    from PIL import Image

    # photo | recon | yaw-20 | yaw+20 | smile | relit, 32 px tiles shown at 128 px
    assert Image.open(out / "grid.png").size == (6 * 128, 128)
    assert Image.open(out / "pb.png").size == Image.open(photo).size
    d = json.loads((out / "me.json").read_text())
    assert d.get("w_offsets") is not None
    s = Session.load(out / "me.json", generator=tiny_gen)
    assert s.w_offsets is not None and s.w_offsets.shape[1] == tiny_gen.G.num_ws


def test_cli_cancel_writes_nothing(photo, tiny_gen, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of the optimisation: exit 130, no output files."""
    from engine import config

    monkeypatch.setattr(config, "ASSETS_DIR", _assets(tmp_path, tiny_gen))
    orig = PhotoEmbedder.embed

    def interrupted(self, *a, progress=None, **k):
        def prog(i, n, loss):
            progress(i, n, loss)
            if i == 2:
                raise KeyboardInterrupt
        return orig(self, *a, progress=prog, **k)

    monkeypatch.setattr(PhotoEmbedder, "embed", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["embed", str(photo), "-o", str(out / "me.json"), "--paste-back", str(out / "pb.png"),
                   "--steps", "5"])
    assert rc == 130
    assert list(out.iterdir()) == []


def test_session_renders_the_embedding(embedded, embedder):
    from engine.editing.session import Session

    res, _ = embedded
    s = Session.from_embedding(res, generator=embedder.gen, model=embedder.model)
    frame = s.render(size=32)
    want = (res.reconstruction[0].permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(frame.image.astype(int) - want).max() <= 1


def test_embedding_loss_terms(face_model):
    """The one loss: the image part (face L1, crop L1, landmarks) picks the best state; priors, noise shell,
    offsets and the identity term only add to the total, each with its weight from EmbedConfig."""
    from engine.generator.embed import EmbedConfig, embedding_loss

    cfg = EmbedConfig(w_face=1.0, w_all=0.5, w_lm=10.0, w_prior=2.0, w_noise=3.0, w_offset=4.0, w_id=5.0)
    img = torch.zeros(1, 3, 8, 8)
    target = torch.full((1, 3, 8, 8), 0.5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    lm = torch.zeros(1, 68, 2)
    lm_t = torch.zeros(1, 68, 2)
    lm_t[:, 17:, 0] = 8.0  # one image width away: (8/8)^2 = 1 per point
    total, image = embedding_loss(cfg, img, target, mask, lm, lm_t)
    assert float(image) == pytest.approx(1.0 * 0.5 + 0.5 * 0.5 + 10.0 * 1.0) and torch.equal(total, image)
    c = face_model.zeros(1)
    init = c.clone()
    c.identity[:] = 1.0  # prior: mean squared identity change 1
    noise = torch.zeros(1, 4)  # shell term (0 - 1)^2 = 1
    offsets = torch.ones(1, 2, 3)  # mean square 1
    total, image2 = embedding_loss(cfg, img, target, mask, lm, lm_t, c, init, noise, offsets, torch.tensor(0.1))
    assert float(image2) == pytest.approx(float(image))
    assert float(total - image) == pytest.approx(2.0 * 1.0 + 3.0 * 1.0 + 4.0 * 1.0 + 5.0 * 0.1)
    with pytest.raises(EmbedError):
        PhotoEmbedder(object(), no_such_setting=1)
