"""The editor on a real X server (Xvfb) with the mesh panel: a whole-window screenshot shows the mesh.

Runs the window in a subprocess (DISPLAY from Xvfb, QT_QPA_PLATFORM=xcb), because the rest of the suite uses the
offscreen platform. Set DISCOFACE_UPDATE_SCREENSHOT=1 to also copy the PNG to docs/screenshot.png.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.xvfb import XvfbError, start_xvfb, stop_xvfb  # noqa: E402


@pytest.fixture(scope="module")
def xvfb_display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb binary not found on PATH (tools/test_setup.sh installs xvfb and the xcb libraries)")
    try:
        proc, display = start_xvfb()
    except XvfbError as exc:
        pytest.fail(str(exc))
    yield display
    stop_xvfb(proc)


def test_window_screenshot_shows_the_mesh(xvfb_display, tmp_path, ict_path):
    out = tmp_path / "window.png"
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "app.screenshot", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.exists() and info["saved"]
    img = np.asarray(Image.open(out).convert("RGB")).astype(np.float32)
    assert (img.shape[1], img.shape[0]) == tuple(info["window"])
    assert info["mesh_gl"], f"GL mesh panel did not start: {info['mesh_reason']}"
    x, y, w, h = info["mesh"]
    panel = img[y:y + h, x:x + w]
    assert panel.size > 0
    assert panel.std() > 10, "the mesh panel is uniform: the mesh did not draw"
    # the face (skin-coloured, lit) covers a good part of the middle of the mesh panel
    centre = panel[h // 4: 3 * h // 4, w // 3: 2 * w // 3]
    bg = panel[2, 2]
    assert (np.abs(centre - bg).sum(-1) > 60).mean() > 0.3
    x, y, w, h = info["image"]
    assert img[y:y + h, x:x + w].std() > 10  # the rendered face is shown too
    if os.environ.get("DISCOFACE_UPDATE_SCREENSHOT"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(out, REPO / "docs" / "screenshot.png")
