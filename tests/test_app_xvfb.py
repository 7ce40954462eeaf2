"""The editor on a real X server (Xvfb) with the OpenGL mesh panel: a whole-window screenshot shows the mesh.

Runs the window in a subprocess (DISPLAY from Xvfb, QT_QPA_PLATFORM=xcb), because the rest of the suite uses the
offscreen platform. Set DISCOFACE_UPDATE_SCREENSHOT=1 to also copy the PNG to docs/screenshot.png.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def xvfb_display():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb binary not found on PATH (tools/test_setup.sh installs xvfb and the xcb libraries)")
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    num = b""
    deadline = time.time() + 20
    os.set_blocking(r, False)
    while time.time() < deadline and not num.endswith(b"\n"):
        try:
            chunk = os.read(r, 16)
        except BlockingIOError:
            chunk = None
        if chunk:
            num += chunk
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    os.close(r)
    if not num.strip():
        proc.kill()
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        pytest.fail(f"Xvfb did not start: {err}")
    yield f":{num.decode().strip()}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


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
