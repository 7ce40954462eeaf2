"""dlib face-recognition ResNet port: parity with dlib, identity behaviour, canonical-crop framing, bad files."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")

from engine.perception import identity as ident  # noqa: E402
from engine.perception.align import similarity_transform  # noqa: E402
from engine.perception.dlib_files import ModelFileError, model_file  # noqa: E402


@pytest.fixture(scope="module")
def model_path():
    try:
        return model_file(ident.MODEL_NAME)
    except ModelFileError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def net(model_path):
    return ident.default_identity_net()


@pytest.fixture(scope="module")
def dlib_net(model_path):
    return dlib.face_recognition_model_v1(str(model_path))


@pytest.fixture(scope="module")
def photos(ffhq_dir):
    """[(rgb uint8 (256,256,3), landmarks (68,2) continuous coords)] for the 10 ffhq samples."""
    from PIL import Image

    out = []
    for f in sorted((ffhq_dir / "images").glob("*.png")):
        img = np.asarray(Image.open(f).convert("RGB")).copy()
        lm = np.load(ffhq_dir / "landmarks" / (f.stem + ".npy")).astype(np.float64)
        out.append((img, lm))
    assert len(out) == 10
    return out


def _detection(lm, w, h):
    # continuous coordinates (pixel i covers [i, i+1)) -> dlib's integer pixel indices
    pts = [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in lm]
    return dlib.full_object_detection(dlib.rectangle(0, 0, w - 1, h - 1), pts)


@pytest.fixture(scope="module")
def chips(photos):
    return np.stack([dlib.get_face_chip(img, _detection(lm, 256, 256), ident.CHIP_SIZE, ident.CHIP_PADDING)
                     for img, lm in photos])


@pytest.fixture(scope="module")
def dlib_desc(chips, dlib_net):
    return np.stack([np.asarray(dlib_net.compute_face_descriptor(c)) for c in chips])


def _t(chips_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chips_u8)).permute(0, 3, 1, 2).float() / 255.0


def test_matches_dlib_on_real_chips(net, chips, dlib_desc):
    with torch.no_grad():
        ours = net(_t(chips)).double().numpy()
    err = np.abs(ours - dlib_desc).max()
    assert err < 1e-4, f"max-abs difference to dlib {err:.2e}"
    # and not trivially: descriptors are far from zero and differ between people
    assert np.abs(dlib_desc).max() > 0.1


def test_same_person_close_different_people_far(net, chips):
    x = _t(chips)
    shifted = torch.roll(x, shifts=(3, -3), dims=(2, 3))
    shifted[:, :, :3] = x[:, :, :1]  # replicate the edge instead of wrapping around
    shifted[:, :, :, -3:] = x[:, :, :, -1:]
    with torch.no_grad():
        d = net(x)
        d_mirror = net(torch.flip(x, dims=[3]))
        d_shift = net(shifted)
    assert ident.identity_distance(d, d_mirror).max() < 0.4
    assert ident.identity_distance(d, d_shift).max() < 0.4
    pairs = list(itertools.combinations(range(len(d)), 2))
    far = sum(float(ident.identity_distance(d[i], d[j])) > ident.SAME_PERSON_THRESHOLD for i, j in pairs)
    assert far >= 0.8 * len(pairs), f"only {far}/{len(pairs)} different-person pairs beyond 0.6"


def _canonical_crop(img, lm, size):
    import cv2

    m = similarity_transform(lm[17:], ident._template_landmarks(size, size)[17:])
    m_idx = m.copy()  # continuous-coordinate map -> the pixel-index map cv2 expects
    m_idx[:, 2] += 0.5 * m[:, :2].sum(1) - 0.5
    return cv2.warpAffine(img, m_idx, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_chip_framing_matches_dlib(net, photos, ict_path):
    """Our fixed crop->chip resampling reproduces dlib.get_face_chip on the crop's template landmarks."""
    size = 128
    tpl = ident._template_landmarks(size, size)
    errs = []
    for img, lm in photos[:4]:
        crop = _canonical_crop(img, lm, size)
        ref = dlib.get_face_chip(crop, _detection(tpl, size, size), ident.CHIP_SIZE, ident.CHIP_PADDING)
        ours = net.crops_to_chips(_t(crop[None]))[0].permute(1, 2, 0).numpy()
        errs.append(np.abs(ours - ref / 255.0)[20:130, 20:130].mean())
    assert max(errs) < 0.03, errs


@pytest.mark.parametrize("size", [128, 256])
def test_embed_crops_close_to_dlib_on_photo(net, photos, dlib_desc, ict_path, size):
    crops = np.stack([_canonical_crop(img, lm, size) for img, lm in photos])
    x = _t(crops).requires_grad_(True)
    d = net.embed_crops(x)
    dist = ident.identity_distance(d, torch.from_numpy(dlib_desc).float())
    assert dist.max() < 0.25, dist
    d.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # a mask passes through (and changes the result when it hides the face)
    half = torch.ones(1, 1, size, size)
    half[..., : size // 2, :] = 0
    with torch.no_grad():
        d_masked = net.embed_crops(x[:2].detach(), half)
    assert ident.identity_distance(d_masked, d[:2].detach()).min() > 0.05


def test_default_net_is_frozen(net):
    assert ident.default_identity_net() is net
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())


def test_bad_files_give_clear_errors(model_path, tmp_path):
    data = model_path.read_bytes()
    trunc = tmp_path / "trunc.dat"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ident.IdentityModelError, match="truncated"):
        ident.IdentityNet.load(trunc)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"this is not a dlib network" * 10)
    with pytest.raises(ident.IdentityModelError, match="not a valid dlib"):
        ident.IdentityNet.load(junk)
    other = model_file("shape_predictor_68_face_landmarks.dat")  # a dlib file, but not this network
    with pytest.raises(ident.IdentityModelError):
        ident.IdentityNet.load(other)
    extra = tmp_path / "extra.dat"
    extra.write_bytes(data + b"\x00")
    with pytest.raises(ident.IdentityModelError, match="trailing"):
        ident.IdentityNet.load(extra)
    with pytest.raises(ident.IdentityModelError, match="cannot read"):
        ident.IdentityNet.load(tmp_path / "missing.dat")
