import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from engine import config  # noqa: E402


def _require(path, what):
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set DISCOFACE_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def ict_path():
    return _require(config.ict_face_path(), "ICT face model")


@pytest.fixture(scope="session")
def face_model(ict_path):
    from engine.facemodel import FaceModel

    return FaceModel.load(ict_path)


@pytest.fixture(scope="session")
def renderer(face_model):
    from engine.render import FaceRenderer

    return FaceRenderer(face_model)


@pytest.fixture(scope="session")
def ffhq_dir():
    return _require(config.ffhq_samples_dir(), "ffhq-samples")


@pytest.fixture(scope="session")
def utk_dir():
    return _require(config.utkface_dir(), "UTKFace")
