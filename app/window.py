"""The DiscoFace studio main window: a thin Qt shell over ``engine.editing.session.Session``."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (QCheckBox, QColorDialog, QFileDialog, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QMainWindow, QMessageBox, QProgressDialog, QPushButton, QScrollArea, QSpinBox,
                               QSplitter, QTabWidget, QVBoxLayout, QWidget)

from engine.editing.session import POSE_RANGE_DEG, Session, SessionCancelled, SessionError

from .dialogs import ExportDialog, Timeline
from .widgets import FloatSlider, ImageView, MeshPanel
from .worker import Job, RenderRequest, RenderThread

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
N_ID_SLIDERS = 8


def _factor_buttons(window, factor: str, randomise: bool = True) -> QHBoxLayout:
    row = QHBoxLayout()
    if randomise:
        b = QPushButton("Randomise")
        b.setToolTip(f"new random {factor}")
        b.clicked.connect(lambda: window.randomize(factor))
        row.addWidget(b)
    r = QPushButton("Reset")
    r.setToolTip(f"neutral {factor}")
    r.clicked.connect(lambda: window.reset(factor))
    row.addWidget(r)
    row.addStretch(1)
    return row


class MainWindow(QMainWindow):
    frameShown = Signal()

    def __init__(self, session: Session | None = None, display_size: int | None = None, drag_size: int = 128):
        super().__init__()
        self.session = session if session is not None else Session()
        self.display_size = int(display_size or self.session.native_size)
        self.drag_size = min(int(drag_size), self.display_size)
        self.last_frame = None
        self.last_request = None
        self.last_shown_request = None
        self.last_error: str | None = None
        self.frames_shown = 0
        self._serial = 0
        self._job: Job | None = None
        self._messages: list[QMessageBox] = []
        self.setWindowTitle("DiscoFace studio")
        self.setAcceptDrops(True)

        self.render_thread = RenderThread(self.session)
        self.worker = self.render_thread.worker
        self.worker.frameReady.connect(self._on_frame)
        self.worker.failed.connect(self._on_render_failed)

        self.view = ImageView()
        self.mesh = MeshPanel(self.session.model.triangles.numpy())
        left = QSplitter(Qt.Vertical)
        left.addWidget(self.view)
        mesh_box = QWidget()
        mb = QVBoxLayout(mesh_box)
        mb.setContentsMargins(0, 0, 0, 0)
        mb.addWidget(self.mesh, 1)
        opts = QHBoxLayout()
        self.lm_check = QCheckBox("Landmarks")
        self.lm_check.toggled.connect(self.mesh.set_landmarks_visible)
        self.smooth_check = QCheckBox("Smooth scaling")
        self.smooth_check.toggled.connect(self.view.set_smooth)
        opts.addWidget(self.lm_check)
        opts.addWidget(self.smooth_check)
        opts.addStretch(1)
        mb.addLayout(opts)
        left.addWidget(mesh_box)
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 1)
        left.setSizes([440, 300])

        self.sliders: dict[str, FloatSlider] = {}
        self.tabs = QTabWidget()
        self.tabs.addTab(self._scroll(self._pose_panel()), "Pose")
        self.tabs.addTab(self._expression_panel(), "Expression")
        self.tabs.addTab(self._scroll(self._light_panel()), "Light")
        self.tabs.addTab(self._scroll(self._identity_panel()), "Identity")
        self.tabs.addTab(self._scroll(self._noise_panel()), "Noise")
        self.tabs.setMinimumWidth(380)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.timeline = Timeline(self.session)
        self.timeline.timeChanged.connect(self._on_time)
        self.timeline.keyframesChanged.connect(self._update_actions)  # a keyframe edit is undoable
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(4, 4, 4, 4)
        cl.addWidget(split, 1)
        cl.addWidget(self.timeline)
        self.setCentralWidget(central)

        self.status_frame = QLabel("")
        self.status_mode = QLabel(self.session.mode_text)
        self.statusBar().addWidget(self.status_frame, 1)
        self.statusBar().addPermanentWidget(self.status_mode)
        self._menus()
        self.sync_controls()
        self.resize(1180, 800)
        self.request_render(final=True)

    # ------------------------------------------------------------------------------------------ #
    # layout
    # ------------------------------------------------------------------------------------------ #
    @staticmethod
    def _scroll(w: QWidget) -> QScrollArea:
        sa = QScrollArea()
        sa.setWidgetResizable(True)
        sa.setWidget(w)
        return sa

    def _slider(self, key: str, *args, on_change, **kw) -> FloatSlider:
        s = FloatSlider(key, *args, **kw)
        s.changed.connect(on_change)
        self.sliders[key] = s
        return s

    def _pose_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        for axis in ("yaw", "pitch", "roll"):
            lim = POSE_RANGE_DEG[axis]
            lay.addWidget(self._slider(axis, -lim, lim, unit="°", decimals=1, steps=int(lim * 20),
                                       label=axis.capitalize(),
                                       on_change=lambda v, final, a=axis: self.edit(
                                           lambda c: self.session.set_pose_degrees(**{a: v}, commit=c), final)))
        lay.addLayout(_factor_buttons(self, "pose"))
        lay.addStretch(1)
        return w

    def _expression_panel(self) -> QWidget:
        outer = QWidget()
        ol = QVBoxLayout(outer)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter expressions (e.g. smile, jaw, _L)")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("expression filter")
        self.search.textChanged.connect(self.filter_expressions)
        ol.addWidget(self.search)
        inner = QWidget()
        il = QVBoxLayout(inner)
        self.expr_groups: dict[str, QGroupBox] = {}
        for group, names in self.session.model.expression_groups().items():
            box = QGroupBox(group.capitalize())
            bl = QVBoxLayout(box)
            for n in names:
                bl.addWidget(self._slider(n, 0.0, 1.0, decimals=2, steps=100,
                                          on_change=lambda v, final, name=n: self.edit(
                                              lambda c: self.session.set_expression(name, v, commit=c), final)))
            self.expr_groups[group] = box
            il.addWidget(box)
        il.addStretch(1)
        ol.addWidget(self._scroll(inner), 1)
        ol.addLayout(_factor_buttons(self, "expression"))
        return outer

    def _light_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        specs = [("azimuth", -180, 180, "°", 1, "Azimuth"), ("elevation", -90, 90, "°", 1, "Elevation"),
                 ("intensity", 0.0, 1.5, "", 2, "Intensity"), ("ambient", 0.0, 1.5, "", 2, "Ambient")]
        for key, lo, hi, unit, dec, label in specs:
            steps = int(round((hi - lo) * 2)) if unit == "°" else 600  # 0.5° per step for the angles
            lay.addWidget(self._slider(f"light_{key}", lo, hi, unit=unit, decimals=dec, steps=steps, label=label,
                                       on_change=lambda v, final, k=key: self.edit(
                                           lambda c: self.session.set_light(**{k: v}, commit=c), final)))
        self.color_btn = QPushButton("Colour…")
        self.color_btn.setToolTip("light colour")
        self.color_btn.clicked.connect(self._pick_color)
        lay.addWidget(self.color_btn)
        lay.addLayout(_factor_buttons(self, "light"))
        lay.addStretch(1)
        return w

    def _identity_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        row = QHBoxLayout()
        row.addWidget(QLabel("Seed"))
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.seed_box.setAccessibleName("identity seed")
        self.seed_box.editingFinished.connect(lambda: self._apply_seed(self.seed_box.value()))
        row.addWidget(self.seed_box, 1)
        rnd = QPushButton("Randomise")
        rnd.setToolTip("next seed: a new identity")
        rnd.clicked.connect(lambda: self._apply_seed(self.session.seed + 1))
        row.addWidget(rnd)
        lay.addLayout(row)
        for k in range(N_ID_SLIDERS):
            lay.addWidget(self._slider(f"id{k}", -3.0, 3.0, decimals=2, steps=600, label=f"Component {k + 1}",
                                       on_change=lambda v, final, i=k: self.edit(
                                           lambda c: self.session.set_identity_component(i, v, commit=c), final)))
        lay.addLayout(_factor_buttons(self, "identity", randomise=False))
        lay.addStretch(1)
        return w

    def _noise_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addWidget(QLabel("Noise: hair, background and everything the 3D model does not describe"
                             + ("" if self.session.generator else " (only visible with generator weights)") + "."))
        lay.itemAt(0).widget().setWordWrap(True)
        b = QPushButton("Reseed")
        b.clicked.connect(lambda: self.randomize("noise"))
        lay.addWidget(b)
        lay.addLayout(_factor_buttons(self, "noise", randomise=False))
        lay.addStretch(1)
        return w

    def _menus(self) -> None:
        fm = self.menuBar().addMenu("&File")

        def act(menu, text, fn, keys=None):
            a = QAction(text, self)
            if keys:
                a.setShortcuts([QKeySequence(k) for k in keys])
            a.triggered.connect(fn)
            menu.addAction(a)
            return a
        act(fm, "Open &photo…", self.open_photo_dialog, ["Ctrl+O"])
        act(fm, "Open &session…", self.load_session_dialog, ["Ctrl+Shift+O"])
        act(fm, "&Save session…", self.save_session_dialog, ["Ctrl+S"])
        fm.addSeparator()
        act(fm, "&Export animation…", self.export_dialog, ["Ctrl+E"])
        fm.addSeparator()
        act(fm, "&Quit", self.close, ["Ctrl+Q"])
        em = self.menuBar().addMenu("&Edit")
        self.undo_action = act(em, "&Undo", self.undo, ["Ctrl+Z"])
        self.redo_action = act(em, "&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        em.addSeparator()
        act(em, "Reset &all", lambda: self.reset(None))
        tm = self.menuBar().addMenu("&Timeline")
        act(tm, "&Add keyframe", self.timeline.add_keyframe, ["Ctrl+K"])
        act(tm, "&Remove keyframe", self.timeline.remove_selected)
        act(tm, "&Play / stop", lambda: self.timeline.play_btn.toggle(), ["Ctrl+P"])

    # ------------------------------------------------------------------------------------------ #
    # edits
    # ------------------------------------------------------------------------------------------ #
    def edit(self, fn, final: bool) -> None:
        """Apply an edit (``fn(commit)``); request a small frame while dragging, the full one on release."""
        try:
            fn(final)
        except SessionError as exc:
            self.show_error("Edit", str(exc))
            self.sync_controls()
            return
        self._update_actions()
        self.request_render(final=final)

    def randomize(self, factor: str) -> None:
        self.session.randomize(factor)
        self.after_state_change()

    def reset(self, factor) -> None:
        self.session.reset(factor)
        self.after_state_change()

    def _apply_seed(self, seed: int) -> None:
        if seed == self.session.seed and self.session.coeffs.identity.abs().sum() > 0:
            return
        self.session.set_seed(seed)
        self.after_state_change()

    def _pick_color(self) -> None:
        col = self.session.light_params()["color"]
        m = max(col + [1.0])
        c = QColorDialog.getColor(QColor.fromRgbF(*(min(1.0, x / m) for x in col)), self, "Light colour")
        if c.isValid():
            self.edit(lambda commit: self.session.set_light(color=(c.redF(), c.greenF(), c.blueF()), commit=commit),
                      True)

    def undo(self) -> None:
        if self.session.undo():
            self.after_state_change()

    def redo(self) -> None:
        if self.session.redo():
            self.after_state_change()

    def after_state_change(self) -> None:
        self.timeline.refresh()  # undo/redo may have added or removed keyframes
        self.sync_controls()
        self.request_render(final=True)

    def _update_actions(self) -> None:
        self.undo_action.setEnabled(self.session.can_undo)
        self.redo_action.setEnabled(self.session.can_redo)

    def sync_controls(self) -> None:
        """Show the session's values on every control (no edits are emitted)."""
        s = self.session
        for k, v in s.pose_degrees().items():
            self.sliders[k].set_value(v)
        for n, v in s.coeffs.expr.items():
            self.sliders[n].set_value(v)
        lp = s.light_params()
        for k in ("azimuth", "elevation", "intensity", "ambient"):
            self.sliders[f"light_{k}"].set_value(lp[k])
        for k in range(N_ID_SLIDERS):
            self.sliders[f"id{k}"].set_value(float(s.coeffs.identity[0, k]))
        self.seed_box.blockSignals(True)
        self.seed_box.setValue(min(s.seed, 2**31 - 1))
        self.seed_box.blockSignals(False)
        self._update_actions()

    def filter_expressions(self, text: str) -> None:
        t = text.strip().lower()
        for group, box in self.expr_groups.items():
            any_shown = False
            for n in self.session.model.expression_groups()[group]:
                show = not t or t in n.lower() or t in group
                self.sliders[n].setHidden(not show)
                any_shown |= show
            box.setHidden(not any_shown)

    # ------------------------------------------------------------------------------------------ #
    # rendering
    # ------------------------------------------------------------------------------------------ #
    def request_render(self, final: bool = True) -> None:
        s = self.session
        self._serial += 1
        # while dragging, a smaller 3DMM frame is cheaper; the generator renders at its own resolution anyway
        size = self.display_size if final or s.generator is not None else self.drag_size
        req = RenderRequest(s.coeffs.clone(), s.noise.clone(),
                            None if s.w_offsets is None else s.w_offsets.clone(), size, False, final, self._serial)
        self.last_request = req
        self.worker.submit(req)

    def _on_frame(self, req: RenderRequest, frame) -> None:
        self.last_frame = frame
        self.last_shown_request = req
        self.frames_shown += 1
        self.view.set_image(frame.image)
        self.mesh.set_mesh(frame.vertices, frame.landmarks3d)
        kind = "full" if req.final else "drag preview"
        self.status_frame.setText(f"frame {frame.ms:.0f} ms ({frame.size} px, {kind})")
        self.status_mode.setText(self.session.mode_text if frame.mode == self.session.mode
                                 else "preview: 3DMM render")
        self.frameShown.emit()

    def _on_render_failed(self, req, msg: str) -> None:
        self.status_frame.setText(f"render failed: {msg}")
        self.show_error("Render failed", msg)

    @property
    def settled(self) -> bool:
        """No render waiting or running, and the frame on screen is the latest request's."""
        return not self.worker.busy and self.last_shown_request is self.last_request

    # ------------------------------------------------------------------------------------------ #
    # timeline
    # ------------------------------------------------------------------------------------------ #
    def _on_time(self, t: float, final: bool) -> None:
        try:
            self.session.go_to_time(t, commit=final)
        except SessionError as exc:
            self.show_error("Timeline", str(exc))
            return
        self.sync_controls()
        self.request_render(final=final)

    # ------------------------------------------------------------------------------------------ #
    # files
    # ------------------------------------------------------------------------------------------ #
    def show_error(self, title: str, text: str) -> QMessageBox:
        """A non-blocking message box (the editor keeps running) and the status bar text."""
        self.last_error = text
        self.statusBar().showMessage(f"{title}: {text}", 10000)
        for b in self._messages:  # a failing render during a drag: one box, not one per frame
            if b.isVisible() and b.text() == text:
                return b
        box = QMessageBox(QMessageBox.Warning, title, text, QMessageBox.Ok, self)
        box.setWindowModality(Qt.WindowModal)
        box.finished.connect(lambda _=None, b=box: self._messages.remove(b) if b in self._messages else None)
        self._messages.append(box)
        box.open()
        return box

    def load_session(self, path) -> bool:
        try:
            self.session.load_file(path)
        except SessionError as exc:
            self.show_error("Open session", str(exc))
            return False
        self.timeline.refresh()
        self.after_state_change()
        self.statusBar().showMessage(f"opened {Path(path).name}", 5000)
        return True

    def save_session(self, path) -> bool:
        try:
            self.session.save(path)
        except SessionError as exc:
            self.show_error("Save session", str(exc))
            return False
        self.statusBar().showMessage(f"saved {Path(path).name}", 5000)
        return True

    def load_session_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open session", "", "DiscoFace session (*.json)")
        if path:
            self.load_session(path)

    def save_session_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save session", "face.json", "DiscoFace session (*.json)")
        if path:
            if not path.lower().endswith(".json"):
                path += ".json"
            self.save_session(path)

    def export_dialog(self) -> ExportDialog:
        dlg = ExportDialog(self.session, self)
        dlg.open()
        return dlg

    def open_photo_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open photo", "", "Images (*.jpg *.jpeg *.png *.bmp *.webp)")
        if path:
            self.open_photo(path)

    def open_photo(self, path) -> Job | None:
        """Embed / fit a photo in a worker thread with a progress dialog and Cancel."""
        if self._job is not None and self._job.running:
            self.show_error("Open photo", "a photo is already being opened")
            return None
        dlg = QProgressDialog(f"Opening {Path(path).name}…", "Cancel", 0, 0, self)
        dlg.setWindowModality(Qt.WindowModal)
        dlg.setMinimumDuration(300)
        sess = self.session
        job = Job(lambda progress, cancel: sess.open_photo(path, progress, cancel), cancel_types=(SessionCancelled,))

        def prog(d, t):
            dlg.setMaximum(t)
            dlg.setValue(d)
        job.progress.connect(prog)
        dlg.canceled.connect(job.cancel)
        job.done.connect(lambda msg: (self.statusBar().showMessage(str(msg), 10000), self.after_state_change()))
        job.error.connect(lambda msg: self.show_error("Open photo", msg))
        job.cancelled.connect(lambda: self.statusBar().showMessage("opening the photo was cancelled", 5000))
        job.finished.connect(dlg.reset)
        self._job = job
        job.start()
        return job

    def dragEnterEvent(self, ev) -> None:
        urls = ev.mimeData().urls() if ev.mimeData().hasUrls() else []
        if urls and Path(urls[0].toLocalFile()).suffix.lower() in IMAGE_SUFFIXES + (".json",):
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:
        path = ev.mimeData().urls()[0].toLocalFile()
        if path.lower().endswith(".json"):
            self.load_session(path)
        else:
            self.open_photo(path)

    def closeEvent(self, ev) -> None:
        self.timeline.timer.stop()
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._job.wait(10000)
        self.render_thread.stop()
        super().closeEvent(ev)
