"""Timeline (keyframes, play, scrub) and the export dialog (runs the export in a worker thread)."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QMessageBox, QProgressBar, QPushButton,
                               QSlider, QSpinBox, QVBoxLayout, QWidget)

from engine.editing.autosave import Autosave, Orphan, session_text
from engine.io.export import ExportCancelled, export_sequence
from engine.io.files import add_signal_hook, remove_signal_hook

from .worker import Job


MIN_EXPORT_SIZE, MAX_EXPORT_SIZE = 32, 2048
PREVIEW_EXPORT_SIZE = 256  # a generator's small native frame is upscaled to at least this by default


def _photo_size(session) -> tuple[int, int] | None:
    """(width, height) of a photo-mode session's photo (``session.photo.size``), else None."""
    photo = getattr(session, "photo", None)
    size = getattr(photo, "size", None) if photo is not None else None
    if not size:
        return None
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def default_export_size(session) -> int:
    """The session's native size: a photo's size (its longer side) for a photo session, else the render size
    (a generator's 64 px frame upscaled to at least 256 px), within the export limits."""
    ps = _photo_size(session)
    n = max(ps) if ps else max(int(session.native_size), PREVIEW_EXPORT_SIZE)
    return int(min(MAX_EXPORT_SIZE, max(MIN_EXPORT_SIZE, n)))


def default_export_path(session, session_path=None, last_folder=None) -> Path:
    """``<folder>/<name>.mp4``: the last export's folder in this run, else the session file's folder, else the
    photo's folder, else the current folder; the name from the session file or photo."""
    src = getattr(session, "source", None)
    named = Path(session_path) if session_path else (Path(src) if src and Path(src).is_file() else None)
    folder = Path(last_folder) if last_folder and Path(last_folder).is_dir() else (
        named.parent if named is not None else Path.cwd())
    stem = named.stem if named is not None else "discoface"
    return folder.resolve() / f"{stem}.mp4"


class Timeline(QWidget):
    """Keyframes of the session: add (at a time), remove, play/stop, scrub."""

    timeChanged = Signal(float, bool)  # (time, final): the window shows the face at that time
    keyframesChanged = Signal()
    FPS = 24
    clock = staticmethod(time.monotonic)  # playback follows wall time (tests replace the clock)

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.time = 0.0
        self._play_origin: tuple[float, float] | None = None  # (wall clock, timeline time) when playback started
        self.ticks = 0
        self.dropped = 0  # frames skipped because a tick came late (a slow render, a busy machine)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        self.list = QListWidget()
        self.list.setMaximumHeight(64)
        self.list.setFlow(QListWidget.LeftToRight)
        self.list.setAccessibleName("keyframes")
        self.time_box = QDoubleSpinBox()
        self.time_box.setRange(0, 600)
        self.time_box.setDecimals(2)
        self.time_box.setSuffix(" s")
        self.time_box.setToolTip("time of the next keyframe")
        self.add_btn = QPushButton("Add keyframe")
        self.del_btn = QPushButton("Remove")
        self.play_btn = QPushButton("Play")
        self.play_btn.setCheckable(True)
        self.scrub = QSlider(Qt.Horizontal)
        self.scrub.setRange(0, 1000)
        self.scrub.setAccessibleName("timeline scrub")
        self.scrub.setFocusPolicy(Qt.StrongFocus)
        self.time_label = QLabel("0.00 s")
        for w in (QLabel("Timeline"), self.list, self.time_box, self.add_btn, self.del_btn, self.play_btn):
            lay.addWidget(w)
        lay.addWidget(self.scrub, 1)
        lay.addWidget(self.time_label)
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / self.FPS))
        self.timer.timeout.connect(self._tick)
        self.add_btn.clicked.connect(self.add_keyframe)
        self.del_btn.clicked.connect(self.remove_selected)
        self.play_btn.toggled.connect(self.set_playing)
        self.scrub.valueChanged.connect(self._on_scrub)
        self.scrub.sliderReleased.connect(lambda: self.timeChanged.emit(self.time, True))
        self.refresh()

    def refresh(self) -> None:
        ks = self.session.keyframes
        self.list.clear()
        for i, k in enumerate(ks):
            self.list.addItem(f"#{i + 1}  {k.time:.2f} s")
        self.time_box.setValue(ks[-1].time + 1.0 if ks else 0.0)
        has = bool(ks)
        self.del_btn.setEnabled(has)
        self.play_btn.setEnabled(len(ks) > 1)
        self.scrub.setEnabled(len(ks) > 1)

    def add_keyframe(self) -> None:
        self.session.add_keyframe(self.time_box.value())
        self.refresh()
        self.keyframesChanged.emit()

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row < 0 and self.session.keyframes:
            row = len(self.session.keyframes) - 1
        if row >= 0:
            self.session.remove_keyframe(row)
            self.refresh()
            self.keyframesChanged.emit()

    def _span(self):
        ks = self.session.keyframes
        return (ks[0].time, ks[-1].time) if ks else (0.0, 0.0)

    def _on_scrub(self, v: int) -> None:
        t0, t1 = self._span()
        self.time = t0 + (t1 - t0) * v / 1000.0
        self.time_label.setText(f"{self.time:.2f} s")
        if len(self.session.keyframes) > 1:
            self.timeChanged.emit(self.time, not self.scrub.isSliderDown() and not self.timer.isActive())

    def set_playing(self, on: bool) -> None:
        if on and len(self.session.keyframes) > 1:
            self.time = self._span()[0]
            self._play_origin = (self.clock(), self.time)
            self._last_tick = self.clock()
            self.ticks = self.dropped = 0
            self.timer.start()
            self.play_btn.setText("Stop")
        else:
            self.timer.stop()
            self._play_origin = None
            self.play_btn.setText("Play")
            if self.play_btn.isChecked():
                self.play_btn.setChecked(False)
            elif len(self.session.keyframes) > 1:
                self.timeChanged.emit(self.time, True)

    def _tick(self) -> None:
        """Show the face at the wall-clock time since Play (looping): a late tick skips frames instead of
        slowing the animation down."""
        t0, t1 = self._span()
        if t1 <= t0 or self._play_origin is None:
            self.set_playing(False)
            return
        now = self.clock()
        wall0, start = self._play_origin
        self.ticks += 1
        self.dropped += max(0, int((now - self._last_tick) * self.FPS + 0.5) - 1)
        self._last_tick = now
        t = t0 + ((start - t0) + (now - wall0)) % (t1 - t0)
        self.scrub.blockSignals(True)
        self.scrub.setValue(int(round(1000 * (t - t0) / (t1 - t0))))
        self.scrub.blockSignals(False)
        self.time = t
        self.time_label.setText(f"{t:.2f} s")
        self.timeChanged.emit(t, False)


class JobDialog(QDialog):
    """A dialog that runs one long job in a worker thread: an info line, a progress bar, a start button and
    Cancel/Close. Closing it cancels a running job. Subclasses build their form, call :meth:`_build_job_ui`, and start
    work with :meth:`_run_job`; :meth:`_can_start` says whether the start button is enabled when idle."""

    def _build_job_ui(self, form, start_text: str, info: str = "", maximum: int = 100) -> None:
        self.job: Job | None = None
        self.last_error: str | None = None
        self.info = QLabel(info)
        self.info.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, maximum)
        self.progress.setValue(0)
        self.buttons = QDialogButtonBox()
        self.start_btn = self.buttons.addButton(start_text, QDialogButtonBox.AcceptRole)
        self.cancel_btn = self.buttons.addButton(QDialogButtonBox.Cancel)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.info)
        lay.addWidget(self.progress)
        lay.addWidget(self.buttons)
        self.start_btn.clicked.connect(self._start_from_ui)
        self.cancel_btn.clicked.connect(self._cancel_or_close)

    def _start_from_ui(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _can_start(self) -> bool:
        return True

    def _run_job(self, fn, cancel_types, on_done, what: str, maximum: int | None = None) -> Job:
        """Start ``fn(progress, cancel)`` in a worker thread; ``on_done(result)`` runs in the GUI thread."""
        self.last_error = None
        if maximum is not None:
            self.progress.setRange(0, maximum)
        self.progress.setValue(0)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setText("Cancel")
        job = Job(fn, cancel_types=cancel_types)
        job.progress.connect(lambda d, t: self.progress.setValue(d))
        job.done.connect(on_done)
        job.error.connect(lambda msg: self._error(what, msg))
        job.cancelled.connect(lambda: self._finish(f"{what} cancelled: nothing was written."))
        self.job = job
        job.start()
        return job

    def _error(self, what: str, msg: str) -> None:
        self.last_error = msg
        self._finish(f"{what} failed: {msg}")

    def _finish(self, text: str) -> None:
        self.info.setText(text)
        self.start_btn.setEnabled(self._can_start())
        self.cancel_btn.setText("Close")

    def _cancel_or_close(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
        else:
            self.reject()

    def done(self, r) -> None:  # closing the dialog cancels a running job
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.job.wait(10000)
        super().done(r)


class ExportDialog(JobDialog):
    """Format, fps, frame count, size, output path; a progress bar and Cancel while the export runs."""

    FILTERS = {"mp4": "MP4 video (*.mp4)", "gif": "GIF animation (*.gif)", "png": "PNG frames folder (*)"}
    last_folder: Path | None = None  # the folder of the last successful export in this run

    def __init__(self, session, parent=None, session_path: Path | str | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export animation")
        self.session = session
        self.result_path: Path | None = None
        form = QFormLayout()
        self.fmt = QComboBox()
        self.fmt.addItems(["mp4", "gif", "png"])
        self.fps = QSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(24)
        self.frames = QSpinBox()
        self.frames.setRange(1, 5000)
        self.size = QSpinBox()
        self.size.setRange(32, 2048)
        self.size.setSingleStep(32)
        self.size.setValue(default_export_size(session))
        self.path = QLineEdit(str(default_export_path(session, session_path, self.last_folder)))
        browse = QPushButton("Browse…")
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Format", self.fmt)
        form.addRow("Frames per second", self.fps)
        form.addRow("Frame count", self.frames)
        form.addRow("Size (px)", self.size)
        form.addRow("Save to", row)
        self._build_job_ui(form, "Export")
        self.export_btn = self.start_btn
        browse.clicked.connect(self._browse)
        self.fmt.currentTextChanged.connect(self._fmt_changed)
        self.path.textChanged.connect(self._path_changed)
        self.fps.valueChanged.connect(self._default_count)
        self._default_count()
        self._update_info()

    def _default_count(self) -> None:
        self.frames.setValue(max(1, int(round(self.session.duration * self.fps.value())) + 1))

    def _update_info(self) -> None:
        n = len(self.session.keyframes)
        self.info.setText(f"{n} keyframe(s), {self.session.duration:.2f} s — {self.session.mode_text}"
                          if n else "No keyframes yet: add some on the timeline first.")
        self.export_btn.setEnabled(n > 0)

    def _can_start(self) -> bool:
        return bool(self.session.keyframes)

    def _fmt_changed(self, fmt: str) -> None:
        """A new format renames the target to match (clip.gif -> clip.mp4; a folder for PNG frames)."""
        p = Path(self.path.text())
        stem = p.with_suffix("") if p.suffix.lower() in (".mp4", ".gif") else p
        new = str(stem) + ("" if fmt == "png" else f".{fmt}")
        if new != self.path.text():
            self.path.blockSignals(True)
            self.path.setText(new)
            self.path.blockSignals(False)

    def _path_changed(self, text: str) -> None:
        """A typed or browsed name ending in .gif/.mp4 sets the format: the extension decides."""
        suf = Path(text).suffix.lower()
        fmt = suf[1:] if suf in (".gif", ".mp4") else None
        if fmt and fmt != self.fmt.currentText():
            self.fmt.blockSignals(True)
            self.fmt.setCurrentText(fmt)
            self.fmt.blockSignals(False)

    def _browse(self) -> None:
        fmt = self.fmt.currentText()
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text(), self.FILTERS[fmt])
        if path:
            self.path.setText(path)

    def _start_from_ui(self) -> None:
        self.start_export(self.path.text(), self.fmt.currentText(), self.fps.value(), self.frames.value(),
                          self.size.value())

    def start_export(self, path, fmt: str, fps: int, n_frames: int, size: int) -> Job:
        """Run the export in a worker thread (the backend of the Export button)."""
        self.result_path = None
        sess = self.session

        def run(progress, cancel):
            return export_sequence(sess, path, fmt=fmt, fps=fps, n_frames=n_frames, size=size, progress=progress,
                                   cancel=cancel)
        return self._run_job(run, (ExportCancelled,), self._done, "Export", maximum=n_frames)

    def _done(self, path) -> None:
        self.result_path = Path(path)
        ExportDialog.last_folder = self.result_path.parent
        self._finish(f"Wrote {path}")


class SessionGuard(QObject):
    """Never lose work, for one window: autosave of its session ``delay`` s after the last edit, the
    Save / Discard / Cancel prompt when closing with unsaved changes, and removal of the autosave on a clean quit.

    The window calls ``changed()`` after every edit, ``saved(path)`` after saving or opening a session file,
    ``mark_clean()`` after opening a photo or starting a fresh face, and ``confirm_close()`` from its close event (False: keep the window open). ``ask`` (tests) replaces the prompt:
    it returns "save", "discard" or "cancel".
    """

    def __init__(self, window, autosave: Autosave | None = None, ask=None):
        super().__init__(window)
        self.window = window
        self.autosave = autosave if autosave is not None else Autosave()
        self.ask = ask
        self.path: Path | None = None  # the session file last saved / opened
        self.last_error: str | None = None
        self.closed = False
        self._baseline = session_text(window.session)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(self.autosave.delay * 1000))
        self.timer.timeout.connect(self.flush)
        add_signal_hook(self._flush_pending)  # a SIGTERM/Ctrl+C still saves the last second of edits

    def _flush_pending(self) -> None:
        if self.autosave.pending:
            self.flush()

    @property
    def session(self):
        return self.window.session

    @property
    def dirty(self) -> bool:
        """The session differs from the last saved / opened file (or from the fresh start)."""
        return session_text(self.session) != self._baseline

    def changed(self) -> None:
        if self.closed:
            return
        self.autosave.changed()
        self.timer.start()  # restarts: one write after the edits pause

    def flush(self) -> None:
        """Write the autosave now (nothing unsaved: remove it instead, there is nothing to restore)."""
        self.timer.stop()
        try:
            if self.dirty:
                self.autosave.flush(self.session, force=True)
            else:
                self.autosave.clear()
        except ValueError as exc:  # a full disk must not stop the editing; say it in the status bar
            self.last_error = str(exc)
            self.window.status(f"autosave failed: {exc}", 10000)

    def saved(self, path) -> None:
        self.path = Path(path)
        self._baseline = session_text(self.session)
        self.flush()

    def mark_clean(self) -> None:
        """The current state is the new starting point (a photo opened, a fresh face): nothing unsaved, no file
        yet (a Save on quit asks where), the autosave removed."""
        self.path = None
        self._baseline = session_text(self.session)
        self.flush()

    def _ask(self) -> str:
        if self.ask is not None:
            return self.ask()
        box = QMessageBox(QMessageBox.Warning, "DiscoFace studio", "The session has unsaved changes.",
                          QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, self.window)
        box.setInformativeText("Save them before quitting?")
        box.setDefaultButton(QMessageBox.Save)
        answer = box.exec()
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(answer, "cancel")

    def _save(self) -> bool:
        path = self.path
        if path is None:
            start = str(Path.cwd() / "face.json")
            name, _ = QFileDialog.getSaveFileName(self.window, "Save session", start, "DiscoFace session (*.json)")
            if not name:
                return False
            path = Path(name if name.lower().endswith(".json") else name + ".json")
        return bool(self.window.save_session(path))

    def confirm_close(self) -> bool:
        """Ask about unsaved changes; True when the window may close (the autosave is then removed)."""
        if self.closed:  # asked and answered once already
            return True
        if self.dirty:
            choice = self._ask()
            if choice == "cancel" or (choice == "save" and not self._save()):
                return False
        self.timer.stop()
        self.autosave.clear()
        self.closed = True
        remove_signal_hook(self._flush_pending)
        return True


def offer_restore(parent, orphans: list[Orphan], ask=None) -> Orphan | None:
    """Ask whether to restore the newest autosave left by an editor that did not quit cleanly. Returns the one
    to restore, or None (the user declined: those autosaves are removed)."""
    if not orphans:
        return None
    newest = orphans[0]
    if ask is not None:
        yes = ask(newest)
    else:
        box = QMessageBox(QMessageBox.Question, "DiscoFace studio",
                          f"DiscoFace studio did not quit cleanly last time ({newest.when}).",
                          QMessageBox.Yes | QMessageBox.No, parent)
        box.setInformativeText("Restore the unsaved session?")
        box.button(QMessageBox.Yes).setText("Restore")
        box.button(QMessageBox.No).setText("Discard")
        yes = box.exec() == QMessageBox.Yes
    if not yes:
        for o in orphans:
            Autosave.discard(o)
        return None
    return newest  # older ones (two editors that both crashed) stay, offered at the next start

