"""Drive defects of issue 22, each with a test that failed on the old code: outputs got mode 0600; an output that
cannot be written was found only after the tracking; a text file named .jpg was called "a still image"; tracking
progress counted to twice the frames; an odd frame size was reported unpadded ("1145x1145" for a 1146x1146 MP4)."""
import os
import stat

import pytest


from engine.cli import main
from engine.drive import drive
from engine.editing.session import Session
from test_cli_drive import tiny_clip  # noqa: F401  (8 frames, 200×160)


@pytest.fixture
def target(tmp_path, tiny_clip):  # noqa: F811
    path = tmp_path / "target.json"
    s = Session(model=tiny_clip["model"], generator=None, seed=1)
    s.randomize("identity", seed=4)
    s.save(path)
    return path


def test_outputs_get_the_usual_mode_and_an_odd_size_says_it_was_padded(tmp_path, tiny_clip, target):  # noqa: F811
    old = os.umask(0o022)
    try:
        seen = {}
        res = drive(tiny_clip["path"], str(target), tmp_path / "out.mp4", size=65, side_by_side=True,
                    track_path=tmp_path / "track.json", keep_audio=False,
                    progress=lambda stage, d, t: seen.setdefault(stage, []).append((d, t)))
    finally:
        os.umask(old)
    for p in (res.output, res.side_by_side, res.track_file):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, (p.name, oct(p.stat().st_mode))
    text = res.summary()
    assert "66x66" in text and "65x65" in text and "padded" in text
    from engine.drive.video import probe_video

    assert probe_video(res.output).size == (66, 66)
    # tracking progress in frames: each stage counts to the video's 8 frames, not 16
    assert max(d for d, _ in seen["tracking"]) == 8 and {t for _, t in seen["tracking"]} == {8}
    assert max(d for d, _ in seen["fitting"]) == 8 and max(d for d, _ in seen["rendering"]) == 8


def test_an_output_that_cannot_be_written_fails_before_tracking(tmp_path, tiny_clip, target, monkeypatch):  # noqa: F811
    import engine.drive.pipeline as pipeline

    calls = []
    monkeypatch.setattr(pipeline, "track_video", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(
        AssertionError("tracked before checking the output")))
    blocked = tmp_path / "out.mp4"
    blocked.mkdir()  # a folder where the video should go
    with pytest.raises(ValueError) as e:
        drive(tiny_clip["path"], str(target), blocked, keep_audio=False)
    assert calls == [] and "out.mp4" in str(e.value) and ".part" not in str(e.value)
    assert "folder" in str(e.value)


def test_a_text_file_named_jpg_is_not_called_a_still_image(tmp_path, capsys):
    fake = tmp_path / "clip.jpg"
    fake.write_text("this is not a picture\n" * 20)
    assert main(["drive", "--video", str(fake), "--target", str(tmp_path / "p.json"), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "still image" not in err and "not a video" in err
    from PIL import Image

    real = tmp_path / "real.jpg"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(real)
    assert main(["drive", "--video", str(real), "--target", str(tmp_path / "p.json"), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    assert "still image" in capsys.readouterr().err
