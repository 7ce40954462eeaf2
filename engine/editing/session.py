"""The editor's state, Qt-free: one face (coefficients + noise), edits with undo/redo, keyframes, save/load.

A :class:`Session` holds a batch-1 :class:`~engine.face.model.Coefficients`, a noise code (what the 3DMM does not
model: hair, background) and the identity seed. Every change goes through an *edit*: ``commit=True`` (the default)
records one undo entry; ``commit=False`` changes the state but keeps the undo entry open until :meth:`commit`, so a
slider drag of a hundred ticks becomes one undo step, recorded when the slider is released.

Rendering uses the trained generator when its weights exist (``engine.generator.networks.load_default_generator``) and the
analytic 3DMM render otherwise ("preview" mode). Either way :meth:`render` returns a :class:`Frame` with the image,
the posed mesh and the projected landmarks, so the editor can show the mesh next to the picture.

Session files are JSON (``format: discoface.session``, ``version: 1``); reading one that is corrupt, of another
format or from a newer build raises :class:`SessionError` and leaves the current session untouched; writes are
atomic.
"""
from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.face.model import N_EXP, Coefficients, CoefficientsError, FaceModel
from engine.io.files import to_uint8_image, write_json_atomic

SESSION_FORMAT = "discoface.session"
SESSION_VERSION = 1
NOISE_DIM = 32
DEFAULT_PSI = 0.7
FACTORS = ("identity", "expression", "light", "pose", "noise")
POSE_RANGE_DEG = {"yaw": 60.0, "pitch": 40.0, "roll": 40.0}
DEFAULT_LIGHT = {"azimuth": 25.0, "elevation": 20.0, "intensity": 0.45, "ambient": 0.75}  # start / reset light


class SessionError(ValueError):
    """A session problem the user can fix (bad file, bad value, feature unavailable); the message says which."""


class SessionCancelled(Exception):
    """A long operation (opening a photo) was cancelled by the user."""


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8
    vertices: np.ndarray  # (V, 3) float32, model space rotated by the pose (cm; y up, z toward the viewer)
    landmarks: np.ndarray  # (68, 2) pixel coordinates in ``image`` (x right, y down)
    landmarks3d: np.ndarray  # (68, 3) posed landmark vertices (same space as ``vertices``)
    mode: str  # "generator" | "preview"
    ms: float  # wall time of the render
    size: int


@dataclass
class Keyframe:
    time: float
    coeffs: Coefficients
    noise: torch.Tensor  # (1, noise_dim)


@dataclass
class _State:
    """Everything undo/redo restores. Keyframes are part of it (a tuple of Keyframes that are never modified in
    place, so clones share them), so adding or removing a keyframe is one undo step like any slider edit."""

    coeffs: Coefficients
    noise: torch.Tensor
    seed: int
    w_offsets: torch.Tensor | None = None
    psi: float = DEFAULT_PSI
    keyframes: tuple = ()

    def clone(self) -> "_State":
        return _State(self.coeffs.clone(), self.noise.clone(), self.seed,
                      None if self.w_offsets is None else self.w_offsets.clone(), self.psi, self.keyframes)

    def equals(self, other: "_State") -> bool:
        if self.seed != other.seed or self.psi != other.psi:
            return False
        if len(self.keyframes) != len(other.keyframes) or any(a is not b for a, b in zip(self.keyframes,
                                                                                          other.keyframes)):
            return False
        if not torch.equal(self.coeffs.as_vector(), other.coeffs.as_vector()) or not torch.equal(self.noise,
                                                                                                   other.noise):
            return False
        if (self.w_offsets is None) != (other.w_offsets is None):
            return False
        return self.w_offsets is None or torch.equal(self.w_offsets, other.w_offsets)


def smoothstep(u: float) -> float:
    u = min(1.0, max(0.0, float(u)))
    return u * u * (3.0 - 2.0 * u)


def _try_load_generator():
    """(the shipped generator or None, a note on why not): preview mode when the module or weights are missing."""
    try:
        from engine.generator.networks import load_default_generator
    except ImportError as exc:
        return None, f"generator module unavailable ({exc})"
    try:
        gen = load_default_generator()
    except (ValueError, OSError) as exc:  # a broken weights file: preview mode, the status bar says why
        return None, f"generator weights unusable: {str(exc).strip().splitlines()[0]}"
    return gen, ("" if gen is not None else "no generator weights")


class Session:
    """The face being edited, its undo history and its keyframes."""

    def __init__(self, model: FaceModel | None = None, generator="auto", seed: int = 0, history_limit: int = 200):
        from engine.face.model import default_model

        self.model = model if model is not None else default_model()
        self.generator_note = ""
        if isinstance(generator, str) and generator == "auto":
            self.generator, self.generator_note = _try_load_generator()
        else:
            self.generator = generator
        g = self.generator
        self.noise_dim = int(getattr(g, "noise_dim", None) or getattr(getattr(g, "G", None), "noise_dim", None)
                             or NOISE_DIM)
        self.history_limit = int(history_limit)
        self._renderer = None
        self._id_cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (identity, mean + id offsets)
        self._shape_cache: tuple | None = None  # (identity, expression, vertices, normals)
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._pending: _State | None = None
        self.source: str | None = None
        self._state = _State(self.model.zeros(1), self._seed_noise(seed), int(seed))
        self._state.coeffs.light[:] = self._default_light()

    # ------------------------------------------------------------------------------------------ #
    # state access
    # ------------------------------------------------------------------------------------------ #
    @property
    def coeffs(self) -> Coefficients:
        return self._state.coeffs

    @property
    def noise(self) -> torch.Tensor:
        return self._state.noise

    @property
    def seed(self) -> int:
        return self._state.seed

    @property
    def truncation_psi(self) -> float:
        return self._state.psi

    @property
    def w_offsets(self) -> torch.Tensor | None:
        return self._state.w_offsets

    @property
    def mode(self) -> str:
        return "generator" if self.generator is not None else "preview"

    @property
    def mode_text(self) -> str:
        if self.generator is not None:
            return f"generator ({int(self.generator.resolution)} px)"
        return f"preview: 3DMM render — {self.generator_note or 'no generator weights'}"

    @property
    def native_size(self) -> int:
        return int(self.generator.resolution) if self.generator is not None else 256

    def pose_degrees(self) -> dict[str, float]:
        return {k: math.degrees(float(v)) for k, v in zip(("yaw", "pitch", "roll"), self.coeffs.pose[0].tolist())}

    def light_params(self) -> dict:
        from engine.render.shading import direction_from_light

        return direction_from_light(self.coeffs.light[:1])

    def expression_value(self, name: str) -> float:
        try:
            return float(self.coeffs.expr[name][0])
        except KeyError as exc:
            raise SessionError(str(exc.args[0])) from None

    def snapshot(self) -> tuple[Coefficients, torch.Tensor]:
        """(coefficients, noise) copies of the current face."""
        return self.coeffs.clone(), self.noise.clone()

    # ------------------------------------------------------------------------------------------ #
    # edits and history
    # ------------------------------------------------------------------------------------------ #
    def _seed_noise(self, seed: int) -> torch.Tensor:
        return torch.randn(1, self.noise_dim, generator=torch.Generator().manual_seed(int(seed) + 7919))

    def _edit(self, fn: Callable[[_State], None], commit: bool) -> None:
        before = self._pending if self._pending is not None else self._state.clone()
        new = self._state.clone()
        fn(new)
        self._state = new
        if commit:
            self._pending = None
            self._push(before)
        else:
            self._pending = before

    def _push(self, before: _State) -> None:
        if before.equals(self._state):
            return
        self._undo.append(before)
        del self._undo[:-self.history_limit]
        self._redo.clear()

    def commit(self) -> bool:
        """Close an open (``commit=False``) edit: one undo entry for the whole drag. True if one was recorded."""
        if self._pending is None:
            return False
        before, self._pending = self._pending, None
        n = len(self._undo)
        self._push(before)
        return len(self._undo) > n

    @property
    def can_undo(self) -> bool:
        return bool(self._undo) or (self._pending is not None and not self._pending.equals(self._state))

    @property
    def can_redo(self) -> bool:
        return bool(self._redo) and self._pending is None

    def undo(self) -> bool:
        self.commit()
        if not self._undo:
            return False
        self._redo.append(self._state)
        self._state = self._undo.pop()
        return True

    def redo(self) -> bool:
        self.commit()
        if not self._redo:
            return False
        self._undo.append(self._state)
        self._state = self._redo.pop()
        return True

    # -- factor edits ------------------------------------------------------------------------ #
    @staticmethod
    def _finite(name: str, v) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SessionError(f"{name}: {v!r} is not a number") from None
        if not math.isfinite(f):
            raise SessionError(f"{name}: value must be finite")
        return f

    def set_pose_degrees(self, yaw=None, pitch=None, roll=None, commit: bool = True) -> None:
        vals = {}
        for k, v in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            if v is not None:
                f = self._finite(k, v)
                lim = POSE_RANGE_DEG[k]
                if abs(f) > lim + 1e-6:
                    raise SessionError(f"{k} {f:g}° is outside ±{lim:g}°")
                vals[k] = f
        self._edit(lambda s: s.coeffs.set_pose_degrees(**vals), commit)

    def set_expression(self, name: str, value, commit: bool = True) -> None:
        if name not in self.model.exp_names:
            raise SessionError(f"unknown expression {name!r} (e.g. jawOpen, mouthSmile_L, eyeBlink_R)")
        f = self._finite(name, value)
        if not 0.0 <= f <= 1.0:
            raise SessionError(f"expression {name} = {f:g} is outside 0..1")

        def apply(s: _State):
            s.coeffs.expr[name] = f
        self._edit(apply, commit)

    def set_light(self, azimuth=None, elevation=None, intensity=None, ambient=None, color=None,
                  commit: bool = True) -> None:
        """Directional light in user terms (degrees, strengths, RGB colour); unspecified parts keep their value.

        The sliders speak SH bands 0 and 1 (ambient + one direction); band 2 (the finer shape of light a photo's fit
        or a sampled light carries) is kept as it is, so nudging the azimuth of an embedded photo does not first
        flatten its lighting. Reset light (or randomise) replaces all bands."""
        from engine.render.shading import light_from_direction

        cur = self.light_params()
        p = {"azimuth": azimuth, "elevation": elevation, "intensity": intensity, "ambient": ambient}
        for k in p:
            p[k] = cur[k] if p[k] is None else self._finite(k, p[k])
        if cur["intensity"] < 1e-8 and intensity is None:
            p["intensity"] = 0.0
        col = cur["color"] if color is None else [self._finite("colour", c) for c in color]
        if len(col) != 3 or min(col) < 0:
            raise SessionError("light colour must be three non-negative values")
        if p["intensity"] < 0 or p["ambient"] < 0:
            raise SessionError("light intensity and ambient must be ≥ 0")
        sh = light_from_direction(p["azimuth"], p["elevation"], p["intensity"], p["ambient"], tuple(col))

        def apply(s: _State):
            sh_all = s.coeffs.light.view(-1, 3, 9)
            band2 = sh_all[:, :, 4:].clone()
            s.coeffs.light[:] = sh
            sh_all[:, :, 4:] = band2
        self._edit(apply, commit)

    def set_identity_component(self, k: int, value, commit: bool = True) -> None:
        n = self.coeffs.identity.shape[1]
        if not 0 <= int(k) < n:
            raise SessionError(f"identity component {k} does not exist (0..{n - 1})")
        f = self._finite(f"identity {k}", value)

        def apply(s: _State):
            s.coeffs.identity[0, int(k)] = f
        self._edit(apply, commit)

    def set_coefficients(self, coeffs: Coefficients, noise: torch.Tensor | None = None, commit: bool = True) -> None:
        """Replace the whole face (one undo entry)."""
        c = self._conform(coeffs[0:1].detach().clone())
        n = None if noise is None else self._conform_noise(noise)

        def apply(s: _State):
            s.coeffs = c
            if n is not None:
                s.noise = n
        self._edit(apply, commit)

    def randomize(self, factor: str, seed: int | None = None, commit: bool = True) -> None:
        """New random values for one factor; the other factors are untouched.

        With a generator, the factor comes from the generator's own sampler (its factor decoders, so it is a
        plausible value); without, identity ~ N(0, 1), a few small expressions, a random key light, a moderate
        pose, fresh noise.
        """
        if factor not in FACTORS:
            raise SessionError(f"unknown factor {factor!r}; one of {', '.join(FACTORS)}")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        seed = int(seed)
        g = torch.Generator().manual_seed(seed)
        if factor == "noise":
            noise = self._seed_noise(seed)
            self._edit(lambda s: setattr(s, "noise", noise), commit)
            return
        if self.generator is not None and hasattr(self.generator, "sample"):
            with torch.no_grad():
                c, _ = self.generator.sample(1, seed)
            c = self._conform(c[0:1].detach().clone())
            src = {"identity": (c.identity, c.albedo), "expression": (c.expression,), "light": (c.light,),
                   "pose": (c.pose,)}[factor]
        else:
            src = self._random_factor(factor, g)

        def apply(s: _State):
            if factor == "identity":
                s.coeffs.identity[:] = src[0]
                if s.coeffs.albedo.numel() and len(src) > 1 and src[1].shape == s.coeffs.albedo.shape:
                    s.coeffs.albedo[:] = src[1]
                s.seed = seed
            else:
                getattr(s.coeffs, factor)[:] = src[0]
        self._edit(apply, commit)

    @staticmethod
    def _default_light() -> torch.Tensor:
        from engine.render.shading import light_from_direction

        d = DEFAULT_LIGHT
        return light_from_direction(d["azimuth"], d["elevation"], d["intensity"], d["ambient"])

    def _random_factor(self, factor: str, g: torch.Generator) -> tuple:
        from engine.render.shading import light_from_direction

        def u(lo, hi):
            return lo + (hi - lo) * float(torch.rand(1, generator=g))
        if factor == "identity":
            return (torch.randn(1, self.coeffs.identity.shape[1], generator=g),
                    torch.randn(1, self.model.albedo_dim, generator=g))
        if factor == "expression":
            e = torch.zeros(1, N_EXP)
            idx = torch.randperm(N_EXP, generator=g)[:5]
            e[0, idx] = torch.rand(5, generator=g) * 0.5
            return (e,)
        if factor == "light":
            return (light_from_direction(u(-70, 70), u(-30, 50), u(0.15, 0.7), u(0.55, 1.0)),)
        # pose
        yaw, pitch, roll = (torch.randn(3, generator=g) * torch.tensor([20.0, 10.0, 5.0])).tolist()
        p = torch.tensor([[max(-60, min(60, yaw)), max(-40, min(40, pitch)), max(-40, min(40, roll))]])
        return (torch.deg2rad(p),)

    def set_seed(self, seed: int, commit: bool = True) -> None:
        """Identity from a seed (the seed box in the editor)."""
        self.randomize("identity", int(seed), commit=commit)

    def reseed_noise(self, seed: int | None = None, commit: bool = True) -> None:
        self.randomize("noise", seed, commit=commit)

    def reset(self, factor: str | None = None, commit: bool = True) -> None:
        """Back to the neutral value of one factor (or of all with ``None``); light goes back to the default key
        light (``DEFAULT_LIGHT``), not to flat ambient."""
        factors = FACTORS if factor is None else (factor,)
        for f in factors:
            if f not in FACTORS:
                raise SessionError(f"unknown factor {f!r}; one of {', '.join(FACTORS)}")

        def apply(s: _State):
            for f in factors:
                if f == "noise":
                    s.noise = self._seed_noise(0)
                    s.w_offsets = None
                elif f == "identity":
                    s.coeffs.identity.zero_()
                    s.coeffs.albedo.zero_()
                elif f == "light":
                    s.coeffs.light[:] = self._default_light()
                else:
                    getattr(s.coeffs, f).zero_()
        self._edit(apply, commit)

    # ------------------------------------------------------------------------------------------ #
    # rendering
    # ------------------------------------------------------------------------------------------ #
    @property
    def renderer(self):
        if self._renderer is None:
            from engine.render import FaceRenderer

            self._renderer = FaceRenderer(self.model)
        return self._renderer

    def _identity_vertices(self, c: Coefficients) -> torch.Tensor:
        """(1, V, 3) mean + identity offsets, cached: the identity changes far less often than the rest."""
        cache = self._id_cache  # one read: the export thread and the render thread may both be here
        if cache is None or not torch.equal(cache[0], c.identity):
            v = self.model.mean.unsqueeze(0) + (c.identity @ self.model._id_flat).view(1, -1, 3)
            cache = (c.identity.clone(), v)
            self._id_cache = cache
        return cache[1]

    def _preview(self, c: Coefficients, size: int, background: float):
        from engine.render import interpolate, rotation_matrix
        from engine.render.shading import shade

        r = self.renderer
        shape = self._shape_cache  # model-space vertices and normals: unchanged by pose and light edits
        if shape is None or not (torch.equal(shape[0], c.identity) and torch.equal(shape[1], c.expression)):
            v = self._identity_vertices(c) + (c.expression @ self.model._exp_flat).view(1, -1, 3)
            shape = (c.identity.clone(), c.expression.clone(), v, self.model.vertex_normals(v))
            self._shape_cache = shape
        verts, normals_model = shape[2], shape[3]
        cam = r.camera.to_camera(verts, c.pose)
        screen = r.camera.project(cam, size)
        rot = rotation_matrix(c.pose)
        normals = normals_model @ rot.transpose(1, 2)
        colors = shade(self.model.albedo(c), normals, c.light)
        frags = r._rasterize(screen, cam[..., 2], size)
        image = interpolate(colors, frags, self.model.triangles, background).clamp(0, 1)
        return image, verts @ rot.transpose(1, 2), screen[:, self.model.lm68]

    def render_state(self, coeffs: Coefficients, noise: torch.Tensor, size: int | None = None, preview: bool = False,
                     w_offsets: torch.Tensor | None = None, psi: float | None = None,
                     background: float = 0.35) -> Frame:
        """Render any (coefficients, noise) without touching the session. ``preview`` forces the 3DMM render."""
        t0 = time.perf_counter()
        size = int(size or self.native_size)
        c = coeffs[0:1]
        psi = self.truncation_psi if psi is None else psi
        with torch.no_grad():
            if self.generator is not None and not preview:
                gen = self.generator
                if w_offsets is not None and hasattr(gen, "synthesize_ws"):
                    img = gen.synthesize_ws(gen.ws(c, noise) + w_offsets)
                else:
                    img = gen.synthesize(c, noise, truncation_psi=psi)
                img = img.clamp(0, 1)
                if img.shape[-1] != size:
                    img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear",
                                                          align_corners=False, antialias=True).clamp(0, 1)
                from engine.render import rotation_matrix

                rot = rotation_matrix(c.pose)
                verts = self.model.vertices(c) @ rot.transpose(1, 2)
                lms = self.renderer.landmarks(c, size)
                mode = "generator"
            else:
                img, verts, lms = self._preview(c, size, background)
                mode = "preview"
        v = verts[0].float().numpy()
        return Frame(image=to_uint8_image(img[0]), vertices=v, landmarks=lms[0].float().numpy(),
                     landmarks3d=v[self.model.lm68.numpy()], mode=mode,
                     ms=(time.perf_counter() - t0) * 1000.0, size=size)

    def render(self, size: int | None = None, preview: bool = False) -> Frame:
        return self.render_state(self.coeffs, self.noise, size, preview, self.w_offsets)

    # ------------------------------------------------------------------------------------------ #
    # keyframes
    # ------------------------------------------------------------------------------------------ #
    @property
    def keyframes(self) -> list[Keyframe]:
        """The keyframes in time order (a copy: change them with add/remove/clear, which are undoable)."""
        return list(self._state.keyframes)

    def _set_keyframes(self, keyframes: list[Keyframe]) -> None:
        def apply(s: _State):
            s.keyframes = tuple(sorted(keyframes, key=lambda k: k.time))
        self.commit()  # a keyframe edit is its own undo step, after any open drag
        self._edit(apply, True)

    def add_keyframe(self, time_s: float | None = None) -> int:
        """Store the current face at ``time_s`` (default: one second after the last keyframe); returns its index.
        A keyframe at the same time is replaced. Undoable."""
        ks = self.keyframes
        if time_s is None:
            time_s = ks[-1].time + 1.0 if ks else 0.0
        t = self._finite("keyframe time", time_s)
        if t < 0:
            raise SessionError("keyframe time must be ≥ 0")
        ks = [k for k in ks if abs(k.time - t) > 1e-9]
        ks.append(Keyframe(t, self.coeffs.clone(), self.noise.clone()))
        self._set_keyframes(ks)
        return next(i for i, k in enumerate(self.keyframes) if k.time == t)

    def remove_keyframe(self, index: int) -> None:
        ks = self.keyframes
        if not 0 <= index < len(ks):
            raise SessionError(f"no keyframe {index} (there are {len(ks)})")
        del ks[index]
        self._set_keyframes(ks)

    def clear_keyframes(self) -> None:
        if self._state.keyframes:
            self._set_keyframes([])

    @property
    def duration(self) -> float:
        return self.keyframes[-1].time - self.keyframes[0].time if self.keyframes else 0.0

    def interpolate_keyframes(self, t: float) -> tuple[Coefficients, torch.Tensor]:
        """(coefficients, noise) at time ``t``: smoothstep-eased blend of the two surrounding keyframes
        (clamped to the first/last keyframe outside their span)."""
        if not self.keyframes:
            raise SessionError("there are no keyframes: add at least one")
        ks = self.keyframes
        if t <= ks[0].time:
            return ks[0].coeffs.clone(), ks[0].noise.clone()
        if t >= ks[-1].time:
            return ks[-1].coeffs.clone(), ks[-1].noise.clone()
        for a, b in zip(ks, ks[1:]):
            if a.time <= t <= b.time:
                s = smoothstep((t - a.time) / max(b.time - a.time, 1e-9))
                return a.coeffs.lerp(b.coeffs, s), torch.lerp(a.noise, b.noise, s)
        raise AssertionError("unreachable")

    def go_to_time(self, t: float, commit: bool = False) -> None:
        """Set the current face to the timeline's value at ``t`` (scrubbing: no undo entry unless committed)."""
        c, n = self.interpolate_keyframes(t)
        self.set_coefficients(c, n, commit=commit)

    def keyframe_times(self, n_frames: int) -> list[float]:
        if not self.keyframes:
            raise SessionError("there are no keyframes to export: add at least one")
        if n_frames < 1:
            raise SessionError("the number of frames must be at least 1")
        t0, t1 = self.keyframes[0].time, self.keyframes[-1].time
        if n_frames == 1:
            return [t0]
        return [t0 + (t1 - t0) * i / (n_frames - 1) for i in range(n_frames)]

    def iter_frames(self, n_frames: int, size: int | None = None) -> Iterator[np.ndarray]:
        """uint8 images along the keyframes (for export)."""
        for t in self.keyframe_times(n_frames):
            c, n = self.interpolate_keyframes(t)
            yield self.render_state(c, n, size, w_offsets=self.w_offsets).image

    # ------------------------------------------------------------------------------------------ #
    # files
    # ------------------------------------------------------------------------------------------ #
    def to_json_dict(self) -> dict:
        d = {"format": SESSION_FORMAT, "version": SESSION_VERSION, "seed": self.seed,
             "truncation_psi": self.truncation_psi,
             "coefficients": self.coeffs.to_json_dict(), "noise": [round(x, 6) for x in self.noise[0].tolist()],
             "keyframes": [{"time": k.time, "coefficients": k.coeffs.to_json_dict(),
                            "noise": [round(x, 6) for x in k.noise[0].tolist()]} for k in self.keyframes]}
        if self.w_offsets is not None:
            d["w_offsets"] = {"shape": list(self.w_offsets.shape), "values": self.w_offsets.flatten().tolist()}
        if self.source:
            d["source"] = self.source
        return d

    def save(self, path: Path | str) -> None:
        path = Path(path)
        if path.suffix.lower() != ".json":
            raise SessionError(f"session files end in .json: {path.name}")
        try:
            write_json_atomic(path, self.to_json_dict())
        except OSError as exc:
            raise SessionError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _conform(self, c: Coefficients) -> Coefficients:
        """Fit coefficients from a file or a fitter to this model (albedo size may differ: pad / cut)."""
        c.exp_names = self.model.exp_names
        k = self.model.albedo_dim
        if c.albedo.shape[1] != k:
            a = torch.zeros(c.batch, k)
            m = min(k, c.albedo.shape[1])
            a[:, :m] = c.albedo[:, :m]
            c = Coefficients(c.identity, a, c.expression, c.light, c.pose, exp_names=self.model.exp_names)
        return c.to(torch.float32)

    def _conform_noise(self, noise) -> torch.Tensor:
        n = torch.as_tensor(noise, dtype=torch.float32).reshape(1, -1).clone()
        if n.shape[1] != self.noise_dim:
            out = torch.zeros(1, self.noise_dim)
            m = min(self.noise_dim, n.shape[1])
            out[:, :m] = n[:, :m]
            n = out
        if not torch.isfinite(n).all():
            raise SessionError("noise contains non-finite values")
        return n

    def _parse(self, d, where: str) -> tuple[_State, list[Keyframe], str | None]:
        if not isinstance(d, dict):
            raise SessionError(f"{where}: not a DiscoFace session (expected a JSON object)")
        fmt = d.get("format")
        if fmt != SESSION_FORMAT:
            raise SessionError(f"{where}: not a DiscoFace session (format {fmt!r}, expected {SESSION_FORMAT!r})")
        ver = d.get("version")
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            raise SessionError(f"{where}: session has no valid version number")
        if ver > SESSION_VERSION:
            raise SessionError(f"{where}: session version {ver} was written by a newer DiscoFace studio "
                               f"(this build reads up to version {SESSION_VERSION})")

        def coeffs(obj, what):
            try:
                c = Coefficients.from_json_dict(obj, self.model.exp_names)
            except CoefficientsError as exc:
                raise SessionError(f"{where}: {what}: {exc}") from None
            return self._conform(c[0:1])

        def noise(obj, what):
            if not isinstance(obj, list) or not all(isinstance(x, (int, float)) for x in obj):
                raise SessionError(f"{where}: {what} must be a list of numbers")
            return self._conform_noise(obj)

        try:
            seed = int(d.get("seed", 0))
            psi = float(d.get("truncation_psi", DEFAULT_PSI))
        except (TypeError, ValueError):
            raise SessionError(f"{where}: seed / truncation_psi are not numbers") from None
        if "coefficients" not in d:
            raise SessionError(f"{where}: session has no coefficients")
        state = _State(coeffs(d["coefficients"], "coefficients"), noise(d.get("noise", [0.0] * self.noise_dim),
                                                                          "noise"), seed, None, psi)
        wo = d.get("w_offsets")
        if wo is not None:
            try:
                state.w_offsets = torch.tensor(wo["values"], dtype=torch.float32).reshape(wo["shape"])
            except (KeyError, TypeError, ValueError, RuntimeError):
                raise SessionError(f"{where}: w_offsets is malformed") from None
        kfs = d.get("keyframes", [])
        if not isinstance(kfs, list):
            raise SessionError(f"{where}: keyframes must be a list")
        keyframes = []
        for i, k in enumerate(kfs):
            if not isinstance(k, dict) or not isinstance(k.get("time"), (int, float)) or \
                    not math.isfinite(k["time"]):
                raise SessionError(f"{where}: keyframe {i} is malformed (needs a time)")
            keyframes.append(Keyframe(float(k["time"]), coeffs(k.get("coefficients"), f"keyframe {i}"),
                                      noise(k.get("noise", [0.0] * self.noise_dim), f"keyframe {i} noise")))
        keyframes.sort(key=lambda k: k.time)
        src = d.get("source")
        return state, keyframes, src if isinstance(src, str) else None

    def _read(self, path: Path | str):
        path = Path(path)
        if not path.exists():
            raise SessionError(f"session file not found: {path}")
        if path.is_dir():
            raise SessionError(f"{path} is a folder, not a session file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SessionError(f"{path.name}: not a text (JSON) file") from None
        except OSError as exc:
            raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SessionError(f"{path.name}: corrupt session file (invalid JSON at line {exc.lineno})") from None
        return self._parse(d, path.name)

    def load_file(self, path: Path | str) -> None:
        """Replace this session's face and keyframes with a file's (all-or-nothing; undoable)."""
        state, keyframes, src = self._read(path)
        self.commit()
        before = self._state.clone()
        state.keyframes = tuple(keyframes)
        self._state = state
        self._push(before)
        self.source = src

    @classmethod
    def load(cls, path: Path | str, model: FaceModel | None = None, generator="auto") -> "Session":
        s = cls(model=model, generator=generator)
        state, keyframes, src = s._read(path)
        state.keyframes = tuple(keyframes)
        s._state, s.source = state, src
        return s

    @classmethod
    def from_embedding(cls, res, source: str | None = None, model: FaceModel | None = None,
                       generator="auto") -> "Session":
        """A session holding an ``engine.generator.embed.EmbedResult`` (coefficients, noise, per-layer offsets)."""
        s = cls(model=model, generator=generator)
        s._apply_embedding(res, commit=False)
        s._pending = None
        s.source = source
        return s

    def _apply_embedding(self, res, commit: bool = True) -> None:
        c = self._conform(res.coeffs[0:1].detach().clone())
        n = self._conform_noise(res.noise.detach())
        wo = None if getattr(res, "w_offsets", None) is None else res.w_offsets.detach().clone()

        def apply(s: _State):
            s.coeffs, s.noise, s.w_offsets, s.psi = c, n, wo, 1.0
        self._edit(apply, commit)

    # ------------------------------------------------------------------------------------------ #
    # photos
    # ------------------------------------------------------------------------------------------ #
    def open_photo(self, path: Path | str, progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> str:
        """Set the face from a photo: embed it with the generator when there is one, else fit the 3DMM.
        Returns a one-line summary. Errors: :class:`SessionError` (or the engine's own ValueError subclasses)."""
        path = Path(path)
        if not path.exists():
            raise SessionError(f"photo not found: {path}")
        cancel_fn = _as_cancel(cancel)
        if self.generator is not None:
            try:
                from engine.generator import embed as E
            except ImportError:
                E = None
            if E is not None and (hasattr(E, "embed_photo") or hasattr(E, "PhotoEmbedder")):
                prog = (lambda i, n, *rest: progress(int(i), int(n))) if progress else None
                try:
                    if hasattr(E, "embed_photo"):
                        accepted = inspect.signature(E.embed_photo).parameters
                        kw = {k: v for k, v in (("generator", self.generator), ("progress", prog),
                                                ("cancel", cancel_fn)) if k in accepted}
                        res = E.embed_photo(str(path), **kw)
                    else:
                        res = E.PhotoEmbedder(self.generator).embed(str(path), progress=prog, cancel=cancel_fn)
                except Exception as exc:
                    if "cancel" in type(exc).__name__.lower():
                        raise SessionCancelled("cancelled") from None
                    raise
                self._apply_embedding(res)
                self.source = str(path)
                m = res.metrics
                return f"embedded {path.name}: face PSNR {m.get('psnr_face', float('nan')):.1f} dB " \
                       f"in {m.get('seconds', 0):.1f} s"
        try:
            from engine.face.fitting import fit_photo
        except ImportError as exc:
            raise SessionError(f"opening photos is not available in this build (no 3DMM fitter: {exc})") from None
        params = inspect.signature(fit_photo).parameters
        kw = {}
        if "progress" in params and progress is not None:
            kw["progress"] = _progress_adapter(progress)
        if "cancel" in params:
            kw["cancel"] = cancel_fn
        if cancel_fn():
            raise SessionCancelled("cancelled")
        try:
            out = fit_photo(str(path), **kw)
        except Exception as exc:  # the fitter's own cancel type
            if "cancel" in type(exc).__name__.lower():
                raise SessionCancelled("cancelled") from None
            raise
        if cancel_fn():
            raise SessionCancelled("cancelled")
        coeffs = out[0] if isinstance(out, tuple) else out
        self.set_coefficients(coeffs)
        self.source = str(path)
        if progress is not None:
            progress(1, 1)
        return f"fitted the 3D face model to {path.name} (preview of the fit; no generator weights to embed)"


def _progress_adapter(progress: Callable[[int, int], None]):
    """The fitter reports a fraction (``progress(f)``), the editor wants (done, total): accept both."""
    def call(*args):
        if len(args) == 1:
            progress(int(round(float(args[0]) * 1000)), 1000)
        else:
            progress(int(args[0]), int(args[1]))
    return call


def _as_cancel(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel
