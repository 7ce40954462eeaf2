"""The editor window the Qt tests drive (offscreen): made, shown and settled the same way in every file."""
from __future__ import annotations

import pytest


def open_window(qtbot, face_model, size: int, drag_size: int):
    """A shown MainWindow over a fresh preview session, its first frame drawn. Close it when done."""
    from app.window import MainWindow
    from engine.editing.session import Session

    w = MainWindow(Session(model=face_model, generator=None), display_size=size, drag_size=drag_size)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.settled and w.last_frame is not None, timeout=20000)
    return w


def settle(qtbot, w):
    qtbot.waitUntil(lambda: w.settled, timeout=20000)


def window_fixture(size: int, drag_size: int):
    """The ``window`` fixture of a Qt test file: ``window = window_fixture(SIZE, DRAG)`` at module level."""

    @pytest.fixture
    def window(qtbot, face_model):
        w = open_window(qtbot, face_model, size, drag_size)
        yield w
        w.close()

    return window
