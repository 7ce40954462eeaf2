"""The DiscoFace studio main window: a thin Qt shell over ``engine.editing.session.Session``.

Sliders are built from the session's control table (``engine.editing.controls``): one name, label, unit and range
per control. An edit returns the new snapshot, which goes straight to the render worker (the window never reads the
session back to render); see the hop list in ``engine/editing/session.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (QCheckBox, QColorDialog, QFileDialog, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QMainWindow, QMessageBox, QProgressDialog, QPushButton, QScrollArea, QSpinBox,
                               QSplitter, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from engine.editing.controls import N_ID_CONTROLS, light_params
from engine.editing.session import GENERATOR_LIGHT_KEYS, Session, SessionCancelled, SessionError, Snapshot
from engine.editing.meshes import export_mesh
from engine.io.files import read_alpha, save_image
from engine.io.mesh import mesh_suffix
from engine.perception.align import face_choices
from engine.photo.fit import as_photo

from .dialogs import ExportDialog, Timeline, default_export_path
from .drive_dialog import DriveDialog
from .widgets import FloatSlider, ImageView, MeshPanel
from .worker import Job, RenderRequest, RenderThread, settle_heap, warm_up_engine

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BUNDLED_PHOTO = Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"  # NASA portrait, public domain
MESH_MIN_INTERVAL_S = 0.12  # drag frames update the mesh panel at most this often (final frames always)
MESH_PLAY_INTERVAL_S = 0.5  # playback frames: at most this often
SYNC_PLAY_INTERVAL_S = 0.2  # playback moves the sliders at most this often (all of them: ~4 ms of the GUI thread)
PLAY_MAX_SIDE = 384  # photo mode playback frames (drag previews: 512, engine.editing.frames.DRAG_MAX_SIDE)
SUBGROUP_ORDER = ("common", "brows", "eyes", "cheeks", "nose", "mouth", "jaw", "other")
AUTO_FACE_ZOOM = 1.6  # opening a photo zooms to the face (up to 100 %) when that shows it this much larger than fit


def face_box(photo) -> tuple[float, float, float, float]:
    """The head of a photo-mode photo (x0, y0, x1, y1 in photo px): its fitted landmarks' box (brows to chin)
    widened to the hair and the neck, clipped to the photo."""
    lm = np.asarray(photo.fit.alignment.landmarks_photo, np.float64)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    fh = max(y1 - y0, 1.0)
    top, bottom = y0 - 0.75 * fh, y1 + 0.45 * fh
    half = max(0.8 * (x1 - x0), 0.5 * (bottom - top) * 0.8)
    cx = (x0 + x1) / 2
    w, h = photo.size
    return (max(0.0, cx - half), max(0.0, top), min(float(w), cx + half), min(float(h), bottom))


@dataclass
class FaceChoice:
    """A photo with several faces, waiting for the user's click."""

    path: str
    image: np.ndarray  # the photo as the fit reads it (orientation applied)
    choices: list  # (index into detect_faces' list, box, confidence), left to right (align.face_choices)


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
        self.guard = None  # app.dialogs.SessionGuard (autosave + unsaved-changes prompt), set by app.main.build
        self.view_mode = "auto"  # "generator" while View → Generator view is on (photo mode)
        self.full_range = False
        self.last_frame = None
        self.last_request = None
        self.last_shown_request = None
        self.last_error: str | None = None
        self.frames_shown = 0
        self._serial = 0
        self._job: Job | None = None
        self._before_photo = None
        self.last_status = ""
        self.face_choice: FaceChoice | None = None  # several faces found: the photo waits for a click
        self._jobs: set[Job] = set()  # other running jobs (save frame), kept alive until they finish
        self._messages: list[QMessageBox] = []
        self.setWindowTitle("DiscoFace studio")
        self.setAcceptDrops(True)

        self.render_thread = RenderThread(self.session)
        self.worker = self.render_thread.worker
        self.worker.frameReady.connect(self._on_frame)
        self.worker.failed.connect(self._on_render_failed)

        self.view = ImageView()
        self.view.choiceClicked.connect(self.choose_face)
        self.mesh = MeshPanel(self.session.model.triangles.numpy())
        self.worker.prepare = self._prepare_mesh  # the panel's buffers are made in the render thread
        self._mesh_pending = None
        self._synced_at = 0.0
        self._mesh_shown_at = 0.0
        self._mesh_timer = QTimer(self)
        self._mesh_timer.setSingleShot(True)
        self._mesh_timer.timeout.connect(self._show_pending_mesh)
        left = QSplitter(Qt.Vertical)
        image_box = QWidget()
        ib = QVBoxLayout(image_box)
        ib.setContentsMargins(0, 0, 0, 0)
        self.start_bar = self._start_bar()
        ib.addWidget(self.start_bar)
        ib.addWidget(self.view, 1)
        image_opts = QHBoxLayout()  # under the image: they act on it, and stay when the mesh panel is hidden
        ib.addLayout(image_opts)
        left.addWidget(image_box)
        mesh_box = QWidget()
        mb = QVBoxLayout(mesh_box)
        mb.setContentsMargins(0, 0, 0, 0)
        mb.addWidget(self.mesh, 1)
        opts = QHBoxLayout()
        self.lm_check = QCheckBox("Landmarks")
        self.lm_check.toggled.connect(self.mesh.set_landmarks_visible)
        self.smooth_check = QCheckBox("Smooth scaling")
        self.smooth_check.setChecked(True)
        self.smooth_check.toggled.connect(self.view.set_smooth)
        self.before_btn = QPushButton("Before")
        self.before_btn.setToolTip("hold to see the photo before your edits, at the same zoom (or hold \\)")
        self.before_btn.setEnabled(False)
        self.before_btn.pressed.connect(lambda: self.view.show_before(True))
        self.before_btn.released.connect(lambda: self.view.show_before(False))
        self.face_btn = QPushButton("Face")
        self.face_btn.setToolTip("zoom the image to the face (Ctrl+2); Ctrl+0 or a double click shows the whole photo")
        self.face_btn.setEnabled(False)
        self.face_btn.clicked.connect(self.zoom_to_face)
        for w in (self.before_btn, self.face_btn, self.smooth_check):
            image_opts.addWidget(w)
        image_opts.addStretch(1)
        hint = QLabel("wheel: zoom · drag: pan · double-click: fit · Ctrl+1: 100 %")
        hint.setEnabled(False)  # greyed: a hint, not a control
        image_opts.addWidget(hint)
        opts.addWidget(self.lm_check)
        opts.addStretch(1)
        mb.addLayout(opts)
        left.addWidget(mesh_box)
        self.mesh_box = mesh_box
        self.mesh_visible = True
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 1)
        left.setSizes([440, 300])

        self.sliders: dict[str, FloatSlider] = {}
        self.tabs = QTabWidget()
        self.tabs.addTab(self._scroll(self._group_panel("pose")), "Pose")
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
        self.status_zoom = QLabel("zoom: fit")
        self.status_zoom.setToolTip("image zoom: wheel to zoom, drag to pan, Ctrl+0 fit, Ctrl+1 100 %")
        self.view.zoomChanged.connect(lambda z: self.status_zoom.setText("zoom: fit" if self.view.zoom is None
                                                                         else f"zoom: {100 * z:.0f} %"))
        self.statusBar().addPermanentWidget(self.status_zoom)
        self.statusBar().addPermanentWidget(self.status_mode)
        self._menus()
        self.sync_controls()
        self.resize(1180, 800)
        self.request_render(final=True)
        model = self.session.model
        self.warmup_job = Job(lambda progress, cancel: warm_up_engine(model, progress, cancel))
        self.warmup_job.start()

    @property
    def ready(self) -> bool:
        """The start-up job has loaded what opening a photo needs."""
        return not self.warmup_job.running

    def _start_bar(self) -> QWidget:
        """How to start: the bundled photo in photo mode, a new random face, or a photo of your own."""
        bar = QWidget()
        bar.setObjectName("start_bar")
        lay = QHBoxLayout(bar)
        lay.setContentsMargins(0, 0, 0, 4)
        lay.addWidget(QLabel("Start with:"))
        self.start_photo_btn = QPushButton("Astronaut photo (photo mode)")
        self.start_photo_btn.setToolTip("NASA's public-domain astronaut portrait: every slider edits the photo itself")
        self.start_photo_btn.clicked.connect(self.open_bundled_photo)
        self.start_random_btn = QPushButton("New random face")
        self.start_random_btn.clicked.connect(self.new_random_face)
        self.start_open_btn = QPushButton("Open photo…")
        self.start_open_btn.clicked.connect(self.open_photo_dialog)
        for b in (self.start_photo_btn, self.start_random_btn, self.start_open_btn):
            lay.addWidget(b)
        lay.addStretch(1)
        self.start_photo_btn.setEnabled(BUNDLED_PHOTO.is_file())
        return bar

    def open_bundled_photo(self) -> Job | None:
        """The bundled public-domain portrait in photo mode (the editor's first impression)."""
        return self.open_photo(BUNDLED_PHOTO)

    def new_random_face(self) -> None:
        """A new random face (leaves photo mode; one undo step). Nothing unsaved before → nothing unsaved after."""
        was_dirty = self.guard is not None and self.guard.dirty
        self.after_state_change(self.session.new_random_face())
        if self.guard is not None and not was_dirty:
            self.guard.mark_clean()

    # ------------------------------------------------------------------------------------------ #
    # layout: every slider comes from the control table
    # ------------------------------------------------------------------------------------------ #
    @staticmethod
    def _scroll(w: QWidget) -> QScrollArea:
        sa = QScrollArea()
        sa.setWidgetResizable(True)
        sa.setWidget(w)
        return sa

    def _control_slider(self, key: str) -> FloatSlider:
        spec = self.session.controls[key]
        lo, hi = self.session.control_range(key, self.full_range)
        span = spec.hi - spec.lo
        steps = int(round(span * 20)) if spec.unit == "°" else int(round(span * 100))
        s = FloatSlider(key, lo, hi, unit=spec.unit, decimals=spec.decimals, steps=max(100, steps), label=spec.label,
                        per_unit=20 if spec.unit == "°" else None, marks=spec.group == "pose")
        if spec.help:
            s.setToolTip(spec.help)
        s.changed.connect(lambda v, final, k=key: self.on_control(k, v, final))
        self.sliders[key] = s
        return s

    def _group_panel(self, group: str, keys=None) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        if group == "pose":  # photo mode: what the sliders' 0 is and how far this photo turns believably
            self.pose_note = QLabel("")
            self.pose_note.setObjectName("pose_note")
            self.pose_note.setWordWrap(True)
            self.pose_note.setVisible(False)
            lay.addWidget(self.pose_note)
        for key, spec in self.session.controls.items():
            if spec.group == group and (keys is None or key in keys):
                lay.addWidget(self._control_slider(key))
        lay.addLayout(_factor_buttons(self, group))
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
        self.expr_members: dict[str, list[str]] = {}
        specs = [s for s in self.session.controls.values() if s.group == "expression"]
        for group in SUBGROUP_ORDER:
            keys = [s.key for s in specs if s.subgroup == group]
            if not keys:
                continue
            box = QGroupBox(group.capitalize())
            bl = QVBoxLayout(box)
            for k in keys:
                bl.addWidget(self._control_slider(k))
            self.expr_groups[group] = box
            self.expr_members[group] = keys
            il.addWidget(box)
        il.addStretch(1)
        ol.addWidget(self._scroll(inner), 1)
        ol.addLayout(_factor_buttons(self, "expression"))
        return outer

    def _light_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        for key, spec in self.session.controls.items():
            if spec.group == "light":
                lay.addWidget(self._control_slider(key))
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
        named = [k for k, spec in self.session.controls.items() if spec.group == "identity" and spec.subgroup == "named"]
        if named:
            note = QLabel("In standard deviations of each trait (0 = the mean face); each moves one trait and holds "
                          "the others. In photo mode they reshape the photo's face.")
            note.setWordWrap(True)
            lay.addWidget(note)
        for k in named:
            lay.addWidget(self._control_slider(k))
        # the raw identity modes (what the tab showed before), folded away under "More"
        self.more_identity_btn = QToolButton()
        self.more_identity_btn.setText(f"More: raw identity components 1–{N_ID_CONTROLS}")
        self.more_identity_btn.setCheckable(True)
        self.more_identity_btn.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.more_identity_btn.setArrowType(Qt.RightArrow)
        self.more_identity_btn.setAutoRaise(True)
        self.raw_identity_box = QWidget()
        rl = QVBoxLayout(self.raw_identity_box)
        rl.setContentsMargins(0, 0, 0, 0)
        for k in range(N_ID_CONTROLS):
            rl.addWidget(self._control_slider(f"id{k}"))
        self.raw_identity_box.setVisible(not named)  # folded when there are named controls
        self.more_identity_btn.setChecked(not named)

        def fold(on: bool) -> None:
            self.raw_identity_box.setVisible(on)
            self.more_identity_btn.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self.more_identity_btn.toggled.connect(fold)
        lay.addWidget(self.more_identity_btn)
        lay.addWidget(self.raw_identity_box)
        lay.addLayout(_factor_buttons(self, "identity", randomise=False))
        lay.addStretch(1)
        return w

    def _noise_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        gen = self.session.generator
        what = ("Identity code: the face-recognition code the generator was trained with (at this training scale "
                "it changes hair, background and detail more than the person; Randomise identity draws a new one)"
                if gen is not None and gen.G.identity_noise
                else "Noise: hair, background and everything the 3D model does not describe")
        lay.addWidget(QLabel(what + ("" if gen else " (only visible with generator weights)") + "."))
        lay.itemAt(0).widget().setWordWrap(True)
        b = QPushButton("Reseed")
        b.clicked.connect(lambda: self.randomize("noise"))
        lay.addWidget(b)
        lay.addLayout(_factor_buttons(self, "noise", randomise=False))
        lay.addStretch(1)
        return w

    def _menus(self) -> None:
        fm = self.menuBar().addMenu("&File")

        def act(menu, text, fn, keys=None, checkable=False):
            a = QAction(text, self)
            if keys:
                a.setShortcuts([QKeySequence(k) for k in keys])
            a.setCheckable(checkable)
            (a.toggled if checkable else a.triggered).connect(fn)
            menu.addAction(a)
            return a
        act(fm, "Open &photo…", self.open_photo_dialog, ["Ctrl+O"])
        act(fm, "Open the &astronaut photo (photo mode)", self.open_bundled_photo)
        act(fm, "&New random face", self.new_random_face, ["Ctrl+N"])
        self.embed_action = act(fm, "&Embed photo in the generator…", self.embed_photo_dialog)
        self.embed_action.setEnabled(self.session.generator is not None)
        act(fm, "Open &session…", self.load_session_dialog, ["Ctrl+Shift+O"])
        act(fm, "&Save session…", self.save_session_dialog, ["Ctrl+S"])
        act(fm, "Save &frame…", self.save_frame_dialog, ["Ctrl+Shift+S"])
        fm.addSeparator()
        act(fm, "&Export animation…", self.export_dialog, ["Ctrl+E"])
        act(fm, "Export &mesh…", self.export_mesh_dialog, ["Ctrl+Shift+E"])
        self.drive_action = act(fm, "&Drive from video…", self.drive_dialog, ["Ctrl+Shift+D"])
        fm.addSeparator()
        act(fm, "&Quit", self.close, ["Ctrl+Q"])
        em = self.menuBar().addMenu("&Edit")
        self.undo_action = act(em, "&Undo", self.undo, ["Ctrl+Z"])
        self.redo_action = act(em, "&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        em.addSeparator()
        act(em, "Reset &all", lambda: self.reset(None))
        vm = self.menuBar().addMenu("&View")
        self.generator_view_action = act(vm, "&Generator view (photo mode)", self.set_generator_view, ["Ctrl+G"],
                                         checkable=True)
        act(vm, "Zoom to &fit", self.view.fit, ["Ctrl+0"])
        act(vm, "&Actual size (100 %)", self.view.actual_size, ["Ctrl+1"])
        act(vm, "Zoom to the fa&ce", self.zoom_to_face, ["Ctrl+2"])
        act(vm, "Zoom &in", lambda: self.view.zoom_by(1.25), ["Ctrl++", "Ctrl+="])
        act(vm, "Zoom &out", lambda: self.view.zoom_by(0.8), ["Ctrl+-"])
        vm.addSeparator()
        self.mesh_action = act(vm, "&Mesh panel", self.set_mesh_visible, ["Ctrl+M"], checkable=True)
        self.mesh_action.setChecked(True)
        self.full_range_action = act(vm, "&Full slider range (beyond what the model was trained on)",
                                     self.set_full_range, checkable=True)
        tm = self.menuBar().addMenu("&Timeline")
        act(tm, "&Add keyframe", self.timeline.add_keyframe, ["Ctrl+K"])
        act(tm, "&Remove keyframe", self.timeline.remove_selected)
        act(tm, "&Play / stop", lambda: self.timeline.play_btn.toggle(), ["Ctrl+P"])

    # ------------------------------------------------------------------------------------------ #
    # edits
    # ------------------------------------------------------------------------------------------ #
    def on_control(self, key: str, value: float, final: bool) -> None:
        """A slider moved: the session returns the new snapshot, which goes to the render worker."""
        try:
            # the value as the slider shows it: in photo mode a pose slider's is a turn from the photo's own pose
            snap = self.session.set_control(key, value, commit=final, relative=True)
        except SessionError as exc:
            self.show_error("Edit", str(exc))
            self.sync_controls()
            return
        spec = self.session.controls[key]
        if spec.group in ("expression", "identity"):  # composites and their parts / named and raw move together
            self._sync_group(snap, spec.group, skip=key)
        warning = self.session.control_warning(key, snap)
        if warning:
            self.status(warning, 5000)
        self._update_actions()
        self.request_render(final=final, snap=snap)

    def edit(self, fn, final: bool) -> None:
        """Apply an edit (``fn(commit) -> Snapshot``); a small frame while dragging, the full one on release."""
        try:
            snap = fn(final)
        except SessionError as exc:
            self.show_error("Edit", str(exc))
            self.sync_controls()
            return
        self._update_actions()
        self.request_render(final=final, snap=snap)

    def randomize(self, factor: str) -> None:
        self.after_state_change(self.session.randomize(factor))

    def reset(self, factor) -> None:
        self.after_state_change(self.session.reset(factor))

    def _apply_seed(self, seed: int) -> None:
        if seed == self.session.seed and self.session.coeffs.identity.abs().sum() > 0:
            return
        self.after_state_change(self.session.set_seed(seed))

    def _pick_color(self) -> None:
        col = self.session.light_params()["color"]
        m = max(col + [1.0])
        c = QColorDialog.getColor(QColor.fromRgbF(*(min(1.0, x / m) for x in col)), self, "Light colour")
        if c.isValid():
            self.edit(lambda commit: self.session.set_light(color=(c.redF(), c.greenF(), c.blueF()), commit=commit),
                      True)

    def undo(self) -> None:
        snap = self.session.undo()
        if snap is not None:
            self.after_state_change(snap)

    def redo(self) -> None:
        snap = self.session.redo()
        if snap is not None:
            self.after_state_change(snap)

    def after_state_change(self, snap: Snapshot | None = None) -> None:
        """The whole face may have changed (undo, reset, open): every control, the timeline, a full frame."""
        snap = snap if snap is not None else self.session.state
        self.timeline.refresh()  # undo/redo may have added or removed keyframes
        self.sync_controls(snap)
        self.request_render(final=True, snap=snap)

    def _update_actions(self) -> None:
        self.undo_action.setEnabled(self.session.can_undo)
        self.redo_action.setEnabled(self.session.can_redo)
        self.generator_view_action.setEnabled(self.session.photo is not None and self.session.generator is not None)
        if self.guard is not None:  # every edit passes here: autosave (debounced)
            self.guard.changed()

    def _sync_group(self, snap: Snapshot, group: str, skip: str | None = None) -> None:
        for key, spec in self.session.controls.items():
            if spec.group == group and key in self.sliders and key != skip:
                self.sliders[key].set_value(self.session.shown_value(key, snap))

    def sync_controls(self, snap: Snapshot | None = None) -> None:
        """Show a snapshot's values (default: the session's) on every control (no edits are emitted)."""
        snap = snap if snap is not None else self.session.state
        self._pose_ranges(snap)
        for key, slider in self.sliders.items():
            slider.set_value(self.session.shown_value(key, snap))
        self.seed_box.blockSignals(True)
        self.seed_box.setValue(min(snap.seed, 2**31 - 1))
        self.seed_box.blockSignals(False)
        self._update_actions()

    def set_full_range(self, on: bool) -> None:
        """Sliders over the full range (beyond the trained one; the status bar warns there) or the trained one."""
        self.full_range = bool(on)
        for key, slider in self.sliders.items():
            slider.set_range(*self.session.control_range(key, self.full_range))
        self.sync_controls()

    def _pose_ranges(self, snap: Snapshot) -> None:
        """The pose sliders for this snapshot: in photo mode they read 0 at the photo's own pose (a tick marks it),
        span this photo's believable turn (the full range: further, greyed beyond it); else absolute angles."""
        photo = snap.photo
        key = (id(photo), self.full_range,
               None if photo is None else tuple(self.session.believable_range(k, snap) for k in ("yaw", "pitch")))
        if key == getattr(self, "_pose_key", None):
            return
        self._pose_key = key
        for k in ("yaw", "pitch", "roll"):
            if k in self.sliders:
                s = self.sliders[k]
                s.set_range(*self.session.control_range(k, self.full_range, snap))
                s.set_marks(self.session.believable_range(k, snap), origin=photo is not None)
        for k in GENERATOR_LIGHT_KEYS:  # generator mode: the lights the generator learned; photo mode: relighting's
            if k in self.sliders:
                self.sliders[k].set_range(*self.session.control_range(k, self.full_range, snap))
        if photo is None:
            self.pose_note.setVisible(False)
            return
        own = {k: self.session.control_origin(k, snap) for k in ("yaw", "pitch", "roll")}
        good = {k: self.session.believable_range(k, snap) for k in ("yaw", "pitch")}
        def deg(v: float) -> str:  # "+3°", never "-0°"
            return f"{round(v):+d}°"
        self.pose_note.setText(
            f"Photo mode: the sliders turn the head from the photo's own pose (0 = yaw {deg(own['yaw'])}, pitch "
            f"{deg(own['pitch'])}, roll {deg(own['roll'])}). This photo turns believably yaw "
            f"{deg(good['yaw'][0])[:-1]}..{deg(good['yaw'][1])}, pitch {deg(good['pitch'][0])[:-1]}.."
            f"{deg(good['pitch'][1])}"
            + ("; beyond that (grey) the status bar warns." if self.full_range else
               "; View → Full slider range goes further (greyed)."))
        self.pose_note.setVisible(True)

    def filter_expressions(self, text: str) -> None:
        t = text.strip().lower()
        for group, box in self.expr_groups.items():
            any_shown = False
            for k in self.expr_members[group]:
                show = not t or t in k.lower() or t in group or t in self.session.controls[k].label.lower()
                self.sliders[k].setHidden(not show)
                any_shown |= show
            box.setHidden(not any_shown)

    # ------------------------------------------------------------------------------------------ #
    # rendering
    # ------------------------------------------------------------------------------------------ #
    def set_generator_view(self, on: bool) -> None:
        """Photo mode: show the generator's image of the same coefficients instead of the photo."""
        self.view_mode = "generator" if on else "auto"
        self.request_render(final=True)

    def request_render(self, final: bool = True, snap: Snapshot | None = None) -> None:
        snap = snap if snap is not None else self.session.state
        self._serial += 1
        if snap.photo is not None and self.view_mode == "auto":
            # photo mode: the photo's own size; the frame renderer shrinks drag frames, playback smaller still so
            # a frame fits in a 24 fps tick
            size = PLAY_MAX_SIDE if not final and self.timeline.timer.isActive() else None
        else:  # a smaller 3DMM frame while dragging; the generator renders at its own resolution anyway
            size = self.display_size if final or self.session.generator is not None else self.drag_size
        req = RenderRequest(snap, size, final, self.view_mode, self._serial)
        self.last_request = req
        self.worker.submit(req)

    def zoom_to_face(self) -> None:
        """View → Zoom to the face (Ctrl+2): the photo's head, as large as the image view allows."""
        photo = self.session.photo
        if photo is not None and self.face_choice is None:
            self.view.zoom_to_box(face_box(photo))

    def set_mesh_visible(self, on: bool) -> None:
        """View → Mesh panel: hidden, frames skip the panel's work entirely."""
        self.mesh_visible = bool(on)
        self.mesh_box.setVisible(self.mesh_visible)
        if self.mesh_action.isChecked() != self.mesh_visible:
            self.mesh_action.setChecked(self.mesh_visible)
        if self.mesh_visible and self.last_frame is not None:
            f = self.last_frame
            self.mesh.show_geometry(self.mesh.prepare(f.vertices, f.landmarks3d, f.triangles))

    def _show_pending_mesh(self) -> None:
        """Hand the newest mesh to the panel (its picture costs the panel's drawing thread ~25 ms of CPU, which a fast
        drag's frames would otherwise take from the photo's renderer on a busy machine)."""
        self._mesh_timer.stop()
        pending, self._mesh_pending = self._mesh_pending, None
        if pending is None or not self.mesh_visible:
            return
        geometry, coeffs = pending
        self.mesh.set_light(**light_params(coeffs), redraw=False)  # lit like the image; one draw for both below
        self.mesh.show_geometry(geometry)
        self._mesh_shown_at = time.monotonic()

    def _prepare_mesh(self, frame):
        """Render thread: the mesh panel's positions and normals for this frame (None while the panel is hidden)."""
        if not self.mesh_visible:
            return None
        return self.mesh.prepare(frame.vertices, frame.landmarks3d, frame.triangles)

    def _on_frame(self, req: RenderRequest, frame, geometry=None) -> None:
        self.last_frame = frame
        self.last_shown_request = req
        self.frames_shown += 1
        photo = req.snapshot.photo if frame.mode == "photo" else None
        if photo is not None:
            full = photo.size
        elif frame.mode == "preview":
            full = (self.display_size, self.display_size)
        else:
            full = None
        if self.face_choice is not None:  # the face chooser keeps the view until a face is clicked
            self.frameShown.emit()
            return
        self.view.set_image(frame.image, full)
        if photo is not self._before_photo:  # before/after: the photo as it was opened
            self._before_photo = photo
            self._pose_ranges(req.snapshot)  # a loaded session's photo: its turn range is measured by now
            self.view.set_before(None if photo is None else photo.fit.image)
            self.before_btn.setEnabled(photo is not None)
            self.face_btn.setEnabled(photo is not None)
            if photo is not None:  # a small face in a big photo: open on the face (never past 100 %: no blur)
                box = face_box(photo)
                if min(self.view.box_zoom(box), 1.0) > AUTO_FACE_ZOOM * self.view.fit_scale():
                    self.view.zoom_to_box(box, max_zoom=1.0)
                    self.status("zoomed to the face: Ctrl+0 (or a double click) shows the whole photo", 8000)
        if geometry is not None and self.mesh_visible:
            self._mesh_pending = (geometry, req.snapshot.coeffs)
            # drags: the panel follows at most ~8 times a second; playback (a frame every tick) ~2: its pictures'
            # CPU goes to the photo's frames instead
            interval = MESH_PLAY_INTERVAL_S if self.timeline.timer.isActive() else MESH_MIN_INTERVAL_S
            wait = interval - (time.monotonic() - self._mesh_shown_at)
            if req.final or wait <= 0:
                self._show_pending_mesh()
            elif not self._mesh_timer.isActive():
                self._mesh_timer.start(int(wait * 1000) + 1)
        kind = "full" if req.final else "drag preview"
        h, w = frame.image.shape[:2]
        self.status_frame.setText(f"frame {frame.ms:.0f} ms ({w}×{h} px, {kind})"
                                  + (f" — {frame.note}" if frame.note else ""))
        self.status_mode.setText(self.session.mode_text if frame.mode == self.session.mode else
                                 {"preview": "preview: 3DMM render", "generator": "generator view"}.get(frame.mode,
                                                                                                      frame.mode))
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
            snap = self.session.seek(t)  # no undo entry: playing or scrubbing is not an edit
        except SessionError as exc:
            self.show_error("Timeline", str(exc))
            return
        now = time.monotonic()
        if final or now - self._synced_at >= SYNC_PLAY_INTERVAL_S:  # playing: the sliders follow ~5 times a second
            self._synced_at = now
            self.sync_controls(snap)
        self.request_render(final=final, snap=snap)

    # ------------------------------------------------------------------------------------------ #
    # files
    # ------------------------------------------------------------------------------------------ #
    def status(self, text: str, ms: int = 5000) -> None:
        """A status-bar message. One too long for the bar is cut with "…" and its whole text becomes the bar's
        tooltip (and stays in ``last_status``), so a long warning can still be read."""
        self.last_status = text
        bar = self.statusBar()
        used = sum(w.width() for w in (self.status_zoom, self.status_mode) if w.isVisible())
        avail = max(120, bar.width() - used - 48)
        shown = bar.fontMetrics().elidedText(text, Qt.ElideRight, avail)
        bar.setToolTip(text if shown != text else "")
        bar.showMessage(shown, ms)

    def show_error(self, title: str, text: str) -> QMessageBox:
        """A non-blocking message box (the editor keeps running) and the status bar text."""
        self.last_error = text
        self.status(f"{title}: {text}", 10000)
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
            snap = self.session.load_file(path)
        except SessionError as exc:
            self.show_error("Open session", str(exc))
            return False
        self.after_state_change(snap)
        if self.guard is not None:
            self.guard.saved(path)
        self.status(f"opened {Path(path).name}", 5000)
        return True

    def save_session(self, path) -> bool:
        try:
            self.session.save(path)
        except SessionError as exc:
            self.show_error("Save session", str(exc))
            return False
        if self.guard is not None:
            self.guard.saved(path)
        self.status(f"saved {Path(path).name}", 5000)
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

    def save_frame(self, path) -> Job | None:
        """The current face as one image at the session's native size (PNG/JPEG/WebP by the suffix), rendered and
        written in a worker thread. Returns the job (None when the name is refused at once)."""
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            self.show_error("Save frame", f"image files end in {', '.join(IMAGE_SUFFIXES)}: {Path(path).name}")
            return None
        sess, snap = self.session, self.session.state

        def run(progress, cancel):
            alpha = read_alpha(snap.photo.path) if snap.photo is not None else None  # RGBA photo → RGBA frame
            save_image(path, sess.render_snapshot(snap).image, alpha=alpha)
            return path
        job = Job(run)
        job.done.connect(lambda p: self.status(f"saved {Path(p).name}", 5000))
        job.error.connect(lambda msg: self.show_error("Save frame", msg))
        job.finished.connect(lambda: self._jobs.discard(job))
        self._jobs.add(job)
        job.start()
        return job

    def save_frame_dialog(self) -> None:
        start = str(default_export_path(self.session, self.guard.path if self.guard is not None else None,
                                        ExportDialog.last_folder).with_suffix(".png"))
        path, _ = QFileDialog.getSaveFileName(self, "Save frame", start, "Images (*.png *.jpg *.jpeg *.webp)")
        if path:
            self.save_frame(path if Path(path).suffix else path + ".png")

    def export_mesh(self, path) -> Job | None:
        """The current face as a mesh file (.glb .gltf .obj .ply; photo mode: the fitted head textured with the
        photo, the edits baked in), written in a worker thread. Returns the job (None when the name is refused)."""
        try:
            mesh_suffix(path)
        except ValueError as exc:
            self.show_error("Export mesh", str(exc))
            return None
        sess, snap = self.session, self.session.state
        job = Job(lambda progress, cancel: export_mesh(sess, path, snap))
        job.done.connect(lambda files: self.status(
            "wrote " + ", ".join(Path(f).name for f in files), 8000))
        job.error.connect(lambda msg: self.show_error("Export mesh", msg))
        job.finished.connect(lambda: self._jobs.discard(job))
        self._jobs.add(job)
        job.start()
        return job

    def export_mesh_dialog(self) -> None:
        start = str(default_export_path(self.session, self.guard.path if self.guard is not None else None,
                                        ExportDialog.last_folder).with_suffix(".glb"))
        path, _ = QFileDialog.getSaveFileName(self, "Export mesh", start,
                                              "glTF binary (*.glb);;glTF (*.gltf);;OBJ + texture (*.obj);;"
                                              "PLY, vertex colours (*.ply)")
        if path:
            self.export_mesh(path if Path(path).suffix else path + ".glb")

    def export_dialog(self) -> ExportDialog:
        dlg = ExportDialog(self.session, self, self.guard.path if self.guard is not None else None)
        dlg.open()
        return dlg

    def drive_dialog(self) -> DriveDialog:
        """File → Drive from video…: the video's expression (and head motion) on the current face or a file; the
        driven track opens on the timeline (an undoable edit)."""
        dlg = DriveDialog(self.session, self)
        dlg.trackLoaded.connect(self._on_track_loaded)
        dlg.open()
        return dlg

    def _on_track_loaded(self, path: str) -> None:
        self.after_state_change()
        self.status(f"the driven track {Path(path).name} is on the timeline", 10000)

    def open_photo_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open photo", "", "Images (*.jpg *.jpeg *.png *.bmp *.webp)")
        if path:
            self.open_photo(path)

    def embed_photo_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Embed photo in the generator", "",
                                              "Images (*.jpg *.jpeg *.png *.bmp *.webp)")
        if path:
            self.open_photo(path, how="embed")

    def open_photo(self, path, how: str = "photo", face: int | None = None) -> Job | None:
        """Open a photo in a worker thread with a progress dialog and Cancel (photo mode by default; ``how="embed"``
        embeds it in the generator). Photo mode with several faces and no ``face`` (an index into
        ``detect_faces``' list): the photo is shown with numbered boxes and the click chooses (:meth:`_ask_face`)."""
        if self._job is not None and self._job.running:
            self.show_error("Open photo", "a photo is already being opened")
            return None
        self._end_face_choice()
        dlg = QProgressDialog(f"Opening {Path(path).name}…", "Cancel", 0, 0, self)
        dlg.setWindowModality(Qt.WindowModal)
        dlg.setMinimumDuration(300)
        sess = self.session
        was_dirty = self.guard is not None and self.guard.dirty

        def run(progress, cancel):
            if how == "photo" and face is None and Path(path).is_file():
                try:
                    img = as_photo(str(path))
                    choices = face_choices(img)
                except ValueError:  # unreadable: the open below says so properly
                    choices = []
                if len(choices) > 1:
                    return FaceChoice(str(path), img, choices)
            return sess.open_photo(path, progress, cancel, how=how, face=face)
        job = Job(run, cancel_types=(SessionCancelled,))

        def prog(d, t):
            dlg.setMaximum(t)
            dlg.setValue(d)
        job.progress.connect(prog)
        dlg.canceled.connect(job.cancel)
        job.done.connect(lambda res: self._ask_face(res) if isinstance(res, FaceChoice)
                         else self._photo_opened(str(res), was_dirty))
        job.error.connect(lambda msg: self.show_error("Open photo", msg))
        job.cancelled.connect(lambda: self.status("opening the photo was cancelled", 5000))
        job.finished.connect(dlg.reset)
        self._job = job
        job.start()
        return job

    def _ask_face(self, choice: "FaceChoice") -> None:
        """Several faces: show the photo with numbered boxes; a click opens that face (Esc: keep what was open)."""
        self.face_choice = choice
        h, w = choice.image.shape[:2]
        self.view.set_image(choice.image, (w, h))
        self.view.set_choices([box for _, box, _ in choice.choices])
        self.status(f"{len(choice.choices)} faces in {Path(choice.path).name}: click the one to edit (Esc: cancel)",
                    0)

    def choose_face(self, k: int) -> Job | None:
        """The k-th box (0-based, left to right) of the face choice: open the photo on that face."""
        choice = self.face_choice
        if choice is None or not 0 <= k < len(choice.choices):
            return None
        self._end_face_choice(restore=False)
        return self.open_photo(choice.path, face=choice.choices[k][0])

    def _end_face_choice(self, restore: bool = True) -> None:
        if self.face_choice is None:
            return
        self.face_choice = None
        self.view.set_choices([])
        self.statusBar().clearMessage()
        if restore and self.last_frame is not None:  # back to the face that was open
            self.request_render(final=True)

    def _photo_opened(self, summary: str, was_dirty: bool) -> None:
        """A photo is open: it is the new starting point, so quitting right away asks nothing — unless there were
        unsaved edits before it (they are still one undo step back, so the prompt stays)."""
        self.status(summary, 10000)
        self.after_state_change()
        settle_heap()  # the photo's fit and layers: out of the full collections' walk
        if self.guard is not None and not was_dirty:
            self.guard.mark_clean()

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

    def keyPressEvent(self, ev) -> None:
        if ev.key() == Qt.Key_Escape and self.face_choice is not None:
            self._end_face_choice()
            return
        if ev.key() == Qt.Key_Backslash and not ev.isAutoRepeat():  # hold \\: before
            self.view.show_before(True)
            return
        super().keyPressEvent(ev)

    def keyReleaseEvent(self, ev) -> None:
        if ev.key() == Qt.Key_Backslash and not ev.isAutoRepeat():
            self.view.show_before(False)
            return
        super().keyReleaseEvent(ev)

    # ------------------------------------------------------------------------------------------ #
    # closing (the usability helper's unsaved-changes prompt lives in self.guard)
    # ------------------------------------------------------------------------------------------ #
    def closeEvent(self, ev) -> None:
        if self.guard is not None and not self.guard.confirm_close():  # Save/Discard/Cancel
            ev.ignore()
            return
        self.timeline.timer.stop()
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._job.wait(10000)
        for job in list(self._jobs):
            job.wait(30000)
        self.warmup_job.cancel()
        self.warmup_job.wait(30000)
        self.render_thread.stop()
        self.mesh.stop()
        super().closeEvent(ev)
