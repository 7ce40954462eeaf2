"""The Qt editor (offscreen): sliders render, drags coalesce, undo, bad files, export backend, search."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from tests.qtwindow import settle, window_fixture  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from engine.editing.session import Session  # noqa: E402

SIZE = 96


window = window_fixture(SIZE, 48)


def direct(face_model, **edits):
    s = Session(model=face_model, generator=None)
    if "yaw" in edits:
        s.set_pose_degrees(yaw=edits["yaw"])
    for k, v in edits.get("expr", {}).items():
        s.set_expression(k, v)
    return s.render(SIZE).image


def test_slider_changes_the_frame(qtbot, window, face_model):
    f0 = window.last_frame.image.copy()
    assert np.array_equal(f0, direct(face_model))
    assert np.array_equal(window.view.array, f0)
    window.sliders["yaw"].set_user_value(30)
    settle(qtbot, window)
    f1 = window.last_frame.image
    assert (f1 != f0).mean() > 0.05
    assert np.array_equal(f1, direct(face_model, yaw=30))
    assert "preview" in window.status_mode.text() and "ms" in window.status_frame.text()


def test_fast_drag_coalesces_and_ends_on_the_last_value(qtbot, window, face_model):
    slider = window.sliders["yaw"]
    start = window.worker.render_count
    undo_before = len(window.session.history.undo_stack)
    slider.slider.setSliderDown(True)
    values = np.linspace(0, 35, 100)
    for v in values:
        slider.set_user_value(float(v))
    slider.slider.setSliderDown(False)  # emits sliderReleased: the full-size frame and one undo entry
    settle(qtbot, window)
    renders = window.worker.render_count - start
    assert 1 <= renders < 30, renders
    assert window.last_shown_request.final and window.last_frame.size == SIZE
    assert window.session.pose_degrees()["yaw"] == pytest.approx(35, abs=1e-4)
    assert np.array_equal(window.last_frame.image, direct(face_model, yaw=35))
    assert len(window.session.history.undo_stack) == undo_before + 1  # the whole drag is one undo step


def test_ctrl_z_restores_the_previous_frame(qtbot, window):
    f0 = window.last_frame.image.copy()
    window.sliders["jawOpen"].set_user_value(0.9)
    settle(qtbot, window)
    assert not np.array_equal(window.last_frame.image, f0)
    window.activateWindow()
    window.setFocus()
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)
    settle(qtbot, window)
    assert np.array_equal(window.last_frame.image, f0)
    assert window.sliders["jawOpen"].value() == 0
    window.redo_action.trigger()
    settle(qtbot, window)
    assert window.sliders["jawOpen"].value() == pytest.approx(0.9)


def test_keyboard_moves_a_slider(qtbot, window):
    s = window.sliders["pitch"].slider
    s.setFocus()
    qtbot.keyClick(s, Qt.Key_PageUp)
    settle(qtbot, window)
    assert window.session.pose_degrees()["pitch"] == pytest.approx(5, abs=1e-3)  # Page keys: 5°, arrows: 1°
    qtbot.keyClick(s, Qt.Key_Right)
    settle(qtbot, window)
    assert window.session.pose_degrees()["pitch"] == pytest.approx(6, abs=1e-3)
    assert window.session.can_undo


def test_bad_session_file_shows_a_message_and_changes_nothing(qtbot, window, tmp_path):
    window.sliders["yaw"].set_user_value(-20)
    settle(qtbot, window)
    before = window.session.coeffs.as_vector().clone()
    frame = window.last_frame.image.copy()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "discoface.session", "version": 7}')
    assert not window.load_session(bad)
    assert "newer" in window.last_error
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert boxes and "newer" in boxes[-1].text()
    assert (before == window.session.coeffs.as_vector()).all()
    assert np.array_equal(window.last_frame.image, frame)
    assert window.sliders["yaw"].value() == pytest.approx(-20, abs=0.1)


def test_session_save_and_load_through_the_window(qtbot, window, tmp_path):
    window.sliders["mouthSmile_L"].set_user_value(0.8)
    settle(qtbot, window)
    assert window.save_session(tmp_path / "a.json")
    window.reset(None)
    settle(qtbot, window)
    assert window.sliders["mouthSmile_L"].value() == 0
    assert window.load_session(tmp_path / "a.json")
    settle(qtbot, window)
    assert window.sliders["mouthSmile_L"].value() == pytest.approx(0.8)


def test_export_dialog_backend_writes_frames(qtbot, window, tmp_path, monkeypatch):
    import imageio.v2 as imageio

    from app.dialogs import ExportDialog

    monkeypatch.setattr(ExportDialog, "last_folder", None)  # a successful export remembers its folder: not past here

    window.timeline.add_keyframe()
    window.sliders["yaw"].set_user_value(30)
    window.timeline.add_keyframe()
    assert len(window.session.keyframes) == 2
    dlg = ExportDialog(window.session, window)
    qtbot.addWidget(dlg)
    assert dlg.frames.value() == 25  # 1 s at 24 fps, + 1
    job = dlg.start_export(tmp_path / "a.gif", "gif", 10, 6, 48)
    qtbot.waitUntil(lambda: not job.running and dlg.result_path is not None, timeout=30000)
    assert dlg.progress.value() == 6
    assert len(imageio.mimread(tmp_path / "a.gif")) == 6
    job = dlg.start_export(tmp_path / "frames", "png", 10, 4, 48)
    qtbot.waitUntil(lambda: not job.running and dlg.result_path is not None, timeout=30000)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:04d}.png" for i in range(4)]
    job = dlg.start_export(tmp_path / "x.avi", "avi", 10, 4, 48)  # bad format: message, nothing written
    qtbot.waitUntil(lambda: not job.running and dlg.last_error is not None, timeout=30000)
    assert "format" in dlg.last_error and not (tmp_path / "x.avi").exists()


def test_expression_search_filters(qtbot, window):
    window.search.setText("smile")
    shown = [n for n in window.session.model.exp_names if not window.sliders[n].isHidden()]
    assert shown == ["mouthSmile_L", "mouthSmile_R"]
    assert window.expr_groups["brows"].isHidden() and not window.expr_groups["mouth"].isHidden()
    window.search.setText("JAW")
    assert sum(not window.sliders[n].isHidden() for n in window.session.model.exp_names) == 4
    window.search.clear()
    assert all(not window.sliders[n].isHidden() for n in window.session.model.exp_names)


def test_timeline_scrub_and_play(qtbot, window):
    window.timeline.add_keyframe()
    window.sliders["jawOpen"].set_user_value(1.0)
    window.timeline.add_keyframe()
    window.timeline.scrub.setValue(500)  # halfway
    settle(qtbot, window)
    assert window.session.expression_value("jawOpen") == pytest.approx(0.5, abs=0.01)
    shown = set()  # jawOpen of every frame that reached the screen during playback
    window.frameShown.connect(lambda: shown.add(round(
        float(window.last_shown_request.snapshot.coeffs.expr["jawOpen"][0]), 3)))
    window.timeline.play_btn.setChecked(True)
    assert window.timeline.timer.isActive()
    # playback advances: frames along the animation (strictly between the keyframes) reach the screen
    qtbot.waitUntil(lambda: len({v for v in shown if 0.02 < v < 0.98}) >= 3, timeout=15000)
    assert window.timeline.time > 0
    window.timeline.play_btn.setChecked(False)
    assert not window.timeline.timer.isActive()
    settle(qtbot, window)


def test_render_errors_are_shown_not_raised(qtbot, window, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("synthetic failure")
    monkeypatch.setattr(window.session, "render_snapshot", boom)
    window.sliders["roll"].set_user_value(10)
    qtbot.waitUntil(lambda: window.last_error is not None and "synthetic failure" in window.last_error,
                    timeout=20000)
    for v in (11, 12, 13):
        window.sliders["roll"].set_user_value(v)
        qtbot.wait(50)
    settle_or_failed = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(settle_or_failed) == 1  # repeated failures do not pile up message boxes
    assert window.isVisible() and "render failed" in window.status_frame.text()


def test_undo_takes_back_a_keyframe_and_the_timeline_shows_it(qtbot, window):
    window.timeline.add_keyframe()
    window.sliders["yaw"].set_user_value(25)
    window.timeline.add_keyframe()
    assert window.timeline.list.count() == 2 and window.undo_action.isEnabled()
    window.undo()  # the second keyframe
    assert window.timeline.list.count() == 1 and len(window.session.keyframes) == 1
    assert window.sliders["yaw"].value() == pytest.approx(25, abs=0.5)  # the face is not touched
    window.redo()
    assert window.timeline.list.count() == 2


def test_mesh_panel_draws_without_opengl(qtbot, window):
    """The mesh panel is drawn on the CPU in its own thread: it works where there is no OpenGL (offscreen here)."""
    assert window.mesh.available
    qtbot.waitUntil(lambda: window.mesh.draws > 0 and not window.mesh.busy, timeout=20000)
    a = window.mesh.array
    assert a.shape[:2] == (window.mesh.height(), window.mesh.width())
    skin = np.abs(a.astype(int) - a[1, 1]).sum(-1) > 60  # the face against the background
    assert 0.03 < skin.mean() < 0.9, skin.mean()
    window.lm_check.setChecked(True)  # the landmarks toggle reaches the panel
    assert window.mesh.show_landmarks
    window.lm_check.setChecked(False)
    assert not window.mesh.show_landmarks


def test_open_photo_of_a_missing_file_gives_a_message(qtbot, window, tmp_path):
    job = window.open_photo(tmp_path / "nope.jpg")
    qtbot.waitUntil(lambda: not job.running and window.last_error is not None, timeout=20000)
    assert "not found" in window.last_error


def test_photo_mode_in_the_editor(qtbot, window, monkeypatch):
    """Open photo → the photo itself at its resolution (a progress job), sliders edit it (a smaller drag frame),
    View → Generator view shows the generator's view, the mesh panel gets the fitted head, limits in the status
    bar, "New random face" leaves photo mode."""
    from app.window import BUNDLED_PHOTO
    from engine.editing import photo_import
    from engine.perception.align import load_image

    photo = load_image(BUNDLED_PHOTO)
    job = window.open_bundled_photo()
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    settle(qtbot, window)
    assert window.last_error is None, window.last_error
    assert window.last_frame.mode == "photo" and np.array_equal(window.last_frame.image, photo)
    assert "photo mode" in window.status_mode.text() and window.session.source == str(BUNDLED_PHOTO)
    assert window.mesh.triangles.shape[0] > window.session.model.triangles.shape[0]  # the full head
    slider = window.sliders["yaw"]  # photo mode: a turn from the photo's own pose (tests/test_app_pose.py)
    slider.slider.setSliderDown(True)
    slider.set_user_value(10)
    settle(qtbot, window)
    assert not window.last_shown_request.final and window.last_shown_request.snapshot.photo is not None
    slider.slider.setSliderDown(False)
    settle(qtbot, window)
    assert window.last_shown_request.final and window.last_frame.image.shape == photo.shape
    assert not np.array_equal(window.last_frame.image, photo)
    window.full_range_action.setChecked(True)  # past this photo's believable turn
    window.sliders["yaw"].set_user_value(35)
    settle(qtbot, window)
    assert "believable" in window.status_frame.text()
    window.full_range_action.setChecked(False)
    window.generator_view_action.setEnabled(True)
    window.generator_view_action.setChecked(True)  # no generator here: the 3DMM preview of the same face
    settle(qtbot, window)
    assert window.last_frame.mode == "preview" and window.last_frame.image.shape[0] == SIZE
    window.generator_view_action.setChecked(False)
    settle(qtbot, window)
    assert window.last_frame.mode == "photo"
    window.start_random_btn.click()
    settle(qtbot, window)
    assert window.last_frame.mode == "preview" and window.session.photo is None
    assert isinstance(photo_import.PhotoSource, type)


def test_full_range_toggle_widens_the_sliders(qtbot, window):
    yaw = window.sliders["yaw"]
    assert (yaw.lo, yaw.hi) == (-40.0, 40.0)  # the trained range
    window.full_range_action.setChecked(True)
    assert (yaw.lo, yaw.hi) == (-60.0, 60.0)
    yaw.set_user_value(55)
    settle(qtbot, window)
    assert window.session.pose_degrees()["yaw"] == pytest.approx(55, abs=0.1)
    assert "trained range" in window.statusBar().currentMessage()
    window.full_range_action.setChecked(False)
    assert (yaw.lo, yaw.hi) == (-40.0, 40.0)


def test_composite_smile_moves_its_parts(qtbot, window):
    window.sliders["smile"].set_user_value(0.6)
    settle(qtbot, window)
    assert window.sliders["mouthSmile_L"].value() == pytest.approx(0.6, abs=0.01)
    assert window.session.expression_value("mouthSmile_R") == pytest.approx(0.6, abs=0.01)


def test_run_entry_point_opens_and_closes(tmp_path):
    """app.main.run as `python main.py bad.json` runs it, in its own process: run() sets process-wide state (thread
    policy, signal handlers, the application's event loop ended by quit) that later windows in a test process
    would inherit."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "bad.json"
    bad.write_text("{")
    script = """
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.main import run
seen = {}
def close():
    wins = [w for w in QApplication.topLevelWidgets() if w.objectName() == "" and hasattr(w, "session")]
    seen["windows"] = len(wins)
    seen["error"] = wins[0].last_error if wins else None
    for w in wins:
        w.close()
    QApplication.instance().quit()
QTimer.singleShot(1500, close)
seen["rc"] = run([sys.argv[1], "--size", "64"])
print(json.dumps(seen))
"""
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1", XDG_STATE_HOME=str(tmp_path / "state"),
               PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", script, str(bad)], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["rc"] == 0 and seen["windows"] == 1 and "corrupt" in seen["error"]


def test_identity_tab_shows_named_controls_and_keeps_the_raw_ones(qtbot, window):
    from PySide6.QtWidgets import QLabel

    labels = [w.label.text() for k, w in window.sliders.items() if window.session.controls[k].group == "identity"]
    assert labels[:3] == ["Face width", "Face length", "Jaw width"] and "Lip fullness" in labels
    assert not any(isinstance(x, QLabel) and x.text() == "Component 1" and x.isVisible()
                   for x in window.tabs.widget(3).findChildren(QLabel))
    window.tabs.setCurrentIndex(3)
    assert window.sliders["face_width"].isVisible() and not window.sliders["id0"].isVisible()  # raw under "More"
    window.more_identity_btn.click()
    assert window.sliders["id0"].isVisible()
    jaw0 = window.sliders["jaw_width"].value()
    id0 = window.sliders["id0"].value()
    f0 = window.last_frame.image.copy()
    window.sliders["face_width"].set_user_value(2.0)
    settle(qtbot, window)
    assert window.session.control_value("face_width") == pytest.approx(2.0, abs=0.02)
    assert window.sliders["jaw_width"].value() == pytest.approx(jaw0, abs=0.02)  # the others hold still
    assert window.sliders["id0"].value() != pytest.approx(id0, abs=1e-3)  # the raw modes follow
    assert window.sliders["id0"].value() == pytest.approx(window.session.control_value("id0"), abs=0.01)
    assert np.abs(window.last_frame.image.astype(int) - f0).mean() > 0.5


def test_drive_from_video_menu_opens_the_dialog(qtbot, window, monkeypatch):
    from app.drive_dialog import DriveDialog

    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    act = next(a for a in menu.actions() if a.text() == "&Drive from video…")
    assert act is window.drive_action and act.isEnabled()
    act.trigger()
    dlg = next(d for d in window.findChildren(DriveDialog))
    assert dlg.isVisible() and dlg.session is window.session and dlg.windowTitle() == "Drive from video"
    # a loaded track refreshes the window: the timeline and the sliders show the session's new face
    window.session.set_control("jawOpen", 0.7)
    window.session.add_keyframe(0.0)
    dlg.trackLoaded.emit("talk_track.json")
    assert window.sliders["jawOpen"].value() == pytest.approx(0.7, abs=0.01)
    assert len(window.timeline.session.keyframes) == 1 and "talk_track.json" in window.statusBar().currentMessage()
    dlg.reject()
    assert not dlg.isVisible()
