"""The face upsampler (engine/generator/sr.py), the generator's native size with it, and ``python -m training sr``."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, default_channels
from engine.generator.sr import SR_FORMAT, FaceSR
from engine.io.files import WeightsError, load_safetensors, save_safetensors

torch.set_num_threads(1)


def small_sr(in_res=32, seed=0):
    torch.manual_seed(seed)
    sr = FaceSR(in_res, channels=8, blocks=1, up_channels=4).eval()
    with torch.no_grad():  # a visible correction, not the near-bicubic start
        sr.to_rgb.weight.normal_(0, 0.2)
    return sr


def small_gen(res=32, albedo_dim=0, exp_names=None):
    names = tuple(exp_names) if exp_names is not None else tuple(f"e{i}" for i in range(53))
    dec = FactorDecoders.prior(albedo_dim, names)
    torch.manual_seed(0)
    G = Generator(res, albedo_dim, default_channels(res, 32, 8), w_dim=32, map_layers=2)
    G.set_coeff_stats(*dec.coefficient_stats(256))
    G.compute_w_avg_id(dec, n=64)
    return FaceGenerator(dec, G).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- the network
def test_upsampler_doubles_the_size_and_starts_near_bicubic():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    sr = FaceSR(64)
    y = sr(x)
    assert y.shape == (2, 3, 128, 128)
    bic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert (y - bic).abs().mean() < 0.05 * (bic - bic.mean()).abs().mean()
    assert (y - bic).abs().mean() > 0  # but it is not bicubic: the learned part is there
    with pytest.raises(ValueError, match="takes 64 px"):
        sr(torch.zeros(1, 3, 32, 32))
    u = sr.upsample01(x * 0.5 + 0.5)
    assert u.min() >= 0 and u.max() <= 1


def test_upsampler_file_round_trip_and_bad_files(tmp_path):
    sr = small_sr()
    p = tmp_path / "face_sr.safetensors"
    sr.save(p, {"note": "test"})
    back = FaceSR.load(p)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(back(x), sr(x), atol=1e-6) and back.meta["note"] == "test"
    assert not any(t.requires_grad for t in back.parameters())
    tensors, meta = load_safetensors(p, SR_FORMAT, 1)
    # shapes checked against the config
    cfg = json.loads(meta["config"])
    cfg["channels"] = 16
    save_safetensors(tmp_path / "shape.safetensors", tensors, SR_FORMAT, 1, {"config": json.dumps(cfg)})
    with pytest.raises(WeightsError, match="shape"):
        FaceSR.load(tmp_path / "shape.safetensors")
    # format version checked
    save_safetensors(tmp_path / "v9.safetensors", tensors, SR_FORMAT, 9, {"config": meta["config"]})
    with pytest.raises(WeightsError, match="version 9"):
        FaceSR.load(tmp_path / "v9.safetensors")
    # another file kind, a missing config, NaN, truncation, absence
    small_gen().decoders.save(tmp_path / "dec.safetensors")
    with pytest.raises(WeightsError, match="expected 'discoface.face-sr'"):
        FaceSR.load(tmp_path / "dec.safetensors")
    save_safetensors(tmp_path / "nocfg.safetensors", tensors, SR_FORMAT, 1)
    with pytest.raises(WeightsError, match="config"):
        FaceSR.load(tmp_path / "nocfg.safetensors")
    bad = dict(tensors)
    bad["head.bias"] = torch.full_like(bad["head.bias"], float("nan"))
    save_safetensors(tmp_path / "nan.safetensors", bad, SR_FORMAT, 1, {"config": meta["config"]})
    with pytest.raises(WeightsError, match="NaN"):
        FaceSR.load(tmp_path / "nan.safetensors")
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        FaceSR.load(tmp_path / "trunc.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        FaceSR.load(tmp_path / "absent.safetensors")


# ----------------------------------------------------------------------------------------------- the generator with it
def test_generator_native_size_doubles_with_the_upsampler_and_the_base_path_stays():
    fg = small_gen(32)
    c, n = fg.sample(2, seed=4)
    base = fg.synthesize(c, n)
    assert fg.resolution == 32 and base.shape[-1] == 32
    sr = small_sr(32)
    fg.attach_sr(sr)
    assert fg.resolution == 64 and fg.base_resolution == 32
    up = fg.synthesize(c, n)
    assert up.shape == (2, 3, 64, 64) and up.min() >= 0 and up.max() <= 1
    assert torch.allclose(up, sr.upsample01(base), atol=1e-5)  # the upsampler runs on G's own image
    assert torch.allclose(fg.synthesize(c, n, upsample=False), base)
    ws = fg.ws(c, n, 0.7)
    assert torch.allclose(fg.synthesize_ws(ws), up, atol=1e-5)
    assert fg.synthesize_ws(ws, upsample=False).shape[-1] == 32
    with pytest.raises(WeightsError, match="takes 64 px"):
        fg.attach_sr(small_sr(64))
    fg.attach_sr(None)
    assert fg.resolution == 32 and torch.allclose(fg.synthesize(c, n), base)


def test_default_generator_picks_up_the_shipped_upsampler(tmp_path, monkeypatch):
    from engine import config
    from engine.generator.networks import load_default_generator

    monkeypatch.setattr(config, "ASSETS_DIR", tmp_path)
    small_gen(32).save(tmp_path / "generator.safetensors")
    assert load_default_generator().resolution == 32  # no upsampler file: the base path
    small_sr(32).save(tmp_path / "face_sr.safetensors")
    fg = load_default_generator()
    assert fg.resolution == 64 and fg.sr is not None
    assert load_default_generator(upsampler=False).resolution == 32
    small_sr(64).save(tmp_path / "face_sr.safetensors")  # made for another generator size: not attached
    assert load_default_generator().resolution == 32
    (tmp_path / "face_sr.safetensors").write_bytes(b"\0" * 10)  # a broken file is an error, not ignored
    with pytest.raises(WeightsError):
        load_default_generator()


def test_editor_and_embedding_sizes_with_the_upsampler(face_model):
    from engine.editing.frames import FrameRenderer
    from engine.editing.session import Session
    from engine.generator.embed import PhotoEmbedder

    fg = small_gen(32, face_model.albedo_dim, face_model.exp_names).attach_sr(small_sr(32))
    assert FrameRenderer(face_model, fg).native_size == 64
    s = Session(model=face_model, generator=fg)
    frame = s.render()
    assert frame.image.shape[:2] == (64, 64)
    # a drag frame skips the upsampler (G's own image resized), the frame on release uses it
    drag = s.render_snapshot(s.state, final=False)
    assert drag.image.shape[:2] == (64, 64)
    with torch.no_grad():
        c, n = s.state.coeffs[0:1], s.state.noise
        ref_up = (fg.synthesize(c, n, s.state.psi).permute(0, 2, 3, 1)[0] * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(frame.image.astype(int) - ref_up.astype(int)).max() <= 1
    assert np.abs(drag.image.astype(int) - ref_up.astype(int)).max() > 8
    assert s.mode_text == "generator (64 px)"
    emb = PhotoEmbedder(fg, rnet=False, idnet=False, model=face_model)
    assert emb.resolution == 32  # the embedding optimises G's own image


def test_generator_frames_above_the_native_size_are_bicubic(face_model):
    """A generator frame larger than G's image (an export at 2x, a drag frame's G image) is the bicubic
    enlargement of it, not the softer bilinear one; a smaller one is shrunk with antialiasing."""
    from engine.editing.session import Session

    fg = small_gen(32, face_model.albedo_dim, face_model.exp_names).attach_sr(small_sr(32))
    s = Session(model=face_model, generator=fg)
    with torch.no_grad():
        up = fg.synthesize(s.state.coeffs[0:1], s.state.noise, s.state.psi)  # (1, 3, 64, 64)

    def u8(t):
        return (t.clamp(0, 1).permute(0, 2, 3, 1)[0] * 255 + 0.5).to(torch.uint8).numpy().astype(int)
    big = s.render_snapshot(s.state, 128).image.astype(int)
    bicubic = u8(F.interpolate(up, size=(128, 128), mode="bicubic", align_corners=False))
    bilinear = u8(F.interpolate(up, size=(128, 128), mode="bilinear", align_corners=False, antialias=True))
    assert np.abs(big - bicubic).max() <= 1
    assert np.abs(bicubic - bilinear).max() > 8  # the two really differ on this face
    drag = s.render_snapshot(s.state, final=False).image.astype(int)  # G's 32 px image enlarged to 64
    with torch.no_grad():
        base = fg.synthesize(s.state.coeffs[0:1], s.state.noise, s.state.psi, upsample=False)
    assert np.abs(drag - u8(F.interpolate(base, size=(64, 64), mode="bicubic", align_corners=False))).max() <= 1
    small = s.render_snapshot(s.state, 16).image.astype(int)
    assert np.abs(small - u8(F.interpolate(up, size=(16, 16), mode="bilinear", align_corners=False,
                                           antialias=True))).max() <= 1


def test_generator_mode_starts_and_resets_to_the_generators_own_light(face_model):
    """Generator mode's start / Reset light is the generator's typical light (its light decoder at the latent's
    centre), not the editor's key light (intensity 0.45, beyond the shipped generator's lights: faces washed out);
    without a generator the key light stays."""
    from engine.editing import factors
    from engine.editing.session import Session

    fg = small_gen(32, face_model.albedo_dim, face_model.exp_names)
    with torch.no_grad():
        own = fg.decoders.decode(_zero_light_latents())
    s = Session(model=face_model, generator=fg)
    assert torch.allclose(s.coeffs.light, own.light, atol=1e-6)
    assert not torch.allclose(s.coeffs.light, factors.default_light(), atol=1e-3)
    s.set_light(azimuth=60, intensity=0.9)
    s.reset("light")
    assert torch.allclose(s.coeffs.light, own.light, atol=1e-6)
    s.set_light(intensity=0.9)
    s.new_random_face(5)  # a new face brings its own sampled light (from the same decoder)
    assert not torch.allclose(s.coeffs.light, factors.default_light(), atol=1e-3)
    preview = Session(model=face_model, generator=None)
    assert torch.allclose(preview.coeffs.light, factors.default_light())
    preview.set_light(intensity=0.9)
    preview.reset("light")
    assert torch.allclose(preview.coeffs.light, factors.default_light())


def _zero_light_latents():
    from engine.generator.networks import sample_latents

    lat = sample_latents(1, 0)
    lat.light.zero_()
    return lat


# ----------------------------------------------------------------------------------------------- training
def test_degradation_blurs_downsamples_and_adds_noise():
    from training.sr import degrade, gaussian_blur, laplacian_energy

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(gaussian_blur(hr, torch.zeros(4)), hr, atol=1e-6)
    blurred = gaussian_blur(hr, torch.full((4,), 1.5))
    assert laplacian_energy(blurred) < 0.5 * laplacian_energy(hr)
    lr = degrade(hr, 16, 0.0, 0.0, g)
    assert torch.allclose(lr, F.interpolate(hr, size=(16, 16), mode="area"), atol=1e-6)
    lr = degrade(hr.repeat(16, 1, 1, 1), 16, 1.5, 0.2, g)
    assert lr.shape == (64, 3, 16, 16)
    clean = F.interpolate(hr.repeat(16, 1, 1, 1), size=(16, 16), mode="area")
    changed = (lr - clean).abs().flatten(1).amax(1) > 1e-4
    assert 0.3 < changed.float().mean() < 1.0  # some images degraded, some left clean


def test_eye_region_covers_the_eyes_not_the_mouth(face_model):
    from engine.generator.networks import sample_latents
    from engine.render import FaceRenderer
    from training.sr import eye_region

    dec = FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    lm = FaceRenderer(face_model).landmarks(dec.decode(sample_latents(1, seed=0)), 64).numpy()[0]
    m = eye_region(lm, 64)
    for i in (37, 38, 43, 44, 19, 24):  # upper lids and brows
        x, y = np.clip(np.round(lm[i]).astype(int), 0, 63)
        assert m[min(63, y + (1 if i in (19, 24) else 0)), x], i
    for i in (48, 54, 57, 62, 30):  # mouth, nose tip
        x, y = np.clip(np.round(lm[i]).astype(int), 0, 63)
        assert not m[y, x], i
    assert 0.02 < m.mean() < 0.2


def test_sr_training_runs_resumes_and_exports(tmp_path, monkeypatch, face_model, capsys):
    import training.sr as T
    from training.__main__ import main as cli

    g = torch.Generator().manual_seed(0)
    crops = (torch.rand(24, 128, 128, 3, generator=g) * 255).to(torch.uint8)
    monkeypatch.setattr(T, "load_crops", lambda split, limit: crops[:limit] if limit else crops)
    gen = tmp_path / "g64.safetensors"
    small_gen(64, face_model.albedo_dim, face_model.exp_names).save(gen)
    out = tmp_path / "run"
    args = ["sr", "--out", str(out), "--generator", str(gen), "--batch", "2", "--gen-batch", "2", "--steps", "3",
            "--adv-start", "1", "--channels", "8", "--blocks", "1", "--up-channels", "4", "--val-every", "2",
            "--cons-free-eyes", "--ckpt-minutes", "0", "--patch", "16", "--eye-colour-weight", "0.01"]
    assert cli(args) == 0
    log = (out / "log.txt").read_text()
    assert "run 1: step 0" in log and "val at step 2" in log and "final checkpoint at step 3" in log
    assert cli(args) == 1 and "add --resume" in capsys.readouterr().err  # no silent overwrite
    assert cli(args + ["--resume", "--steps", "5"]) == 0
    log = (out / "log.txt").read_text()
    assert "run 2: step 3" in log and "final checkpoint at step 5" in log
    dest = tmp_path / "face_sr.safetensors"
    assert cli(["sr", "--out", str(out), "--export", str(dest)]) == 0
    sr = FaceSR.load(dest)
    assert sr.cfg["channels"] == 8 and json.loads(sr.meta["training"])["step"] == 5
    assert cli(["sr", "--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    for bad in (["--batch", "0"], ["--patch", "3"], ["--gen-batch", "-1"]):
        assert cli(["sr", "--out", str(tmp_path / "bad")] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "bad" / "sr_ckpt.safetensors").exists()


def test_eye_colour_excess_flags_magenta_and_teal_not_skin():
    from training.sr import eye_colour_excess, rgb_to_lab

    skin_rgb = torch.tensor([0.80, 0.60, 0.50])
    def img(rgb):
        return (rgb.view(1, 3, 1, 1).expand(1, 3, 8, 8) * 2 - 1).clone()
    skin_ab = rgb_to_lab(img(skin_rgb) * 0.5 + 0.5)[:, 1:, 0, 0]
    eye = torch.zeros(1, 1, 8, 8)
    eye[..., 2:5, 2:6] = 1
    assert eye_colour_excess(img(skin_rgb), eye, skin_ab, 15, 12) == 0
    assert eye_colour_excess(img(skin_rgb * 0.5), eye, skin_ab, 15, 12) == 0  # darker lids: fine
    magenta = eye_colour_excess(img(torch.tensor([0.75, 0.35, 0.65])), eye, skin_ab, 15, 12)
    teal = eye_colour_excess(img(torch.tensor([0.35, 0.65, 0.65])), eye, skin_ab, 15, 12)
    assert magenta > 5 and teal > 5
    x = img(torch.tensor([0.75, 0.35, 0.65])).requires_grad_(True)
    eye_colour_excess(x, eye, skin_ab, 15, 12).backward()
    assert x.grad[..., 0, 0].abs().sum() == 0 and x.grad[..., 3, 3].abs().sum() > 0  # only inside the eye region


def test_hf_energy_loss_wants_the_photo_detail_in_any_phase():
    from training.sr import gaussian_blur, hf_energy, hf_energy_loss

    g = torch.Generator().manual_seed(3)
    truth = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert hf_energy(truth).shape == (2, 2, 8, 8)
    assert hf_energy_loss(truth, truth) == 0
    soft = gaussian_blur(truth, torch.full((2,), 1.2))
    shifted = truth.roll(1, -1)  # the same detail one pixel over: L1 calls it far, the energy match does not
    assert hf_energy_loss(shifted, truth) < 0.2 * hf_energy_loss(soft, truth)
    assert (shifted - truth).abs().mean() > (soft - truth).abs().mean()
    x = soft.clone().requires_grad_(True)
    hf_energy_loss(x, truth).backward()
    assert x.grad.abs().sum() > 0


def test_sr_training_starts_from_an_exported_upsampler(tmp_path, monkeypatch, face_model, capsys):
    import training.sr as T
    from training.__main__ import main as cli

    crops = (torch.rand(8, 128, 128, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    monkeypatch.setattr(T, "load_crops", lambda split, limit: crops)
    init = small_sr(64, seed=4)
    init.save(tmp_path / "init.safetensors")
    out = tmp_path / "run"
    base = ["sr", "--out", str(out), "--gen-batch", "0", "--batch", "2", "--patch", "16", "--ckpt-minutes", "0"]
    assert cli(base + ["--init", str(tmp_path / "init.safetensors"), "--steps", "0"]) == 0
    assert cli(["sr", "--out", str(out), "--export", str(tmp_path / "back.safetensors")]) == 0
    back = FaceSR.load(tmp_path / "back.safetensors")
    assert back.cfg == init.cfg  # the architecture comes from the file, not the defaults
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.allclose(back(x), init(x), atol=1e-6)
    assert cli(base + ["--resume", "--steps", "2", "--hf-weight", "1"]) == 0
    assert "run 2: step 0" in (out / "log.txt").read_text()
    assert cli(["sr", "--out", str(tmp_path / "r2"), "--gen-batch", "0", "--init", str(tmp_path / "none.st")]) == 1
    err = capsys.readouterr().err
    assert "error: --init" in err and "Traceback" not in err


def test_run_log_appends_every_line_across_resumed_runs(tmp_path, capsys):
    """training.checkpoint.run_log (the SR and identity-prior runs' log): each line printed with the time and
    appended to log.txt at once, so a resumed run adds to the first run's lines and nothing waits in a buffer."""
    from training.checkpoint import run_log

    log = run_log(tmp_path)
    log("run 0: step 0")
    assert (tmp_path / "log.txt").read_text(encoding="utf-8").endswith("run 0: step 0\n")
    run_log(tmp_path)("run 1: step 40")
    lines = (tmp_path / "log.txt").read_text(encoding="utf-8").splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["run 0: step 0", "run 1: step 40"]
    assert "run 1: step 40" in capsys.readouterr().out
