"""Named identity directions: each moves its own measured trait by the advertised standard deviations and the other
traits (almost) not at all."""
import pytest
import torch

from engine.face.directions import MEASURES, identity_directions, measure_traits


@pytest.fixture(scope="module")
def dirs(face_model):
    return identity_directions(face_model)


def test_api_shape(dirs, face_model):
    assert set(dirs) == {"face_width", "face_length", "jaw_width", "nose_length", "nose_width", "eye_spacing",
                         "lip_fullness"}
    for d in dirs.values():
        assert d.vector.shape == (face_model.id_basis.shape[0],)
        assert float(d.vector.norm()) == pytest.approx(1.0, abs=1e-5)
        assert d.std > 0 and d.cm_per_std > 0.1 and d.label
        assert d.value_of(d.offset(1.7)) == pytest.approx(1.7, abs=1e-4)


@pytest.mark.parametrize("name", list(MEASURES))
def test_direction_moves_its_trait_only(dirs, face_model, name):
    base = measure_traits(face_model, torch.zeros(1, 100))
    d = dirs[name]
    moved = measure_traits(face_model, d.offset(2.0).unsqueeze(0))
    change = {k: float(moved[k] - base[k]) for k in base}
    own = change.pop(name)
    assert own == pytest.approx(2.0 * d.cm_per_std, rel=0.1)  # +2 std reads as +2 std of the trait
    for k, v in change.items():
        assert abs(v) < 0.1 * own, (k, v, own)
    neg = measure_traits(face_model, d.offset(-2.0).unsqueeze(0))
    assert float(neg[name] - base[name]) == pytest.approx(-own, rel=0.15)


def test_face_width_is_not_face_length(dirs, face_model):
    base = measure_traits(face_model, torch.zeros(1, 100))
    w = measure_traits(face_model, dirs["face_width"].offset(3.0).unsqueeze(0))
    dw = float(w["face_width"] - base["face_width"])
    dl = float(w["face_length"] - base["face_length"])
    assert dw > 1.5 and abs(dl) < 0.05 * dw  # cm


def test_slider_range_is_plausible(dirs):
    """One trait std costs between 1 (the bare gradient direction under the N(0, I) prior) and 4 coefficient units
    (holding the other six traits still makes the direction longer, not unbounded)."""
    for d in dirs.values():
        assert 1.0 <= d.std <= 4.0
