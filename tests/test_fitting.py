"""3DMM fitting: synthetic recovery, real landmarks (ffhq-samples), linear light, photo convenience."""
import math

import numpy as np
import pytest
import torch

from engine import fit as fitting


@pytest.fixture(scope="module")
def ffhq_crops(ffhq_aligned):
    crops, lms = ffhq_aligned
    return fitting.crops_to_tensor(crops), lms


def _synthetic(face_model, renderer, n=4):
    from engine.render import light_from_direction

    g = torch.Generator().manual_seed(3)
    c = face_model.zeros(n)
    c.identity = torch.randn(n, 100, generator=g) * 0.8
    c.expr["jawOpen"] = torch.tensor([0.0, 0.3, 0.6, 0.2])[:n]
    c.expr["mouthSmile_L"] = 0.3
    c.expr["mouthSmile_R"] = 0.3
    c.pose = torch.tensor([[0.26, -0.09, 0.05], [-0.35, 0.12, -0.03], [0.1, 0.0, 0.1], [-0.05, 0.2, 0.0]])[:n]
    c.light = light_from_direction(30, 20, 0.4).repeat(n, 1)
    with torch.no_grad():
        img = renderer(c, 128, background=0.3).image
        # what a contour-following detector would report: the jaw points on the silhouette
        lm = fitting.LandmarkGeometry(face_model, renderer)(c.identity, c.expression, c.pose, 128)
    return c, img, lm


def test_synthetic_recovery(face_model, renderer):
    truth, img, lm = _synthetic(face_model, renderer)
    res = fitting.fit_coefficients(img, lm, face_model, renderer, steps=(400, 0), size=64)
    err_deg = (res.coeffs.pose - truth.pose).abs().mul(180 / math.pi)
    assert err_deg.max() < 2.0, err_deg
    jaw = (res.coeffs.expr["jawOpen"] - truth.expr["jawOpen"]).abs()
    assert jaw.max() < 0.1, jaw
    assert res.landmark_nme.max() < 0.02, res.landmark_nme
    # expressions stay in their range
    assert res.coeffs.expression.min() >= 0 and res.coeffs.expression.max() <= 1


def test_photometric_stage_and_light(face_model, renderer):
    """Photometric refinement keeps the landmark fit and the linear light recovers the light direction."""
    truth, img, lm = _synthetic(face_model, renderer, n=2)
    res = fitting.fit_coefficients(img, lm, face_model, renderer, steps=(150, 15), size=48)
    assert torch.isfinite(res.photometric).all() and (res.photometric < 0.15).all(), res.photometric
    assert res.landmark_nme.max() < 0.03
    c = res.coeffs.clone()
    c.albedo = torch.zeros_like(c.albedo)
    light, gain, resid = fitting.solve_light(img, c, face_model, renderer)
    band1 = light.view(-1, 3, 9)[:, :, 1:4].mean(1)  # (y, z, x) of the light direction
    want = truth.light.view(-1, 3, 9)[:, :, 1:4].mean(1)
    cos = torch.nn.functional.cosine_similarity(band1, want, dim=1)
    assert (cos > 0.9).all(), (band1, want)
    assert (resid < 0.08).all(), resid


def test_ffhq_ground_truth_landmarks(face_model, renderer, ffhq_crops):
    crops, lms = ffhq_crops
    res = fitting.fit_coefficients(crops, lms, face_model, renderer, steps=(200, 0), size=64)
    nme = float(res.landmark_nme.mean())
    assert nme <= 0.05, res.landmark_nme
    # the metric itself: a fit that ignores the photo (mean face, pose 0) is clearly worse
    base = fitting.landmark_nme(fitting.LandmarkGeometry(face_model, renderer)(
        torch.zeros(10, 100), torch.zeros(10, 53), torch.zeros(10, 3), 128), lms)
    assert float(base.mean()) > nme + 0.01


def test_cancel_and_progress(face_model, renderer, ffhq_crops):
    crops, lms = ffhq_crops
    seen = []
    with pytest.raises(fitting.FitCancelled):
        fitting.fit_coefficients(crops[:1], lms[:1], face_model, renderer, steps=(50, 0),
                                 progress=seen.append, cancel=lambda: len(seen) >= 5)
    assert seen and all(0 < p <= 1 for p in seen) and seen == sorted(seen)


def test_fit_photo_and_overlay(ffhq_dir, tmp_path):
    from engine.perception.align import AlignError

    coeffs, crop, al, res = fitting.fit_photo_crop(ffhq_dir / "images" / "00004.png", steps=(120, 0))
    assert crop.shape == (128, 128, 3) and coeffs.batch == 1
    assert float(res.landmark_nme[0]) < 0.08
    ov = fitting.overlay_image(crop, coeffs, al.landmarks_crop)
    assert ov.shape == (128, 384, 3) and ov.dtype == np.uint8
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(AlignError):
        fitting.fit_photo_crop(bad)
