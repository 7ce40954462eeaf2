"""training.evaluate: the metrics tell good control from bad (on analytic 3DMM renders, read back by the R-Net)."""
import numpy as np
import pytest
import torch

from training.evaluate import (Subject, control_accuracy, disentanglement, frechet_distance, reference_sampler,
                               render_subject)

torch.set_num_threads(1)
SIZE = 64


@pytest.fixture(scope="module")
def rnet():
    from engine.io.files import WeightsError
    from engine.perception.rnet import default_rnet

    try:
        return default_rnet()
    except (WeightsError, ValueError, OSError) as exc:  # the R-Net ships in assets/: this is a broken checkout
        pytest.fail(f"shipped R-Net does not load: {exc}")


@pytest.fixture(scope="module")
def sampler(face_model):
    return reference_sampler(face_model)


def test_frechet_distance_is_zero_for_the_same_set_and_the_mean_shift_otherwise():
    a = np.random.default_rng(0).normal(size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([2.0, 0, 0, 0])) == pytest.approx(4.0, rel=1e-6)


def test_control_accuracy_tells_a_turning_head_from_a_frozen_one(face_model, renderer, rnet, sampler):
    ref = render_subject(face_model, renderer, SIZE, sampler)

    def frozen_synth(c, noise):
        c = c.clone()
        c.pose.zero_()
        return renderer(c, SIZE, background=0.5).image

    a = control_accuracy(ref, rnet, n=12)
    b = control_accuracy(Subject("pose ignored", sampler, frozen_synth), rnet, n=12)
    assert a["yaw_slope"] > 0.5, a
    assert abs(b["yaw_slope"]) < 0.15, b
    assert b["yaw_err_deg"] > a["yaw_err_deg"] + 5


def test_disentanglement_score_drops_when_pose_drags_other_factors(face_model, renderer, rnet, sampler):
    ref = render_subject(face_model, renderer, SIZE, sampler)

    def entangled_synth(c, noise):  # turning the head also opens the jaw and moves the light
        c = c.clone()
        c.expr["jawOpen"] = (c.pose[:, 0].abs() * 1.6).clamp(0, 1)
        c.light[:, 1:4] += 0.6 * c.pose[:, :1]
        return renderer(c, SIZE, background=0.5).image

    # DS from a few small groups is noisy (R-Net read-back at 64 px): average three seeded draws
    entangled = Subject("entangled", sampler, entangled_synth)
    good = [disentanglement(ref, rnet, n_groups=8, per_group=4, seed=s) for s in range(3)]
    bad = [disentanglement(entangled, rnet, n_groups=8, per_group=4, seed=s) for s in range(3)]
    assert all(np.isfinite(v) for v in good[0].values()) and set(good[0]) == {"identity", "expression", "light", "pose"}
    mean = lambda rows: sum(r["pose"] for r in rows) / len(rows)  # noqa: E731
    assert mean(good) > mean(bad) + 0.3, (good, bad)
