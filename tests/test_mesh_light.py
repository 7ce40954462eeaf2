"""The mesh panel is lit like the image: the session's light (azimuth/elevation/intensity/ambient/colour) drives its
shader; on a real X server (Xvfb) a light from the viewer's left brightens the left half of the face and vice versa."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.widgets import MeshPanel, light_uniform
from test_app_xvfb import xvfb_display  # noqa: F401  (the Xvfb server fixture)

REPO = Path(__file__).resolve().parent.parent


def test_light_uniform_maps_the_image_light_into_panel_coordinates():
    # front light: toward the viewer, who looks along +y in the panel (model +z -> panel -y)
    assert light_uniform(0, 0, 0.5, 0.7) == pytest.approx([0, -1, 0, 0.5, 0.7, 1, 1, 1], abs=1e-9)
    # from the viewer's right (+x), from above (+z in the panel)
    assert light_uniform(90, 0)[:3] == pytest.approx([1, 0, 0], abs=1e-9)
    assert light_uniform(0, 90)[:3] == pytest.approx([0, 0, 1], abs=1e-9)
    assert light_uniform(0, 0, 0.3, 0.6, color=(1, 0.5, 0.25))[5:] == [1, 0.5, 0.25]


def test_set_light_takes_session_light_params(qtbot, face_model):
    from engine.editing.session import Session

    s = Session(model=face_model, generator=None)
    p = MeshPanel(face_model.triangles.numpy())
    qtbot.addWidget(p)
    s.set_light(azimuth=-60, elevation=10, intensity=0.8, ambient=0.4)
    p.set_light(**s.light_params())
    want = light_uniform(-60, 10, 0.8, 0.4)
    assert p.light[:5] == pytest.approx(want[:5], abs=1e-3)


SCRIPT = """
import json, sys
import numpy as np
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.widgets import MeshPanel
from engine.face.model import default_model
m = default_model()
v = m.vertices(m.zeros(1))[0].numpy()
out = {}
for az in (-70, 70):
    p = MeshPanel(m.triangles.numpy())
    p.resize(240, 240)
    p.show()
    p.set_light(azimuth=az, elevation=15, intensity=0.6, ambient=0.5)
    p.set_mesh(v, None)
    for _ in range(20):
        app.processEvents()
    a = np.asarray(p.view.renderToArray((240, 240)))[..., :3].astype(float).mean(-1)
    face = a > a[0, 0] + 20  # brighter than the background
    cols = np.nonzero(face.any(0))[0]
    mid = (cols.min() + cols.max()) // 2
    left = a[:, :mid][face[:, :mid]].mean()
    right = a[:, mid:][face[:, mid:]].mean()
    out[str(az)] = [float(left), float(right)]
print(json.dumps(out))
"""


def test_panel_is_lit_from_the_light_side_on_xvfb(xvfb_display, ict_path):
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    (l1, r1), (l2, r2) = got["-70"], got["70"]
    assert l1 > r1 + 10 and r2 > l2 + 10, got  # the lit side is clearly brighter
