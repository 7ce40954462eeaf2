"""The mesh panel is lit like the image: the session's light (azimuth/elevation/intensity/ambient/colour) drives its
shading (``engine.render.meshview``); a light from the viewer's left brightens the left half of the face and vice
versa. The panel draws on the CPU, so this runs offscreen."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")

from app.widgets import MeshPanel  # noqa: E402
from engine.render.meshview import OrbitCamera, draw_mesh, light_direction  # noqa: E402


def test_light_direction_matches_the_image_conventions():
    assert light_direction(0, 0) == pytest.approx([0, 0, 1], abs=1e-6)  # from the front: toward the viewer (+z)
    assert light_direction(90, 0) == pytest.approx([1, 0, 0], abs=1e-6)  # from the viewer's right (+x)
    assert light_direction(0, 90) == pytest.approx([0, 1, 0], abs=1e-6)  # from above


def test_set_light_takes_session_light_params(qtbot, face_model):
    from engine.editing.session import Session

    s = Session(model=face_model, generator=None)
    p = MeshPanel(face_model.triangles.numpy())
    qtbot.addWidget(p)
    s.set_light(azimuth=-60, elevation=10, intensity=0.8, ambient=0.4)
    p.set_light(**s.light_params())
    assert [p.light[k] for k in ("azimuth", "elevation", "intensity", "ambient")] == pytest.approx(
        [-60, 10, 0.8, 0.4], abs=1e-3)
    p.stop()


def _halves(img):
    a = img.astype(float).mean(-1)
    face = a > a[0, 0] + 20  # brighter than the background
    cols = np.nonzero(face.any(0))[0]
    mid = (cols.min() + cols.max()) // 2
    return a[:, :mid][face[:, :mid]].mean(), a[:, mid:][face[:, mid:]].mean()


def test_panel_is_lit_from_the_light_side(qtbot, face_model):
    from engine.io.mesh import vertex_normals

    v = face_model.vertices(face_model.zeros(1))[0].numpy()
    tri = face_model.triangles.numpy()
    got = {}
    for az in (-70, 70):
        p = MeshPanel(tri)
        qtbot.addWidget(p)
        p.resize(240, 240)
        p.show()
        p.set_light(azimuth=az, elevation=15, intensity=0.6, ambient=0.5)
        p.set_mesh(v, None)
        qtbot.waitUntil(lambda: p.draws > 0 and not p.busy, timeout=20000)
        got[az] = _halves(p.array)
        p.stop()
    (l1, r1), (l2, r2) = got[-70], got[70]
    assert l1 > r1 + 10 and r2 > l2 + 10, got  # the lit side is clearly brighter
    # the same through the engine function directly, and turning the view moves the face
    cam = OrbitCamera()
    cam.frame(v)
    n = vertex_normals(v, tri)
    front = draw_mesh(v, n, tri, cam, 160, 160)
    cam.azimuth = 70
    side = draw_mesh(v, n, tri, cam, 160, 160)
    assert np.abs(front.astype(int) - side.astype(int)).mean() > 5


def test_landmarks_behind_the_head_are_not_drawn(face_model, head):
    from engine.io.mesh import vertex_normals

    v = head.vertices(face_model.zeros(1))[0].numpy()  # the full head (its first vertices are the face model's)
    tri = head.triangles.numpy()
    lm = v[face_model.lm68.numpy()]
    n = vertex_normals(v, tri)
    cam = OrbitCamera()
    cam.frame(v)
    _, xy, seen = draw_mesh(v, n, tri, cam, 200, 200, points=lm)
    assert xy.shape == (68, 2) and seen.mean() > 0.9  # from the front: the landmarks are on the visible surface
    cam.azimuth = 180
    _, _, seen = draw_mesh(v, n, tri, cam, 200, 200, points=lm)
    assert seen.mean() < 0.2  # from behind the head hides them


HIDPI = """
import json, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.widgets import MeshPanel
from engine.face.model import default_model
m = default_model()
v = m.vertices(m.zeros(1))[0].numpy()
p = MeshPanel(m.triangles.numpy()); p.resize(200, 160); p.show()
p.set_mesh(v, v[m.lm68.numpy()])
t0 = time.time()
while (p.busy or p.draws == 0) and time.time() - t0 < 60:
    app.processEvents(); time.sleep(0.01)
print(json.dumps({"shape": list(p.array.shape), "logical": [p.width(), p.height()], "lm_max": p._lm_xy.max(0).tolist()}))
p.stop()
"""


def test_panel_draws_at_device_pixels_on_a_hidpi_screen(ict_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QT_SCALE_FACTOR="2", OMP_NUM_THREADS="1",
               PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", HIDPI], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    w, h = got["logical"]
    assert got["shape"][:2] == [2 * h, 2 * w]  # sharp: device pixels, not a stretched logical-size picture
    assert got["lm_max"][0] < w and got["lm_max"][1] < h  # landmarks in logical px, where they are drawn


def test_jaw_line_landmarks_on_the_silhouette_stay_drawn(face_model, head):
    """Seen from the front the jaw line's landmarks lie on the head's outline: none is hidden by the cheek."""
    from engine.io.mesh import vertex_normals

    v = head.vertices(face_model.zeros(1))[0].numpy()
    tri = head.triangles.numpy()
    lm = v[face_model.lm68.numpy()]
    cam = OrbitCamera()
    cam.frame(v)
    _, _, seen = draw_mesh(v, vertex_normals(v, tri), tri, cam, 300, 240, points=lm)
    assert seen.all(), np.nonzero(~seen)[0]
