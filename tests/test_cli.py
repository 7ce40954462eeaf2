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


ASTRONAUT = REPO / "assets" / "astronaut.jpg"


def main_(args, capsys):
    from engine import cli

    rc = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error_line(rc, err):
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\r") and "it/s" not in ln]
    lines = [ln for ln in lines if ln.startswith("error:") or "Traceback" in ln]
    return rc == 2 and len(lines) == 1 and "Traceback" not in err


def test_edit_photo_mode(tmp_path, ict_path, capsys):
    """No --set: the photo back unchanged at its own size; --set: absolute slider values; keyframes → a GIF at
    the photo's resolution; a session file reopens for export."""
    same, edited = tmp_path / "same.png", tmp_path / "edited.png"
    rc, out, err = main_(["edit", ASTRONAUT, "-o", same], capsys)
    assert rc == 0, err
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(same)), photo)
    rc, out, err = main_(["edit", ASTRONAUT, "--set", "smile=0.8", "light_azimuth=40", "-o", edited], capsys)
    assert rc == 0, err
    e = np.asarray(Image.open(edited))
    changed = np.abs(e.astype(int) - photo).sum(-1) > 12
    assert e.shape == photo.shape and 0.005 < changed.mean() < 0.5, changed.mean()  # the face changed, not the rest
    assert not changed[:40].any() and not changed[-40:].any()  # top and bottom of the photo untouched
    gif = tmp_path / "turn.gif"
    rc, out, err = main_(["edit", ASTRONAUT, "--animate", "smile", "--fps", "4", "--size", "128", "-o", gif], capsys)
    assert rc == 0, err
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == 9 and frames[0].shape[:2] == (128, 128)
    assert (np.abs(frames[4].astype(int) - frames[0].astype(int)).sum(-1) > 12).mean() > 0.002  # the smile animates
    sess = tmp_path / "me.json"
    rc, out, err = main_(["edit", ASTRONAUT, "--keyframe", "yaw=-10@0", "yaw=10,smile=0.5@1", "-o", sess], capsys)
    assert rc == 0, err
    frames_dir = tmp_path / "frames"
    rc, out, err = main_(["export", sess, "--to", frames_dir, "--fps", "2"], capsys)
    assert rc == 0, err
    names = sorted(p.name for p in frames_dir.iterdir())
    assert len(names) == 3 and np.asarray(Image.open(frames_dir / names[0])).shape == photo.shape


def test_edit_and_keyframe_mistakes_are_one_line(tmp_path, ict_path, capsys):
    cases = [["edit", ASTRONAUT, "--set", "yaw=500", "-o", tmp_path / "a.png"],
             ["edit", ASTRONAUT, "--set", "smile", "-o", tmp_path / "a.png"],
             ["edit", ASTRONAUT, "-o", tmp_path / "a.txt"],
             ["edit", ASTRONAUT, "-o", tmp_path / "a.mp4"],  # a video needs keyframes
             ["edit", tmp_path / "missing.jpg", "-o", tmp_path / "a.png"],
             ["edit", ASTRONAUT, "--keyframe", "yaw=10", "-o", tmp_path / "a.json"],
             ["edit", ASTRONAUT, "--keyframe", "yaw=10@0", "yaw=20@0", "-o", tmp_path / "a.json"],
             ["generate", "--set", "yaw=500", "-o", tmp_path / "g.png"],
             ["render", "--size", "0", "-o", tmp_path / "r.png"],
             ["render", "--set", "yaw=50", "-o", tmp_path / "r.png"]]  # outside the trained range, no --force
    for args in cases:
        rc, out, err = main_(args, capsys)
        assert one_error_line(rc, err), (args, rc, err)
    assert list(tmp_path.iterdir()) == []
    rc, out, err = main_(["render", "--set", "yaw=50", "--force", "--size", "32", "-o", tmp_path / "r.png"], capsys)
    assert rc == 0 and "warning:" in err and "trained range" in err


def test_generate_size_and_composite_settings(tmp_path, capsys):
    from engine import config

    if not (config.ASSETS_DIR / "generator.safetensors").exists():
        import pytest

        pytest.skip("no generator weights in assets/")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    rc, out, err = main_(["generate", "--seed", "2", "--size", "128", "-o", a], capsys)
    assert rc == 0, err
    rc, out, err = main_(["generate", "--seed", "2", "--size", "128", "--set", "smile=0.9", "-o", b], capsys)
    assert rc == 0, err
    ia, ib = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert ia.shape == (128, 128, 3) and np.abs(ia.astype(int) - ib).mean() > 0.5


def test_embed_then_export_chains(tmp_path, ict_path, capsys):
    """The README chain: embed with --animate, then export the session (issue 14 item 2)."""
    from engine import config

    if not (config.ASSETS_DIR / "generator.safetensors").exists():
        import pytest

        pytest.skip("no generator weights in assets/")
    me = tmp_path / "me.json"
    rc, out, err = main_(["embed", ASTRONAUT, "-o", me, "--steps", "3", "--animate", "turn"], capsys)
    assert rc == 0, err
    gif = tmp_path / "clip.gif"
    rc, out, err = main_(["export", me, "--to", gif, "--fps", "3", "--size", "64"], capsys)
    assert rc == 0, err
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == 7 and np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1


def test_named_identity_setting(tmp_path, ict_path):
    """``--set face_width=…`` (a named identity control of the editor's table): wider vs narrower silhouettes;
    outside ±3σ is one line and writes nothing."""
    wide, narrow = tmp_path / "wide.png", tmp_path / "narrow.png"
    r1 = run("render", "--set", "face_width=2.5", "--size", "96", "-o", str(wide))
    r2 = run("render", "--set", "face_width=-2.5", "--size", "96", "-o", str(narrow))
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    cols = lambda p: (np.asarray(Image.open(p)).sum(-1) > 0).any(0).sum()  # noqa: E731 (face width in px)
    assert cols(wide) > cols(narrow) + 3, (cols(wide), cols(narrow))
    bad = tmp_path / "bad.png"
    r = run("render", "--set", "face_width=4", "-o", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == "error: face_width = 4σ is outside its range ±3σ"
    assert not bad.exists()
