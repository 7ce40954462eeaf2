"""engine.editing.session: edits, undo/redo, keyframes, save/load and its error handling (no Qt)."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.editing.session import Session, SessionError, smoothstep

SIZE = 64


@pytest.fixture
def session(face_model):
    return Session(model=face_model, generator=None)


def test_edits_change_the_render_and_undo_restores_exactly(session):
    f0 = session.render(SIZE).image
    assert session.render(SIZE).image.tobytes() == f0.tobytes()  # deterministic
    session.set_pose_degrees(yaw=25)
    f1 = session.render(SIZE).image
    assert (f1 != f0).mean() > 0.05
    session.set_expression("jawOpen", 0.9)
    f2 = session.render(SIZE).image
    assert (f2 != f1).mean() > 0.005
    session.set_light(azimuth=60, elevation=20, intensity=0.7)
    f3 = session.render(SIZE).image
    assert (f3 != f2).mean() > 0.05
    assert session.undo()
    assert np.array_equal(session.render(SIZE).image, f2)
    assert session.undo() and session.undo()
    assert np.array_equal(session.render(SIZE).image, f0)
    assert not session.undo()
    assert session.redo()
    assert np.array_equal(session.render(SIZE).image, f1)
    session.set_identity_component(0, 2.0)  # a new edit drops the redo branch
    assert not session.can_redo


def test_drag_commits_one_undo_entry(session):
    f0 = session.render(SIZE).image
    for v in np.linspace(0, 40, 30):
        session.set_pose_degrees(yaw=float(v), commit=False)
    assert session.commit()
    assert math.isclose(session.pose_degrees()["yaw"], 40, abs_tol=1e-4)
    assert session.undo()
    assert np.array_equal(session.render(SIZE).image, f0)
    assert not session.undo()


def test_randomize_and_reset_touch_one_factor(session):
    session.set_pose_degrees(yaw=10)
    pose = session.coeffs.pose.clone()
    session.randomize("identity", seed=5)
    assert session.coeffs.identity.abs().sum() > 10
    assert torch.equal(session.coeffs.pose, pose)
    a = session.coeffs.identity.clone()
    session.randomize("identity", seed=5)
    assert torch.equal(session.coeffs.identity, a)  # seeded
    session.randomize("expression", seed=1)
    e = session.coeffs.expression
    assert e.min() >= 0 and e.max() <= 1 and e.sum() > 0
    n = session.noise.clone()
    session.reseed_noise(3)
    assert not torch.equal(n, session.noise)
    session.reset("identity")
    assert session.coeffs.identity.abs().sum() == 0 and torch.equal(session.coeffs.pose, pose)
    session.set_light(azimuth=-70, intensity=1.0)
    session.reset("light")
    assert torch.equal(session.coeffs.light, Session(model=session.model, generator=None).coeffs.light)
    with pytest.raises(SessionError):
        session.randomize("hair")


def test_bad_values_are_refused(session):
    before = session.coeffs.as_vector().clone()
    for call in (lambda: session.set_expression("nope", 0.3), lambda: session.set_expression("jawOpen", 3),
                 lambda: session.set_pose_degrees(yaw=float("nan")), lambda: session.set_pose_degrees(pitch=90),
                 lambda: session.set_identity_component(500, 1.0), lambda: session.set_light(intensity=-1)):
        with pytest.raises(SessionError):
            call()
    assert torch.equal(before, session.coeffs.as_vector())
    assert not session.can_undo


def test_light_round_trip(session):
    session.set_light(azimuth=-35, elevation=15, intensity=0.4, ambient=0.9)
    p = session.light_params()
    assert p["azimuth"] == pytest.approx(-35, abs=1e-3) and p["elevation"] == pytest.approx(15, abs=1e-3)
    assert p["intensity"] == pytest.approx(0.4, abs=1e-4) and p["ambient"] == pytest.approx(0.9, abs=1e-4)
    session.set_light(elevation=-10)  # other parts unchanged
    p2 = session.light_params()
    assert p2["azimuth"] == pytest.approx(-35, abs=1e-3) and p2["elevation"] == pytest.approx(-10, abs=1e-3)


def test_light_sliders_keep_the_band2_of_a_fitted_light(session):
    c = session.coeffs.clone()
    c.light.view(1, 3, 9)[:, :, 4:] = torch.linspace(-0.2, 0.2, 15).view(1, 3, 5)  # a photo-like light
    session.set_coefficients(c)
    band2 = c.light.view(1, 3, 9)[:, :, 4:].clone()
    f0 = session.render(SIZE).image
    session.set_light(azimuth=40, intensity=0.6)
    assert session.light_params()["azimuth"] == pytest.approx(40, abs=1e-3)
    torch.testing.assert_close(session.coeffs.light.view(1, 3, 9)[:, :, 4:], band2)
    assert (session.render(SIZE).image != f0).mean() > 0.05
    session.reset("light")  # the default key light: band 2 cleared
    assert session.coeffs.light.view(1, 3, 9)[:, :, 4:].abs().max() == 0


def test_keyframe_edits_are_undoable_and_leave_the_face_alone(session):
    session.set_pose_degrees(yaw=20)
    session.add_keyframe(0.0)
    session.set_pose_degrees(yaw=-10)
    session.add_keyframe(1.0)
    assert [k.time for k in session.keyframes] == [0.0, 1.0]
    yaw = session.pose_degrees()["yaw"]
    session.remove_keyframe(0)
    assert [k.time for k in session.keyframes] == [1.0]
    assert session.undo()  # the removal
    assert [k.time for k in session.keyframes] == [0.0, 1.0]
    assert session.pose_degrees()["yaw"] == pytest.approx(yaw)
    assert session.undo()  # the second add
    assert [k.time for k in session.keyframes] == [0.0]
    assert session.pose_degrees()["yaw"] == pytest.approx(-10, abs=1e-4)
    assert session.undo()  # the yaw edit
    assert session.pose_degrees()["yaw"] == pytest.approx(20, abs=1e-4)
    assert [k.time for k in session.keyframes] == [0.0]
    assert session.redo() and session.redo()
    assert [k.time for k in session.keyframes] == [0.0, 1.0]
    session.keyframes.clear()  # a copy: the session's keyframes do not change behind its back
    assert len(session.keyframes) == 2
    session.clear_keyframes()
    assert session.keyframes == [] and session.undo() and len(session.keyframes) == 2


def test_set_keyframes_is_one_fast_undo_step(session):
    session.add_keyframe(0.0)  # replaced by the bulk call, restored by its undo
    noise = session.noise.clone()
    faces = []
    for i in range(300):
        c = session.coeffs.clone()
        c.expr["jawOpen"] = i / 299
        faces.append((i / 30.0, c if i % 3 else (c, noise + i)))
    faces.append((0.5, session.state.edited(coeffs=faces[16][1])))  # a Snapshot; replaces the time 0.5 pair
    before = session.state
    pushes = []
    real_push = session.history._push
    session.history._push = lambda b: (pushes.append(b), real_push(b))[1]
    session.set_keyframes(faces)
    del session.history._push
    ks = session.keyframes
    assert len(pushes) == 1  # linear time: one history push for the whole track, not one per frame (speed: bench/)
    assert len(ks) == 300 and [k.time for k in ks] == sorted(k.time for k in ks)
    assert ks[299].coeffs.expr["jawOpen"].item() == pytest.approx(1.0)
    assert torch.equal(ks[3].noise, noise + 3) and torch.equal(ks[4].noise, noise)
    assert ks[15].coeffs.expr["jawOpen"].item() == pytest.approx(16 / 299) and torch.equal(ks[15].noise, noise)
    assert torch.equal(session.coeffs.as_vector(), before.coeffs.as_vector())  # the face itself is unchanged
    assert session.undo() is not None  # ONE undo removes them all
    assert [k.time for k in session.keyframes] == [0.0]
    assert session.redo() is not None and len(session.keyframes) == 300
    for bad, msg in (([(-1.0, faces[0][1])], "time must be"), ([(float("nan"), faces[0][1])], "time must be"),
                     ([(0.0, "smile")], "must be a Snapshot"), ([3], r"\(time, face\) pair")):
        with pytest.raises(SessionError, match=msg):
            session.set_keyframes(faces[:5] + bad)
        assert len(session.keyframes) == 300  # nothing changed

def test_keyframe_interpolation_is_eased(session):
    session.add_keyframe(0.0)
    session.set_pose_degrees(yaw=40)
    session.set_expression("jawOpen", 1.0)
    session.add_keyframe(2.0)
    k0, k1 = session.keyframes
    c, n = session.interpolate_keyframes(0.0)
    assert torch.equal(c.as_vector(), k0.coeffs.as_vector()) and torch.equal(n, k0.noise)
    c, n = session.interpolate_keyframes(2.0)
    assert torch.equal(c.as_vector(), k1.coeffs.as_vector())
    assert session.interpolate_keyframes(-1)[0].expr["jawOpen"].item() == 0  # clamped outside the span
    mid = session.interpolate_keyframes(1.0)[0]
    assert mid.expr["jawOpen"].item() == pytest.approx(0.5, abs=1e-6)
    quarter = session.interpolate_keyframes(0.5)[0].expr["jawOpen"].item()
    assert quarter == pytest.approx(smoothstep(0.25), abs=1e-6) and quarter < 0.25  # eased, not linear
    assert math.degrees(session.interpolate_keyframes(1.5)[0].yaw.item()) == pytest.approx(40 * smoothstep(0.75),
                                                                                            abs=1e-4)
    session.remove_keyframe(0)
    assert len(session.keyframes) == 1
    with pytest.raises(SessionError):
        session.remove_keyframe(5)


def test_save_load_round_trip(session, tmp_path):
    session.randomize("identity", seed=2)
    session.set_pose_degrees(yaw=-20, pitch=10)
    session.set_expression("mouthSmile_L", 0.7)
    session.add_keyframe(0.0)
    session.set_light(azimuth=30, intensity=0.5)
    session.add_keyframe(1.5)
    p = tmp_path / "s.json"
    session.save(p)
    loaded = Session.load(p, model=session.model, generator=None)
    assert loaded.seed == session.seed
    assert torch.allclose(loaded.coeffs.as_vector(), session.coeffs.as_vector(), atol=1e-5)
    assert torch.allclose(loaded.noise, session.noise, atol=1e-5)
    assert [k.time for k in loaded.keyframes] == [0.0, 1.5]
    diff = np.abs(loaded.render(SIZE).image.astype(int) - session.render(SIZE).image.astype(int))
    assert diff.max() <= 2
    # load_file into an existing session is undoable
    other = Session(model=session.model, generator=None)
    other.load_file(p)
    assert torch.allclose(other.coeffs.as_vector(), session.coeffs.as_vector(), atol=1e-5)
    assert other.undo()
    assert torch.equal(other.coeffs.as_vector(), Session(model=session.model, generator=None).coeffs.as_vector())


@pytest.mark.parametrize("content, words", [
    ("{not json", "corrupt"),
    (json.dumps({"format": "discoface.coefficients", "version": 1}), "not a DiscoFace session"),
    (json.dumps({"format": "discoface.session", "version": 99, "coefficients": {}}), "newer"),
    (json.dumps({"format": "discoface.session", "version": 1, "coefficients": {"format": "x"}}), "coefficients"),
    (json.dumps([1, 2, 3]), "not a DiscoFace session"),
    (None, "not found"),
    (b"\xff\xfe\x00garbage", "not a text"),
])
def test_bad_session_files_leave_the_session_unchanged(session, tmp_path, content, words):
    session.set_pose_degrees(yaw=15)
    before = session.coeffs.as_vector().clone()
    p = tmp_path / "bad.json"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    with pytest.raises(SessionError, match=words):
        session.load_file(p)
    assert torch.equal(before, session.coeffs.as_vector())
    with pytest.raises(SessionError):
        Session.load(p, model=session.model, generator=None)


def test_save_is_atomic_and_checks_the_name(session, tmp_path):
    with pytest.raises(SessionError):
        session.save(tmp_path / "s.txt")
    session.save(tmp_path / "s.json")
    assert [q.name for q in tmp_path.iterdir()] == ["s.json"]  # no temp files left


class FakeGenerator:
    """Stands in for engine.generator.networks.FaceGenerator: a colour that depends on the coefficients and noise."""
    resolution = 32
    noise_dim = 32
    G = SimpleNamespace(noise_dim=32)

    def __init__(self):
        self.calls = 0

    def sample(self, n, seed):
        from engine.face.model import default_model
        g = torch.Generator().manual_seed(seed)
        c = default_model().zeros(n)
        c.identity.normal_(generator=g)
        c.expression.uniform_(0, 0.2, generator=g)
        return c, torch.randn(n, 32, generator=g)

    def synthesize(self, coeffs, noise, truncation_psi=0.7):
        self.calls += 1
        v = torch.sigmoid(coeffs.pose.sum(1) + coeffs.expression.sum(1) + noise[:, 0] * 0.1)
        return v.view(-1, 1, 1, 1).expand(-1, 3, self.resolution, self.resolution).clone()


def test_generator_mode(face_model):
    gen = FakeGenerator()
    s = Session(model=face_model, generator=gen)
    assert s.mode == "generator" and "generator" in s.mode_text
    f = s.render()
    assert f.mode == "generator" and f.image.shape == (32, 32, 3) and gen.calls == 1
    s.set_pose_degrees(yaw=30)
    assert not np.array_equal(s.render().image, f.image)
    assert s.render(size=64).image.shape == (64, 64, 3)
    assert s.render(SIZE, preview=True).mode == "preview"
    s.randomize("expression", seed=4)
    c, _ = gen.sample(1, 4)
    assert torch.allclose(s.coeffs.expression, c.expression)


def test_cached_preview_matches_the_renderer(session, renderer):
    from engine.io.files import to_uint8_image

    for edit in (lambda: None, lambda: session.set_pose_degrees(yaw=35, roll=-10),  # pose only: shape cache hit
                 lambda: session.set_expression("jawOpen", 0.6), lambda: session.randomize("identity", seed=9),
                 lambda: session.set_light(azimuth=-50)):
        edit()
        ref = to_uint8_image(renderer(session.coeffs, SIZE, background=0.35).image[0]).astype(int)
        assert np.abs(session.render(SIZE).image.astype(int) - ref).max() <= 1


def test_open_photo_paths(session, tmp_path, monkeypatch):
    """The 3DMM fit path: a missing file is a clear error; the fitter's own cancel exception (by type) becomes
    SessionCancelled and changes nothing; a fit is one undo step."""
    from engine.editing import photo_import
    from engine.editing.session import SessionCancelled
    from engine import fit as fitting

    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"not really a jpeg")
    with pytest.raises(SessionError, match="not found"):
        session.open_photo(tmp_path / "missing.jpg")
    fitted = session.model.zeros(1)
    fitted.set_pose_degrees(yaw=12)
    fitted.expr["jawOpen"] = 0.4
    calls = []

    def fit_photo_crop(path, progress=None, cancel=None):
        calls.append(path)
        if progress is not None:
            progress(0.5)
        if cancel is not None and cancel():
            raise fitting.FitCancelled("fitting cancelled")  # what the real fitter raises mid-way
        return fitted, None, None, None
    monkeypatch.setattr(fitting, "fit_photo_crop", fit_photo_crop)
    checks = iter([False, True])  # not cancelled before the fit starts: the fitter itself must see the cancel
    with pytest.raises(SessionCancelled):
        session.open_photo(photo, cancel=lambda: next(checks), how="fit")
    assert calls == [str(photo)]
    assert session.coeffs.expr["jawOpen"].item() == 0  # cancelled: unchanged
    assert not session.can_undo
    seen = []
    msg = session.open_photo(photo, progress=lambda d, t: seen.append((d, t)), how="fit")
    assert "fitted" in msg and calls[-1] == str(photo) and seen[0] == (500, 1000) and seen[-1] == (1, 1)
    assert session.expression_value("jawOpen") == pytest.approx(0.4)
    assert session.pose_degrees()["yaw"] == pytest.approx(12, abs=1e-4)
    assert session.undo() and session.expression_value("jawOpen") == 0
    assert photo_import.ImportCancelled is SessionCancelled


def test_from_embedding(face_model, tmp_path):
    from types import SimpleNamespace

    c = face_model.zeros(1)
    c.expr["mouthSmile_L"] = 0.5
    res = SimpleNamespace(coeffs=c, noise=torch.full((1, 32), 0.25), w_offsets=torch.ones(1, 4, 8) * 0.01)
    s = Session.from_embedding(res, source="me.jpg", model=face_model, generator=None)
    assert s.expression_value("mouthSmile_L") == 0.5 and s.truncation_psi == 1.0 and not s.can_undo
    s.save(tmp_path / "e.json")
    back = Session.load(tmp_path / "e.json", model=face_model, generator=None)
    assert back.source == "me.jpg" and torch.allclose(back.w_offsets, res.w_offsets)
    assert torch.allclose(back.noise, res.noise)


def test_with_a_real_face_generator(face_model, tmp_path):
    """The session drives engine.generator.networks.FaceGenerator (random weights, 32 px: the API, not the quality)."""
    gm = pytest.importorskip("engine.generator.networks")
    torch.manual_seed(0)
    dec = gm.FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names)
    G = gm.Generator(resolution=32, albedo_dim=face_model.albedo_dim,
                     channels={4: 32, 8: 32, 16: 16, 32: 16}, w_dim=64, map_layers=2)
    gen = gm.FaceGenerator(dec, G).eval()
    s = Session(model=face_model, generator=gen)
    assert s.mode == "generator" and s.noise_dim == G.noise_dim
    f0 = s.render()
    assert f0.image.shape == (32, 32, 3) and f0.mode == "generator"
    s.randomize("pose", seed=3)
    c, _ = gen.sample(1, 3)
    assert torch.allclose(s.coeffs.pose, c.pose)
    s.reseed_noise(5)
    assert not np.array_equal(s.render().image, f0.image)
    s.undo()
    s.undo()
    assert np.array_equal(s.render().image, f0.image)
    n0 = s.noise.clone()
    s.randomize("identity", seed=7)  # a plain generator's noise is hair/background: identity leaves it
    assert torch.equal(s.noise, n0)
    G2 = gm.Generator(resolution=32, albedo_dim=face_model.albedo_dim, channels={4: 32, 8: 32, 16: 16, 32: 16},
                      w_dim=64, map_layers=2, identity_noise=True)
    s2 = Session(model=face_model, generator=gm.FaceGenerator(dec, G2).eval())
    n0 = s2.noise.clone()
    s2.randomize("identity", seed=7)  # an identity-code generator: a new person gets a new code
    assert not torch.equal(s2.noise, n0)
    n7 = s2.noise.clone()
    s2.randomize("identity", seed=8)
    s2.randomize("identity", seed=7)
    assert torch.equal(s2.noise, n7)


def test_open_photo_embeds_with_a_generator(face_model, tmp_path, monkeypatch):
    import engine.generator.embed as E
    from types import SimpleNamespace

    photo = tmp_path / "p.png"
    photo.write_bytes(b"x")
    c = face_model.zeros(1)
    c.expr["eyeBlink_L"] = 1.0
    seen = []

    class FakeEmbedder:
        def __init__(self, gen):
            self.gen = gen

        def embed(self, path, progress=None, cancel=None):
            for i in range(3):
                if cancel is not None and cancel():
                    raise E.EmbedCancelled()
                progress(i + 1, 3, 0.5)
            return SimpleNamespace(coeffs=c, noise=torch.zeros(1, 32), w_offsets=None,
                                   metrics={"psnr_face": 25.0, "seconds": 0.1})
    monkeypatch.setattr(E, "PhotoEmbedder", FakeEmbedder)  # (photo_import imports it where it embeds)
    from engine.editing.session import SessionCancelled

    s = Session(model=face_model, generator=FakeGenerator())
    with pytest.raises(SessionCancelled):
        s.open_photo(photo, cancel=lambda: True, how="embed")
    assert s.expression_value("eyeBlink_L") == 0
    msg = s.open_photo(photo, progress=lambda d, t: seen.append((d, t)), how="embed")
    assert "embedded" in msg and seen == [(1, 3), (2, 3), (3, 3)]
    assert s.expression_value("eyeBlink_L") == 1.0 and s.truncation_psi == 1.0


def test_edits_return_snapshots_that_later_edits_do_not_change(session):
    s1 = session.set_control("yaw", 20, commit=False)
    img1 = session.render_snapshot(s1, SIZE).image
    s2 = session.set_control("yaw", 30, commit=False)
    assert s2 is session.state and s1 is not s2
    assert math.degrees(float(s1.coeffs.pose[0, 0])) == pytest.approx(20, abs=1e-4)  # not changed behind its back
    assert np.array_equal(session.render_snapshot(s1, SIZE).image, img1)
    assert session.commit() and session.undo() is not None
    assert session.pose_degrees()["yaw"] == 0


def test_control_table_names_ranges_and_composites(session):
    from engine.editing.controls import ControlError, parse_assignments

    t = session.controls
    assert t["yaw"].trained == (-40.0, 40.0) and (t["yaw"].lo, t["yaw"].hi) == (-60.0, 60.0)
    assert t["jawOpen"].range() == (0.0, 1.0) and "ambient" not in t and "light_ambient" in t
    session.set_controls({"smile": 0.6, "blink": 1.0, "look_horizontal": -0.5, "look_vertical": 0.25})
    e = session.coeffs.expr
    assert e["mouthSmile_L"].item() == pytest.approx(0.6) and e["mouthSmile_R"].item() == pytest.approx(0.6)
    assert e["eyeBlink_L"].item() == 1.0 and e["eyeBlink_R"].item() == 1.0
    assert e["eyeLookIn_L"].item() == pytest.approx(0.5) and e["eyeLookOut_R"].item() == pytest.approx(0.5)
    assert e["eyeLookOut_L"].item() == 0 and e["eyeLookUp_L"].item() == pytest.approx(0.25)
    assert session.control_value("look_horizontal") == pytest.approx(-0.5)
    assert session.control_value("smile") == pytest.approx(0.6)
    # outside the trained range: refused unless forced (with a warning), outside the full range always refused
    with pytest.raises(SessionError, match="trained"):
        session.set_control("yaw", 50, force=False)
    session.set_control("yaw", 50)
    assert t["yaw"].warning(50) and "trained" in t["yaw"].warning(50) and t["yaw"].warning(30) is None
    with pytest.raises(SessionError, match="outside its range"):
        session.set_control("yaw", 500)
    with pytest.raises(SessionError, match="unknown setting"):
        session.set_control("smileBig", 1)
    before = session.coeffs.as_vector().clone()
    with pytest.raises(SessionError):  # all or nothing
        session.set_controls({"pitch": 10, "jawOpen": 3})
    assert torch.equal(before, session.coeffs.as_vector())
    assert parse_assignments(["yaw=20", "jawOpen = 0.5"]) == {"yaw": 20.0, "jawOpen": 0.5}
    for bad in (["yaw"], ["yaw=abc"], ["yaw=nan"]):
        with pytest.raises(ControlError):
            parse_assignments(bad)


def test_session_file_fuzz(session, tmp_path):
    """Randomly damaged session files: SessionError (never another exception) and the session is unchanged."""
    import random

    session.set_pose_degrees(yaw=-15)
    session.add_keyframe(0.0)
    session.set_expression("jawOpen", 0.5)
    session.add_keyframe(1.0)
    good = tmp_path / "good.json"
    session.save(good)
    text = good.read_text()
    d = json.loads(text)
    before = session.coeffs.as_vector().clone()
    rng = random.Random(0)
    values = [None, True, -1, 1e309, "x", [], {}, [1, "a"], {"format": "x"}, 2**70, float("nan")]
    cases = []
    for _ in range(60):  # byte-level damage
        i = rng.randrange(len(text))
        cases.append(text[:i] + rng.choice(["", "}", "\x00", "[", '"', "9e999"]) + text[i + rng.randrange(1, 20):])
    paths = [("coefficients",), ("noise",), ("seed",), ("truncation_psi",), ("keyframes",), ("keyframes", 0),
             ("keyframes", 0, "time"), ("keyframes", 1, "coefficients"), ("coefficients", "expression"),
             ("coefficients", "pose"), ("version",), ("w_offsets",), ("photo",)]
    for path in paths:  # structural damage
        for v in values:
            dd = json.loads(text)
            obj = dd
            for k in path[:-1]:
                obj = obj[k]
            obj[path[-1]] = v
            cases.append(json.dumps(dd))
    n_ok = 0
    for i, case in enumerate(cases):
        p = tmp_path / f"f{i}.json"
        p.write_text(case)
        try:
            session.load_file(p)
        except SessionError:
            assert torch.equal(before, session.coeffs.as_vector())
            continue
        n_ok += 1  # some damage is harmless (e.g. whitespace); the loaded face must still render
        assert session.render(32).image.shape == (32, 32, 3)
        session.undo()
    assert n_ok < len(cases) // 2
    assert d["format"] == "discoface.session"


# ---------------------------------------------------------------------------------------------------------------- #
# photo mode
# ---------------------------------------------------------------------------------------------------------------- #
ASTRONAUT = __import__("pathlib").Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def photo_source(face_model):
    """The bundled portrait fitted once for photo mode (engine.photo.fit)."""
    from engine.editing import photo_import

    torch.set_num_threads(1)
    return photo_import.open_photo_mode(ASTRONAUT)


@pytest.fixture
def photo_session(face_model, photo_source, monkeypatch):
    from engine.editing import photo_import

    monkeypatch.setattr(photo_import, "open_photo_cached",
                        lambda path, progress=None, cancel=None, **kw: (photo_source, None))
    s = Session(model=face_model, generator=None)
    s.open_photo(ASTRONAUT)
    return s


def test_photo_open_builds_the_drag_preview_renderer(photo_session, photo_source):
    """The open-photo job builds the drag preview's renderer too: the first drag frame does not pay for it."""
    pr = photo_session.frames.photo_renderer(photo_source)  # the cached one the open job made
    assert pr.preview_res is not None and pr._preview is not None
    assert pr._preview.grid.res == pr.preview_res < pr.grid.res


def test_photo_mode_shows_the_photo_and_edits_it(photo_session, photo_source):
    s = photo_session
    photo = photo_source.fit.image
    assert s.mode == "photo" and "astronaut.jpg" in s.mode_text and s.native_size == max(photo.shape[:2])
    f0 = s.render()
    assert f0.mode == "photo" and f0.image.shape == photo.shape and np.array_equal(f0.image, photo)  # zero edit
    assert f0.triangles is not None and f0.vertices.shape[0] > s.model.n_vertices  # the fitted full head
    small = s.render_snapshot(s.state, 200)
    assert max(small.image.shape[:2]) == 200
    yaw0 = s.control_value("yaw")
    snap = s.set_control("yaw", yaw0 + 15)
    f1 = s.render_snapshot(snap)
    assert f1.image.shape == photo.shape and np.abs(f1.image.astype(int) - photo).mean() > 1.0
    nose = lambda f: f.landmarks[30, 0] - f.landmarks[[0, 16], 0].mean()  # noqa: E731 (nose tip vs face outline)
    assert nose(f1) - nose(f0) > 2, (nose(f0), nose(f1))  # the face turned toward +x (the viewer's right)
    assert s.render_snapshot(snap, 64, view="preview").mode == "preview"  # the 3DMM of the same coefficients
    s.set_control("yaw", yaw0 + 35)
    assert "believable" in s.render().note  # limits said plainly
    s.reset("pose")  # photo mode: back to the fitted pose, not to frontal
    assert s.control_value("yaw") == pytest.approx(yaw0, abs=1e-4)
    while s.undo() is not None:
        pass
    assert s.mode == "preview" and s.photo is None  # opening the photo was one undo step


def test_photo_session_file_reopens_without_refitting(photo_session, tmp_path, monkeypatch):
    import shutil

    from engine.photo import fit as photo_fit

    s = photo_session
    s.set_controls({"smile": 0.6})
    s.add_keyframe(0.0)
    s.set_controls({"jawOpen": 0.4})
    s.add_keyframe(1.0)
    want = s.render().image
    moved = tmp_path / "me.jpg"
    shutil.copy(ASTRONAUT, moved)
    s.source = str(moved)
    s.photo.path = str(moved)  # as if the photo had been opened from there
    p = tmp_path / "photo.json"
    s.save(p)
    d = json.loads(p.read_text())
    assert d["version"] == 2 and d["photo"]["path"] == str(moved.resolve()) and "coefficients" in d["photo"]["fit"]
    monkeypatch.setattr(photo_fit, "fit_photo", lambda *a, **k: pytest.fail("reopening must not refit"))
    back = Session.load(p, model=s.model, generator=None)
    assert back.mode == "photo" and len(back.keyframes) == 2
    assert np.abs(back.render().image.astype(int) - want).max() <= 2
    frames = list(back.iter_frames(3))  # export frames at the photo's resolution
    assert all(f.shape == want.shape for f in frames) and not np.array_equal(frames[0], frames[-1])
    moved.write_bytes(b"not an image any more")
    with pytest.raises(SessionError, match="cannot be read"):
        Session(model=s.model, generator=None).load_file(p)
    moved.unlink()
    other = Session(model=s.model, generator=None)
    with pytest.raises(SessionError, match="no longer at"):
        other.load_file(p)
    assert other.photo is None and not other.can_undo


def test_photo_fit_cancel_is_caught_by_type(face_model, monkeypatch):
    from engine.editing.session import SessionCancelled
    from engine.photo import fit as photo_fit

    def fit_photo(path, progress=None, cancel=None, **kw):
        progress(0.3)
        if cancel():
            raise photo_fit.PhotoFitCancelled("photo fit cancelled")
        raise AssertionError("not reached")
    monkeypatch.setattr(photo_fit, "fit_photo", fit_photo)
    s = Session(model=face_model, generator=None)
    seen = []
    with pytest.raises(SessionCancelled):
        s.open_photo(ASTRONAUT, progress=lambda d, t: seen.append((d, t)), cancel=lambda: True)
    assert seen == [(300, 1000)] and s.photo is None and not s.can_undo


def test_new_random_face_leaves_photo_mode(photo_session):
    snap = photo_session.new_random_face(seed=4)
    assert snap.photo is None and photo_session.mode == "preview"
    assert photo_session.coeffs.identity.abs().sum() > 1
    assert photo_session.undo().photo is not None


# ---------------------------------------------------------------------------------------------------------------- #
# named identity controls
# ---------------------------------------------------------------------------------------------------------------- #
NAMED_IDENTITY = ("face_width", "face_length", "jaw_width", "nose_length", "nose_width", "eye_spacing",
                  "lip_fullness")


def test_named_identity_controls_are_in_the_table(session):
    t = session.controls
    named = [k for k, s in t.items() if s.group == "identity" and s.subgroup == "named"]
    assert tuple(named) == NAMED_IDENTITY
    assert t["face_width"].label == "Face width" and t["jaw_width"].label == "Jaw width"
    assert t["face_width"].range() == (-3.0, 3.0) and t["face_width"].range(full=True) == (-3.0, 3.0)
    assert "cm" in t["face_width"].help
    assert t["id0"].subgroup == "raw" and t["id0"].label == "Component 1"  # the raw modes are still there
    for k in NAMED_IDENTITY:
        assert session.control_value(k) == pytest.approx(0.0, abs=1e-6)  # the mean face reads 0


def test_setting_one_named_identity_control_leaves_the_others(session):
    session.randomize("identity", seed=11)  # start from a face that is not the mean
    before = {k: session.control_value(k) for k in NAMED_IDENTITY}
    session.set_control("face_width", 1.5)
    after = {k: session.control_value(k) for k in NAMED_IDENTITY}
    assert after["face_width"] == pytest.approx(1.5, abs=1e-4)
    for k in NAMED_IDENTITY[1:]:
        assert after[k] == pytest.approx(before[k], abs=1e-4), k  # (a projection read-back would move them)
    session.set_control("jaw_width", -2.0)
    assert session.control_value("jaw_width") == pytest.approx(-2.0, abs=1e-4)
    assert session.control_value("face_width") == pytest.approx(1.5, abs=1e-4)


def test_named_identity_controls_move_the_measured_trait(session):
    """face_width = +2 widens the measured cheek-to-cheek distance by about 2 of its standard deviations, and the
    face length / nose length / eye spacing stay (to first order)."""
    from engine.face.directions import identity_directions, measure_traits

    dirs = identity_directions(session.model)
    m0 = measure_traits(session.model, session.coeffs.identity)
    session.set_control("face_width", 2.0)
    m1 = measure_traits(session.model, session.coeffs.identity)
    grow = float(m1["face_width"] - m0["face_width"]) / dirs["face_width"].cm_per_std
    assert grow == pytest.approx(2.0, rel=0.1)
    for k in ("face_length", "nose_length", "eye_spacing"):
        assert abs(float(m1[k] - m0[k])) < 0.05 * dirs[k].cm_per_std, k
    img0 = Session(model=session.model, generator=None).render(SIZE).image
    assert np.abs(session.render(SIZE).image.astype(int) - img0).mean() > 1.0  # the face looks different


def test_named_identity_ranges_are_checked(session):
    with pytest.raises(SessionError, match="face_width = 4σ is outside its range ±3σ"):
        session.set_control("face_width", 4)
    with pytest.raises(SessionError, match="not a number"):
        session.set_control("nose_length", "long")
    before = session.coeffs.identity.clone()
    with pytest.raises(SessionError):  # all or nothing
        session.set_controls({"face_width": 1.0, "jaw_width": -5})
    assert torch.equal(before, session.coeffs.identity)
    session.set_controls({"face_width": 1.0})
    session.undo()
    assert torch.equal(before, session.coeffs.identity)


def test_named_identity_edits_move_the_photo(photo_session, photo_source):
    """Photo mode: the identity controls edit the photo's geometry."""
    s = photo_session
    f0 = s.render()
    v0 = s.control_value("face_width")
    f1 = s.render_snapshot(s.set_control("face_width", max(-3.0, v0 - 2.0)))
    assert f1.mode == "photo" and f1.image.shape == f0.image.shape
    assert np.abs(f1.image.astype(int) - f0.image.astype(int)).mean() > 0.3
    width = lambda f: f.landmarks[15, 0] - f.landmarks[1, 0]  # noqa: E731
    assert width(f1) < width(f0) - 3, (width(f0), width(f1))
