"""training.evaluate: the metrics tell good control from bad (on analytic 3DMM renders, read back by the R-Net)."""
import numpy as np
import pytest
import torch

from training.evaluate import Subject, control_accuracy, disentanglement, frechet_distance, render_subject

torch.set_num_threads(1)
SIZE = 64


@pytest.fixture(scope="module")
def rnet():
    from engine.io import WeightsError
    from engine.perception.rnet import default_rnet

    try:
        return default_rnet()
    except (WeightsError, ValueError, OSError) as exc:  # the R-Net ships in assets/: this is a broken checkout
        pytest.fail(f"shipped R-Net does not load: {exc}")


@pytest.fixture(scope="module")
def sampler(face_model):
    def sample(n, seed):
        g = torch.Generator().manual_seed(seed)
        c = face_model.zeros(n)
        c.identity.normal_(generator=g)
        c.expression.uniform_(0, 0.4, generator=g)
        c.light.normal_(0, 0.15, generator=g)
        c.pose[:, 0].uniform_(-0.6, 0.6, generator=g)
        c.pose[:, 1].uniform_(-0.3, 0.3, generator=g)
        return c, torch.zeros(n, 32)
    return sample


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

    good = disentanglement(ref, rnet, n_groups=3, per_group=4)
    bad = disentanglement(Subject("entangled", sampler, entangled_synth), rnet, n_groups=3, per_group=4)
    assert all(np.isfinite(v) for v in good.values()) and set(good) == {"identity", "expression", "light", "pose"}
    assert good["pose"] > bad["pose"] + 0.3, (good, bad)
