"""Screenshot of the editor: ``python -m app.screenshot out.png [--random]`` (needs a real display, e.g. Xvfb: the
window is grabbed from the screen, as a user sees it).

By default the editor is in photo mode on the bundled astronaut portrait with a smile and a small turn (what
``make run`` opens on); ``--random`` shows a random face of the generator (or the 3DMM preview) instead. To look at
other states: ``--photo P`` (another photo), ``--tab pose|expression|light|identity|noise``, ``--zoom Z`` (image
zoom, 1 = 100 %), ``--before`` (hold Before), ``--full-range``, ``--turn DEG`` (the photo's yaw turn, default 12).

Prints one JSON line: the window size and the image / mesh panel rectangles in window pixels.
"""
from __future__ import annotations

import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m app.screenshot out.png", file=sys.stderr)
        return 2
    out = argv[0]
    random_face = "--random" in argv[1:]

    def opt(name, default=None):
        return argv[argv.index(name) + 1] if name in argv[1:-1] else default
    photo = opt("--photo")
    tab = opt("--tab", "expression")
    zoom = opt("--zoom")
    turn = float(opt("--turn", 12))
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["discoface-screenshot"])
    from engine.editing.session import Session

    from .window import MainWindow

    from .window import BUNDLED_PHOTO

    s = Session()
    if random_face:
        s.new_random_face(3)  # what "New random face" makes (its own expression and light, from the generator)
        s.set_controls({"yaw": 22, "pitch": 6, "smile": 0.7, "brows_up": 0.3})
        s.set_light(azimuth=25, elevation=10)  # the face's own intensity: the generator's lights are weak (≤ 0.2)
    else:
        s.open_photo(photo or BUNDLED_PHOTO)
        s.add_keyframe(0.0)
        s.set_controls({"yaw": turn, "smile": 0.6, "light_azimuth": 35}, relative=True)
    s.add_keyframe(2.0)
    w = MainWindow(s, display_size=256)
    w.resize(1180, 800)
    names = [w.tabs.tabText(i).lower() for i in range(w.tabs.count())]
    w.tabs.setCurrentIndex(names.index(tab) if tab in names else 1)
    w.search.setText("smile")
    if "--full-range" in argv[1:]:
        w.full_range_action.setChecked(True)
    w.lm_check.setChecked(True)
    w.timeline.refresh()
    w.show()
    t0 = time.time()
    while (w.last_frame is None or not w.settled) and time.time() - t0 < 60:
        app.processEvents()
        time.sleep(0.02)
    if zoom is not None:
        w.view.set_zoom(float(zoom))
    if "--before" in argv[1:]:
        w.view.show_before(True)
    t0 = time.time()
    while w.mesh.busy and time.time() - t0 < 30:  # the mesh panel's picture
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    geo = w.frameGeometry()
    shot = w.screen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    ok = shot.save(out)

    def rect(widget):
        p = widget.mapTo(w, widget.rect().topLeft())
        off = w.geometry().topLeft() - geo.topLeft()  # window frame (none without a window manager)
        return [p.x() + off.x(), p.y() + off.y(), widget.width(), widget.height()]
    info = {"saved": bool(ok), "width": shot.width(), "height": shot.height(), "window": [geo.width(), geo.height()],
            "image": rect(w.view), "mesh": rect(w.mesh), "mesh_gl": w.mesh.available, "mesh_reason": w.mesh.reason,
            "frame_ms": w.last_frame.ms if w.last_frame else None, "mode": s.mode_text}
    print(json.dumps(info))
    w.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
