"""``discoface edit`` finds the photo's face in a forked process while it imports torch (engine/cli/photo.py,
``prefetch_faces``): the same boxes and landmarks as the fit's own search, the same pixels, the same errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "assets" / "astronaut.jpg"


def run(*args, **env):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, "DISCOFACE_PHOTO_CACHE": "off", **env})


def test_the_forked_search_finds_what_the_fit_finds(ict_path):
    """In a fresh process (no torch: the fork is safe there) FaceFinder's answer equals find_face's in this one; the
    astronaut has two boxes (her mission patch is larger than her face): the pick is the face."""
    code = ("import pickle, sys; from engine.cli.photo import FaceFinder; assert 'torch' not in sys.modules; "
            f"f = FaceFinder.start({str(ASTRONAUT)!r}); sys.stdout.buffer.write(pickle.dumps(f.result()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    import pickle

    boxes, box, lm = pickle.loads(r.stdout)
    from engine.cli.photo import find_face

    boxes0, box0, lm0 = find_face(ASTRONAUT)
    assert len(boxes) == 2 and boxes == boxes0 and box == box0 and box != boxes[0]
    assert lm.dtype == np.float32 and np.array_equal(lm, lm0)


def test_an_edit_with_the_forked_search_writes_the_same_pixels(tmp_path, ict_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    r = run("edit", ASTRONAUT, "--set", "smile=0.6", "yaw=-8", "-o", a)  # a fresh process: the search is forked
    assert r.returncode == 0, r.stderr
    from engine import cli

    rc = cli.main(["edit", str(ASTRONAUT), "--no-cache", "--set", "smile=0.6", "yaw=-8", "-o", str(b)])
    assert rc == 0 and "torch" in sys.modules  # (this process: no fork, the fit searches itself)
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert a.read_bytes() == b.read_bytes()


def test_no_face_and_unreadable_photos_are_one_line_with_the_search_forked(tmp_path, ict_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((400, 400, 3), 128, np.uint8)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    for photo, says in ((blank, "no face found in"), (broken, "broken.jpg")):
        out = tmp_path / "out.png"
        r = run("edit", photo, "-o", out)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "it/s" not in ln and "step/s" not in ln
                 and not ln.startswith("fitting")]
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert lines[-1].startswith("error:") and says in lines[-1], r.stderr
        assert not out.exists()


def test_building_the_parser_imports_neither_torch_nor_numpy():
    """The face search is forked before torch loads; ``import engine.cli`` (main.py's routing, ``--help``) stays
    light: the photo cache imports numpy where it uses it."""
    code = "import sys, engine.cli; print(sorted(m for m in ('torch', 'numpy', 'cv2') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
