"""DiscoFace studio: ``python main.py`` opens the editor, ``python main.py face.json`` / ``photo.jpg`` opens the
editor with that session or photo, ``python main.py <command> …`` runs the CLI (render, grid, generate, fit,
embed, export, train — see ``python main.py --help``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

GUI_FLAGS = ("--gui",)
HELP_FLAGS = ("-h", "--help")
EDITOR_OPTIONS = ("--size",)
OPENABLE_SUFFIXES = (".json", ".jpg", ".jpeg", ".png", ".bmp", ".webp")


def cli_commands() -> set[str]:
    """The subcommand names of the ``discoface`` command line."""
    from engine.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def route(argv: list[str]) -> str:
    """``"app"`` or ``"cli"`` for these arguments.

    The editor: no argument, ``--gui``, a file to open (``face.json``, ``photo.jpg``) or editor options
    (``--size N``). The CLI: a command name or ``--help``; anything else also goes to the CLI, whose parser
    says what is wrong (a mistyped command is not opened as a photo).
    """
    if not argv or argv[0] in GUI_FLAGS:
        return "app"
    first = argv[0]
    if first in HELP_FLAGS or first in cli_commands():
        return "cli"
    return "app" if looks_like_editor_args(argv) else "cli"


def looks_like_editor_args(argv: list[str]) -> bool:
    """An editor option (``--size N``) or a session / photo to open (by its suffix, or an existing file)."""
    first = argv[0]
    if first.split("=", 1)[0] in EDITOR_OPTIONS:
        return True
    if first.startswith("-"):
        return False
    return first.lower().endswith(OPENABLE_SUFFIXES) or Path(first).is_file()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if route(argv) == "cli":
        from engine.cli import main as cli_main  # sets the thread policy and the SIGTERM cleanup

        return cli_main(argv)
    return _editor()(argv[1:] if argv and argv[0] in GUI_FLAGS else argv)


def _editor():
    """The editor's ``run``, imported as ``discoface`` starts (engine/startup.py: torch, Qt and the editor's modules
    imported without the garbage collector's passes over them, then frozen)."""
    from engine import startup

    paused = startup.pause_gc()
    try:
        startup.import_torch()
        from app.main import run

        startup.start_up_done(paused)
    finally:
        startup.resume_gc(paused)
    return run


if __name__ == "__main__":
    if route(sys.argv[1:]) == "cli":
        from engine.cli import entry  # (the process ends as the discoface command's does: engine.startup.exit_now)

        entry(sys.argv[1:])
    sys.exit(main())
