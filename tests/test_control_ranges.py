"""Every control's range check has both ends (the control table serves the sliders, ``--set`` and the session):
a value just below ``lo`` or just above ``hi`` is refused even with force, one just outside the trained range on
either side is refused without force and flagged with a warning; the ends themselves pass."""
from __future__ import annotations

import pytest

from engine.editing.controls import ControlError, controls_for


@pytest.fixture(scope="module")
def table(face_model):
    return controls_for(face_model.exp_names, face_model)


def _step(spec) -> float:
    return max(1e-3, 1e-2 * (spec.hi - spec.lo))


def test_the_full_range_is_checked_on_both_sides(table):
    assert len(table) > 60  # pose, expressions, light, identity: the whole table is probed
    for key, spec in table.items():
        assert spec.lo < spec.hi, key
        assert spec.check(spec.lo, force=True) == pytest.approx(spec.lo), key
        assert spec.check(spec.hi, force=True) == pytest.approx(spec.hi), key
        with pytest.raises(ControlError, match="outside its range"):
            spec.check(spec.lo - _step(spec), force=True)
        with pytest.raises(ControlError, match="outside its range"):
            spec.check(spec.hi + _step(spec), force=True)


def test_the_trained_range_is_checked_on_both_sides(table):
    below = above = 0
    for key, spec in table.items():
        tlo, thi = spec.trained
        assert spec.check(tlo) == pytest.approx(tlo) and spec.warning(tlo) is None, key
        assert spec.check(thi) == pytest.approx(thi) and spec.warning(thi) is None, key
        if tlo > spec.lo:
            below += 1
            v = max(spec.lo, tlo - _step(spec))
            with pytest.raises(ControlError, match="trained on"):
                spec.check(v)
            assert spec.check(v, force=True) == pytest.approx(v) and spec.warning(v) is not None, key
        if thi < spec.hi:
            above += 1
            v = min(spec.hi, thi + _step(spec))
            with pytest.raises(ControlError, match="trained on"):
                spec.check(v)
            assert spec.check(v, force=True) == pytest.approx(v) and spec.warning(v) is not None, key
    assert below > 0 and above > 0  # both sides were probed (yaw ±40° trained, ±90° full)


def test_the_session_refuses_a_value_below_the_range(face_model):
    from engine.editing.session import Session, SessionError

    s = Session(model=face_model, generator=None)
    with pytest.raises(SessionError, match="outside its range"):
        s.set_control("yaw", -1000.0)
    below_trained = s.controls["yaw"].trained[0] - 5.0
    with pytest.raises(SessionError, match="trained on"):
        s.set_control("yaw", below_trained, force=False)
    assert s.set_control("yaw", below_trained).coeffs is s.coeffs  # with force (the default) it is allowed
