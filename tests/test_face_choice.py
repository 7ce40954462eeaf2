"""Several faces in a photo (issue 22): the engine lists them (confident, large ones, left to right), the fit takes
the one asked for, the CLI takes --face N and lists them when ambiguous, the editor asks with clickable boxes."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.perception.align import face_choices, load_image
from engine.photo.fit import fit_photo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_faces(ffhq_dir, tmp_path_factory):
    """Two ffhq faces side by side (512 × 256)."""
    a = load_image(ffhq_dir / "images" / "00000.png")
    b = load_image(ffhq_dir / "images" / "00001.png")
    path = tmp_path_factory.mktemp("two") / "two.png"
    Image.fromarray(np.concatenate([a, b], 1)).save(path)
    return path


def centre_x(fit):
    return float(np.asarray(fit.alignment.landmarks_photo)[:, 0].mean())


def test_face_choices_lists_real_faces_left_to_right(two_faces):
    img = load_image(two_faces)
    ch = face_choices(img)
    assert len(ch) == 2 and ch[0][1][2] <= 256 <= ch[1][1][0] + 1  # left face, then right face
    assert face_choices(load_image(REPO / "assets" / "astronaut.jpg")) == []  # the mission patch is no face


def test_fit_photo_fits_the_face_asked_for(two_faces):
    ch = face_choices(load_image(two_faces))
    left = fit_photo(str(two_faces), face=ch[0][0])
    right = fit_photo(str(two_faces), face=ch[1][0])
    assert centre_x(left) < 256 < centre_x(right)
    from engine.perception.align import AlignError

    with pytest.raises(AlignError, match="no face number 5"):
        fit_photo(str(two_faces), face=4)


def test_cli_face_option(two_faces, tmp_path, capsys):
    from engine import cli

    out = tmp_path / "o.png"
    assert cli.main(["edit", str(two_faces), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 faces in two.png" in err and "--face N" in err and "(edited)" in err
    out.unlink()
    assert cli.main(["edit", str(two_faces), "-o", str(tmp_path / "s.json"), "--face", "2"]) == 0
    fit = json.loads((tmp_path / "s.json").read_text())
    assert "2 faces" not in capsys.readouterr().err  # chosen: no note
    assert fit  # the session file was written
    assert cli.main(["edit", str(two_faces), "-o", str(out), "--face", "3"]) == 2
    err = capsys.readouterr().err
    assert "--face 3" in err and "has 2 faces" in err and "Traceback" not in err and not out.exists()


def test_editor_asks_which_face(qtbot, face_model, two_faces):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QPoint, Qt

    from app.window import MainWindow
    from engine.editing.session import Session

    w = MainWindow(Session(model=face_model, generator=None), display_size=96, drag_size=48)
    qtbot.addWidget(w)
    w.show()
    job = w.open_photo(two_faces)
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    assert w.face_choice is not None and len(w.view.choices) == 2
    assert w.session.photo is None  # nothing opened yet
    qtbot.keyClick(w, Qt.Key_Escape)  # Esc: no face, the chooser ends
    assert w.face_choice is None and w.view.choices == [] and w.session.photo is None
    job = w.open_photo(two_faces)
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    assert w.face_choice is not None
    x0, y0, x1, y1 = w.view.choices[1]
    r = w.view.target_rect()
    k = r.width() / w.view.full_size[0]
    qtbot.mouseClick(w.view, Qt.LeftButton,
                     pos=QPoint(int(r.x() + (x0 + x1) / 2 * k), int(r.y() + (y0 + y1) / 2 * k)))
    qtbot.waitUntil(lambda: w.session.photo is not None and w.settled, timeout=60000)
    assert centre_x(w.session.photo.fit) > 256 and w.face_choice is None and w.view.choices == []
    w.guard = None
    w.close()
