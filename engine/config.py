"""Where the engine finds data and shipped assets.

Data from ``../shared/data`` is never part of the project: it is found through the ``DISCOFACE_DATA``
setting, which defaults to ``../shared/data`` relative to the repository root.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"


def data_dir() -> Path:
    """Root of the shared data folder (``DISCOFACE_DATA`` or ``<repo>/../shared/data``)."""
    env = os.environ.get("DISCOFACE_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def ict_face_path() -> Path:
    return data_dir() / "ict-face" / "ict_face.npz"


def utkface_dir() -> Path:
    return data_dir() / "utkface"


def ffhq_samples_dir() -> Path:
    return data_dir() / "ffhq-samples"


def cache_dir() -> Path:
    """Working folder for derived data (aligned crops, fits); never committed."""
    env = os.environ.get("DISCOFACE_CACHE")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "cache"


PHOTO_CACHE_ENV = "DISCOFACE_PHOTO_CACHE"


def user_cache_root() -> Path | None:
    """The per-user cache of what commands keep between runs (the photo cache, engine/editing/photo_cache.py, and
    unpacked copies of the face model files): ``$DISCOFACE_PHOTO_CACHE`` (``off`` or ``0``: none, None), else
    ``$XDG_CACHE_HOME/discoface/photos``, else ``~/.cache/discoface/photos``."""
    env = os.environ.get(PHOTO_CACHE_ENV, "").strip()
    if env.lower() in ("0", "off", "no", "false"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "discoface" / "photos"
