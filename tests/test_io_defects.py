"""File defects of issue 22, each with a test that failed on the old code: a PNG's transparency was dropped silently
(now RGBA in, RGBA out); an output killed with SIGKILL left a hidden partial file for good (now the next write of the
same output removes it); a tiny photo was said to have no face (now: too small)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.io.files import clean_stale_parts, read_alpha, save_image, write_text_atomic

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def rgba_photo(tmp_path_factory):
    """The astronaut with a transparent border (a cut-out portrait)."""
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    a = np.full(rgb.shape[:2], 255, np.uint8)
    a[:, :40] = 0
    a[:30, :] = 0
    path = tmp_path_factory.mktemp("rgba") / "cutout.png"
    Image.fromarray(np.concatenate([rgb, a[..., None]], 2)).save(path)
    return path, a


def test_read_alpha_and_save_image_keep_transparency(tmp_path, rgba_photo):
    path, a = rgba_photo
    assert np.array_equal(read_alpha(path), a)
    assert read_alpha(ASTRONAUT) is None  # JPEG: no alpha
    img = np.full((a.shape[0] // 2, a.shape[1] // 2, 3), 128, np.uint8)
    save_image(tmp_path / "o.png", img, alpha=a)  # another size: the alpha follows
    back = np.asarray(Image.open(tmp_path / "o.png"))
    assert back.shape == img.shape[:2] + (4,) and back[5, 5, 3] == 0 and back[-5, -5, 3] == 255
    save_image(tmp_path / "o.jpg", img, alpha=a)  # JPEG cannot keep it
    assert Image.open(tmp_path / "o.jpg").mode == "RGB"


def test_cli_edit_keeps_the_alpha_of_a_png(tmp_path, rgba_photo, capsys):
    from engine import cli

    path, a = rgba_photo
    assert cli.main(["edit", str(path), "--set", "smile=0.5", "-o", str(tmp_path / "o.png")]) == 0
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], a)
    assert cli.main(["edit", str(path), "-o", str(tmp_path / "o.jpg")]) == 0
    assert "has transparency" in capsys.readouterr().err


def test_a_partial_file_left_by_sigkill_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "clip.txt"
    code = ("import os, signal, sys; sys.path.insert(0, sys.argv[2]);"
            "from engine.io.files import atomic_path;"
            "cm = atomic_path(sys.argv[1]); tmp = cm.__enter__(); tmp.write_text('half');"
            "os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, str(out), str(REPO)], capture_output=True)
    assert r.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".clip.") and ".part" in left[0]  # what the killed run left
    write_text_atomic(out, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.txt"]  # the stale part is gone


def test_clean_stale_parts_keeps_live_and_recent_ones(tmp_path):
    target = tmp_path / "clip.mp4"
    dead = tmp_path / ".clip.999999999-ab12.part.mp4"  # no such process
    live = tmp_path / f".clip.{os.getppid()}-cd34.part.mp4"  # a live process (our parent) is still writing it
    legacy_old = tmp_path / ".clip.x1y2z3.part.mp4"  # older naming without a pid
    legacy_new = tmp_path / ".clip.q9w8e7.part.mp4"
    other = tmp_path / ".clipper.999999999-zz.part.mp4"  # another output's
    for p in (dead, live, legacy_old, legacy_new, other):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(legacy_old, (old, old))
    removed = clean_stale_parts(target)
    assert sorted(p.name for p in removed) == sorted([dead.name, legacy_old.name])
    assert live.exists() and legacy_new.exists() and other.exists()


def test_a_tiny_photo_is_too_small_not_faceless(tmp_path, capsys):
    from engine import cli

    small = tmp_path / "tiny.png"
    Image.open(ASTRONAUT).convert("RGB").resize((60, 60)).save(small)  # the whole portrait: a ~12 px face
    assert cli.main(["edit", str(small), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "60x60" in err and "no face found" not in err
