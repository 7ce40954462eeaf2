"""Entry point of the editor: ``app.main.run(argv)`` (``python main.py`` calls it)."""
from __future__ import annotations

import argparse
import sys


def run(argv: list[str] | None = None) -> int:
    """Create the QApplication, show the main window, run the event loop; returns the exit code.

    ``argv``: optional ``session.json`` or photo to open, ``--size N`` display size of the 3DMM preview.
    """
    ap = argparse.ArgumentParser(prog="discoface", description="DiscoFace studio editor")
    ap.add_argument("file", nargs="?", help="a session (.json) or a photo to open")
    ap.add_argument("--size", type=int, default=None, help="display render size in pixels (default: native)")
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))

    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "discoface"])
    app.setApplicationName("DiscoFace studio")
    try:
        from engine.editing.session import Session

        session = Session()
    except ValueError as exc:  # face model missing / unreadable: one clear message, no traceback
        msg = str(exc).strip().splitlines()[0]
        print(f"error: {msg}", file=sys.stderr)
        QMessageBox.critical(None, "DiscoFace studio", f"Cannot start the editor:\n{msg}")
        return 2
    from .window import MainWindow

    win = MainWindow(session, display_size=args.size)
    win.show()
    if args.file:
        if args.file.lower().endswith(".json"):
            win.load_session(args.file)
        else:
            win.open_photo(args.file)
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(run())
