"""Generator mode's light sliders span the lights the generator was trained on (its light decoder's 1-99 %), not
the photo relighting's 0-1.5: the shipped generator learned key strengths of about 0.02-0.2, and a key light of 0.45
or more washes its faces out (bench/generator_ui.py). Photo mode and the 3DMM preview keep the relighting range."""
from __future__ import annotations

import math

import pytest
import torch

from engine.editing import factors
from engine.editing.session import Session
from engine.render.shading import direction_from_light
from tests.qtwindow import settle


@pytest.fixture(scope="module")
def shipped(face_model):
    s = Session(model=face_model)  # the shipped generator (assets/generator.safetensors)
    if s.generator is None:
        pytest.skip("no shipped generator")
    return s.generator


def test_the_ranges_are_the_decoders_own_lights(shipped):
    r = factors.generator_light_ranges(shipped)
    net = shipped.decoders.nets["light"]
    with torch.no_grad():
        z = torch.randn(2000, net.skip.in_features, generator=torch.Generator().manual_seed(11))
        lights = net(z)
    key = torch.tensor([direction_from_light(lights[i:i + 1])["intensity"] for i in range(len(lights))])
    inside = ((key >= r["intensity"][0]) & (key <= r["intensity"][1])).float().mean()
    assert 0.96 <= float(inside) <= 1.0  # ~98 % of fresh draws (1-99 %), none of the relighting's 0.45
    assert 0.0 <= r["intensity"][0] < r["intensity"][1] < 0.45
    assert factors.generator_light_ranges(None) is None


def test_generator_mode_sliders_and_warnings_follow_the_generators_lights(face_model, shipped):
    s = Session(model=face_model, generator=shipped)
    lo, hi = s.believable_range("light_intensity")
    assert lo <= s.control_value("light_intensity") <= hi  # the start light is one it learned
    assert s.control_range("light_intensity") == (0.0, math.ceil(10 * hi) / 10) and hi < 0.45
    assert s.control_range("light_intensity", full=True) == (0.0, 1.5)
    assert s.control_warning("light_intensity") is None
    s.set_controls({"light_intensity": 0.9})
    assert "trained lights" in s.control_warning("light_intensity")
    preview = Session(model=face_model, generator=None)  # the 3DMM preview relights anything
    assert preview.believable_range("light_intensity") is None
    assert preview.control_range("light_intensity") == (0.0, 1.5)
    assert preview.control_warning("light_intensity") is None


def test_the_window_switches_the_light_range_with_the_mode(qtbot, face_model, shipped):
    from app.window import MainWindow

    w = MainWindow(Session(model=face_model, generator=shipped), display_size=128, drag_size=64)
    qtbot.addWidget(w)
    w.show()
    settle(qtbot, w)
    key = w.sliders["light_intensity"]
    gen_hi = w.session.control_range("light_intensity")[1]
    assert (key.lo, key.hi) == (0.0, gen_hi) and gen_hi < 1.0
    job = w.open_bundled_photo()  # photo mode: relighting's whole range
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    settle(qtbot, w)
    assert w.last_error is None and w.session.photo is not None
    assert (key.lo, key.hi) == (0.0, 1.5)
    w.start_random_btn.click()  # back to a generated face
    settle(qtbot, w)
    assert w.session.photo is None and (key.lo, key.hi) == (0.0, gen_hi)
    w.close()


def test_generate_warns_for_a_light_beyond_the_generators_own(tmp_path, capsys, shipped):
    """``discoface generate`` says what the editor's status bar says: a key light the generator never learned."""
    from engine.cli import main

    assert main(["generate", "--seed", "2", "--set", "light_intensity=0.9", "-o", str(tmp_path / "a.png")]) == 0
    assert "beyond the generator's trained lights" in capsys.readouterr().err
    assert main(["generate", "--seed", "2", "--set", "light_intensity=0.1", "-o", str(tmp_path / "b.png")]) == 0
    assert "trained lights" not in capsys.readouterr().err
