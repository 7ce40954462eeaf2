"""File → Drive from video…: put the expression (and head motion) of a filmed person on the current face or on a
photo / session file. The drive runs in a worker thread (progress + Cancel); a cancelled or failed drive leaves no
file. When it finishes, the driven keyframe track can be opened on the timeline (``Session.load_file``, undoable).

The editor wires it with ``DriveDialog(window.session, window)``; ``trackLoaded`` fires after the track replaced
the session's face and keyframes (refresh the sliders and the timeline then).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPushButton, QWidget)

from engine.drive import DriveCancelled, SessionTarget, drive

from .dialogs import JobDialog, default_export_path
from .worker import Job

VIDEO_FILTER = "Videos (*.mp4 *.mov *.webm *.mkv *.avi *.m4v *.gif);;All files (*)"
TARGET_FILTER = "Photos and sessions (*.jpg *.jpeg *.png *.webp *.bmp *.json);;All files (*)"
STAGES = {"target": 0, "tracking": 1, "fitting": 2, "rendering": 3}


def _path_row(edit: QLineEdit, on_browse) -> QWidget:
    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    b = QPushButton("Browse…")
    b.clicked.connect(on_browse)
    row.addWidget(edit, 1)
    row.addWidget(b)
    return w


class DriveDialog(JobDialog):
    trackLoaded = Signal(str)  # the track file now open in the session

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Drive from video")
        self.session = session
        self.result = None
        self.video = QLineEdit()
        self.target_kind = QComboBox()
        self.target_kind.addItems(["Current face", "Photo or session file"])
        self.target_path = QLineEdit()
        self.output = QLineEdit(str(default_export_path(session).with_name("driven.mp4")))
        self.head_motion = QCheckBox("Head motion (relative to the video's first frame)")
        self.head_motion.setChecked(True)
        self.side = QCheckBox("Also write a side-by-side preview (video | result)")
        self.open_track = QCheckBox("Open the driven track on the timeline")
        self.open_track.setChecked(True)
        self.expr_strength = QDoubleSpinBox()
        self.pose_strength = QDoubleSpinBox()
        for sb in (self.expr_strength, self.pose_strength):
            sb.setRange(0.0, 2.0)
            sb.setSingleStep(0.1)
            sb.setValue(1.0)
        form = QFormLayout()
        form.addRow("Video", _path_row(self.video, self._browse_video))
        form.addRow("Drive", self.target_kind)
        self.target_row = _path_row(self.target_path, self._browse_target)
        form.addRow("Photo / session", self.target_row)
        form.addRow("Save to", _path_row(self.output, self._browse_output))
        form.addRow("Expression strength", self.expr_strength)
        form.addRow("Head-motion strength", self.pose_strength)
        form.addRow(self.head_motion)
        form.addRow(self.side)
        form.addRow(self.open_track)
        self._build_job_ui(form, "Drive", "Choose a video with a clearly visible face.", maximum=1000 * len(STAGES))
        self.drive_btn = self.start_btn
        self.target_kind.currentIndexChanged.connect(self._kind_changed)
        self.head_motion.toggled.connect(self.pose_strength.setEnabled)
        self._kind_changed()

    # ------------------------------------------------------------------------------------------------ ui
    def _kind_changed(self) -> None:
        self.target_row.setEnabled(self.target_kind.currentIndex() == 1)

    def _browse_video(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Driving video", self.video.text(), VIDEO_FILTER)
        if p:
            self.video.setText(p)
            out = Path(self.output.text())
            self.output.setText(str(out.with_name(Path(p).stem + "_driven.mp4")))

    def _browse_target(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Face to drive", self.target_path.text(), TARGET_FILTER)
        if p:
            self.target_path.setText(p)

    def _browse_output(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Save the result", self.output.text(), "MP4 video (*.mp4)")
        if p:
            self.output.setText(p if p.lower().endswith(".mp4") else p + ".mp4")

    def _start_from_ui(self) -> None:
        target = None if self.target_kind.currentIndex() == 0 else self.target_path.text()
        self.start_drive(self.video.text(), self.output.text(), target=target,
                         head_motion=self.head_motion.isChecked(), side_by_side=self.side.isChecked(),
                         expression_strength=self.expr_strength.value(), pose_strength=self.pose_strength.value(),
                         open_track=self.open_track.isChecked())

    # ----------------------------------------------------------------------------------------- backend
    def start_drive(self, video, output, target=None, head_motion: bool = True, side_by_side: bool = False,
                    expression_strength: float = 1.0, pose_strength: float = 1.0, open_track: bool = True) -> Job:
        """Run the drive in a worker thread (the backend of the Drive button). ``target`` None = the current
        face; else a photo or session path."""
        self.result = None
        self.info.setText("Reading the video…")
        out = Path(str(output))
        track_path = out.with_name(out.stem + "_track.json") if open_track else None
        tgt = SessionTarget.from_session(self.session) if target is None else str(target)
        self._open_track = open_track

        def run(progress, cancel):
            def prog(stage, done, total):
                k = STAGES.get(stage, 0)
                progress(int(1000 * k + 1000 * done / max(total, 1)), 1000 * len(STAGES))
            return drive(str(video), tgt, out, expression_only=not head_motion, side_by_side=side_by_side,
                         expression_strength=expression_strength, pose_strength=pose_strength,
                         track_path=track_path, progress=prog, cancel=cancel)

        return self._run_job(run, (DriveCancelled,), self._done, "Drive")

    def _done(self, res) -> None:
        self.result = res
        self.progress.setValue(1000 * len(STAGES))
        text = res.summary()
        if res.track.notes:
            text += "\n" + "\n".join(res.track.notes)
        if self._open_track and res.track_file is not None:
            try:
                self.session.load_file(res.track_file)
            except ValueError as exc:
                text += f"\nThe track could not be opened: {exc}"
            else:
                text += f"\nThe track ({len(self.session.keyframes)} keyframes) is on the timeline."
                self.trackLoaded.emit(str(res.track_file))
        self._finish(text)
