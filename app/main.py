"""Entry point of the editor: ``app.main.run(argv)`` (``python main.py [face.json|photo.jpg]`` calls it)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.editing.autosave import Autosave
from engine.editing.session import Session
from engine.runtime import setup_entry_point

from .dialogs import SessionGuard, offer_restore
from .window import MainWindow
from .worker import load_before_showing


class StartError(ValueError):
    """The editor cannot start (bad argument, missing file, no face model)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="discoface", description="DiscoFace studio editor")
    ap.add_argument("file", nargs="?", help="a session (.json) or a photo to open")
    ap.add_argument("--size", type=int, default=None, help="display render size in pixels (default: native)")
    args = ap.parse_args(argv)
    if args.file is not None and not Path(args.file).is_file():
        raise StartError(f"no such file: {args.file}")
    if args.size is not None and not 32 <= args.size <= 2048:
        raise StartError(f"--size must be between 32 and 2048 px, got {args.size}")
    return args


def build(argv: list[str], autosave: Autosave | None = None, ask_restore=None) -> MainWindow:
    """Create the main window for these arguments (QApplication must exist): the session, the autosave guard,
    the offer to restore a session a crash left behind, then the file to open (a file given wins: it is opened
    after a restore, as a step the user can undo)."""
    args = parse_args(argv)
    try:
        session = Session()
    except ValueError as exc:  # face model missing / unreadable
        raise StartError(f"cannot start the editor: {str(exc).strip().splitlines()[0]}") from None
    load_before_showing()  # GIL-bound loads while no window is visible yet (the start-up job does the rest)
    win = MainWindow(session, display_size=args.size)
    win.guard = SessionGuard(win, autosave)
    orphan = offer_restore(win, win.guard.autosave.orphans(), ask_restore)
    if orphan is not None:
        try:
            win.guard.autosave.restore(win.session, orphan)
        except ValueError as exc:
            win.show_error("Restore", f"the autosaved session could not be restored: {exc}")
        else:
            win.after_state_change()
            win.status(f"restored the session autosaved at {orphan.when}", 10000)
    if args.file:
        if args.file.lower().endswith(".json"):
            win.load_session(args.file)
        else:
            win.open_photo(args.file)
    return win


def open_start_photo(win: MainWindow):
    """Nothing opened or restored: start in photo mode on the bundled public-domain portrait (the first
    impression, issue 13.9). The window marks the opened photo clean, so quitting right away asks nothing.
    Returns the open job (None when something is already open)."""
    if win.session.can_undo:
        return None
    return win.open_bundled_photo()


def run(argv: list[str] | None = None) -> int:
    """Create the QApplication, show the main window, run the event loop; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "discoface"])
    app.setApplicationName("DiscoFace studio")
    setup_entry_point("app")  # 1 torch thread on a small machine; SIGTERM/Ctrl+C remove partial exports
    # Python runs signal handlers only between bytecodes: wake the interpreter while Qt's loop waits
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    try:
        win = build(argv)
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if "face model" in str(exc):
            QMessageBox.critical(None, "DiscoFace studio", str(exc))
        return 2
    if not parse_args(argv).file:
        open_start_photo(win)
    win.show()
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(run())
