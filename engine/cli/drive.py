"""``drive``: put the expression (and head motion) of a person in a video on a photo or a session's face.

The command itself lives with the video driver (``engine/drive/cli.py``: ``add_drive_parser`` / ``cmd_drive``);
this module only registers it in ``discoface``'s command table.
"""
from __future__ import annotations

from engine.drive.cli import add_drive_parser, cmd_drive

__all__ = ["register", "cmd_drive"]


def register(sub) -> None:
    add_drive_parser(sub)  # sets fn=cmd_drive
