"""What can go wrong in a drive, as types (every step raises these; a caller catches them by type)."""
from __future__ import annotations

__all__ = ["DriveError", "NoFaceError", "DriveCancelled"]


class DriveError(ValueError):
    """A drive the user asked for that cannot be done; the message says why."""


class NoFaceError(DriveError):
    """No face was found in any frame of the video."""


class DriveCancelled(Exception):
    """The user cancelled; nothing was written."""
