"""R-Net: the shipped weights, accuracy on real crops, differentiability, clear errors, flip bookkeeping."""
import pytest
import torch

from engine import config

# mean NME on the ten ffhq-samples crops (GT landmarks), measured with bench/fit.py, plus margin
FFHQ_NME_MAX = 0.065  # measured 0.0504 (max 0.079) with the shipped weights


@pytest.fixture(scope="module")
def rnet_file():
    p = config.ASSETS_DIR / "rnet.safetensors"
    if not p.exists():
        pytest.skip("assets/rnet.safetensors not trained yet (python -m training rnet)")
    return p


@pytest.fixture(scope="module")
def ffhq_crops(ffhq_aligned):
    crops, lms = ffhq_aligned
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, lms


def test_shipped_rnet_predicts_landmarks(rnet_file, face_model, renderer, ffhq_crops):
    from engine.fit import LandmarkGeometry, landmark_nme
    from engine.perception.rnet import RNet

    net = RNet.load(rnet_file)
    assert net.albedo_dim == face_model.albedo_dim
    assert rnet_file.stat().st_size < 50e6
    x, lms = ffhq_crops
    with torch.no_grad():
        c = net.predict(x)
    assert c.expression.min() >= 0 and c.expression.max() <= 1
    lm = LandmarkGeometry(face_model, renderer)(c.identity, c.expression, c.pose, 128)
    nme = landmark_nme(lm, lms)
    assert float(nme.mean()) < FFHQ_NME_MAX, nme
    # it looks at the image: a mirrored crop gives (roughly) the mirrored yaw
    with torch.no_grad():
        cf = net.predict(x.flip(-1))
    yaw, yaw_f = c.pose[:, 0], cf.pose[:, 0]
    big = yaw.abs() > 0.12
    if big.any():
        assert (torch.sign(yaw[big]) != torch.sign(yaw_f[big])).all()


def test_gradients_reach_the_input(rnet_file):
    from engine.perception.rnet import RNet

    net = RNet.load(rnet_file)
    x = torch.rand(2, 3, 128, 128, requires_grad=True)
    c = net.predict(x)
    (c.pose.sum() + c.light.sum() + c.identity.pow(2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_files_are_clear_errors(tmp_path, rnet_file):
    from engine.io.files import save_safetensors
    from engine.perception.rnet import RNet, RNetError

    with pytest.raises(RNetError, match="not found"):
        RNet.load(tmp_path / "missing.safetensors")
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(rnet_file.read_bytes()[:5000])
    with pytest.raises(RNetError):
        RNet.load(trunc)
    wrong = tmp_path / "wrong.safetensors"
    save_safetensors(wrong, {"stem.0.weight": torch.zeros(1)}, "discoface.rnet", 1, extra={"albedo_dim": "0"})
    with pytest.raises(RNetError, match="missing tensor|shape"):
        RNet.load(wrong)
    fmt = tmp_path / "fmt.safetensors"
    save_safetensors(fmt, {"x": torch.zeros(1)}, "discoface.albedo", 1)
    with pytest.raises(RNetError, match="expected 'discoface.rnet'"):
        RNet.load(fmt)


def test_untrained_rnet_shapes_and_save_roundtrip(tmp_path, face_model):
    from engine.perception.rnet import RNet

    net = RNet(7, 64, face_model.exp_names).eval()
    c = net.predict(torch.rand(3, 3, 100, 100))
    assert c.sizes() == {"identity": 100, "albedo": 7, "expression": 53, "light": 27, "pose": 3}
    p = tmp_path / "r.safetensors"
    net.save(p)
    back = RNet.load(p)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.forward_raw(x), back.forward_raw(x))
    assert back.input_size == 64 and back.albedo_dim == 7


def test_flip_bookkeeping(face_model):
    from engine.render import canonical_landmarks
    from training.rnet import MIRROR68, expression_mirror, flip_targets

    # the landmark permutation is an involution that mirrors the canonical template
    assert sorted(MIRROR68) == list(range(68))
    assert [MIRROR68[i] for i in MIRROR68] == list(range(68))
    t = canonical_landmarks(face_model, 128)
    tf = t[MIRROR68].clone()
    tf[:, 0] = 128 - tf[:, 0]
    assert torch.allclose(tf, t, atol=0.02)
    perm = expression_mirror(face_model.exp_names)
    names = face_model.exp_names
    assert names[perm[names.index("eyeBlink_L")]] == "eyeBlink_R"
    assert names[perm[names.index("jawLeft")]] == "jawRight"
    assert names[perm[names.index("jawOpen")]] == "jawOpen"
    # a posed, expressive face mirrored by flip_targets renders as the mirror image (landmarks)
    c = face_model.zeros(1)
    c.pose = torch.tensor([[0.3, 0.1, 0.1]])
    c.expr["mouthSmile_L"] = 0.8
    c.expr["eyeBlink_R"] = 0.9
    from engine.render import FaceRenderer

    r = FaceRenderer(face_model)
    sizes = [100, c.albedo_dim, 53, 27, 3]
    cf = type(c).from_vector(flip_targets(c.as_vector(), sizes, perm), c.albedo_dim, names)
    lm, lmf = r.landmarks(c, 128)[0], r.landmarks(cf, 128)[0]
    mirrored = lmf[MIRROR68].clone()
    mirrored[:, 0] = 128 - mirrored[:, 0]
    assert (mirrored - lm).norm(dim=-1).max() < 0.05
