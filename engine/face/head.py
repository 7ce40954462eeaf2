"""The full head: the ICT face region (:class:`FaceModel`) joined with ``ict-face/ict_parts.npz``.

The parts file adds the neck and back of the head, the mouth socket, gums/tongue, teeth (which move with
``jawOpen``), the eye sockets, scleras and irises (see the data README). The same identity and expression
coefficients drive every vertex. The face region's vertices come first (0 … 9408, exactly
:meth:`FaceModel.vertices`), so face-region vertex indices and ``lm68`` keep their meaning; the parts follow
(9409 … 24590, the kit's own full-mesh numbering).

Triangles carry a part label (index into :attr:`HeadModel.part_names`, ``"face"`` = 0). Colours: the face region
takes :meth:`FaceModel.albedo`, the neck / back of the head the face's mean skin colour, the mouth and eye parts
plain colours (:data:`PART_COLORS`).
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from engine import config
from engine.face.model import (N_EXP, N_ID, Coefficients, FaceModel, FaceModelError, default_model, float32_tensor,
                               read_npz)

PARTS_FILE = "ict_parts.npz"
NARROW_FACE_VERTICES = 6706  # the kit's narrow face area (no ears, neck, scalp): the skin colour comes from here
# plain reflectances per part (linear-ish RGB in [0, 1]; the render is multiplied by the fit's gain like the face)
PART_COLORS = {
    "mouth_socket": (0.36, 0.13, 0.13),
    "eye_socket_l": (0.20, 0.10, 0.09),
    "eye_socket_r": (0.20, 0.10, 0.09),
    "gums_tongue": (0.62, 0.28, 0.28),
    "teeth": (0.80, 0.76, 0.66),
    "sclera_l": (0.84, 0.80, 0.76),
    "iris_l": (0.33, 0.21, 0.12),
    "sclera_r": (0.84, 0.80, 0.76),
    "iris_r": (0.33, 0.21, 0.12),
}
PUPIL_COLOR = (0.06, 0.05, 0.05)
IRIS_COS, PUPIL_COS = 0.86, 0.975  # iris within ~31 degrees of the eye's axis, pupil within ~13
SKIN_PARTS = ("face", "head_neck")
MOUTH_PARTS = ("mouth_socket", "gums_tongue", "teeth")
EYE_PARTS = ("eye_socket_l", "eye_socket_r", "sclera_l", "iris_l", "sclera_r", "iris_r")
# share of the blendshapes in use above which expression_offsets multiplies the whole bases (no gathered copy)
EXPR_SUBSET_MAX = 0.5


def ict_parts_path() -> Path:
    return config.data_dir() / "ict-face" / PARTS_FILE


def load_parts_arrays(path: Path | str | None = None, n_face: int | None = None) -> dict[str, np.ndarray]:
    """Read and check ``ict_parts.npz``; every problem is one :class:`FaceModelError` naming it."""
    path = Path(path) if path is not None else ict_parts_path()
    a = read_npz(path, "head parts", ("mean", "id_basis", "exp_basis", "triangles", "triangle_part", "vertex_part",
                                      "part_names"))
    nv = a["mean"].shape[0]
    if a["mean"].shape != (nv, 3) or a["id_basis"].shape != (N_ID, nv, 3) or a["exp_basis"].shape != (N_EXP, nv, 3):
        raise FaceModelError(f"{path}: shapes mean {a['mean'].shape}, id_basis {a['id_basis'].shape}, exp_basis "
                             f"{a['exp_basis'].shape} do not fit together")
    tri = a["triangles"]
    if tri.ndim != 2 or tri.shape[1] != 3 or a["triangle_part"].shape != (tri.shape[0],) \
            or a["vertex_part"].shape != (nv,):
        raise FaceModelError(f"{path}: triangle/part arrays have inconsistent shapes")
    if n_face is not None and (tri.min() < 0 or tri.max() >= n_face + nv):
        raise FaceModelError(f"{path}: triangle indices outside [0, {n_face + nv})")
    if len(a["part_names"]) <= max(int(a["triangle_part"].max()), int(a["vertex_part"].max())):
        raise FaceModelError(f"{path}: part labels outside part_names")
    for k in ("mean", "id_basis", "exp_basis"):
        if not np.isfinite(a[k]).all():
            raise FaceModelError(f"{path}: array {k!r} contains NaN or infinite values")
    return a


class HeadModel:
    """Face region + parts as one mesh (torch, CPU); batched like :class:`FaceModel`."""

    def __init__(self, model: FaceModel, parts: dict[str, np.ndarray]):
        self.model = model
        if "exp_names" in parts and tuple(str(n) for n in parts["exp_names"]) != tuple(model.exp_names):
            raise FaceModelError("ict_parts.npz expression names differ from the face model's")
        self.n_face = model.n_vertices
        f32 = float32_tensor
        n_parts = parts["mean"].shape[0]
        self.n_vertices = self.n_face + n_parts
        self.part_names: tuple[str, ...] = ("face",) + tuple(str(n) for n in parts["part_names"])
        self.parts_mean = f32(parts["mean"])
        self._pid_flat = f32(parts["id_basis"]).reshape(N_ID, -1)
        self._pexp_flat = f32(parts["exp_basis"]).reshape(N_EXP, -1)
        tri_parts = torch.from_numpy(parts["triangles"].astype(np.int64))
        self.triangles = torch.cat([model.triangles, tri_parts]).contiguous()
        self.triangle_part = torch.cat([torch.zeros(model.triangles.shape[0], dtype=torch.int64),
                                        torch.from_numpy(parts["triangle_part"].astype(np.int64)) + 1])
        self.vertex_part = torch.cat([torch.zeros(self.n_face, dtype=torch.int64),
                                      torch.from_numpy(parts["vertex_part"].astype(np.int64)) + 1])
        self.lm68 = model.lm68
        self.exp_names = model.exp_names
        nv, nf = self.n_vertices, self.triangles.shape[0]
        idx = torch.stack([self.triangles.reshape(-1), torch.arange(nf).repeat_interleave(3)])
        self._vert_face = _csr(torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1]), (nv, nf),
                                                       check_invariants=True).coalesce())
        # per-vertex plain colours of the parts (face / head_neck rows are filled from the albedo per call)
        pc = torch.zeros(nv, 3)
        for name, col in PART_COLORS.items():
            if name in self.part_names:
                pc[self.vertex_part == self.part_names.index(name)] = torch.tensor(col)
        self._paint_eyes(pc, torch.cat([model.mean, self.parts_mean]))
        self._part_colors = pc
        self._neck = self.vertex_part == self.part_names.index("head_neck") if "head_neck" in self.part_names \
            else torch.zeros(nv, dtype=torch.bool)
        self._mirror: torch.Tensor | None = None
        self._adjacency: torch.Tensor | None = None

    def _paint_eyes(self, pc: torch.Tensor, mean: torch.Tensor) -> None:
        """The scleras enclose the irises (the kit's cornea is part of the sclera mesh): paint iris and pupil onto
        the front of each sclera by the angle from the eye's forward (+z) axis."""
        for side in ("l", "r"):
            name = f"sclera_{side}"
            if name not in self.part_names:
                continue
            sel = self.vertex_part == self.part_names.index(name)
            p = mean[sel]
            centre = (p.amax(0) + p.amin(0)) / 2
            d = torch.nn.functional.normalize(p - centre, dim=-1)
            cos = d[:, 2]
            col = pc[sel]
            col[cos > IRIS_COS] = torch.tensor(PART_COLORS[f"iris_{side}"])
            col[cos > PUPIL_COS] = torch.tensor(PUPIL_COLOR)
            pc[sel] = col

    # -- loading ---------------------------------------------------------------------------------- #
    @classmethod
    def load(cls, model: FaceModel | None = None, path: Path | str | None = None) -> "HeadModel":
        model = model or default_model()
        return cls(model, load_parts_arrays(path, model.n_vertices))

    # -- labels ----------------------------------------------------------------------------------- #
    def part_index(self, name: str) -> int:
        try:
            return self.part_names.index(name)
        except ValueError:
            raise KeyError(f"unknown head part {name!r}; known: {', '.join(self.part_names)}") from None

    def vertex_in(self, names) -> torch.Tensor:
        """(V,) bool: vertices whose part is one of ``names`` (a copy of a cached mask: photo mode asks per frame)."""
        cache = self.__dict__.setdefault("_vertex_in_cache", {})
        key = tuple(names)
        hit = cache.get(key)
        if hit is None:
            ids = torch.tensor([self.part_index(n) for n in names])
            hit = cache[key] = torch.isin(self.vertex_part, ids)
        return hit.clone()

    def triangle_in(self, names) -> torch.Tensor:
        ids = torch.tensor([self.part_index(n) for n in names])
        return torch.isin(self.triangle_part, ids)

    # -- geometry --------------------------------------------------------------------------------- #
    def identity_shape(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) neutral-expression vertices for the identity of ``c`` (cache this per identity)."""
        m = self.model
        face = m.mean.unsqueeze(0) + (c.identity @ m._id_flat).view(c.batch, -1, 3)
        parts = self.parts_mean.unsqueeze(0) + (c.identity @ self._pid_flat).view(c.batch, -1, 3)
        return torch.cat([face, parts], 1)

    def expression_offsets(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) expression displacements; only the blendshapes in use are multiplied (a fitted or edited
        face uses a handful of the 53). When more than ``EXPR_SUBSET_MAX`` of them are (a driven face: ~45), the
        whole bases are multiplied as they are: gathering the used rows copied ~13 MB a call (2.0 vs 0.5 ms)."""
        m = self.model
        used = (c.expression != 0).any(0).nonzero(as_tuple=True)[0]
        if used.numel() == 0:
            return torch.zeros(c.batch, self.n_vertices, 3, dtype=c.expression.dtype)
        if used.numel() > EXPR_SUBSET_MAX * c.expression.shape[1]:
            e, fb, pb = c.expression, m._exp_flat, self._pexp_flat  # (the unused rows add zeros)
        else:
            e, fb, pb = c.expression[:, used], m._exp_flat[used], self._pexp_flat[used]
        face = (e @ fb).view(c.batch, -1, 3)
        parts = (e @ pb).view(c.batch, -1, 3)
        return torch.cat([face, parts], 1)

    def vertices(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) model-space vertices (cm) before pose; ``[:, :n_face]`` equals ``FaceModel.vertices``."""
        face = self.model.vertices(c)
        parts = self.parts_mean.unsqueeze(0) + (c.identity @ self._pid_flat
                                                + c.expression @ self._pexp_flat).view(c.batch, -1, 3)
        return torch.cat([face, parts], 1)

    def vertex_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) unit area-weighted vertex normals over the whole head mesh."""
        tri = self.triangles
        b = verts.shape[0]
        tv = verts.index_select(1, tri.reshape(-1)).view(b, -1, 3, 3)
        fn = torch.linalg.cross(tv[:, :, 1] - tv[:, :, 0], tv[:, :, 2] - tv[:, :, 0])
        n = torch.sparse.mm(self._vert_face, fn.permute(1, 0, 2).reshape(fn.shape[1], b * 3))
        n = n.view(-1, b, 3).permute(1, 0, 2)
        return torch.nn.functional.normalize(n, dim=-1, eps=1e-8)

    # -- colour ----------------------------------------------------------------------------------- #
    def albedo(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) reflectance: the face's albedo, its mean skin colour on neck/back of head, part colours."""
        face = self.model.albedo(c)
        skin = face[:, :NARROW_FACE_VERTICES].mean(1, keepdim=True)  # (B, 1, 3)
        rest = self._part_colors[self.n_face:].unsqueeze(0).expand(c.batch, -1, -1)
        neck = self._neck[self.n_face:].view(1, -1, 1)
        rest = torch.where(neck, skin.expand_as(rest), rest)
        return torch.cat([face, rest], 1)

    # -- topology helpers ------------------------------------------------------------------------- #
    def mirror(self) -> torch.Tensor:
        """(V,) index of each vertex's mirror image (x → -x) in the neutral mesh, within its part group
        (skin ↔ skin, left sclera ↔ right sclera, …)."""
        if self._mirror is None:
            from scipy.spatial import cKDTree

            mean = torch.cat([self.model.mean, self.parts_mean]).numpy().astype(np.float64)
            part = self.vertex_part.numpy()
            names = self.part_names
            swap = {n: n[:-1] + ("r" if n.endswith("_l") else "l") for n in names if n.endswith(("_l", "_r"))}
            group = np.array([names.index(swap.get(names[p], names[p])) for p in range(len(names))])
            skin = [names.index(n) for n in SKIN_PARTS if n in names]
            out = np.arange(len(mean))
            for p in range(len(names)):
                src = np.nonzero(part == p)[0] if p not in skin else np.nonzero(np.isin(part, skin))[0]
                if p in skin and p != skin[0]:
                    continue  # handled together with the first skin part
                tgt_p = group[p]
                dst = src if p in skin else np.nonzero(part == tgt_p)[0]
                q = mean[src] * np.array([-1.0, 1.0, 1.0])
                _, j = cKDTree(mean[dst]).query(q)
                out[src] = dst[j]
            self._mirror = torch.from_numpy(out)
        return self._mirror

    def adjacency(self) -> torch.Tensor:
        """(V, V) sparse row-normalised vertex adjacency (self included), for smoothing per-vertex values."""
        if self._adjacency is None:
            t = self.triangles
            i = torch.cat([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0], torch.arange(self.n_vertices)])
            j = torch.cat([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2], torch.arange(self.n_vertices)])
            a = torch.sparse_coo_tensor(torch.stack([i, j]), torch.ones(i.numel()),
                                        (self.n_vertices, self.n_vertices), check_invariants=True).coalesce()
            a = torch.sparse_coo_tensor(a.indices(), torch.ones_like(a.values()), a.shape,
                                        check_invariants=True).coalesce()
            deg = torch.sparse.sum(a, 1).to_dense()
            vals = a.values() / deg[a.indices()[0]]
            a = torch.sparse_coo_tensor(a.indices(), vals, a.shape, check_invariants=True).coalesce()
            self._adjacency = _csr(a)
        return self._adjacency


def _csr(a: torch.Tensor) -> torch.Tensor:
    """CSR copy of a coalesced COO matrix (sparse @ dense is ~6x faster on CPU; torch calls CSR "beta")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return a.to_sparse_csr()


_DEFAULT: dict[int, HeadModel] = {}
_LOCK = threading.Lock()


def default_head(model: FaceModel | None = None) -> HeadModel:
    """The process-wide head for ``model`` (default: :func:`default_model`), loaded once."""
    model = model or default_model()
    with _LOCK:
        h = _DEFAULT.get(id(model))
        if h is None or h.model is not model:
            h = _DEFAULT[id(model)] = HeadModel.load(model)
        return h
