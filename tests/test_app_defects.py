"""Defects of issue 22, each with a test that failed on the old code: New random face kept the photo's keyframes;
stopping playback added an undo step; control names were case-sensitive without "did you mean"; long status-bar
messages were cut off; ``discoface export`` without keyframes spoke of a timeline; sliders had no object names."""
import json

import pytest

pytest.importorskip("pytestqt")
from tests.qtwindow import settle, window_fixture  # noqa: E402
from PySide6.QtWidgets import QSlider  # noqa: E402

from engine.editing.controls import ControlError, lookup  # noqa: E402
from engine.editing.session import Session  # noqa: E402

SIZE = 64


window = window_fixture(SIZE, 32)


def test_new_random_face_drops_the_old_keyframes(face_model):
    s = Session(model=face_model, generator=None)
    s.add_keyframe(0.0)
    s.set_controls({"yaw": 20})
    s.add_keyframe(1.0)
    s.new_random_face(seed=3)
    assert s.keyframes == []  # the old face's keyframes would bring it back when scrubbing
    s.undo()
    assert len(s.keyframes) == 2  # one undo step brings face and keyframes back


def test_stopping_playback_adds_no_undo_step(qtbot, window):
    tl = window.timeline
    tl.add_keyframe()
    window.sliders["jawOpen"].set_user_value(1.0)
    settle(qtbot, window)
    tl.add_keyframe()
    hist = window.session.history
    n = len(hist.undo_stack)
    shown = []
    window.frameShown.connect(lambda: shown.append(1))
    tl.play_btn.setChecked(True)
    qtbot.waitUntil(lambda: len(shown) >= 3, timeout=15000)
    tl.play_btn.setChecked(False)
    settle(qtbot, window)
    tl.scrub.setValue(300)  # a scrub is a seek too
    settle(qtbot, window)
    assert len(hist.undo_stack) == n and not window.session.history.commit()
    window.undo()  # the first Ctrl+Z undoes the last edit (the second keyframe), not a seek
    assert len(window.session.keyframes) == 1


def test_control_names_any_case_and_did_you_mean(face_model):
    s = Session(model=face_model, generator=None)
    table = s.controls
    assert lookup(table, "YAW").key == "yaw" and lookup(table, "jawopen").key == "jawOpen"
    s.set_controls({"Smile": 0.5, "JAWOPEN": 0.3})
    assert s.control_value("smile") == pytest.approx(0.5) and s.control_value("jawOpen") == pytest.approx(0.3)
    with pytest.raises(ControlError, match="did you mean jawOpen"):
        lookup(table, "jawOpn")
    with pytest.raises(ControlError, match=r"unknown setting 'qqq' \(use"):
        lookup(table, "qqq")


def test_cli_setting_case_and_suggestion(tmp_path, capsys):
    from engine import cli

    assert cli.main(["render", "--set", "YAW=20", "-o", str(tmp_path / "a.png")]) == 0
    assert cli.main(["render", "--set", "smiel=0.5", "-o", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "did you mean smile" in err and not (tmp_path / "b.png").exists()


def test_long_status_messages_are_cut_with_the_whole_text_in_a_tooltip(qtbot, window):
    window.resize(700, 500)
    text = "Edit: " + "a very long warning about what went wrong and what to do about it " * 4 + "END"
    window.status(text, 0)
    bar = window.statusBar()
    shown = bar.currentMessage()
    assert bar.fontMetrics().horizontalAdvance(shown) < bar.width()
    assert shown.endswith("…") and bar.toolTip() == text and window.last_status == text
    window.status("short", 0)
    assert bar.currentMessage() == "short" and bar.toolTip() == ""


def test_export_without_keyframes_names_the_cli_options(face_model, tmp_path, capsys):
    from engine import cli

    s = Session(model=face_model, generator=None)
    s.save(tmp_path / "s.json")
    assert cli.main(["export", str(tmp_path / "s.json"), "--to", str(tmp_path / "o.gif")]) == 2
    err = capsys.readouterr().err
    assert "--keyframe" in err and "--animate" in err and "timeline" not in err
    assert json.loads((tmp_path / "s.json").read_text()) and not (tmp_path / "o.gif").exists()


def test_every_control_slider_has_an_object_name(window):
    for key in window.sliders:
        found = window.findChild(QSlider, f"slider:{key}")
        assert found is window.sliders[key].slider, key
    assert window.findChild(QSlider, "slider:yaw") is not None
