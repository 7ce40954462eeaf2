"""Timeline (keyframes, play, scrub) and the export dialog (runs the export in a worker thread)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QProgressBar, QPushButton, QSlider,
                               QSpinBox, QVBoxLayout, QWidget)

from engine.io.export import ExportCancelled, export_sequence

from .worker import Job


class Timeline(QWidget):
    """Keyframes of the session: add (at a time), remove, play/stop, scrub."""

    timeChanged = Signal(float, bool)  # (time, final): the window shows the face at that time
    keyframesChanged = Signal()
    FPS = 24

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.time = 0.0
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
            self.timer.start()
            self.play_btn.setText("Stop")
        else:
            self.timer.stop()
            self.play_btn.setText("Play")
            if self.play_btn.isChecked():
                self.play_btn.setChecked(False)
            elif len(self.session.keyframes) > 1:
                self.timeChanged.emit(self.time, True)

    def _tick(self) -> None:
        t0, t1 = self._span()
        if t1 <= t0:
            self.set_playing(False)
            return
        self.time += 1.0 / self.FPS
        if self.time > t1:
            self.time = t0  # loop
        self.scrub.setValue(int(round(1000 * (self.time - t0) / (t1 - t0))))


class ExportDialog(QDialog):
    """Format, fps, frame count, size, output path; a progress bar and Cancel while the export runs."""

    FILTERS = {"mp4": "MP4 video (*.mp4)", "gif": "GIF animation (*.gif)", "png": "PNG frames folder (*)"}

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export animation")
        self.session = session
        self.job: Job | None = None
        self.result_path: Path | None = None
        self.last_error: str | None = None
        form = QFormLayout()
        self.fmt = QComboBox()
        self.fmt.addItems(["mp4", "gif", "png"])
        self.fps = QSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(24)
        self.frames = QSpinBox()
        self.frames.setRange(1, 5000)
        self.size = QSpinBox()
        self.size.setRange(32, 1024)
        self.size.setSingleStep(32)
        self.size.setValue(min(256, session.native_size) if session.generator else 256)
        self.path = QLineEdit(str(Path.home() / "discoface.mp4"))
        browse = QPushButton("Browse…")
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Format", self.fmt)
        form.addRow("Frames per second", self.fps)
        form.addRow("Frame count", self.frames)
        form.addRow("Size (px)", self.size)
        form.addRow("Save to", row)
        self.info = QLabel()
        self.progress = QProgressBar()
        self.progress.setValue(0)
        self.buttons = QDialogButtonBox()
        self.export_btn = self.buttons.addButton("Export", QDialogButtonBox.AcceptRole)
        self.cancel_btn = self.buttons.addButton(QDialogButtonBox.Cancel)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.info)
        lay.addWidget(self.progress)
        lay.addWidget(self.buttons)
        self.export_btn.clicked.connect(self._start_from_ui)
        self.cancel_btn.clicked.connect(self._cancel_or_close)
        browse.clicked.connect(self._browse)
        self.fmt.currentTextChanged.connect(self._fmt_changed)
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

    def _fmt_changed(self, fmt: str) -> None:
        p = Path(self.path.text())
        stem = p.with_suffix("") if p.suffix.lower() in (".mp4", ".gif") else p
        self.path.setText(str(stem) + ("" if fmt == "png" else f".{fmt}"))

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
        self.result_path, self.last_error = None, None
        self.progress.setRange(0, n_frames)
        self.progress.setValue(0)
        self.export_btn.setEnabled(False)
        self.cancel_btn.setText("Cancel")
        sess = self.session

        def run(progress, cancel):
            return export_sequence(sess, path, fmt=fmt, fps=fps, n_frames=n_frames, size=size, progress=progress,
                                   cancel=cancel)
        job = Job(run, cancel_types=(ExportCancelled,))
        job.progress.connect(lambda d, t: self.progress.setValue(d))
        job.done.connect(self._done)
        job.error.connect(self._error)
        job.cancelled.connect(lambda: self._finish("Export cancelled: nothing was written."))
        self.job = job
        job.start()
        return job

    def _done(self, path) -> None:
        self.result_path = Path(path)
        self._finish(f"Wrote {path}")

    def _error(self, msg: str) -> None:
        self.last_error = msg
        self._finish(f"Export failed: {msg}")

    def _finish(self, text: str) -> None:
        self.info.setText(text)
        self.export_btn.setEnabled(bool(self.session.keyframes))
        self.cancel_btn.setText("Close")

    def _cancel_or_close(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
        else:
            self.reject()

    def done(self, r) -> None:  # closing the dialog cancels a running export
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.job.wait(10000)
        super().done(r)
