"""The command line: real renders, clear one-line errors, nothing half-written."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_render_writes_a_posed_face(tmp_path, ict_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    r1 = run("render", "--yaw", "30", "--expr", "jawOpen=0.8", "--light-azimuth", "45", "--size", "96", "-o", str(a))
    r2 = run("render", "--yaw", "-30", "--expr", "jawOpen=0.8", "--size", "96", "-o", str(b))
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    ia, ib = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert ia.shape == (96, 96, 3)
    fa, fb = ia.sum(-1) > 0, ib.sum(-1) > 0
    assert 0.2 < fa.mean() < 0.9  # a face, not an empty or full frame
    # yaw +30 and -30 silhouettes are mirror images of each other, and not the same picture
    iou = (fa & fb[:, ::-1]).sum() / (fa | fb[:, ::-1]).sum()
    assert iou > 0.95, iou
    assert (fa != fb).mean() > 0.02


def test_grid(tmp_path, ict_path):
    out = tmp_path / "grid.png"
    r = run("grid", "--size", "48", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (6 * 48, 4 * 48)


def test_bad_setting_is_one_clear_line_and_writes_nothing(tmp_path, ict_path):
    out = tmp_path / "x.png"
    r = run("render", "--set", "smileBig=1", "-o", str(out))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown setting 'smileBig'")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_output_suffix(tmp_path, ict_path):
    r = run("render", "-o", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and "must end in one of" in r.stderr and "Traceback" not in r.stderr


def test_missing_face_model_names_the_path(tmp_path):
    import os

    env = dict(os.environ, DISCOFACE_DATA=str(tmp_path / "nothing"))
    r = subprocess.run([sys.executable, str(REPO / "main.py"), "render", "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 2
    assert "face model not found: looked for" in r.stderr and "nothing" in r.stderr
    assert "Traceback" not in r.stderr
