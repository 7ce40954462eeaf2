"""The editor as users run it — a real X server (Xvfb) with the mesh panel — through photo mode and out of it
(issue 22): the full head is drawn, a drag updates it, New random face switches the panel back to the face model's
mesh without an error on any paint (the old panel kept the head's triangles: IndexError on every paint), and the
panel can be hidden and shown again."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from test_app_xvfb import xvfb_display  # noqa: F401,E402  (the Xvfb server fixture)

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys, time
import numpy as np
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.window import MainWindow, BUNDLED_PHOTO
from engine.editing.session import Session

def wait(pred, t=120):
    t0 = time.time()
    while not pred() and time.time() - t0 < t:
        app.processEvents(); time.sleep(0.01)
    for _ in range(20):
        app.processEvents(); time.sleep(0.01)

def panel_std(w):
    wait(lambda: w.mesh.draws > 0 and not w.mesh.busy, 30)
    return float(w.mesh.array.astype(float).std())

w = MainWindow(Session(generator=None), display_size=96)
w.resize(1000, 700); w.show()
wait(lambda: w.settled and w.last_frame is not None)
out = {"panel": w.mesh.available}
job = w.open_bundled_photo()
wait(lambda: not job.running and w.settled and w.session.photo is not None)
out["head_tris"] = int(w.mesh.triangles.shape[0])
out["photo_std"] = panel_std(w)
n = w.mesh.updates
s = w.sliders["yaw"]
s.slider.setSliderDown(True)
for v in range(1, 6):
    s.set_user_value(w.session.control_value("yaw") + 2); wait(lambda: w.settled, 30)
s.slider.setSliderDown(False); wait(lambda: w.settled)
out["drag_updates"] = w.mesh.updates - n
w.new_random_face(); wait(lambda: w.settled)
out["face_tris"] = int(w.mesh.triangles.shape[0])
out["model_tris"] = int(w.session.model.triangles.shape[0])
out["face_std"] = panel_std(w)
w.set_mesh_visible(False); wait(lambda: True, 1)
w.sliders["yaw"].set_user_value(15); wait(lambda: w.settled)
w.set_mesh_visible(True); wait(lambda: True, 1)
out["shown_again_std"] = panel_std(w)
w.guard = None
w.close()
print(json.dumps(out))
"""


def test_mesh_panel_through_photo_mode_and_back(xvfb_display, ict_path):  # noqa: F811
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["panel"], "the mesh panel did not start"
    assert got["head_tris"] > got["model_tris"] and got["face_tris"] == got["model_tris"]
    assert got["drag_updates"] >= 5
    for k in ("photo_std", "face_std", "shown_again_std"):
        assert got[k] > 10, (k, got)  # the panel draws a mesh, not a uniform background
    assert "Traceback" not in r.stderr and "IndexError" not in r.stderr, r.stderr[-3000:]
