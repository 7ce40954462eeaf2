"""Photo mode's fit (engine.photo.fit): accuracy on synthetic renders with known coefficients and on real photos,
cancel, odd inputs (tiny, huge, grayscale, RGBA, no face), and the JSON round trip of a fit."""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from engine.fit import solve_landmarks
from engine.perception.align import AlignError, load_image
from engine.photo.fit import PhotoFit, PhotoFitCancelled, PhotoFitError, as_photo, fit_photo, pick_face

DEG = 180.0 / math.pi


@pytest.fixture(scope="module")
def model(ict_path):
    from engine.face.model import default_model

    return default_model()


@pytest.fixture(scope="module")
def rend(model):
    from engine.fit import renderer_for

    return renderer_for(model)


def _scene(model, rend, yaw=0.0, pitch=0.0, jaw=0.0, seed=1):
    """A rendered head (200 px) on a grey 360 px canvas, holes (eyes, mouth) dark; and its coefficients."""
    c = model.zeros(1)
    c.identity[:] = torch.randn(1, 100, generator=torch.Generator().manual_seed(seed)) * 0.5
    c.set_pose_degrees(yaw=yaw, pitch=pitch)
    c.expr["jawOpen"] = jaw
    with torch.no_grad():
        out = rend(c, 200)
    img = out.image[0].permute(1, 2, 0).numpy()
    m = out.mask[0, 0].numpy()
    canvas = np.full((360, 360, 3), 0.45)
    mask = np.zeros((360, 360))
    canvas[80:280, 80:280] = img * m[..., None] + canvas[80:280, 80:280] * (1 - m[..., None])
    mask[80:280, 80:280] = m
    outside = (mask < 0.5).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    canvas[outside == 1] = (0.2, 0.1, 0.1)  # not reachable from the border: eye and mouth holes
    return (canvas * 255).round().astype(np.uint8), c


@pytest.fixture(scope="module")
def ffhq3(ffhq_dir):
    img = load_image(ffhq_dir / "images" / "00003.png")
    gt = np.load(ffhq_dir / "landmarks" / "00003.npy") + 0.5  # pixel index -> continuous
    return img, gt


@pytest.fixture(scope="module")
def ffhq3_fit(ffhq3):
    return fit_photo(ffhq3[0])


def _nme_photo(fit: PhotoFit, target: np.ndarray, model, rend) -> float:
    """NME of the fit's projected landmarks (in photo px) against ``target`` (68, 2) photo px."""
    from engine.fit import LandmarkGeometry
    from engine.perception.align import apply_affine

    geo = LandmarkGeometry(model, rend)
    with torch.no_grad():
        p = geo(fit.coeffs.identity, fit.coeffs.expression, fit.coeffs.pose, fit.alignment.size)[0].numpy()
    pp = apply_affine(fit.alignment.inverse(), p)
    return float(np.linalg.norm(pp - target, axis=1).mean() / np.linalg.norm(target[36] - target[45]))


# ------------------------------------------------------------------------------------------- synthetic truth
def test_solver_recovers_pose_and_jaw_from_exact_landmarks(model, rend):
    from engine.fit import LandmarkGeometry

    geo = LandmarkGeometry(model, rend)
    rng = np.random.default_rng(0)
    for seed, (yaw, pitch, jaw) in enumerate([(20.0, -8.0, 0.45), (-12.0, 6.0, 0.0), (5.0, 10.0, 0.3)]):
        c = model.zeros(1)
        c.identity[:] = torch.randn(1, 100, generator=torch.Generator().manual_seed(seed)) * 0.7
        c.set_pose_degrees(yaw=yaw, pitch=pitch, roll=3.0)
        c.expr["jawOpen"] = jaw
        with torch.no_grad():
            lm = geo(c.identity, c.expression, c.pose, 128)[0].numpy()
        lm = lm + rng.normal(0, 0.5, lm.shape)  # half a pixel of detector noise
        sol = solve_landmarks(model.zeros(1), lm, model, rend, 128)
        err = (sol.coeffs.pose[0] - c.pose[0]).abs() * DEG
        assert float(err.max()) < 2.0, (yaw, pitch, err)
        assert abs(float(sol.coeffs.expr["jawOpen"][0]) - jaw) < 0.12
        assert sol.nme < 0.02


def test_fit_of_synthetic_render_recovers_pose(model, rend):
    for yaw, pitch in [(15.0, 0.0), (-20.0, -5.0)]:
        img, c = _scene(model, rend, yaw=yaw, pitch=pitch, jaw=0.2)
        f = fit_photo(img)
        got = f.coeffs.pose[0] * DEG
        assert abs(float(got[0]) - yaw) < 4.0, got
        assert abs(float(got[1]) - pitch) < 4.0, got
        # roll is split between the alignment (in-plane rotation of the crop) and the coefficients
        rot = math.degrees(math.atan2(f.alignment.matrix[1, 0], f.alignment.matrix[0, 0]))
        assert abs(float(got[2]) + rot) < 5.0


def test_fit_reads_jaw_opening(model, rend):
    closed = fit_photo(_scene(model, rend, jaw=0.0)[0]).coeffs.expr["jawOpen"][0]
    opened = fit_photo(_scene(model, rend, jaw=0.5)[0]).coeffs.expr["jawOpen"][0]
    # dlib marks a rendered open mouth less open than the model's own landmarks (about half), but clearly open
    assert float(opened) > float(closed) + 0.12, (float(closed), float(opened))


# ------------------------------------------------------------------------------------------------ real photos
def test_real_photo_landmarks_and_outputs(ffhq3, ffhq3_fit, model, rend):
    img, gt = ffhq3
    f = ffhq3_fit
    assert f.image.shape == img.shape and f.image.dtype == np.uint8
    assert f.coeffs.batch == 1 and f.coeffs.albedo_dim == model.albedo_dim
    assert f.gain.shape == (3,) and np.all(f.gain > 0.2) and np.all(f.gain < 5)
    assert f.seconds > 0
    # against the detector's landmarks the fit was made on, and against the dataset's FAN landmarks
    assert f.landmark_nme < 0.06
    assert _nme_photo(f, f.alignment.landmarks_photo, model, rend) == pytest.approx(f.landmark_nme, abs=2e-3)
    assert _nme_photo(f, gt, model, rend) < 0.08
    # the alignment maps the photo landmarks to the stored crop landmarks
    from engine.perception.align import apply_affine

    np.testing.assert_allclose(apply_affine(f.alignment.matrix, f.alignment.landmarks_photo),
                               f.alignment.landmarks_crop, atol=1e-3)


def test_picks_the_face_not_the_larger_mission_patch():
    # the astronaut portrait: dlib also detects the (larger) mission patch on the suit, with low confidence
    from engine import config
    from engine.perception.align import detect_faces

    img = load_image(config.ASSETS_DIR / "astronaut.jpg")
    boxes = detect_faces(img)
    assert len(boxes) >= 2 and boxes[0][1] > 250  # the largest box is the patch (lower half)
    box = pick_face(img, boxes)
    assert box[1] < 150  # her face, in the upper part of the picture
    f = fit_photo(img)
    assert f.alignment.landmarks_photo[:, 1].mean() < 200
    from engine.perception.align import align_face  # the GAN embedder's aligner picks the same face

    assert align_face(img)[1].landmarks_photo[:, 1].mean() < 200
    assert f.landmark_nme < 0.06


def test_cancel_during_fit_is_quick(ffhq3):
    seen = []
    asked = []

    def progress(x):
        seen.append(x)

    def cancel():
        yes = bool(seen) and seen[-1] >= 0.3  # inside the landmark solve
        asked.append((len(seen), yes))
        return yes

    with pytest.raises(PhotoFitCancelled):
        fit_photo(ffhq3[0], progress=progress, cancel=cancel)
    # the first "yes" stops the fit on the spot: no progress reported and no further question after it
    answers = [yes for _, yes in asked]
    assert answers.index(True) == len(asked) - 1 and len(seen) == asked[-1][0] and seen[-1] < 1.0
    # cancel before anything: nothing is detected at all
    with pytest.raises(PhotoFitCancelled):
        fit_photo(ffhq3[0], cancel=lambda: True)


def test_progress_is_monotone_and_ends_at_one(ffhq3):
    seen = []
    fit_photo(ffhq3[0], progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 5 and 0 <= seen[0]


# -------------------------------------------------------------------------------------------------- odd inputs
def test_tiny_and_huge_photos(ffhq3, ffhq3_fit):
    img, _ = ffhq3
    base = ffhq3_fit.alignment.landmarks_photo
    iod = np.linalg.norm(base[36] - base[45])
    for side in (90, 6000):
        big = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < 256 else cv2.INTER_LINEAR)
        f = fit_photo(big)
        assert f.image.shape == (side, side, 3)
        s = side / img.shape[0]
        # the same face, at the same place (scaled), with a sane fit
        assert np.linalg.norm(f.alignment.landmarks_photo / s - base, axis=1).mean() / iod < 0.06
        assert f.landmark_nme < 0.08
        assert abs(float(f.coeffs.pose[0, 0] - ffhq3_fit.coeffs.pose[0, 0])) * DEG < 5.0


def test_grayscale_and_rgba(ffhq3, ffhq3_fit):
    img, _ = ffhq3
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    f = fit_photo(gray)
    assert f.image.shape == img.shape[:2] + (3,)
    assert np.array_equal(f.image[..., 0], gray) and np.array_equal(f.image[..., 2], gray)
    assert f.landmark_nme < 0.06
    assert np.allclose(f.gain, f.gain.mean(), rtol=0.05)  # a grey photo gets a grey gain
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    rgba[:10, :10, 3] = 0  # a transparent corner becomes white
    f = fit_photo(rgba)
    assert f.image.shape == img.shape and np.all(f.image[:10, :10] == 255)
    assert np.array_equal(f.image[10:, 10:], img[10:, 10:])
    np.testing.assert_allclose(f.coeffs.pose.numpy(), ffhq3_fit.coeffs.pose.numpy(), atol=0.02)
    # a float image in [0, 1] and an (H, W, 1) array are photos too
    assert np.array_equal(as_photo(img.astype(np.float32) / 255.0), img)
    assert as_photo(gray[..., None]).shape == img.shape


def test_no_face_and_unreadable_inputs(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    noise = cv2.GaussianBlur(noise, (0, 0), 8)
    with pytest.raises(AlignError, match="no face found"):
        fit_photo(noise)
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"not a jpeg at all")
    with pytest.raises(AlignError, match=r"could not read image .*broken\.jpg"):
        fit_photo(p)
    with pytest.raises(AlignError, match="file not found"):
        fit_photo(tmp_path / "missing.png")
    with pytest.raises(AlignError, match="shape"):
        fit_photo(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(AlignError, match="pixels"):
        fit_photo(np.zeros((4, 100, 3), np.uint8))


# -------------------------------------------------------------------------------------------------------- JSON
def test_json_round_trip(ffhq3, ffhq3_fit):
    f = ffhq3_fit
    d = json.loads(json.dumps(f.to_json_dict()))
    assert len(json.dumps(d)) < 50_000  # coefficients, alignment, gain: no pixels
    g = PhotoFit.from_json_dict(d, ffhq3[0])
    np.testing.assert_allclose(g.coeffs.as_vector().numpy(), f.coeffs.as_vector().numpy(), atol=1e-5)
    np.testing.assert_allclose(g.alignment.matrix, f.alignment.matrix, atol=1e-9)
    np.testing.assert_allclose(g.alignment.landmarks_photo, f.alignment.landmarks_photo, atol=1e-3)
    np.testing.assert_allclose(g.gain, f.gain, atol=1e-6)
    assert g.alignment.size == f.alignment.size and g.landmark_nme == pytest.approx(f.landmark_nme)
    assert np.array_equal(g.image, f.image)
    assert g.coeffs.exp_names == f.coeffs.exp_names


def test_json_rejects_foreign_and_corrupt_data(ffhq3, ffhq3_fit):
    img = ffhq3[0]
    good = ffhq3_fit.to_json_dict()
    with pytest.raises(PhotoFitError, match="not a photo fit"):
        PhotoFit.from_json_dict(ffhq3_fit.coeffs.to_json_dict(), img)  # a coefficients file
    with pytest.raises(PhotoFitError, match="not a photo fit"):
        PhotoFit.from_json_dict([1, 2, 3], img)
    with pytest.raises(PhotoFitError, match="version"):
        PhotoFit.from_json_dict({**good, "version": 99}, img)
    with pytest.raises(PhotoFitError, match="belongs to a 256x256 photo"):
        PhotoFit.from_json_dict(good, cv2.resize(img, (300, 200)))
    bad = json.loads(json.dumps(good))
    del bad["alignment"]["matrix"]
    with pytest.raises(PhotoFitError, match="incomplete or corrupt"):
        PhotoFit.from_json_dict(bad, img)
    bad = json.loads(json.dumps(good))
    bad["gain"] = [1.0, float("nan"), 1.0]
    with pytest.raises(PhotoFitError, match="non-finite"):
        PhotoFit.from_json_dict(bad, img)
    bad = json.loads(json.dumps(good))
    bad["coefficients"]["items"][0]["identity"] = [0.0] * 7
    with pytest.raises(PhotoFitError, match="coefficients"):
        PhotoFit.from_json_dict(bad, img)
    assert issubclass(PhotoFitError, ValueError)
