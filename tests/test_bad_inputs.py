"""The bad-input photo corpus (tests/badinputs.py) through every way a photo comes in: ``discoface fit``,
``discoface embed`` and the editor's ``Session.open_photo``.

"ok" cases must give exit 0 and an output file (and a sensible fit: an upright face for the EXIF-rotated JPEG);
"error" cases must give exit 2 with exactly one ``error:`` line, no traceback, and nothing written (no output, no
temporary file left in the folder). The CLI is called in-process (``engine.cli.main``) for speed, and the 3DMM
fitter runs with fewer iterations than the shipped default (the plumbing and the input handling are what is
tested here; tests/test_fitting-style accuracy lives elsewhere).
"""
from __future__ import annotations

import functools
import json
import math

import pytest
import torch

from tests.badinputs import make_corpus
from engine import cli

OK_CASES = ["two_faces", "huge", "grayscale", "rgba", "cmyk", "exif_rotated"]
ERROR_CASES = ["not_a_face", "no_face", "tiny", "truncated", "text", "empty", "missing"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(ffhq_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    cases = make_corpus(folder, ffhq_dir / "images" / "00000.png", ffhq_dir / "images" / "00001.png")
    assert set(cases) == set(OK_CASES) | set(ERROR_CASES), "the corpus changed: update OK_CASES / ERROR_CASES"
    for name, (_, expected) in cases.items():
        assert expected == ("ok" if name in OK_CASES else "error"), name
    return cases


@pytest.fixture
def fast_fit(monkeypatch):
    import engine.fit as fitting

    monkeypatch.setattr(fitting, "fit_photo_crop", functools.partial(fitting.fit_photo_crop, steps=(40, 0),
                                                                     fit_size=64))


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory, face_model):
    """An assets folder holding a tiny randomly initialised generator (so embed gets past 'no weights')."""
    from engine.generator.networks import FaceGenerator, FactorDecoders, Generator, default_channels

    torch.manual_seed(0)
    G = Generator(32, face_model.albedo_dim, default_channels(32, 16, 8), w_dim=32, map_layers=2)
    folder = tmp_path_factory.mktemp("assets")
    FaceGenerator(FactorDecoders.prior(face_model.albedo_dim, face_model.exp_names), G).save(
        folder / "generator.safetensors")
    return folder


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_one_error_line(rc, err, name):
    assert rc == cli.EXIT_USER_ERROR, f"{name}: exit {rc}, stderr {err!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
    assert "Traceback" not in err
    assert len(lines[0]) > len("error: ") + 10, f"{name}: message too terse: {lines[0]!r}"


@pytest.mark.parametrize("name", OK_CASES)
def test_fit_ok_cases(name, corpus, fast_fit, tmp_path, capsys):
    path, _ = corpus[name]
    out = tmp_path / "out.json"
    rc, stdout, err = _run(["fit", path, "-o", out], capsys)
    assert rc == 0, f"{name}: {err}"
    assert "Traceback" not in err
    d = json.loads(out.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp files
    # the fit describes an upright face: EXIF orientation applied, the largest of two faces taken
    from engine.face.model import Coefficients, default_model

    c = Coefficients.from_json_dict(d, default_model().exp_names)
    yaw, pitch, roll = (math.degrees(float(v)) for v in c.pose[0])
    assert abs(roll) < 20 and abs(yaw) < 35, f"{name}: implausible pose yaw {yaw:.0f} roll {roll:.0f}"


@pytest.mark.parametrize("name", ERROR_CASES)
def test_fit_error_cases(name, corpus, fast_fit, tmp_path, capsys):
    path, _ = corpus[name]
    rc, _, err = _run(["fit", path, "-o", tmp_path / "out.json", "--overlay", tmp_path / "ov.png"], capsys)
    _assert_one_error_line(rc, err, name)
    assert list(tmp_path.iterdir()) == [], f"{name}: left {list(tmp_path.iterdir())}"


@pytest.mark.parametrize("name", ERROR_CASES)
def test_embed_error_cases(name, corpus, tiny_assets, monkeypatch, tmp_path, capsys):
    from engine import config

    monkeypatch.setattr(config, "ASSETS_DIR", tiny_assets)
    path, _ = corpus[name]
    rc, _, err = _run(["embed", path, "-o", tmp_path / "me.json", "--overlay", tmp_path / "grid.png",
                       "--paste-back", tmp_path / "pb.png", "--steps", "2"], capsys)
    _assert_one_error_line(rc, err, name)
    assert "generator" not in err.lower(), f"{name}: the photo problem must be reported, got {err!r}"
    assert list(tmp_path.iterdir()) == [], f"{name}: left {list(tmp_path.iterdir())}"


def test_embed_bad_output_paths(corpus, tiny_assets, monkeypatch, tmp_path, capsys):
    from engine import config

    monkeypatch.setattr(config, "ASSETS_DIR", tiny_assets)
    photo, _ = corpus["grayscale"]
    (tmp_path / "afile").write_text("x")
    for argv in (["-o", tmp_path / "me.txt"], ["-o", tmp_path / "me.json", "--paste-back", tmp_path / "pb.gif"],
                 ["-o", tmp_path / "afile" / "sub" / "me.json"], ["-o", tmp_path / "me.json", "--steps", "0"]):
        rc, _, err = _run(["embed", photo, *argv], capsys)
        _assert_one_error_line(rc, err, str(argv))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("target,reason", [("/sys/x.png", "permission denied"),
                                           ("{tmp}/afile/x.png", "not a folder"),
                                           ("{tmp}/folder.png", "folder")])
def test_render_unwritable_output_one_clean_line(target, reason, tmp_path, capsys, face_model):
    """No errno text, no hidden temporary name: ``error: cannot write PATH: reason``."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.png").mkdir()
    target = target.format(tmp=tmp_path)
    rc, _, err = _run(["render", "--size", "32", "-o", target], capsys)
    _assert_one_error_line(rc, err, target)
    line = err.strip()
    assert line.startswith("error: ") and reason in line and "Errno" not in line and ".part" not in line, line


def test_render_creates_missing_output_folders(tmp_path, capsys, face_model):
    rc, out, err = _run(["render", "--size", "32", "-o", tmp_path / "new" / "dir" / "face.png"], capsys)
    assert rc == 0, err
    assert (tmp_path / "new" / "dir" / "face.png").is_file()


@pytest.mark.parametrize("with_generator", [False, True], ids=["fit-path", "embed-path"])
def test_session_open_photo_error_cases(with_generator, corpus, face_model, tiny_assets):
    from engine.generator.networks import FaceGenerator
    from engine.editing.session import Session

    gen = FaceGenerator.load(tiny_assets / "generator.safetensors") if with_generator else None
    s = Session(model=face_model, generator=gen)
    before = s.coeffs.as_vector().clone()
    for name in ERROR_CASES:
        path, _ = corpus[name]
        with pytest.raises(ValueError) as ei:
            s.open_photo(path)
        msg = str(ei.value)
        assert msg.strip() and "\n" not in msg.strip(), f"{name}: {msg!r}"
        assert torch.equal(s.coeffs.as_vector(), before), f"{name}: the session changed"
        assert not s.can_undo
