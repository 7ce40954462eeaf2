"""main.py routes: the editor for no argument / a file to open / --gui, the CLI for its commands; the editor
opens the file it is given; SIGTERM during a CLI export leaves no partial output."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main as entry
from engine.editing.session import Session

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv,where", [
    ([], "app"), (["--gui"], "app"), (["--gui", "face.json"], "app"),
    (["photo.jpg"], "app"), (["Photo.JPEG"], "app"), (["face.json"], "app"), (["--size", "256"], "app"),
    (["render", "-o", "x.png"], "cli"), (["export", "s.json", "--to", "c.mp4"], "cli"), (["--help"], "cli"),
    (["-h"], "cli"), (["rendr", "-o", "x.png"], "cli"), (["--frobnicate"], "cli"),
])
def test_route(argv, where):
    assert entry.route(argv) == where


def test_route_existing_file_without_a_known_suffix(tmp_path):
    p = tmp_path / "portrait"
    p.write_bytes(b"x")
    assert entry.route([str(p)]) == "app"


def test_main_dispatch(monkeypatch):
    import app.main
    import engine.cli

    calls = []
    monkeypatch.setattr(app.main, "run", lambda argv: calls.append(("app", argv)) or 0)
    monkeypatch.setattr(engine.cli, "main", lambda argv: calls.append(("cli", argv)) or 0)
    entry.main(["photo.jpg"])
    entry.main(["face.json", "--size", "128"])
    entry.main([])
    entry.main(["--gui", "face.json"])
    entry.main(["grid", "-o", "g.png"])
    assert calls == [("app", ["photo.jpg"]), ("app", ["face.json", "--size", "128"]), ("app", []),
                     ("app", ["face.json"]), ("cli", ["grid", "-o", "g.png"])]


@pytest.fixture
def qapp():
    pytest.importorskip("pytestqt")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def test_editor_opens_a_session_file(qapp, qtbot, face_model, tmp_path, monkeypatch):
    import app.main

    s = Session(model=face_model, generator=None)
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=20)
    s.add_keyframe(1.0)
    s.save(tmp_path / "face.json")
    monkeypatch.setattr(app.main, "Session", lambda: Session(model=face_model, generator=None))
    win = app.main.build([str(tmp_path / "face.json"), "--size", "64"], ask_restore=lambda o: False)
    qtbot.addWidget(win)
    assert len(win.session.keyframes) == 2
    assert win.session.pose_degrees()["yaw"] == pytest.approx(20, abs=1e-3)
    assert win.guard.path == tmp_path / "face.json" and not win.guard.dirty
    win.render_thread.stop()


def test_editor_opens_a_photo(qapp, qtbot, face_model, tmp_path, monkeypatch):
    import app.main
    from app.window import MainWindow

    opened = []
    monkeypatch.setattr(MainWindow, "open_photo", lambda self, p: opened.append(p))
    monkeypatch.setattr(app.main, "Session", lambda: Session(model=face_model, generator=None))
    photo = REPO / "assets" / "astronaut.jpg"
    win = app.main.build([str(photo)], ask_restore=lambda o: False)
    qtbot.addWidget(win)
    assert opened == [str(photo)]
    win.render_thread.stop()


def test_editor_refuses_a_missing_file(qapp):
    import app.main

    with pytest.raises(app.main.StartError, match="no such file: nope.jpg"):
        app.main.build(["nope.jpg"])


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")


def test_main_py_with_a_missing_photo_is_one_error_line():
    r = subprocess.run([sys.executable, "main.py", "missing.jpg"], cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: no such file: missing.jpg"]


def test_sigterm_during_cli_export_leaves_nothing(face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=25)
    s.add_keyframe(200.0)
    s.save(tmp_path / "s.json")
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "main.py", "export", str(tmp_path / "s.json"), "--to",
                          str(out / "clip.gif"), "--size", "32", "--fps", "10"],
                         cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(out.iterdir()):  # the hidden partial GIF appears
            time.sleep(0.2)
        assert any(out.iterdir()), p.stderr.read1().decode() if p.poll() is not None else "no partial file"
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGTERM
    assert list(out.iterdir()) == []


def test_file_save_frame(qapp, qtbot, face_model, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import app.main

    monkeypatch.setattr(app.main, "Session", lambda: Session(model=face_model, generator=None))
    win = app.main.build(["--size", "64"], ask_restore=lambda o: False)
    qtbot.addWidget(win)
    win.session.set_pose_degrees(yaw=25)
    job = win.save_frame(tmp_path / "frames" / "face.png")  # rendered and written off the GUI thread
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=30000)
    assert win.last_error is None, win.last_error
    im = np.asarray(Image.open(tmp_path / "frames" / "face.png"))
    n = win.session.native_size
    assert im.shape == (n, n, 3) and im.std() > 10  # a face at the session's native size, not the 64 px display
    assert win.save_frame(tmp_path / "face.txt") is None and "image files end in" in win.last_error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    win.guard.ask = lambda: "discard"
    win.close()
