"""Never lose work: the open session is autosaved (debounced, atomic) to a per-user state folder, and a session
left there by a crash or a kill is offered back at the next start. Qt-free; the editor drives it.

Files: ``$XDG_STATE_HOME/discoface/autosave-<pid>.json`` (default ``~/.local/state/discoface``), one per running
editor so two editors never overwrite each other's. A clean quit removes the file; a file whose editor process is
gone is an *orphan*: the next start offers to restore it (``Autosave.orphans()``).

The editor calls ``changed()`` on every edit and ``flush(session)`` once the edits have paused for ``delay``
seconds (``due()`` says when). The file is written with ``Session.save`` (an atomic rename: a kill during the write
leaves the previous autosave whole). ``session_text`` gives the bytes a session would be saved as, which is how the
editor tells unsaved changes (compared with the text at the last save/open).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

APP_DIR = "discoface"
DELAY_S = 1.0
_NAME = re.compile(r"^autosave-(\d+)\.json$")


class AutosaveError(ValueError):
    """The autosave folder or file cannot be used (the message says which and why)."""


def state_dir() -> Path:
    """The per-user state folder: ``$XDG_STATE_HOME/discoface`` or ``~/.local/state/discoface``."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / APP_DIR


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Orphan:
    """An autosave left behind by an editor that did not quit cleanly."""

    path: Path
    pid: int
    mtime: float

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.mtime))


def session_text(session) -> str:
    """The JSON text ``session.save`` writes for ``session`` now (from ``Session.to_json_dict``; nothing written)."""
    return json.dumps(session.to_json_dict(), indent=1)


class Autosave:
    """The autosave file of this editor process, its debounce clock, and the orphans of earlier runs."""

    def __init__(self, folder: Path | str | None = None, pid: int | None = None, delay: float = DELAY_S,
                 clock=time.monotonic):
        self.folder = Path(folder) if folder is not None else state_dir()
        self.pid = int(pid if pid is not None else os.getpid())
        self.delay = float(delay)
        self.clock = clock
        self._changed_at: float | None = None
        self.writes = 0

    @property
    def path(self) -> Path:
        return self.folder / f"autosave-{self.pid}.json"

    # -- debounce --------------------------------------------------------------------------- #
    def changed(self) -> None:
        """The session changed: (re)start the quiet period; ``flush`` writes once it is over."""
        self._changed_at = self.clock()

    @property
    def pending(self) -> bool:
        return self._changed_at is not None

    def due(self, now: float | None = None) -> bool:
        """A change waits and no other came for ``delay`` seconds."""
        if self._changed_at is None:
            return False
        now = self.clock() if now is None else now
        return now - self._changed_at >= self.delay

    def flush(self, session, force: bool = False) -> bool:
        """Write the pending change now if it is ``due`` (or ``force``); True if a file was written."""
        if self._changed_at is None or not (force or self.due()):
            return False
        self.write(session)
        return True

    def write(self, session) -> Path:
        """Save ``session`` to this process's autosave file (atomic; the folder is created, mode 0700)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.folder, 0o700)  # sessions can hold a photo's embedding: private to the user
        except OSError as exc:
            raise AutosaveError(f"cannot create the autosave folder {self.folder}: "
                                f"{(exc.strerror or str(exc)).lower()}") from None
        session.save(self.path)
        self._changed_at = None
        self.writes += 1
        return self.path

    def clear(self) -> None:
        """A clean quit: remove this process's autosave (nothing to restore next time)."""
        self._changed_at = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    # -- crash recovery --------------------------------------------------------------------- #
    def orphans(self) -> list[Orphan]:
        """Autosaves whose editor is gone (crashed, killed), newest first. This process's own file counts as an
        orphan only if it exists before this process wrote one (a re-used pid)."""
        out = []
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            return []
        for p in entries:
            m = _NAME.match(p.name)
            if not m or not p.is_file():
                continue
            pid = int(m.group(1))
            if pid == self.pid:
                if self.writes:
                    continue
            elif _alive(pid):
                continue
            try:
                out.append(Orphan(p, pid, p.stat().st_mtime))
            except OSError:
                continue
        return sorted(out, key=lambda o: -o.mtime)

    def restore(self, session, orphan: Orphan) -> None:
        """Load ``orphan`` into ``session`` (undoable), take it over as this process's autosave, remove it."""
        session.load_file(orphan.path)
        self.write(session)
        if orphan.path != self.path:
            self.discard(orphan)

    @staticmethod
    def discard(orphan: Orphan) -> None:
        with contextlib.suppress(OSError):
            orphan.path.unlink()
