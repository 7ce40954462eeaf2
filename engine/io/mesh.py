"""Triangle meshes outside the renderer: per-frame vertex normals for display (numpy, vectorised) and mesh files
(:func:`write_mesh`: GLB / glTF / OBJ with a texture, PLY with vertex colours, through trimesh).

:class:`VertexNormals` keeps a sparse (vertices × triangles) incidence matrix built once per topology, so a frame's
normals are one cross product and one sparse product (~2 ms for the 24.6k-vertex head) — the editor's mesh panel
calls it in the render thread for every frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.files import OutputError, atomic_path


class VertexNormals:
    """Area-weighted unit vertex normals of meshes sharing one topology (``triangles``: (F, 3) vertex indices)."""

    def __init__(self, triangles: np.ndarray, n_vertices: int | None = None):
        tri = np.ascontiguousarray(triangles, dtype=np.int64)
        if tri.ndim != 2 or tri.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {tri.shape}")
        n = int(tri.max()) + 1 if n_vertices is None else int(n_vertices)
        if tri.size and (tri.min() < 0 or tri.max() >= n):
            raise ValueError(f"triangle indices outside 0..{n - 1}")
        self.triangles = tri
        self.n_vertices = n
        f = tri.shape[0]
        rows = tri.reshape(-1)
        cols = np.repeat(np.arange(f), 3)
        import scipy.sparse as sp  # here, not at import: the suffixes are read by commands that write no mesh

        self._incidence = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, f))

    def matches(self, triangles: np.ndarray, n_vertices: int) -> bool:
        return (n_vertices == self.n_vertices and triangles.shape == self.triangles.shape
                and np.array_equal(triangles, self.triangles))

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        """(V, 3) float32 unit normals (a vertex in no triangle gets (0, 0, 0))."""
        v = np.asarray(vertices, np.float32)
        if v.shape != (self.n_vertices, 3):
            raise ValueError(f"expected ({self.n_vertices}, 3) vertices, got {v.shape}")
        t = self.triangles
        v0 = v[t[:, 0]]
        fn = np.cross(v[t[:, 1]] - v0, v[t[:, 2]] - v0)  # |fn| = 2 × area: area-weighted sum below
        n = self._incidence @ fn
        length = np.sqrt((n * n).sum(1, keepdims=True))
        return (n / np.maximum(length, 1e-12)).astype(np.float32)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """One-off form of :class:`VertexNormals` (builds the incidence matrix each call)."""
    return VertexNormals(triangles, len(vertices))(vertices)


# ------------------------------------------------------------------------------------------------------------------ #
# mesh files (trimesh): OBJ (+ .mtl + texture .png), PLY (vertex colours), glTF / GLB (texture embedded)
# ------------------------------------------------------------------------------------------------------------------ #
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")


@dataclass
class Mesh:
    """A triangle mesh to write: positions (metres), triangles, and either a texture with per-vertex UVs (u right,
    v up: OBJ / glTF convention as trimesh takes it) or per-vertex colours."""

    vertices: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int
    uv: np.ndarray | None = None  # (V, 2) in [0, 1]
    texture: np.ndarray | None = None  # (H, W, 3) uint8
    colors: np.ndarray | None = None  # (V, 3) uint8

    def texture_colors(self) -> np.ndarray:
        """(V, 3) uint8: the texture sampled at each vertex's UV (nearest pixel), for formats without textures."""
        h, w = self.texture.shape[:2]
        x = np.clip(np.round(self.uv[:, 0] * w - 0.5), 0, w - 1).astype(np.int64)
        y = np.clip(np.round((1.0 - self.uv[:, 1]) * h - 0.5), 0, h - 1).astype(np.int64)
        return self.texture[y, x, :3]


def mesh_suffix(path) -> str:
    """The mesh format of ``path`` from its suffix, or a one-line ValueError naming the ones there are."""
    suf = Path(path).suffix.lower()
    if suf not in MESH_SUFFIXES:
        raise OutputError(f"mesh files end in {', '.join(MESH_SUFFIXES)}: {Path(path).name}")
    return suf


def _trimesh(mesh: Mesh, textured: bool):
    import trimesh
    from PIL import Image

    tm = trimesh.Trimesh(vertices=np.asarray(mesh.vertices, np.float64), faces=np.asarray(mesh.faces, np.int64),
                         process=False)
    if textured and mesh.texture is not None and mesh.uv is not None:
        tm.visual = trimesh.visual.TextureVisuals(uv=np.asarray(mesh.uv, np.float64),
                                                  image=Image.fromarray(np.ascontiguousarray(mesh.texture[..., :3])))
    else:
        cols = mesh.colors if mesh.colors is not None else (mesh.texture_colors() if mesh.texture is not None
                                                            else None)
        if cols is not None:
            rgba = np.concatenate([np.asarray(cols, np.uint8), np.full((len(cols), 1), 255, np.uint8)], 1)
            tm.visual = trimesh.visual.ColorVisuals(tm, vertex_colors=rgba)
    return tm


def write_mesh(path, mesh: Mesh) -> list[Path]:
    """Write ``mesh`` by the suffix of ``path`` (:data:`MESH_SUFFIXES`); returns the files written. GLB / glTF carry
    the texture inside the one file; OBJ writes ``<stem>.mtl`` and ``<stem>.png`` beside it; PLY has the texture
    sampled into vertex colours. Every file is written atomically, all or nothing."""
    path = Path(path)
    suf = mesh_suffix(path)
    files: dict[Path, bytes] = {}
    if suf == ".glb":
        files[path] = _trimesh(mesh, True).export(file_type="glb")
    elif suf == ".gltf":
        from trimesh.exchange.gltf import export_gltf

        out = export_gltf(_trimesh(mesh, True), embed_buffers=True)
        files[path] = next(iter(out.values()))
    elif suf == ".ply":
        files[path] = _trimesh(mesh, False).export(file_type="ply")
    else:
        from trimesh.exchange.obj import export_obj

        tm = _trimesh(mesh, True)
        if mesh.texture is not None and mesh.uv is not None:
            text, extra = export_obj(tm, include_texture=True, return_texture=True, mtl_name=f"{path.stem}.mtl")
            png = f"{path.stem}.png"
            for name, data in extra.items():
                if name.endswith(".mtl"):
                    data = data.replace(b"material_0.png", png.encode())
                    files[path.with_name(name)] = data
                elif name.endswith(".png"):
                    files[path.with_name(png)] = data
        else:
            text = export_obj(tm, include_texture=False)
        files[path] = text.encode() if isinstance(text, str) else text
    written: list[Path] = []
    try:
        for p, data in files.items():
            with atomic_path(p) as tmp:
                tmp.write_bytes(data)
            written.append(p)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def read_mesh(path):
    """The mesh in a file written by :func:`write_mesh`, as one ``trimesh.Trimesh`` (for checks and tests)."""
    import trimesh

    loaded = trimesh.load(str(path), process=False)
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
    return loaded
