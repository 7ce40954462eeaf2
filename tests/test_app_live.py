"""The editor stays live (issue 22): the mesh panel's per-frame work happens off the GUI thread and costs only
buffers; topology changes (full head ↔ face model) keep the right triangles; heavy steps run in jobs."""
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from tests.qtwindow import settle, window_fixture  # noqa: E402

from engine.editing.session import Session  # noqa: E402
from engine.io.mesh import VertexNormals, vertex_normals  # noqa: E402

SIZE = 96


window = window_fixture(SIZE, 48)


def test_vertex_normals_match_the_engines_torch_normals(face_model, head):
    c = face_model.zeros(1)
    c.expr["jawOpen"] = 0.7
    v = face_model.vertices(c)
    want = face_model.vertex_normals(v)[0].numpy()
    got = vertex_normals(v[0].numpy(), face_model.triangles.numpy())
    assert np.abs(got - want).max() < 1e-4
    hv = head.vertices(c)
    vn = VertexNormals(head.triangles.numpy(), hv.shape[1])
    assert np.abs(vn(hv[0].numpy()) - head.vertex_normals(hv)[0].numpy()).max() < 1e-4
    assert vn.matches(head.triangles.numpy(), hv.shape[1]) and not vn.matches(face_model.triangles.numpy(), 5)
    with pytest.raises(ValueError):
        vn(v[0].numpy())  # the face model's vertices with the head's topology


def test_a_frame_without_triangles_goes_back_to_the_face_models(qtbot, face_model, head):
    """Photo mode shows the full head; a later frame without triangles (generator view, new random face) is the face
    model's mesh: the head's triangles must not stay (they index vertices the face model lacks)."""
    from app.widgets import MeshPanel

    p = MeshPanel(face_model.triangles.numpy())
    qtbot.addWidget(p)
    p.show()
    c = face_model.zeros(1)
    p.set_mesh(head.vertices(c)[0].numpy(), None, head.triangles.numpy())
    assert p.triangles.shape == tuple(head.triangles.shape)
    p.set_mesh(face_model.vertices(c)[0].numpy(), None)
    assert p.triangles.shape == tuple(face_model.triangles.shape)
    assert p.triangles.max() < face_model.vertices(c).shape[1]


def test_mesh_work_runs_in_the_render_thread_and_the_panel_can_be_hidden(qtbot, window, monkeypatch):
    threads = []
    orig = VertexNormals.__call__

    def spy(self, v):
        threads.append(threading.current_thread().name)
        return orig(self, v)
    monkeypatch.setattr(VertexNormals, "__call__", spy)
    window.sliders["yaw"].set_user_value(20)
    settle(qtbot, window)
    qtbot.waitUntil(lambda: not window.mesh.busy, timeout=20000)
    # the normals: in the panel's drawing thread, for the pictures it draws (not the GUI's, not every render)
    assert threads and set(threads) == {"discoface-mesh"}, threads
    n = window.mesh.updates
    window.mesh_action.trigger()  # View → Mesh panel off
    assert not window.mesh_box.isVisible() and not window.mesh_visible
    # the image's own controls sit under the image: hiding the mesh panel keeps them
    assert window.before_btn.isVisible() and window.face_btn.isVisible() and window.smooth_check.isVisible()
    threads.clear()
    window.sliders["yaw"].set_user_value(-20)
    settle(qtbot, window)
    assert window.mesh.updates == n and threads == []  # hidden: no mesh work at all
    window.mesh_action.trigger()  # back on: the current frame's mesh is shown
    assert window.mesh_box.isVisible() and window.mesh.updates == n + 1


def test_save_frame_runs_off_the_gui_thread(qtbot, window, tmp_path, monkeypatch):
    seen = []
    orig = window.session.render_snapshot

    def spy(*a, **k):
        seen.append(threading.current_thread() is threading.main_thread())
        return orig(*a, **k)
    monkeypatch.setattr(window.session, "render_snapshot", spy)
    job = window.save_frame(tmp_path / "f.png")
    qtbot.waitUntil(lambda: not job.running, timeout=20000)
    assert (tmp_path / "f.png").is_file() and seen and not any(seen)
    assert window.save_frame(tmp_path / "f.txt") is None and "image files end in" in window.last_error


def test_start_up_job_loads_what_the_first_photo_needs(qtbot, window):
    from engine.perception import dlib_files

    qtbot.waitUntil(lambda: window.ready, timeout=60000)
    assert dlib_files._detector.cache_info().currsize == 1 and dlib_files._predictor.cache_info().currsize == 1


def test_an_opened_photo_is_kept_out_of_full_garbage_collections(qtbot, window):
    """After a photo opens, what is alive (its fit, layers, renderer) is frozen out of the cyclic collector's walk
    (app.worker.settle_heap): a full collection over it held Python's lock for 50-300 ms in the middle of a drag."""
    import gc

    qtbot.waitUntil(lambda: window.ready, timeout=60000)
    gc.unfreeze()  # what start-up froze: count only what the open freezes
    try:
        assert gc.get_freeze_count() == 0
        job = window.open_bundled_photo()
        qtbot.waitUntil(lambda: not job.running, timeout=60000)
        settle(qtbot, window)
        assert gc.get_freeze_count() > 10000
        assert not any(o is window.session for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()


def test_photo_playback_asks_for_smaller_frames(qtbot, window):
    from app.window import PLAY_MAX_SIDE

    job = window.open_bundled_photo()
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    settle(qtbot, window)
    assert window.before_btn.isEnabled() and window.view.has_before  # before/after: the photo as opened
    from PySide6.QtCore import Qt

    qtbot.keyPress(window, Qt.Key_Backslash)
    assert window.view.showing_before
    qtbot.keyRelease(window, Qt.Key_Backslash)
    assert not window.view.showing_before
    s = window.session
    s.add_keyframe(0.0)
    s.set_control("yaw", s.control_value("yaw") + 8)
    s.add_keyframe(1.0)
    window.after_state_change()
    window.timeline.play_btn.setChecked(True)
    qtbot.waitUntil(lambda: window.last_request is not None and not window.last_request.final, timeout=5000)
    assert window.last_request.size == PLAY_MAX_SIDE
    window.timeline.play_btn.setChecked(False)
    settle(qtbot, window)
    assert window.last_shown_request.final and window.last_shown_request.size is None


def test_drag_frames_update_the_mesh_panel_at_most_every_interval(qtbot, window, monkeypatch):
    import app.window as appwin

    monkeypatch.setattr(appwin, "MESH_MIN_INTERVAL_S", 10.0)  # a long interval: the throttle is plain to see
    window._mesh_shown_at = time.monotonic()
    n = window.mesh.updates
    slider = window.sliders["yaw"]
    slider.slider.setSliderDown(True)
    for v in (5, 10, 15, 20):
        slider.set_user_value(v)
        settle(qtbot, window)
    assert window.mesh.updates == n  # drag frames wait for the interval (the image is shown at once)
    assert window._mesh_timer.isActive()
    slider.slider.setSliderDown(False)  # the final frame: the panel at once, with the final mesh
    settle(qtbot, window)
    assert window.mesh.updates == n + 1 and not window._mesh_timer.isActive()
    last = window.last_frame
    assert np.allclose(window.mesh._last.positions, last.vertices)


def test_dlib_loads_before_the_window_is_shown(qtbot, face_model, monkeypatch):
    """dlib's loads hold the GIL for seconds: the editor's entry point does them before showing the window, not in
    the start-up job (where they froze the visible window)."""
    import app.main
    from engine.perception import dlib_files

    from engine.render import fast_raster

    calls, raster = [], []
    real = dlib_files.detector
    monkeypatch.setattr(dlib_files, "detector", lambda: calls.append(threading.current_thread()
                                                                     is threading.main_thread()) or real())
    real_warm = fast_raster.warm_up  # numba's import holds the GIL for ~0.3 s stretches: before showing too
    monkeypatch.setattr(fast_raster, "warm_up", lambda *a, **k: raster.append(
        threading.current_thread() is threading.main_thread()) or real_warm(*a, **k))
    monkeypatch.setattr(app.main, "Session", lambda: Session(model=face_model, generator=None))
    win = app.main.build(["--size", "64"], ask_restore=lambda o: False)
    qtbot.addWidget(win)
    assert calls and calls[0] is True and not win.isVisible()
    assert raster and raster[0] is True
    qtbot.waitUntil(lambda: win.ready, timeout=60000)
    win.guard.ask = lambda: "discard"
    win.close()


def test_mesh_panel_draws_in_its_own_thread_and_turns(qtbot, window, monkeypatch):
    """The panel's picture is drawn by its drawing thread (never the GUI thread, which only blits it); dragging in the
    panel turns the view; a mesh with new triangles re-frames it."""
    from engine.render import fast_raster

    seen = []
    orig = fast_raster.rasterize_forward

    def spy(*a, **k):
        seen.append(threading.current_thread().name)
        return orig(*a, **k)
    monkeypatch.setattr(fast_raster, "rasterize_forward", spy)
    panel = window.mesh
    qtbot.waitUntil(lambda: panel.draws > 0 and not panel.busy, timeout=20000)
    front = panel.array.copy()
    n = panel.draws
    from PySide6.QtCore import QPoint, Qt

    c = panel.rect().center()
    qtbot.mousePress(panel, Qt.LeftButton, pos=c)
    qtbot.mouseMove(panel, QPoint(c.x() + 120, c.y()))
    qtbot.mouseRelease(panel, Qt.LeftButton, pos=QPoint(c.x() + 120, c.y()))
    qtbot.waitUntil(lambda: panel.draws > n and not panel.busy, timeout=20000)
    assert abs(panel.camera.azimuth) > 30
    assert np.abs(panel.array.astype(int) - front.astype(int)).mean() > 3  # another side of the face
    assert "discoface-mesh" in seen and "MainThread" not in seen, seen
    panel.reset_view()
    qtbot.waitUntil(lambda: not panel.busy, timeout=20000)
    assert panel.camera.azimuth == 0


def test_a_light_edit_relights_the_mesh_panel(qtbot, window):
    """The window hands the session's light to the panel with each frame's mesh: the lit side follows the slider."""
    panel = window.mesh
    halves = {}
    for az in (-70, 70):
        window.sliders["light_azimuth"].set_user_value(az)
        settle(qtbot, window)
        qtbot.waitUntil(lambda: not panel.busy and panel.light["azimuth"] == pytest.approx(az, abs=0.5),
                        timeout=20000)
        a = panel.array.astype(float).mean(-1)
        face = a > a[1, 1] + 20
        cols = np.nonzero(face.any(0))[0]
        mid = (cols.min() + cols.max()) // 2
        halves[az] = (a[:, :mid][face[:, :mid]].mean(), a[:, mid:][face[:, mid:]].mean())
    (l1, r1), (l2, r2) = halves[-70], halves[70]
    assert l1 > r1 + 5 and r2 > l2 + 5, halves


def test_playback_moves_the_sliders_at_a_few_hertz_and_exactly_at_stop(qtbot, window, monkeypatch):
    """Syncing every slider costs the GUI thread ~4 ms: playing ticks move them at most every SYNC_PLAY_INTERVAL_S;
    a final time (stop, scrub release) always shows the face's values."""
    import app.window as appwin

    s = window.session
    s.add_keyframe(0.0)
    s.set_controls({"yaw": 30})
    s.add_keyframe(2.0)
    window.after_state_change()
    settle(qtbot, window)
    monkeypatch.setattr(appwin, "SYNC_PLAY_INTERVAL_S", 100.0)
    window._synced_at = 0.0
    window._on_time(0.0, False)  # first tick: synced
    assert window.sliders["yaw"].value() == pytest.approx(0, abs=0.1)
    window._on_time(1.0, False)  # a tick inside the interval: the frame is asked for, the sliders wait
    assert window.last_request.snapshot.coeffs.pose[0, 0] != 0 and window.sliders["yaw"].value() == pytest.approx(0, abs=0.1)
    window._on_time(2.0, True)  # stop: exact
    assert window.sliders["yaw"].value() == pytest.approx(30, abs=0.1)
    settle(qtbot, window)
