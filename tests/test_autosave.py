"""Never lose work: debounced atomic autosave to the state folder, orphans of a killed editor offered back,
Save / Discard / Cancel on close, wall-clock timeline playback, export dialog defaults."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.editing.autosave import Autosave, session_text, state_dir
from engine.editing.session import Session

REPO = Path(__file__).resolve().parents[1]


def test_state_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    assert state_dir() == tmp_path / "st" / "discoface"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == Path.home() / ".local" / "state" / "discoface"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec: relative paths are invalid
    assert state_dir() == Path.home() / ".local" / "state" / "discoface"


def test_debounce():
    now = [0.0]
    a = Autosave("/nonexistent", delay=1.0, clock=lambda: now[0])
    assert not a.due()
    a.changed()
    now[0] = 0.6
    assert not a.due()
    a.changed()  # another edit restarts the quiet period
    now[0] = 1.5
    assert not a.due()
    now[0] = 1.61
    assert a.due()


def test_write_clear_and_atomic(face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    s.set_pose_degrees(yaw=12)
    s.add_keyframe(0.0)
    a = Autosave(tmp_path / "state", pid=4242)
    a.changed()
    assert a.flush(s) is False  # not due yet
    assert a.flush(s, force=True) is True
    assert a.path == tmp_path / "state" / "autosave-4242.json"
    assert sorted(p.name for p in a.path.parent.iterdir()) == ["autosave-4242.json"]  # no temporary left
    back = Session.load(a.path, model=face_model, generator=None)
    assert back.pose_degrees()["yaw"] == pytest.approx(12, abs=1e-4) and len(back.keyframes) == 1
    assert session_text(back) == session_text(s)
    a.clear()
    assert not a.path.exists()


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_orphans_are_files_of_dead_editors(face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = _dead_pid()
        Autosave(tmp_path, pid=dead).write(s)
        Autosave(tmp_path, pid=live.pid).write(s)
        (tmp_path / "notes.json").write_text("{}")
        me = Autosave(tmp_path)
        assert [o.pid for o in me.orphans()] == [dead]
    finally:
        live.kill()
        live.wait()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from engine.editing.autosave import Autosave
    from engine.editing.session import Session
    s = Session(generator=None)
    s.set_pose_degrees(yaw=-17)
    s.add_keyframe(0.0)
    s.set_expression("jawOpen", 0.6)
    s.add_keyframe(1.5)
    Autosave(sys.argv[1]).write(s)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean quit
""")


def test_a_killed_editor_is_restored(face_model, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], cwd=REPO, env=env, timeout=300,
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    me = Autosave(tmp_path)
    orphans = me.orphans()
    assert len(orphans) == 1
    s = Session(model=face_model, generator=None)
    me.restore(s, orphans[0])
    assert len(s.keyframes) == 2 and s.expression_value("jawOpen") == pytest.approx(0.6, abs=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [me.path.name]  # taken over, the orphan removed
    assert me.orphans() == []


# -------------------------------------------------------------------------------------------- #
# the editor
# -------------------------------------------------------------------------------------------- #
@pytest.fixture
def editor(qtbot, face_model, tmp_path, monkeypatch):
    pytest.importorskip("pytestqt")
    import app.main

    monkeypatch.setattr(app.main, "Session", lambda: Session(model=face_model, generator=None))
    answers = []

    def build(ask=None, restore=None):
        win = app.main.build(["--size", "64"], autosave=Autosave(tmp_path / "state", delay=0.3),
                             ask_restore=restore or (lambda o: False))
        win.guard.ask = lambda: answers.pop(0)
        qtbot.addWidget(win)
        return win
    build.answers = answers
    yield build


def test_edits_are_autosaved_after_a_pause(qtbot, editor):
    win = editor()
    path = win.guard.autosave.path
    assert not path.exists()  # nothing changed: nothing to restore
    win.sliders["yaw"].set_user_value(15.0)
    assert not path.exists()  # debounced
    qtbot.waitUntil(path.exists, timeout=5000)
    back = Session.load(path, model=win.session.model, generator=None)
    assert back.pose_degrees()["yaw"] == pytest.approx(15.0, abs=0.1)
    editor.answers.append("discard")
    assert win.close()
    assert not path.exists()  # a clean quit removes it


def test_close_with_unsaved_changes_cancel_discard_save(qtbot, editor, tmp_path, monkeypatch):
    win = editor()
    win.sliders["jawOpen"].set_user_value(0.7)
    assert win.guard.dirty
    editor.answers.append("cancel")
    assert not win.close() and win.isVisible() is not None and not editor.answers  # asked, stayed open
    assert win.guard.dirty
    out = tmp_path / "kept.json"
    from app import dialogs

    monkeypatch.setattr(dialogs.QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    editor.answers.append("save")
    assert win.close()
    assert Session.load(out, model=win.session.model, generator=None).expression_value("jawOpen") == \
        pytest.approx(0.7, abs=0.01)
    assert not win.guard.autosave.path.exists()


def test_close_without_changes_does_not_ask(qtbot, editor):
    win = editor()
    win.sliders["yaw"].set_user_value(10.0)
    win.undo()  # back where it started: nothing unsaved
    assert not win.guard.dirty
    assert win.close()  # no answer queued: asking would raise IndexError


def test_restore_offered_at_start(qtbot, editor, face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    s.set_pose_degrees(pitch=9)
    Autosave(tmp_path / "state", pid=_dead_pid()).write(s)
    offered = []
    win = editor(restore=lambda o: offered.append(o) or True)
    assert len(offered) == 1
    assert win.session.pose_degrees()["pitch"] == pytest.approx(9, abs=1e-3)
    assert win.sliders["pitch"].value() == pytest.approx(9, abs=0.1)
    assert win.guard.dirty  # restored work is unsaved work
    editor.answers.append("discard")
    win.close()


def test_declined_restore_removes_the_orphan(qtbot, editor, face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    Autosave(tmp_path / "state", pid=_dead_pid()).write(s)
    win = editor(restore=lambda o: False)
    assert list((tmp_path / "state").iterdir()) == []
    win.close()


# -------------------------------------------------------------------------------------------- #
# timeline playback follows wall time; export dialog defaults and extension
# -------------------------------------------------------------------------------------------- #
def test_timeline_playback_drops_frames_when_late(qtbot, face_model):
    pytest.importorskip("pytestqt")
    from app.dialogs import Timeline

    s = Session(model=face_model, generator=None)
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=20)
    s.add_keyframe(2.0)
    tl = Timeline(s)
    qtbot.addWidget(tl)
    now = [100.0]
    tl.clock = lambda: now[0]
    shown = []
    tl.timeChanged.connect(lambda t, final: shown.append(t))
    tl.set_playing(True)
    tl.timer.stop()  # tick by hand
    now[0] += 0.5  # a slow render: the tick comes 0.5 s late
    tl._tick()
    assert shown[-1] == pytest.approx(0.5, abs=1e-6)
    assert tl.dropped == 11  # 12 frame periods passed, 1 shown
    now[0] += 1.0 / 24
    tl._tick()
    assert shown[-1] == pytest.approx(0.5 + 1 / 24, abs=1e-6)
    now[0] += 2.0  # loops over the 2 s span
    tl._tick()
    assert shown[-1] == pytest.approx(0.5 + 1 / 24, abs=1e-6)
    tl.set_playing(False)


def test_export_dialog_extension_decides_the_format(qtbot, face_model, tmp_path):
    pytest.importorskip("pytestqt")
    from app.dialogs import ExportDialog

    s = Session(model=face_model, generator=None)
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=10)
    s.add_keyframe(0.2)
    dlg = ExportDialog(s, session_path=tmp_path / "face.json")
    qtbot.addWidget(dlg)
    assert Path(dlg.path.text()) == (tmp_path / "face.mp4").resolve()  # beside the session, not home
    assert dlg.size.value() == 256
    dlg.fmt.setCurrentText("gif")
    assert dlg.path.text().endswith("face.gif")
    dlg.path.setText(str(tmp_path / "clip.mp4"))  # typed: the extension wins
    assert dlg.fmt.currentText() == "mp4"
    dlg.frames.setValue(3)
    dlg.size.setValue(32)
    dlg._start_from_ui()
    qtbot.waitUntil(lambda: dlg.result_path is not None or dlg.last_error is not None, timeout=30000)
    assert dlg.last_error is None
    assert (tmp_path / "clip.mp4").read_bytes()[4:8] == b"ftyp"  # MP4, not GIF bytes
    assert ExportDialog.last_folder == tmp_path


def test_export_dialog_size_of_a_photo_session(qtbot, face_model):
    pytest.importorskip("pytestqt")
    from app.dialogs import ExportDialog, default_export_size

    class PhotoSession:  # what photo mode's session exposes: session.photo.size == (w, h)
        photo = type("P", (), {"size": (640, 480)})()
        native_size = 64

    assert default_export_size(PhotoSession()) == 640
    s = Session(model=face_model, generator=None)
    assert default_export_size(s) == max(256, s.native_size)


EDITOR_KILLED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    import app.main
    from engine.editing.session import Session
    out = Path(sys.argv[1])
    app.main.Session = lambda: Session(generator=None)
    qapp = QApplication([])

    def act():
        win = next(w for w in QApplication.topLevelWidgets() if hasattr(w, "guard"))
        win.sliders["yaw"].set_user_value(22.0)  # an edit, then at once a long export
        s = win.session
        s.add_keyframe(0.0)
        s.set_pose_degrees(yaw=-10)
        s.add_keyframe(300.0)
        dlg = win.export_dialog()
        dlg.start_export(out / "clip.gif", "gif", 24, 7000, 48)

        def ready():
            if any(out.iterdir()):
                print("ready", flush=True)
            else:
                QTimer.singleShot(100, ready)
        ready()
    QTimer.singleShot(500, act)
    sys.exit(app.main.run(["--size", "64"]))
""")


def test_editor_sigterm_keeps_the_edits_and_leaves_no_partial_export(tmp_path):
    state = tmp_path / "state"
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen",
               XDG_STATE_HOME=str(state))
    p = subprocess.Popen([sys.executable, "-c", EDITOR_KILLED, str(out)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read()[-3000:] if p.poll() is not None else line
        p.send_signal(signal.SIGTERM)  # well within the 1 s autosave delay of the last edit
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGTERM
    assert list(out.iterdir()) == []  # the hidden partial GIF is gone
    saved = list((state / "discoface").glob("autosave-*.json"))
    assert len(saved) == 1  # the edits survive the kill, to be offered back at the next start
    back = Session.load(saved[0], generator=None)
    assert len(back.keyframes) == 2


def _asked(win) -> list:
    calls = []

    def ask():
        calls.append(1)
        return "discard"
    win.guard.ask = ask
    return calls


def _start(qtbot, win, job=None):
    """What app.main.run does after build: open the bundled photo when nothing was opened or restored."""
    import app.main

    job = job or app.main.open_start_photo(win)
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=120000)
    qtbot.waitUntil(lambda: win.settled, timeout=20000)
    assert win.session.photo is not None and win.last_error is None, win.last_error


def test_start_then_quit_asks_nothing(qtbot, editor):
    win = editor()
    asked = _asked(win)  # set first: a failing assert still lets the window close at teardown
    _start(qtbot, win)
    assert not win.guard.dirty  # the start photo is the baseline, not an unsaved change
    assert not win.guard.autosave.path.exists()
    assert win.close() and asked == []


def test_start_edit_then_quit_asks(qtbot, editor):
    win = editor()
    asked = _asked(win)  # set first: a failing assert still lets the window close at teardown
    _start(qtbot, win)
    win.sliders["jawOpen"].set_user_value(0.5)
    assert win.guard.dirty
    assert win.close() and asked == [1]


def test_opening_a_photo_over_unsaved_edits_still_asks(qtbot, editor):
    """Edits made before a photo is opened are one undo step back: quitting still asks about them."""
    win = editor()
    asked = _asked(win)  # set first: a failing assert still lets the window close at teardown
    win.sliders["yaw"].set_user_value(12.0)
    assert win.guard.dirty
    import app.main

    assert app.main.open_start_photo(win) is None  # something is open already: no start photo
    _start(qtbot, win, win.open_bundled_photo())
    assert win.guard.dirty
    win.new_random_face()
    assert win.guard.dirty
    assert win.close() and asked == [1]


def test_new_random_face_on_a_clean_start_asks_nothing(qtbot, editor):
    win = editor()
    asked = _asked(win)  # set first: a failing assert still lets the window close at teardown
    win.new_random_face()
    assert not win.guard.dirty and win.guard.path is None
    assert win.close() and asked == []
