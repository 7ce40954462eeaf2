"""engine.io.export: PNG / GIF / MP4 frame counts, atomic outputs, cancel, bad values (no Qt)."""
import threading

import imageio.v2 as imageio
import numpy as np
import pytest

from engine.io.export import ExportCancelled, ExportError, export_sequence
from engine.editing.session import Session


def frames(n=7, h=30, w=38):
    out = []
    for i in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[..., 0] = (20 * i) % 256
        a[: h // 2, :, 1] = 200
        out.append(a)
    return out


def test_png_sequence(tmp_path):
    seen = []
    out = export_sequence(frames(7), tmp_path / "seq", fps=10, progress=lambda d, t: seen.append((d, t)))
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:04d}.png" for i in range(7)]
    assert seen[-1] == (7, 7) and len(seen) == 7
    back = imageio.imread(out / "frame_0003.png")
    assert np.array_equal(back, frames(7)[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # no temp folder left


def test_gif_frame_count(tmp_path):
    p = export_sequence(frames(9), tmp_path / "a.gif", fps=12)
    back = imageio.mimread(p)
    assert len(back) == 9 and back[0].shape[:2] == (30, 38)


def test_mp4_frame_count_and_even_size(tmp_path):
    p = export_sequence(frames(11, h=31, w=37), tmp_path / "a.mp4", fps=24)
    r = imageio.get_reader(p, format="FFMPEG")
    try:
        assert r.count_frames() == 11
        meta = r.get_meta_data()
        assert tuple(meta["size"]) == (38, 32)  # padded to even width, height
    finally:
        r.close()


@pytest.mark.parametrize("name", ["c.mp4", "c.gif", "cseq"])
def test_cancel_midway_leaves_nothing(tmp_path, name):
    ev = threading.Event()

    def progress(done, total):
        if done == 3:
            ev.set()
    with pytest.raises(ExportCancelled):
        export_sequence(frames(10), tmp_path / name, progress=progress, cancel=ev)
    assert list(tmp_path.iterdir()) == []


def test_error_midway_leaves_nothing(tmp_path):
    def gen():
        yield from frames(3)
        yield np.zeros((5, 5, 3), np.uint8)  # wrong size
    with pytest.raises(ExportError, match="size"):
        export_sequence(gen(), tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_bad_values(tmp_path):
    with pytest.raises(ExportError):
        export_sequence(frames(2), tmp_path / "x.avi")
    with pytest.raises(ExportError):
        export_sequence(frames(2), tmp_path / "x.gif", fps=0)
    with pytest.raises(ExportError):
        export_sequence([], tmp_path / "x.gif")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="other files"):
        export_sequence(frames(2), tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_missing_folders_are_created(tmp_path):
    p = export_sequence(frames(2), tmp_path / "new" / "deeper" / "x.gif")
    assert len(imageio.mimread(p)) == 2
    q = export_sequence(frames(2), tmp_path / "new2" / "seq")
    assert len(list(q.iterdir())) == 2


@pytest.mark.parametrize("name,fmt", [("clip.mp4", "gif"), ("clip.gif", "mp4"), ("clip.gif", "png"),
                                      ("clip.mp4", "png"), ("clip", "gif"), ("clip.png", "mp4")])
def test_format_and_extension_must_agree(tmp_path, name, fmt):
    with pytest.raises(ExportError, match="format"):
        export_sequence(frames(2), tmp_path / name, fmt=fmt)
    assert list(tmp_path.iterdir()) == []


def test_explicit_format_matching_the_name(tmp_path):
    p = export_sequence(frames(3), tmp_path / "clip.mp4", fmt="mp4")
    assert p.read_bytes()[4:8] == b"ftyp"  # an MP4 container, not GIF bytes
    g = export_sequence(frames(3), tmp_path / "clip.gif", fmt="gif")
    assert g.read_bytes()[:3] == b"GIF"


def test_session_export_and_cli_half(face_model, tmp_path, capsys):
    from engine.cli import main

    s = Session(model=face_model, generator=None)
    with pytest.raises(ExportError, match="keyframes"):
        export_sequence(s, tmp_path / "none.gif")
    s.add_keyframe(0.0)
    s.set_pose_degrees(yaw=30)
    s.add_keyframe(0.5)
    p = export_sequence(s, tmp_path / "s.gif", fps=10, size=48)  # default count: 0.5 s * 10 fps + 1
    back = imageio.mimread(p)
    assert len(back) == 6 and back[0].shape[:2] == (48, 48)
    assert not np.array_equal(back[0], back[-1])
    s.save(tmp_path / "s.json")
    assert main(["export", str(tmp_path / "s.json"), "--to", str(tmp_path / "frames"), "--fps", "8", "--frames", "4",
                 "--size", "32"]) == 0
    assert len(list((tmp_path / "frames").iterdir())) == 4
    # re-exporting into a previous frame folder replaces it
    assert main(["export", str(tmp_path / "s.json"), "--to", str(tmp_path / "frames"), "--fps", "8", "--frames", "2",
                 "--size", "32"]) == 0
    assert len(list((tmp_path / "frames").iterdir())) == 2
