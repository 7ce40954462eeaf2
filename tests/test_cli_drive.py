"""``discoface drive`` is registered in the main command line: listed in --help, runs on a tiny generated clip,
bad input is one line and writes nothing. The clip is made here from 3DMM renders (no shared data is written)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.cli import COMMANDS, build_parser, main


def test_drive_is_listed_in_help(capsys):
    from engine.cli import drive as drive_cmd

    assert drive_cmd in COMMANDS
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "drive" in out.split("positional arguments")[1]
    args = build_parser().parse_args(["drive", "--video", "v.mp4", "--target", "p.jpg", "-o", "out.mp4",
                                      "--expression-only"])
    assert args.command == "drive" and args.expression_only and args.fn.__name__ == "cmd_drive"


def test_drive_needs_its_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["drive", "--video", "v.mp4"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "required" in err[0]


def test_bad_video_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "v.mp4"
    bad.write_bytes(b"not a video at all" * 20)
    out = tmp_path / "out.mp4"
    assert main(["drive", "--video", str(bad), "--target", str(tmp_path / "p.jpg"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, ict_path):
    """8 frames at 8 fps, 200×160: a 3DMM face whose jaw opens and whose head turns a little."""
    from engine.fit import renderer_for
    from engine.drive.video import write_video
    from engine.face.model import default_model
    from engine.render.shading import light_from_direction

    model = default_model()
    g = torch.Generator().manual_seed(2)
    c0 = model.zeros(1)
    c0.identity[:] = torch.randn(1, 100, generator=g) * 0.5
    c0.light[:] = light_from_direction(15, 20, 0.4, 0.8)
    frames = []
    for i in range(8):
        c = c0.clone()
        c.set_pose_degrees(8 * math.sin(i / 3), 0, 0)
        c.expr["jawOpen"] = 0.5 * i / 7
        with torch.no_grad():
            img = renderer_for(model)(c, 144, background=0.4).image[0].permute(1, 2, 0).numpy()
        f = np.full((160, 200, 3), 100, np.uint8)
        f[8:152, 28:172] = (img * 255).astype(np.uint8)
        frames.append(f)
    d = tmp_path_factory.mktemp("cli_drive")
    p = d / "tiny.mp4"
    write_video(frames, p, 8.0)
    return {"path": p, "model": model}


def test_drive_command_writes_the_video_and_track(tmp_path, tiny_clip, capsys):
    from engine.drive.video import probe_video
    from engine.editing.session import Session

    model = tiny_clip["model"]
    target = tmp_path / "target.json"
    s = Session(model=model, generator=None, seed=1)
    s.randomize("identity", seed=4)
    s.save(target)
    out, track = tmp_path / "out.mp4", tmp_path / "track.json"
    rc = main(["drive", "--video", str(tiny_clip["path"]), "--target", str(target), "-o", str(out),
               "--size", "64", "--track", str(track), "--no-audio"])
    assert rc == 0, capsys.readouterr().err
    info = probe_video(out)
    assert info.n_frames == 8 and info.size == (64, 64) and abs(info.fps - 8.0) < 1e-6
    driven = Session.load(track, model=model, generator=None)
    assert len(driven.keyframes) == 8
    jaw = [float(k.coeffs.expr["jawOpen"][0]) for k in driven.keyframes]
    assert jaw[-1] - jaw[0] > 0.15, jaw  # the video's jaw opening reached the target
    saved = Session.load(target, model=model, generator=None)
    assert torch.allclose(driven.keyframes[4].coeffs.identity, saved.coeffs.identity)  # its identity is kept
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
