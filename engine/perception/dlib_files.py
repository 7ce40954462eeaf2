"""Locate dlib model files and cache dlib objects (one load per process).

The 68-point shape predictor (and dlib's face-recognition ResNet) ship inside the registry package
``face_recognition_models``. That package imports ``pkg_resources`` on import, so it is located with
``importlib.util.find_spec`` instead of being imported.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"

_lock = threading.Lock()


class ModelFileError(RuntimeError):
    """A dlib model file is missing; the message says how to get it."""


def models_dir() -> Path:
    """Folder holding the dlib ``.dat`` files of the ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the Python package 'face_recognition_models' is not installed; "
            "install it with: pip install face_recognition_models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_file(name: str) -> Path:
    """Path of the dlib model file ``name`` (e.g. ``shape_predictor_68_face_landmarks.dat``)."""
    path = models_dir() / name
    if not path.is_file():
        raise ModelFileError(
            f"dlib model file {name} not found at {path}; reinstall the 'face_recognition_models' package")
    return path


def landmark_predictor_path() -> Path:
    return model_file(LANDMARKS_68)


@lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(landmark_predictor_path()))


def detector():
    """dlib's HOG frontal face detector, loaded once per process."""
    with _lock:
        return _detector()


def landmark_predictor():
    """dlib's 68-point shape predictor, loaded once per process."""
    with _lock:
        return _predictor()
