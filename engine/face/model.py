"""The 3D morphable face model (ICT-FaceKit face region) and the coefficient layout.

A face is described by a :class:`Coefficients` batch:

=============  =====  ====================================================================
factor         size   meaning
=============  =====  ====================================================================
identity       100    ICT identity modes, ~N(0, 1) each (the modes are std-scaled PCA)
albedo         K      learned albedo PCA coefficients (K = 0 until the learned file exists)
expression     53     ARKit-named blendshape weights, meant to lie in [0, 1]
light          27     2nd-order spherical harmonics, 9 bands x RGB, stored as *offsets* from
                      the default light (band 0 = 0.8 per channel), channel-major (3, 9)
pose           3      yaw, pitch, roll in radians (degrees only in the UI)
=============  =====  ====================================================================

Conventions (from the data README): units are centimetres, +y up, +z toward the viewer, +x the
subject's left. Positive yaw turns the nose toward +x (viewer's right), positive pitch raises the chin
(looks up), positive roll turns the face counter-clockwise as the viewer sees it.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from engine import config

N_ID = 100
N_EXP = 53
N_LIGHT = 27
N_POSE = 3
COEFF_JSON_FORMAT = "discoface.coefficients"
COEFF_JSON_VERSION = 1
DEFAULT_SKIN = (0.78, 0.60, 0.50)  # mean skin reflectance until the learned albedo exists
DEFAULT_AMBIENT = 0.8  # SH band-0 value added to the light coefficients
EXPRESSION_GROUPS = {
    "brows": ("brow",),
    "eyes": ("eye",),
    "cheeks": ("cheek",),
    "nose": ("nose",),
    "mouth": ("mouth",),
    "jaw": ("jaw",),
}


class FaceModelError(ValueError):
    """A face-model or albedo file that cannot be used; the message says which and why."""


class CoefficientsError(ValueError):
    """A coefficients JSON or tensor that does not fit the layout."""


# --------------------------------------------------------------------------------------------- #
# Coefficients
# --------------------------------------------------------------------------------------------- #
class _ExpressionView:
    """``coeffs.expr["jawOpen"]`` → (B,) tensor; assignment writes into the batch (all items)."""

    def __init__(self, coeffs: "Coefficients"):
        self._c = coeffs

    def _index(self, name: str) -> int:
        try:
            return self._c.exp_names.index(name)
        except ValueError:
            raise KeyError(f"unknown expression {name!r}; known: {', '.join(self._c.exp_names)}") from None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._c.expression[:, self._index(name)]

    def __setitem__(self, name: str, value) -> None:
        self._c.expression[:, self._index(name)] = torch.as_tensor(value, dtype=self._c.expression.dtype)

    def __iter__(self):
        return iter(self._c.exp_names)

    def __len__(self) -> int:
        return len(self._c.exp_names)

    def items(self, index: int = 0):
        return [(n, float(v)) for n, v in zip(self._c.exp_names, self._c.expression[index].tolist())]


@dataclass
class Coefficients:
    """A batch of 3DMM coefficients; every tensor is (B, n)."""

    identity: torch.Tensor
    albedo: torch.Tensor
    expression: torch.Tensor
    light: torch.Tensor
    pose: torch.Tensor
    exp_names: tuple = ()

    FACTORS = ("identity", "albedo", "expression", "light", "pose")

    def __post_init__(self):
        b = self.identity.shape[0]
        for name in self.FACTORS:
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[0] != b:
                raise CoefficientsError(f"{name} must be (B, n) with B={b}, got {tuple(t.shape)}")
        expect = {"identity": N_ID, "expression": N_EXP, "light": N_LIGHT, "pose": N_POSE}
        for name, n in expect.items():
            if getattr(self, name).shape[1] != n:
                raise CoefficientsError(f"{name} must have {n} values, got {getattr(self, name).shape[1]}")
        if self.exp_names and len(self.exp_names) != N_EXP:
            raise CoefficientsError(f"exp_names must list {N_EXP} names")
        self.exp_names = tuple(self.exp_names)

    # -- construction ------------------------------------------------------------------------ #
    @classmethod
    def zeros(cls, batch: int = 1, albedo_dim: int = 0, exp_names: Iterable[str] = (), device=None,
              dtype=torch.float32) -> "Coefficients":
        z = lambda n: torch.zeros(batch, n, device=device, dtype=dtype)  # noqa: E731
        return cls(z(N_ID), z(albedo_dim), z(N_EXP), z(N_LIGHT), z(N_POSE), tuple(exp_names))

    @property
    def batch(self) -> int:
        return self.identity.shape[0]

    @property
    def albedo_dim(self) -> int:
        return self.albedo.shape[1]

    @property
    def device(self):
        return self.identity.device

    @property
    def expr(self) -> _ExpressionView:
        if not self.exp_names:
            raise CoefficientsError("these coefficients carry no expression names (build them from a FaceModel)")
        return _ExpressionView(self)

    # pose in degrees, for the UI and the CLI
    @property
    def yaw(self) -> torch.Tensor:
        return self.pose[:, 0]

    @property
    def pitch(self) -> torch.Tensor:
        return self.pose[:, 1]

    @property
    def roll(self) -> torch.Tensor:
        return self.pose[:, 2]

    def set_pose_degrees(self, yaw=None, pitch=None, roll=None) -> "Coefficients":
        for i, v in enumerate((yaw, pitch, roll)):
            if v is not None:
                self.pose[:, i] = math.radians(float(v))
        return self

    # -- tensor plumbing --------------------------------------------------------------------- #
    def map(self, fn) -> "Coefficients":
        return Coefficients(*(fn(getattr(self, n)) for n in self.FACTORS), exp_names=self.exp_names)

    def to(self, *args, **kwargs) -> "Coefficients":
        return self.map(lambda t: t.to(*args, **kwargs))

    def clone(self) -> "Coefficients":
        return self.map(lambda t: t.clone())

    def detach(self) -> "Coefficients":
        return self.map(lambda t: t.detach())

    def requires_grad_(self, flag: bool = True) -> "Coefficients":
        for n in self.FACTORS:
            getattr(self, n).requires_grad_(flag)
        return self

    def __getitem__(self, idx) -> "Coefficients":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return self.map(lambda t: t[idx])

    def __len__(self) -> int:
        return self.batch

    @staticmethod
    def cat(items: list["Coefficients"]) -> "Coefficients":
        if not items:
            raise CoefficientsError("nothing to concatenate")
        return Coefficients(*(torch.cat([getattr(c, n) for c in items]) for n in Coefficients.FACTORS),
                            exp_names=items[0].exp_names)

    def repeat(self, n: int) -> "Coefficients":
        return self.map(lambda t: t.repeat(n, 1))

    def sizes(self) -> dict[str, int]:
        return {n: getattr(self, n).shape[1] for n in self.FACTORS}

    def as_vector(self) -> torch.Tensor:
        """(B, 100 + K + 53 + 27 + 3) in the order of :attr:`FACTORS`."""
        return torch.cat([getattr(self, n) for n in self.FACTORS], dim=1)

    @classmethod
    def from_vector(cls, v: torch.Tensor, albedo_dim: int, exp_names: Iterable[str] = ()) -> "Coefficients":
        sizes = [N_ID, albedo_dim, N_EXP, N_LIGHT, N_POSE]
        if v.shape[-1] != sum(sizes):
            raise CoefficientsError(f"vector has {v.shape[-1]} values, layout needs {sum(sizes)}")
        return cls(*torch.split(v, sizes, dim=1), exp_names=tuple(exp_names))

    def lerp(self, other: "Coefficients", t: float) -> "Coefficients":
        return Coefficients(*(torch.lerp(getattr(self, n), getattr(other, n), float(t)) for n in self.FACTORS),
                            exp_names=self.exp_names)

    # -- JSON ------------------------------------------------------------------------------- #
    def to_json_dict(self) -> dict:
        items = []
        for b in range(self.batch):
            items.append({
                "identity": [round(x, 6) for x in self.identity[b].tolist()],
                "albedo": [round(x, 6) for x in self.albedo[b].tolist()],
                "expression": {n: round(float(x), 6) for n, x in zip(self.exp_names, self.expression[b].tolist())}
                if self.exp_names else [round(x, 6) for x in self.expression[b].tolist()],
                "light": [round(x, 6) for x in self.light[b].tolist()],
                "pose_degrees": {k: round(math.degrees(x), 4)
                                 for k, x in zip(("yaw", "pitch", "roll"), self.pose[b].tolist())},
            })
        return {"format": COEFF_JSON_FORMAT, "version": COEFF_JSON_VERSION, "albedo_dim": self.albedo_dim,
                "items": items}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=1)

    @classmethod
    def from_json_dict(cls, d: Mapping, exp_names: Iterable[str]) -> "Coefficients":
        exp_names = tuple(exp_names)
        if not isinstance(d, Mapping) or d.get("format") != COEFF_JSON_FORMAT:
            raise CoefficientsError(f"not a coefficients file (expected format {COEFF_JSON_FORMAT!r})")
        ver = d.get("version")
        if not isinstance(ver, int) or ver > COEFF_JSON_VERSION or ver < 1:
            raise CoefficientsError(f"coefficients version {ver!r} is not supported (this build reads "
                                    f"up to {COEFF_JSON_VERSION})")
        items = d.get("items")
        if not isinstance(items, list) or not items:
            raise CoefficientsError("coefficients file has no items")
        k = d.get("albedo_dim", 0)
        rows = {n: [] for n in cls.FACTORS}
        for i, it in enumerate(items):
            try:
                rows["identity"].append([float(x) for x in it["identity"]])
                rows["albedo"].append([float(x) for x in it.get("albedo", [0.0] * k)])
                e = it["expression"]
                if isinstance(e, Mapping):
                    unknown = set(e) - set(exp_names)
                    if unknown:
                        raise CoefficientsError(f"item {i}: unknown expressions {sorted(unknown)}")
                    rows["expression"].append([float(e.get(n, 0.0)) for n in exp_names])
                else:
                    rows["expression"].append([float(x) for x in e])
                rows["light"].append([float(x) for x in it["light"]])
                p = it["pose_degrees"]
                rows["pose"].append([math.radians(float(p.get(a, 0.0))) for a in ("yaw", "pitch", "roll")])
            except CoefficientsError:
                raise
            except (KeyError, TypeError, ValueError) as exc:
                raise CoefficientsError(f"item {i} is malformed: {exc!r}") from None
        try:
            tensors = [torch.tensor(rows[n], dtype=torch.float32).reshape(len(items), -1) for n in cls.FACTORS]
        except (ValueError, RuntimeError) as exc:
            raise CoefficientsError(f"coefficient rows have inconsistent lengths: {exc}") from None
        for n, t in zip(cls.FACTORS, tensors):
            if not torch.isfinite(t).all():
                raise CoefficientsError(f"{n} contains non-finite values")
        return cls(*tensors, exp_names=exp_names)


# --------------------------------------------------------------------------------------------- #
# Face model
# --------------------------------------------------------------------------------------------- #
_ICT_SPEC = {  # name: (shape with "V" = vertex count, None = any, dtype kind)
    "mean": (("V", 3), "f"),
    "id_basis": ((N_ID, "V", 3), "f"),
    "exp_basis": ((N_EXP, "V", 3), "f"),
    "exp_names": ((N_EXP,), "U"),
    "triangles": ((None, 3), "i"),
    "lm68": ((68,), "i"),
    "uv": (("V", 2), "f"),
}
ALBEDO_FORMAT = "discoface.albedo"
ALBEDO_VERSION = 1


def _check_array(path: Path, name: str, arr: np.ndarray, shape, kind: str, n_vert: int | None):
    want = tuple(n_vert if s == "V" else s for s in shape)
    if arr.ndim != len(want) or any(w is not None and a != w for a, w in zip(arr.shape, want)):
        raise FaceModelError(f"{path}: array {name!r} has shape {arr.shape}, expected "
                             f"{tuple('*' if w is None else w for w in want)}")
    if arr.dtype.kind != kind and not (kind == "i" and arr.dtype.kind == "u"):
        raise FaceModelError(f"{path}: array {name!r} has dtype {arr.dtype}, expected kind {kind!r}")
    if kind == "f" and not np.isfinite(arr).all():
        raise FaceModelError(f"{path}: array {name!r} contains NaN or infinite values")


def _unpacked_path(path: Path) -> Path | None:
    """Where an uncompressed copy of the shared-data ``path`` is kept (the user cache, ``models/``; keyed by the
    file's place, size and mtime), or None (no cache: ``$DISCOFACE_PHOTO_CACHE`` off). Inflating the ICT files
    (~23 MB) is ~0.1 s of every command's start; reading the copy ~0.02 s."""
    import hashlib

    root = config.user_cache_root()
    if root is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{path.resolve()} {st.st_size} {st.st_mtime_ns}".encode()).hexdigest()[:20]
    return root / "models" / f"{path.stem}-{key}.npz"


def _read_unpacked(unpacked: Path | None, need) -> dict[str, np.ndarray] | None:
    """The arrays of the copy, or None when there is none or it is unreadable or lacks one of ``need`` (then the
    source is read and the copy written again)."""
    if unpacked is None or not unpacked.is_file():
        return None
    try:
        with np.load(unpacked, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None
    return arrays if all(k in arrays for k in need) else None


def _write_unpacked(unpacked: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the copy atomically (older copies of the same file removed); a folder that cannot be written is skipped."""
    from engine.io.files import atomic_path

    try:
        with atomic_path(unpacked) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        stem = unpacked.name.rsplit("-", 1)[0]
        for old in unpacked.parent.glob(f"{stem}-*.npz"):
            if old != unpacked and len(old.name) == len(unpacked.name):
                old.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def read_npz(path: Path, what: str, need) -> dict[str, np.ndarray]:
    """Read a shared-data ``.npz`` (no pickles) holding at least the arrays ``need``; a missing file, an unreadable
    one or a missing array is one :class:`FaceModelError` naming it."""
    if not path.exists():
        raise FaceModelError(f"{what} not found: looked for {path} (set DISCOFACE_DATA to the folder holding "
                             f"ict-face/{path.name})")
    unpacked = _unpacked_path(path)
    arrays = _read_unpacked(unpacked, need)
    if arrays is None:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise FaceModelError(f"{path}: not a readable .npz {what} ({exc})") from None
        if unpacked is not None:
            _write_unpacked(unpacked, arrays)
    missing = [k for k in need if k not in arrays]
    if missing:
        raise FaceModelError(f"{path}: missing arrays {missing}")
    return arrays


def load_ict_arrays(path: Path | str | None = None) -> dict[str, np.ndarray]:
    """Read and validate the ICT face npz; every problem is one :class:`FaceModelError` naming it."""
    path = Path(path) if path is not None else config.ict_face_path()
    arrays = read_npz(path, "face model", _ICT_SPEC)
    n_vert = arrays["mean"].shape[0] if arrays["mean"].ndim == 2 else None
    for name, (shape, kind) in _ICT_SPEC.items():
        _check_array(path, name, arrays[name], shape, kind, n_vert)
    tri = arrays["triangles"]
    if tri.min() < 0 or tri.max() >= n_vert:
        raise FaceModelError(f"{path}: triangle indices outside [0, {n_vert})")
    lm = arrays["lm68"]
    if lm.min() < 0 or lm.max() >= n_vert:
        raise FaceModelError(f"{path}: landmark indices outside [0, {n_vert})")
    return arrays


def float32_tensor(a) -> torch.Tensor:
    """A float32 tensor of array ``a`` (C-contiguous). The ICT files' float16 bases are converted by torch: numpy's
    half-to-float cast is scalar code, ~10x slower on the bases' many tiny (subnormal) values (the face's identity
    basis: 53 against 5 ms, a tenth of a cached ``discoface edit``'s work); the values are the same (exact)."""
    a = np.asarray(a)
    if a.dtype == np.float16:
        return torch.from_numpy(np.ascontiguousarray(a)).float()
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class FaceModel(torch.nn.Module):
    """Shape, expression, albedo and landmarks from :class:`Coefficients`; all methods are batched."""

    def __init__(self, arrays: Mapping[str, np.ndarray], albedo: Mapping[str, np.ndarray] | None = None):
        super().__init__()
        f32 = float32_tensor
        self.register_buffer("mean", f32(arrays["mean"]))
        self.register_buffer("id_basis", f32(arrays["id_basis"]))
        self.register_buffer("exp_basis", f32(arrays["exp_basis"]))
        self.register_buffer("triangles", torch.from_numpy(np.asarray(arrays["triangles"], dtype=np.int64)))
        self.register_buffer("lm68", torch.from_numpy(np.asarray(arrays["lm68"], dtype=np.int64)))
        self.register_buffer("uv", f32(arrays["uv"]))
        self.exp_names: tuple[str, ...] = tuple(str(n) for n in arrays["exp_names"])
        nv = self.mean.shape[0]
        if albedo is None:
            self.register_buffer("albedo_mean", torch.tensor(DEFAULT_SKIN).expand(nv, 3).clone())
            self.register_buffer("albedo_basis", torch.zeros(0, nv, 3))
            self.albedo_learned = False
        else:
            self.register_buffer("albedo_mean", f32(albedo["albedo_mean"]))
            self.register_buffer("albedo_basis", f32(albedo["albedo_basis"]))
            self.albedo_learned = True
        nf = self.triangles.shape[0]
        idx = torch.stack([self.triangles.reshape(-1), torch.arange(nf).repeat_interleave(3)])
        vert_face = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1]), (nv, nf), check_invariants=True)
        self.register_buffer("_vert_face", vert_face.coalesce(), persistent=False)
        # Flattened bases for fast matmuls: (n, V*3)
        self.register_buffer("_id_flat", self.id_basis.reshape(N_ID, -1), persistent=False)
        self.register_buffer("_exp_flat", self.exp_basis.reshape(N_EXP, -1), persistent=False)
        self.register_buffer("_alb_flat", self.albedo_basis.reshape(self.albedo_basis.shape[0], nv * 3),
                             persistent=False)

    # -- loading ------------------------------------------------------------------------------ #
    @classmethod
    def load(cls, path: Path | str | None = None, albedo_path: Path | str | None | bool = None) -> "FaceModel":
        """Load the ICT face model; ``albedo_path=None`` uses ``assets/albedo.safetensors`` when present,
        ``False`` forces the flat mean skin colour."""
        arrays = load_ict_arrays(path)
        albedo = None
        if albedo_path is not False:
            ap = Path(albedo_path) if albedo_path else config.ASSETS_DIR / "albedo.safetensors"
            if albedo_path or ap.exists():
                albedo = load_albedo(ap, arrays["mean"].shape[0])
        return cls(arrays, albedo)

    # -- sizes --------------------------------------------------------------------------------- #
    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def albedo_dim(self) -> int:
        return self.albedo_basis.shape[0]

    def zeros(self, batch: int = 1) -> Coefficients:
        return Coefficients.zeros(batch, self.albedo_dim, self.exp_names, device=self.mean.device)

    def expression_groups(self) -> dict[str, list[str]]:
        """Expression names grouped for the UI (brows, eyes, cheeks, nose, mouth, jaw)."""
        groups: dict[str, list[str]] = {g: [] for g in EXPRESSION_GROUPS}
        for n in self.exp_names:
            low = n.lower()
            for g, keys in EXPRESSION_GROUPS.items():
                if low.startswith(keys):
                    groups[g].append(n)
                    break
            else:
                groups.setdefault("other", []).append(n)
        return groups

    # -- geometry ------------------------------------------------------------------------------ #
    def vertices(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) model-space vertices (cm), before pose."""
        d = c.identity @ self._id_flat + c.expression @ self._exp_flat
        return self.mean.unsqueeze(0) + d.view(c.batch, -1, 3)

    def landmarks3d(self, verts: torch.Tensor) -> torch.Tensor:
        return verts[:, self.lm68]

    def expression_offsets(self, name: str, vertices=None) -> torch.Tensor:
        """(N, 3) model-space displacement (cm) of ``vertices`` (indices; default: the 68 landmarks) for one unit of
        the expression ``name`` (the expression is linear: a weight w moves them w times as far)."""
        if name not in self.exp_names:
            raise KeyError(f"unknown expression {name!r}")
        idx = self.lm68 if vertices is None else torch.as_tensor(vertices, dtype=torch.long)
        return self.exp_basis[self.exp_names.index(name)][idx]

    def albedo(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) per-vertex reflectance in [0, 1] (clamped)."""
        a = self.albedo_mean.unsqueeze(0).expand(c.batch, -1, -1)
        if self.albedo_dim:
            a = a + (c.albedo @ self._alb_flat).view(c.batch, -1, 3)
        return a.clamp(0.0, 1.0)

    def vertex_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) unit normals, area-weighted average of the adjacent triangles' normals."""
        tri = self.triangles
        b = verts.shape[0]
        tv = verts.index_select(1, tri.reshape(-1)).view(b, -1, 3, 3)
        fn = torch.linalg.cross(tv[:, :, 1] - tv[:, :, 0], tv[:, :, 2] - tv[:, :, 0])  # |fn| = 2 area
        # vertex normal = sum of adjacent face normals: one sparse (V, F) matmul over the whole batch
        n = torch.sparse.mm(self._vert_face, fn.permute(1, 0, 2).reshape(fn.shape[1], b * 3))
        n = n.view(-1, b, 3).permute(1, 0, 2)
        return torch.nn.functional.normalize(n, dim=-1, eps=1e-8)


def load_albedo(path: Path | str, n_vertices: int) -> dict[str, np.ndarray]:
    """Read a learned albedo file (safetensors, ``format``/``version`` metadata) and check its shapes."""
    from engine.io.files import load_safetensors, WeightsError

    try:
        tensors, meta = load_safetensors(path, ALBEDO_FORMAT, ALBEDO_VERSION)
    except WeightsError as exc:
        raise FaceModelError(str(exc)) from None
    for k in ("albedo_mean", "albedo_basis"):
        if k not in tensors:
            raise FaceModelError(f"{path}: albedo file lacks {k!r}")
    m, b = tensors["albedo_mean"].numpy(), tensors["albedo_basis"].numpy()
    if m.shape != (n_vertices, 3) or b.ndim != 3 or b.shape[1:] != (n_vertices, 3):
        raise FaceModelError(f"{path}: albedo shapes {m.shape}/{b.shape} do not match a {n_vertices}-vertex model")
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise FaceModelError(f"{path}: albedo contains non-finite values")
    return {"albedo_mean": m, "albedo_basis": b}


_DEFAULT_MODEL: FaceModel | None = None


def default_model() -> FaceModel:
    """The process-wide face model (loaded once)."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = FaceModel.load()
    return _DEFAULT_MODEL
