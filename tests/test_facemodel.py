"""Face model loading/validation and the Coefficients layout."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from engine.face.model import Coefficients, CoefficientsError, FaceModel, FaceModelError, load_ict_arrays


def test_loads_ict_and_builds_faces(face_model):
    assert face_model.n_vertices == 9409
    assert face_model.triangles.shape == (18460, 3)
    assert len(face_model.exp_names) == 53 and "jawOpen" in face_model.exp_names
    c = face_model.zeros(2)
    c.identity[1].normal_(generator=torch.Generator().manual_seed(0))
    v = face_model.vertices(c)
    assert v.shape == (2, 9409, 3)
    assert torch.allclose(v[0], face_model.mean)
    assert not torch.allclose(v[1], face_model.mean)
    # jawOpen moves the chin (landmark 8) down by centimetres
    c2 = face_model.zeros(1)
    c2.expr["jawOpen"] = 1.0
    chin = face_model.vertices(c2)[0, face_model.lm68[8]]
    assert chin[1] < face_model.mean[face_model.lm68[8], 1] - 1.0


def test_vertex_normals_point_out_of_the_face(face_model):
    n = face_model.vertex_normals(face_model.mean[None])
    assert torch.allclose(n.norm(dim=-1), torch.ones(1, 9409), atol=1e-4)
    nose = face_model.lm68[30]
    assert n[0, nose, 2] > 0.7  # nose tip faces the viewer (+z)


def test_expression_groups_cover_all_names(face_model):
    groups = face_model.expression_groups()
    names = [n for g in groups.values() for n in g]
    assert sorted(names) == sorted(face_model.exp_names)
    assert "jawOpen" in groups["jaw"] and "eyeBlink_L" in groups["eyes"] and "browDown_L" in groups["brows"]


def test_named_expression_access_and_json_roundtrip(face_model):
    c = face_model.zeros(2)
    c.expr["jawOpen"] = 0.8
    c.identity[0, 3] = 1.25
    c.set_pose_degrees(yaw=30, pitch=-10)
    assert torch.allclose(c.expr["jawOpen"], torch.tensor([0.8, 0.8]))
    with pytest.raises(KeyError, match="unknown expression"):
        c.expr["smileBig"]
    d = json.loads(c.to_json())
    assert d["items"][0]["pose_degrees"]["yaw"] == pytest.approx(30)
    assert d["items"][0]["expression"]["jawOpen"] == pytest.approx(0.8)
    back = Coefficients.from_json_dict(d, face_model.exp_names)
    for name in Coefficients.FACTORS:
        assert torch.allclose(getattr(back, name), getattr(c, name), atol=1e-5), name
    vec = c.as_vector()
    again = Coefficients.from_vector(vec, c.albedo_dim, face_model.exp_names)
    assert torch.equal(again.as_vector(), vec)
    assert Coefficients.cat([c, c[0]]).batch == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not a coefficients file"),
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d["items"][0]["expression"].update(bogus=1.0), "unknown expressions"),
    (lambda d: d["items"][0].pop("pose_degrees"), "malformed"),
    (lambda d: d["items"][0].update(light=[float("nan")] * 27), "non-finite"),
])
def test_bad_coefficients_json_is_refused(face_model, mutate, message):
    d = face_model.zeros(1).to_json_dict()
    mutate(d)
    with pytest.raises(CoefficientsError, match=message):
        Coefficients.from_json_dict(d, face_model.exp_names)


def _write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def good_arrays(ict_path):
    return load_ict_arrays(ict_path)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "ict_face.npz"
    with pytest.raises(FaceModelError, match="face model not found: looked for .*nowhere"):
        FaceModel.load(missing)


def test_not_an_npz(tmp_path):
    p = tmp_path / "ict_face.npz"
    p.write_text("hello, I am not a zip file")
    with pytest.raises(FaceModelError, match="not a readable .npz"):
        FaceModel.load(p)


def test_truncated_npz(tmp_path, ict_path):
    p = tmp_path / "ict_face.npz"
    data = ict_path.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(FaceModelError, match="not a readable .npz"):
        FaceModel.load(p)


@pytest.mark.parametrize("name", ["mean", "triangles", "exp_names"])
def test_missing_array(tmp_path, good_arrays, name):
    arrays = {k: v for k, v in good_arrays.items() if k != name}
    p = _write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(FaceModelError, match=f"missing arrays \\['{name}'\\]"):
        FaceModel.load(p)


def test_wrong_shape(tmp_path, good_arrays):
    arrays = dict(good_arrays)
    arrays["id_basis"] = arrays["id_basis"][:, :100]
    p = _write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(FaceModelError, match="'id_basis' has shape \\(100, 100, 3\\)"):
        FaceModel.load(p)


def test_nan_values(tmp_path, good_arrays):
    arrays = dict(good_arrays)
    mean = arrays["mean"].copy()
    mean[5, 1] = np.nan
    arrays["mean"] = mean
    p = _write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(FaceModelError, match="'mean' contains NaN"):
        FaceModel.load(p)


def test_triangle_index_out_of_range(tmp_path, good_arrays):
    arrays = dict(good_arrays)
    tri = arrays["triangles"].copy()
    tri[0, 0] = 99999
    arrays["triangles"] = tri
    p = _write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(FaceModelError, match="triangle indices outside"):
        FaceModel.load(p)


def test_data_dir_setting(monkeypatch, tmp_path, ict_path):
    from engine import config

    (tmp_path / "ict-face").mkdir()
    shutil.copy(ict_path, tmp_path / "ict-face" / "ict_face.npz")
    monkeypatch.setenv("DISCOFACE_DATA", str(tmp_path))
    assert config.ict_face_path() == tmp_path / "ict-face" / "ict_face.npz"
    assert FaceModel.load(albedo_path=False).n_vertices == 9409
    assert math.isfinite(float(FaceModel.load(albedo_path=False).mean.sum()))


def test_expression_offsets_are_what_a_unit_weight_moves(face_model):
    """The public per-expression displacement (used by driving's lid retargeting) is the vertex move of weight 1."""
    c = face_model.zeros(1)
    c.expr["eyeBlink_L"] = 1.0
    moved = face_model.vertices(c)[0] - face_model.mean
    lm = face_model.expression_offsets("eyeBlink_L")
    assert lm.shape == (68, 3)
    assert torch.allclose(lm, moved[face_model.lm68], atol=1e-6)
    assert float(lm[[43, 44], 1].mean()) < -0.3  # the left upper lid comes down
    some = torch.tensor([5, 17, 900])
    assert torch.allclose(face_model.expression_offsets("jawOpen", some), face_model.exp_basis[
        face_model.exp_names.index("jawOpen")][some])
    with pytest.raises(KeyError, match="nope"):
        face_model.expression_offsets("nope")


def test_the_model_files_are_read_from_an_unpacked_copy(tmp_path, monkeypatch, ict_path):
    """The ICT files are deflated (~0.1 s to inflate at every start): the first read keeps an uncompressed copy in
    the user cache (``models/``, keyed by the file's place, size and mtime) and later reads take it, with the same
    arrays; a broken copy is never used (the source is read and the copy written again); no cache, no copy."""
    import zipfile
    from pathlib import Path

    from engine.face import model as M

    monkeypatch.setenv("DISCOFACE_PHOTO_CACHE", str(tmp_path / "cache"))
    src = M.read_npz(ict_path, "face model", ("mean",))
    copies = list((tmp_path / "cache" / "models").glob("ict_face-*.npz"))
    assert len(copies) == 1
    assert {i.compress_type for i in zipfile.ZipFile(copies[0]).infolist()} == {zipfile.ZIP_STORED}
    opened = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda p, *a, **k: opened.append(Path(p)) or real(p, *a, **k))
    again = M.read_npz(ict_path, "face model", ("mean",))
    assert opened == copies
    assert again.keys() == src.keys()
    assert all(again[k].dtype == src[k].dtype and np.array_equal(again[k], src[k]) for k in src)
    for broken in (b"PK\x03\x04 broken", b""):
        copies[0].write_bytes(broken)
        opened.clear()
        third = M.read_npz(ict_path, "face model", ("mean",))
        assert opened == [copies[0], Path(ict_path)] and all(np.array_equal(third[k], src[k]) for k in src)
        opened.clear()
        M.read_npz(ict_path, "face model", ("mean",))
        assert opened == copies  # written again
    monkeypatch.setenv("DISCOFACE_PHOTO_CACHE", str(tmp_path / "other"))
    with pytest.raises(M.FaceModelError, match="missing arrays"):
        M.read_npz(ict_path, "face model", ("no_such_array",))
    monkeypatch.setenv("DISCOFACE_PHOTO_CACHE", "off")
    opened.clear()
    M.read_npz(ict_path, "face model", ("mean",))
    assert opened == [Path(ict_path)]
