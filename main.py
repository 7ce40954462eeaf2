"""DiscoFace studio: `python main.py` opens the editor; `python main.py <command> …` runs the CLI
(render, grid, generate, fit, embed, export, train — see `python main.py --help`)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("--gui",):
        from engine.cli import main as cli_main

        return cli_main(argv)
    from app.main import run

    return run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
