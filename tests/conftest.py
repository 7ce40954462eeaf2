import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the editor's autosave goes to $XDG_STATE_HOME/discoface: never the real user's folder during tests
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="discoface-test-state-")

import pytest  # noqa: E402

from engine import config  # noqa: E402


def _require(path, what):
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set DISCOFACE_DATA to the shared data folder)")
    return path


@pytest.fixture(autouse=True)
def _own_photo_cache(tmp_path_factory, monkeypatch):
    """Each test its own photo cache (``discoface edit``'s, engine/editing/photo_cache.py): never the user's folder, and
    no test reads what another left there."""
    monkeypatch.setenv("DISCOFACE_PHOTO_CACHE", str(tmp_path_factory.mktemp("photo-cache")))


@pytest.fixture(scope="session")
def ict_path():
    return _require(config.ict_face_path(), "ICT face model")


@pytest.fixture(scope="session")
def face_model(ict_path):
    from engine.face.model import FaceModel

    return FaceModel.load(ict_path)


@pytest.fixture(scope="session")
def head(face_model):
    """The full head (face region + ict_parts.npz)."""
    from engine.face.head import HeadModel

    return HeadModel.load(face_model, _require(config.data_dir() / "ict-face" / "ict_parts.npz", "ICT head parts"))


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


@pytest.fixture(scope="session")
def ffhq_aligned(ffhq_dir):
    """The 10 ffhq-samples aligned to the 128 px canonical crop with their ground-truth landmarks:
    (uint8 crops (10, 128, 128, 3), float landmarks (10, 68, 2) in crop pixels)."""
    import numpy as np
    import torch

    from engine.perception.align import align_with_landmarks, load_image

    crops, lms = [], []
    for i in range(10):
        img = load_image(ffhq_dir / "images" / f"{i:05d}.png")
        lm = np.load(ffhq_dir / "landmarks" / f"{i:05d}.npy")
        c, al = align_with_landmarks(img, lm, 128)
        crops.append(c)
        lms.append(al.landmarks_crop)
    return np.stack(crops), torch.from_numpy(np.stack(lms)).float()
