"""Photo mode's pose in the editor (issue 20 item 4): the yaw / pitch / roll sliders read 0 at the photo's own pose,
turn from it, span the photo's believable turn (greyed beyond it with the full range), the status bar warns past
it; the coefficients (session files, keyframes, undo) keep absolute angles. Generator / preview stay absolute."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from tests.qtwindow import settle, window_fixture  # noqa: E402

from engine.editing.session import Session  # noqa: E402

SIZE = 64


window = window_fixture(SIZE, 32)


def _open_astronaut(qtbot, window):
    job = window.open_bundled_photo()
    qtbot.waitUntil(lambda: not job.running, timeout=120000)
    settle(qtbot, window)
    assert window.last_error is None, window.last_error
    assert window.last_frame.mode == "photo"


def _abs(window, key):
    return window.session.control_value(key)


def test_pose_sliders_turn_from_the_photos_own_pose(qtbot, window, tmp_path):
    assert not window.sliders["yaw"].relative and (window.sliders["yaw"].lo, window.sliders["yaw"].hi) == (-40, 40)
    _open_astronaut(qtbot, window)
    sess = window.session
    own = {k: sess.control_origin(k) for k in ("yaw", "pitch", "roll")}
    assert abs(own["yaw"]) + abs(own["pitch"]) > 0.5  # the astronaut is not exactly frontal: 0 means something
    for k in ("yaw", "pitch", "roll"):  # 0 on open, whatever the photo's own angle
        s = window.sliders[k]
        assert s.relative and s.shown_value() == pytest.approx(0, abs=0.06), (k, s.shown_value())
        assert s.readout.text() == "0.0°", s.readout.text()  # signed turns, but never "-0.0°"
    good = sess.believable_range("yaw")
    yaw = window.sliders["yaw"]
    assert (yaw.lo, yaw.hi) == pytest.approx(good, abs=1e-6)  # the slider spans this photo's believable turn
    assert window.pose_note.isVisible() or not window.isVisible()
    assert f"yaw {round(own['yaw']):+d}°" in window.pose_note.text()

    # drag yaw to +10: the rendered pose is the photo's own + 10
    yaw.slider.setSliderDown(True)
    yaw.set_user_value(10)
    settle(qtbot, window)
    yaw.slider.setSliderDown(False)
    settle(qtbot, window)
    assert _abs(window, "yaw") == pytest.approx(own["yaw"] + 10, abs=0.06)
    shown = window.last_shown_request.snapshot
    assert window.last_shown_request.final
    assert sess.controls["yaw"].get(shown.coeffs) == pytest.approx(own["yaw"] + 10, abs=0.06)
    ref = Session(model=sess.model, generator=None)  # the same photo turned with absolute angles, another session
    ref.history.replace_silently(sess.state.edited(coeffs=shown.photo.fit.coeffs.clone()))
    ref.set_controls({"yaw": own["yaw"] + 10})
    assert np.array_equal(window.last_frame.image, ref.render_snapshot(ref.state).image)
    assert yaw.readout.text() == "+10.0°"

    # sessions store absolute angles and read back as the same turn
    path = tmp_path / "turned.json"
    assert window.save_session(path)
    window.reset("pose")
    settle(qtbot, window)
    assert yaw.shown_value() == pytest.approx(0, abs=0.06) and _abs(window, "yaw") == pytest.approx(own["yaw"], abs=1e-4)
    assert window.load_session(path)
    settle(qtbot, window)
    assert _abs(window, "yaw") == pytest.approx(own["yaw"] + 10, abs=0.06)
    assert window.sliders["yaw"].shown_value() == pytest.approx(10, abs=0.06)
    own2 = window.session.control_origin("yaw")
    assert own2 == pytest.approx(own["yaw"], abs=1e-4)

    # keyframes hold absolute angles; scrubbing shows turns
    window.timeline.add_keyframe()
    window.sliders["yaw"].set_user_value(-5)
    settle(qtbot, window)
    window.timeline.add_keyframe()
    ks = window.session.keyframes
    assert [round(window.session.controls["yaw"].get(k.coeffs) - own2, 1) for k in ks] == [10.0, -5.0]
    window._on_time(ks[0].time, True)
    settle(qtbot, window)
    assert window.sliders["yaw"].shown_value() == pytest.approx(10, abs=0.06)

    # the full range goes further, greyed beyond the believable turn; past it the status bar warns
    window.full_range_action.setChecked(True)
    yaw = window.sliders["yaw"]
    assert yaw.lo < good[0] and yaw.hi > good[1] and yaw.band == pytest.approx(good)
    assert yaw.slider.band[0] > yaw.slider.minimum() and yaw.slider.band[1] < yaw.slider.maximum()
    yaw.set_user_value(good[1] + 8)
    settle(qtbot, window)
    assert "believable" in window.last_status and "from the photo's own" in window.last_status
    assert _abs(window, "yaw") == pytest.approx(own2 + good[1] + 8, abs=0.06)

    # Randomise pose in photo mode: a turn inside the photo's believable range
    window.randomize("pose")
    seen = set()
    for seed in range(40):  # the same through the session, seeded: some draws are far out in the trained range
        sess.randomize("pose", seed=seed)
        for k in ("yaw", "pitch", "roll"):
            lo, hi = sess.believable_range(k)
            v = sess.shown_value(k)
            assert 0.8 * lo - 0.06 <= v <= 0.8 * hi + 0.06, (seed, k, v, lo, hi)  # inside, not pinned at the edge
            seen.add(round(v, 1))
    assert len(seen) > 60  # random turns, not the same few values

    # a new random face: absolute angles again, no marks
    window.full_range_action.setChecked(False)
    window.new_random_face()
    settle(qtbot, window)
    yaw = window.sliders["yaw"]
    assert not yaw.relative and yaw.band is None and (yaw.lo, yaw.hi) == (-40, 40)
    assert yaw.shown_value() == pytest.approx(_abs(window, "yaw"), abs=0.06)
    assert not window.pose_note.isVisibleTo(window)


def test_session_pose_helpers_outside_photo_mode(face_model):
    s = Session(model=face_model, generator=None)
    s.set_controls({"yaw": 12})
    assert s.control_origin("yaw") == 0 and s.shown_value("yaw") == pytest.approx(12, abs=1e-4)
    assert s.believable_range("yaw") is None and s.control_range("yaw") == (-40, 40)
    s.set_controls({"yaw": 5}, relative=True)  # nothing to be relative to: absolute
    assert s.control_value("yaw") == pytest.approx(5, abs=1e-4)
    assert s.control_warning("yaw") is None
    s.set_controls({"yaw": 50})
    assert "trained range" in s.control_warning("yaw")


def test_a_photo_opens_on_its_face_and_ctrl_2_zooms_back_to_it(qtbot, window, monkeypatch):
    """A small face in a big photo: the view opens on the head (the photo's landmarks' box, widened to hair and neck);
    Ctrl+0 shows the whole photo, View → Zoom to the face (the Face button) goes back."""
    import app.window as appwin

    monkeypatch.setattr(appwin, "AUTO_FACE_ZOOM", 0.5)  # any face counts as small here
    assert not window.face_btn.isEnabled()
    _open_astronaut(qtbot, window)
    box = appwin.face_box(window.session.photo)
    lm = window.session.photo.fit.alignment.landmarks_photo
    assert box[0] <= lm[:, 0].min() and lm[:, 0].max() <= box[2] and box[1] < lm[:, 1].min() and lm[:, 1].max() < box[3]
    v = window.view
    assert v.zoom is not None and v.center == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    assert v.zoom == pytest.approx(min(1.0, v.box_zoom(box)))  # on its own, never past 100 % (a blurred photo)
    assert "zoomed to the face" in window.last_status
    v.fit()
    assert v.zoom is None
    window.face_btn.click()
    assert window.face_btn.isEnabled() and v.zoom == pytest.approx(min(v.width() / (box[2] - box[0]),
                                                                       v.height() / (box[3] - box[1])))


def test_randomise_pose_keeps_a_strongly_turned_photo_inside_the_whole_range(face_model):
    """A photo whose own yaw is far out (here -50°, as a profile can be): a random turn may not push the angle past
    the control's whole range (±60°) — it used to raise instead of turning."""
    s = Session(model=face_model, generator=None)
    c = face_model.zeros(1)
    c.set_pose_degrees(yaw=-50)

    class Fit:  # what the pose helpers read of a fit
        coeffs = c

    class Photo:
        fit = Fit()
    s.history.replace_silently(s.state.edited(coeffs=c.clone(), photo=Photo()))
    assert s.control_origin("yaw") == pytest.approx(-50, abs=1e-4)
    assert s.control_range("yaw", full=True)[0] == pytest.approx(-10, abs=0.1)
    for seed in range(30):
        s.randomize("pose", seed=seed)
        assert -60 - 1e-3 <= s.control_value("yaw") <= 60 + 1e-3
