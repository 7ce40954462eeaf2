"""Iris tracking (engine.perception.iris): synthetic eyes with a known iris position."""
import math

import cv2
import numpy as np
import pytest

from engine.perception import iris


def synthetic_eye(offset=(0.0, 0.0), width=40.0, opening=0.3, roll_deg=0.0, size=(120, 160), noise=3.0, seed=0,
                  iris_radius=0.22, centre=(80.0, 60.0)):
    """An almond eye (two parabolic lids) with a dark iris at ``offset`` eye widths from the eye's centre (in the
    eye's own axes), skin around it, dark lash lines; returns (RGB image, 6 lid points in dlib order)."""
    rng = np.random.default_rng(seed)
    h, w = size
    t = np.linspace(-1, 1, 200)
    half = width / 2
    lid = opening * width * 0.75 * (1 - t ** 2)  # lid gap profile (EAR ~ opening)
    upper = np.stack([t * half, -lid], 1)
    lower = np.stack([t[::-1] * half, lid[::-1] * 0.8], 1)
    outline = np.concatenate([upper, lower])
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(centre, float)
    poly = outline @ rot.T + c
    img = np.full((h, w, 3), (190, 150, 130), np.float32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, shift=4)
    sclera = np.full((h, w, 3), (235, 230, 225), np.float32)
    ic = np.array(offset) * width @ rot.T + c
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - ic[0], yy - ic[1])
    ir = iris_radius * width
    eye = sclera.copy()
    eye[r < ir] = (90, 60, 40)
    eye[r < 0.45 * ir] = (15, 12, 10)
    img = np.where(mask[..., None] > 0, eye, img)
    cv2.polylines(img, [np.round(upper @ rot.T + c).astype(np.int32)], False, (30, 25, 25), 2)
    img = cv2.GaussianBlur(img, (0, 0), 0.7) + rng.normal(0, noise, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # dlib order: outer/left corner, two upper points, right corner, two lower points
    k = [0, 66, 133, 199]
    pts = np.array([upper[0], upper[66], upper[133], upper[199], lower[66], lower[133]])
    return img, pts @ rot.T + c


@pytest.mark.parametrize("refine", [False, True])
def test_iris_offset_follows_the_iris(refine):
    xs = np.linspace(-0.2, 0.2, 9)
    got = []
    for i, x in enumerate(xs):
        img, pts = synthetic_eye((x, 0.0), seed=i)
        o = iris.iris_offset(img, pts, refine=refine)
        assert o is not None
        got.append(o[0])
    got = np.array(got)
    assert np.all(np.diff(got) > 0), got  # monotonic in the true position
    slope = np.polyfit(xs, got, 1)[0]
    assert 0.8 < slope < 1.15, (slope, got)  # close to the true size (the lids clip the iris a little)
    assert np.abs(got - slope * xs).max() < 0.03


def test_small_eye_and_roll():
    # an eye 14 px wide, rolled 15 degrees: the offset is read in the eye's own axes
    for x in (-0.15, 0.15):
        img, pts = synthetic_eye((x, 0.0), width=14, roll_deg=15, size=(60, 80), centre=(40, 30), noise=2)
        o = iris.iris_offset(img, pts)
        assert o is not None and abs(o[0] - x) < 0.05, (x, o)


def test_vertical_direction():
    up = iris.iris_offset(*synthetic_eye((0.0, -0.06), opening=0.4))
    down = iris.iris_offset(*synthetic_eye((0.0, 0.06), opening=0.4))
    assert down[1] - up[1] > 0.05


def test_closed_or_tiny_eye_gives_none():
    img, pts = synthetic_eye((0.1, 0.0), opening=0.05)
    assert iris.eye_opening(pts) < iris.MIN_OPENING
    assert iris.iris_offset(img, pts) is None
    img, pts = synthetic_eye(width=3, size=(20, 20), centre=(10, 10))
    assert iris.iris_offset(img, pts) is None
    flat = np.full((120, 160, 3), 128, np.uint8)  # no contrast: nothing to read
    _, pts = synthetic_eye()
    assert iris.iris_offset(flat, pts) is None


def test_gaze_averages_both_eyes():
    img_l, pts_l = synthetic_eye((0.12, 0.0), centre=(50.0, 60.0), size=(120, 200))
    img_r, pts_r = synthetic_eye((0.12, 0.0), centre=(150.0, 60.0), size=(120, 200), seed=1)
    img = img_l.copy()
    img[:, 100:] = img_r[:, 100:]
    lm = np.zeros((68, 2))
    lm[36:42] = pts_l
    lm[42:48] = pts_r
    g = iris.gaze(img, lm)
    assert g is not None and abs(g[0] - 0.12) < 0.04
    lm[42:48] = pts_r * np.array([1.0, 0.0]) + np.array([0.0, 60.0])  # one eye closed (flat): the other one counts
    g1 = iris.gaze(img, lm)
    assert g1 is not None and abs(g1[0] - iris.iris_offset(img, pts_l)[0]) < 1e-9
