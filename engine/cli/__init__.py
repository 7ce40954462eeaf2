"""``discoface`` command line: one module per command group, registered in :data:`COMMANDS`.

Every command exits 0 on success and, on a user mistake (bad file, bad value), prints one line ``error: …`` and
exits 2 without writing a partial output. A new command group is a module with ``register(subparsers)`` that adds
its sub-commands (each ``set_defaults(fn=...)``), listed in :data:`COMMANDS`.

This module and the command modules import only what building the parser needs (no torch): each command imports
its engine parts when it runs, so ``--help`` and one command do not pay for the others' imports (``python -X
importtime -c "import engine.cli"``).
"""
from __future__ import annotations

import argparse
import sys

from engine import startup
from engine.cli import drive, export, photo, render
from engine.cli.common import EXIT_USER_ERROR, UsageError

COMMANDS = (render, photo, export, drive)  # each module: register(subparsers)

__all__ = ["main", "entry", "build_parser", "UsageError", "COMMANDS"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own mistakes: one line, exit 2 (as every other user mistake)
        if "invalid choice: 'train'" in message:
            message = "training is not part of the discoface command: run `python -m training --help`"
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:  # the device line imports torch: only when help is shown
        text = super().format_help()
        if self.prog != "discoface":
            return text
        startup.import_torch()  # (the quick way: engine/startup.py)
        from engine.runtime import DeviceSettingError, device_description

        try:
            return f"{text}\ncompute device: {device_description()}\n"
        except DeviceSettingError as exc:
            return f"{text}\ncompute device: {exc}\n"


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="discoface", description="DiscoFace studio command line (training: python -m training)")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return ap


def entry(argv: list[str] | None = None) -> None:
    """The ``discoface`` console script: :func:`main`, then the process ends without the interpreter's tear-down
    (:func:`engine.startup.exit_now`: output flushed and the atexit functions run first). ``main`` itself returns
    (the tests and main.py call it)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors and --help
        code = exc.code
    startup.exit_now(code)


def main(argv: list[str] | None = None) -> int:
    paused = startup.pause_gc()  # a fresh process: no collector passes over torch's objects (engine/startup.py)
    try:
        args = build_parser().parse_args(argv)
        prefetch = getattr(args, "prefetch", None)  # work a command starts before torch loads (a forked process)
        args.prefetched = prefetch(args) if prefetch is not None else None
        try:
            return _run(args, paused)
        finally:
            if args.prefetched is not None:
                args.prefetched.close()
    finally:
        startup.resume_gc(paused)


def _run(args, paused: bool = False) -> int:
    startup.import_torch()
    from engine.render import fast_raster
    from engine.runtime import setup_entry_point

    startup.start_up_done(paused)  # torch and the engine's render modules imported
    setup_entry_point("cli")
    fast_raster.defer()  # a few frames: not worth loading the compiled kernels (commands with many ask for them)
    try:
        from engine.runtime import device

        device()  # a bad or absent DISCOFACE_DEVICE is one 'error:' line before any work
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # every user-facing error type in the engine derives from ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    entry()
