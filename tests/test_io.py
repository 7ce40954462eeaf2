"""engine.io.files: output permissions follow the umask, one-line output errors, in-flight temporaries removed by
SIGTERM / SIGINT; engine.runtime thread policy."""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engine.io import files
from engine.io.export import export_sequence
from engine.io.files import OutputError, atomic_folder, atomic_path, save_image, write_json_atomic
from engine import runtime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_current_umask_reads_without_changing(umask022):
    assert files.current_umask() == 0o022
    os.umask(0o027)
    assert files.current_umask() == 0o027
    assert files.file_mode() == 0o640 and files.folder_mode() == 0o750


def test_outputs_get_umask_modes(tmp_path, umask022):
    img = np.zeros((8, 8, 3), np.uint8)
    save_image(tmp_path / "a.png", img)
    write_json_atomic(tmp_path / "sub" / "b.json", {"x": 1})
    gif = export_sequence([img, img], tmp_path / "c.gif")
    frames = export_sequence([img, img], tmp_path / "frames")
    assert _mode(tmp_path / "a.png") == 0o644
    assert _mode(tmp_path / "sub" / "b.json") == 0o644
    assert _mode(tmp_path / "sub") == 0o755  # a created parent folder
    assert _mode(gif) == 0o644
    assert _mode(frames) == 0o755 and _mode(frames / "frame_0000.png") == 0o644


def test_outputs_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        frames = export_sequence([np.zeros((4, 4, 3), np.uint8)], tmp_path / "f")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.png") == 0o600 and _mode(frames) == 0o700


def test_missing_parent_folders_are_created(tmp_path):
    p = tmp_path / "x" / "y" / "face.png"
    save_image(p, np.zeros((4, 4, 3), np.uint8))
    assert p.is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_message(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError) as ei:
            save_image(ro / "x.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        ro.chmod(0o755)
    assert str(ei.value) == f"cannot write {ro / 'x.png'}: permission denied"


def test_output_error_messages_name_the_target_not_the_temporary(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError) as ei:  # a file where a folder should be
        save_image(tmp_path / "afile" / "x.png", np.zeros((4, 4, 3), np.uint8))
    msg = str(ei.value)
    assert msg == f"cannot write {tmp_path / 'afile' / 'x.png'}: {tmp_path / 'afile'} is a file, not a folder"
    assert "Errno" not in msg and ".part" not in msg and "\n" not in msg
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        save_image(tmp_path / "dir.png", np.zeros((4, 4, 3), np.uint8))
    # /proc refuses new files
    with pytest.raises(OutputError) as ei:
        save_image("/proc/x.png", np.zeros((4, 4, 3), np.uint8))
    assert str(ei.value).startswith("cannot write /proc/x.png: ") and "Errno" not in str(ei.value)
    with pytest.raises(OutputError) as ei:  # sysfs: no new files, even for root
        save_image("/sys/x.png", np.zeros((4, 4, 3), np.uint8))
    assert str(ei.value) == "cannot write /sys/x.png: permission denied"


def test_oserror_inside_the_block_becomes_output_error(tmp_path):
    with pytest.raises(OutputError) as ei:
        with atomic_path(tmp_path / "o.bin") as tmp:
            raise OSError(28, "No space left on device", str(tmp))
    assert str(ei.value) == f"cannot write {tmp_path / 'o.bin'}: no space left on the disk"
    assert list(tmp_path.iterdir()) == []


def test_temporaries_are_registered_while_in_flight(tmp_path):
    with atomic_path(tmp_path / "a.gif") as tmp:
        assert str(tmp) in files.inflight_temporaries()
        tmp.write_bytes(b"x")
    assert str(tmp) not in files.inflight_temporaries()
    with pytest.raises(OutputError):
        with atomic_folder(tmp_path / "frames") as d:
            (d / "frame_0000.png").write_bytes(b"x")
            assert str(d) in files.inflight_temporaries()
            assert files.cleanup_temporaries() == 1  # what a signal handler does mid-export
            assert not d.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]  # nothing half-made is left


SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from engine.runtime import setup_entry_point
    from engine.io.export import export_sequence
    if sys.argv[2] == "1":
        setup_entry_point("cli")
    def frames():
        for i in range(100000):
            yield np.full((32, 32, 3), i % 255, np.uint8)
            time.sleep(0.01)
    def progress(done, total):
        if done == 3:
            print("started", flush=True)
    export_sequence(frames(), sys.argv[1], fps=24, progress=progress)
""")


def _export_and_signal(tmp_path, name, sig, install=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / name), "1" if install else "0"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "started", p.stderr.read()
        time.sleep(0.2)
        p.send_signal(sig)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, sorted(x.name for x in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["clip.gif", "clip.mp4", "frames"])
def test_sigterm_during_export_leaves_nothing(tmp_path, name):
    rc, left = _export_and_signal(tmp_path, name, signal.SIGTERM)
    assert rc == -signal.SIGTERM  # ended by the signal, as without a handler
    assert left == []


def test_sigterm_without_the_handler_leaves_partials(tmp_path):
    """The failure the handler fixes (so the test above can fail)."""
    rc, left = _export_and_signal(tmp_path, "clip.gif", signal.SIGTERM, install=False)
    assert rc == -signal.SIGTERM and len(left) == 1 and left[0].endswith(".part.gif")


def test_sigint_during_export_leaves_nothing(tmp_path):
    rc, left = _export_and_signal(tmp_path, "frames", signal.SIGINT)
    assert rc != 0 and left == []


# -------------------------------------------------------------------------------------------- #
# thread policy
# -------------------------------------------------------------------------------------------- #
def test_thread_policy(monkeypatch):
    monkeypatch.delenv(runtime.ENV, raising=False)
    assert runtime.threads_for("interactive", cores=2) == 1
    assert runtime.threads_for("background", cores=2) == 1
    assert runtime.threads_for("interactive", cores=16) == 4
    assert runtime.threads_for("batch", cores=2, load=0.0) == 2  # an idle machine: every core
    assert runtime.threads_for("batch", cores=2, load=1.2) == 1  # one core busy elsewhere
    assert runtime.threads_for("batch", cores=2, load=7.0) == 1
    assert runtime.threads_for("batch", cores=8, load=2.0) == 6
    monkeypatch.setenv(runtime.ENV, "3")
    assert runtime.threads_for("batch", cores=2, load=7.0) == 3
    monkeypatch.setenv(runtime.ENV, "lots")
    with pytest.raises(ValueError, match="DISCOFACE_THREADS"):
        runtime.threads_for("batch")
    with pytest.raises(ValueError):
        runtime.threads_for("render")


def test_entry_point_sets_torch_threads():
    code = ("import torch; from engine.runtime import setup_entry_point; "
            "n = setup_entry_point('app'); print(n, torch.get_num_threads())")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OMP_NUM_THREADS", None)
    env.pop(runtime.ENV, None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120).stdout.split()
    want = runtime.threads_for("interactive")
    assert out == [str(want), str(want)]


def test_png_bytes_decode_to_the_same_pixels_for_every_8_bit_layout(tmp_path):
    """save_image's own PNG writer (Up filter, zlib RLE in two halves deflated at once, one zlib stream): grey,
    grey + alpha, RGB and RGBA, a one-row and a one-column image, read back by PIL and OpenCV pixel for pixel; the
    file no larger than PIL's at the level save_image used (1) on a photo-like image; other dtypes left to PIL."""
    import io

    import cv2
    import numpy as np
    from PIL import Image

    from engine.io.files import PNG_COMPRESS_LEVEL, png_bytes, save_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:700, 0:530]
    smooth = np.stack([(xx * 0.3 + yy * 0.1) % 256, (yy * 0.4) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    photo = np.clip(smooth + rng.integers(0, 6, smooth.shape), 0, 255).astype(np.uint8)  # big: two halves
    alpha = (xx % 256).astype(np.uint8)
    for a in (photo, photo[..., 0], np.dstack([photo[..., 0], alpha]), np.dstack([photo, alpha]), photo[:1],
              photo[:, :1], rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)):
        data = png_bytes(a)
        assert data is not None and data.startswith(b"\x89PNG")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), a), a.shape
    out = tmp_path / "photo.png"
    save_image(out, photo)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back[..., ::-1], photo)
    pil = io.BytesIO()
    Image.fromarray(photo).save(pil, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    assert out.stat().st_size <= pil.tell()
    assert png_bytes(photo.astype(np.uint16)) is None and png_bytes(np.zeros((4, 4, 5), np.uint8)) is None
