"""Mesh export (issue 22): the fitted head with the edits baked in, textured with the photo (UVs = where the fit saw
each vertex), as GLB / glTF / OBJ (+ .mtl + .png) / PLY (vertex colours); read back with trimesh; CLI and editor."""
from pathlib import Path

import numpy as np
import pytest

from engine.editing.meshes import CM_TO_M, export_mesh, snapshot_mesh
from engine.editing.session import Session
from engine.io.mesh import read_mesh
from engine.render import rotation_matrix

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def photo_session(face_model):
    s = Session(model=face_model, generator=None)
    s.open_photo(ASTRONAUT)
    s.set_controls({"yaw": s.control_value("yaw") + 15, "jawOpen": 0.6})
    return s


def test_mesh_carries_the_edit_and_the_photo_as_texture(photo_session):
    s = photo_session
    m = snapshot_mesh(s)
    pr = s.frames.photo_renderer(s.photo)
    assert m.faces.shape == tuple(pr.head.triangles.shape) and m.texture is s.photo.fit.image
    # the edit is baked in: the exported positions are the renderer's posed target head, not the fitted one
    c = s.coeffs[0:1]
    want = pr.proj.posed(pr.head.vertices(c)[0], c.pose[0]).numpy() * CM_TO_M
    assert np.abs(m.vertices - want).max() < 1e-6
    fitted = snapshot_mesh(s, s.state.edited(coeffs=s.photo.fit.coeffs.clone()))
    assert np.abs(m.vertices - fitted.vertices).max() > 0.005  # 5 mm: yaw and jaw moved the head
    # UVs: the landmarks' vertices map to the photo's detected landmarks
    lm_v = s.model.lm68.numpy()
    h, w = s.photo.fit.image.shape[:2]
    uv_px = np.stack([m.uv[lm_v, 0] * w, (1 - m.uv[lm_v, 1]) * h], 1)
    err = np.linalg.norm(uv_px - np.asarray(s.photo.fit.alignment.landmarks_photo), axis=1)
    assert np.median(err) < 0.03 * w, np.median(err)


@pytest.mark.parametrize("suffix", [".glb", ".gltf", ".obj", ".ply"])
def test_round_trip_through_trimesh(photo_session, tmp_path, suffix):
    out = tmp_path / f"head{suffix}"
    files = export_mesh(photo_session, out)
    assert out in files and all(f.exists() for f in files)
    m = snapshot_mesh(photo_session)
    back = read_mesh(out)
    assert len(back.faces) == len(m.faces)
    # positions survive (OBJ may reorder vertices: compare as sets through nearest neighbours)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(m.vertices).query(np.asarray(back.vertices))
    assert d.max() < 1e-5
    if suffix == ".ply":
        cols = back.visual.vertex_colors[:, :3]
        assert cols.std() > 10  # the photo's colours, sampled per vertex
    else:
        assert back.visual.kind == "texture" and back.visual.uv.shape == (len(back.vertices), 2)
        mat = back.visual.material
        tex = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
        assert tex is not None and tuple(tex.size) == (m.texture.shape[1], m.texture.shape[0])
    if suffix == ".obj":
        assert sorted(f.name for f in files) == ["head.mtl", "head.obj", "head.png"]
        assert "head.png" in (tmp_path / "head.mtl").read_text()


def test_a_face_without_photo_exports_vertex_colours(face_model, tmp_path):
    s = Session(model=face_model, generator=None)
    s.set_controls({"yaw": 30})
    export_mesh(s, tmp_path / "face.glb")
    back = read_mesh(tmp_path / "face.glb")
    v = (face_model.vertices(s.coeffs) @ rotation_matrix(s.coeffs.pose).transpose(1, 2))[0].numpy() * CM_TO_M
    assert back.vertices.shape == v.shape and np.abs(np.asarray(back.vertices) - v).max() < 1e-5
    assert back.visual.kind == "vertex"
    with pytest.raises(ValueError, match="mesh files end in"):
        export_mesh(s, tmp_path / "face.stl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.glb"]


def test_cli_writes_the_mesh(tmp_path, capsys):
    from engine import cli

    rc = cli.main(["edit", str(ASTRONAUT), "--set", "smile=0.8", "-o", str(tmp_path / "o.png"),
                   "--mesh", str(tmp_path / "head.glb")])
    assert rc == 0 and (tmp_path / "o.png").is_file() and read_mesh(tmp_path / "head.glb").visual.kind == "texture"
    assert cli.main(["edit", str(ASTRONAUT), "-o", str(tmp_path / "h.obj")]) == 0
    assert (tmp_path / "h.mtl").is_file() and (tmp_path / "h.png").is_file()
    assert cli.main(["edit", str(ASTRONAUT), "-o", str(tmp_path / "x.png"), "--mesh", str(tmp_path / "x.stl")]) == 2
    assert "must end in" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_editor_file_export_mesh(qtbot, face_model, tmp_path):
    pytest.importorskip("pytestqt")
    from app.window import MainWindow

    w = MainWindow(Session(model=face_model, generator=None), display_size=64, drag_size=32)
    qtbot.addWidget(w)
    job = w.export_mesh(tmp_path / "f.ply")
    qtbot.waitUntil(lambda: not job.running, timeout=30000)
    assert read_mesh(tmp_path / "f.ply").vertices.shape[0] == face_model.vertices(face_model.zeros(1)).shape[1]
    assert w.export_mesh(tmp_path / "f.txt") is None and "mesh files end in" in w.last_error
    w.guard = None
    w.close()
