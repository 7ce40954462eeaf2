"""The editor's session, Qt-free: a thin facade over the editing parts.

=======================  ==========================================================================================
``state.py``             immutable :class:`Snapshot` s, the undo/redo :class:`History`, keyframe interpolation
``controls.py``          the control table (one name, range, unit and setter per slider / ``--set`` name)
``factors.py``           Randomise / Reset values per factor
``sessionfile.py``       the session file (parse / save, versioned)
``frames.py``            ``FrameRenderer.render(snapshot) -> Frame`` (photo mode, generator, 3DMM preview; caches)
``photo_import.py``      photo → face (photo mode fit, GAN embedding, 3DMM fit), cancel by exception type
=======================  ==========================================================================================

Every edit returns the new :class:`Snapshot`; the editor hands it straight to its render worker, which calls
:meth:`Session.render_snapshot` (never reading the session back). The path of one slider value to the pixels:

1. ``FloatSlider.changed(value, final)`` (``app/widgets.py``)
2. ``MainWindow.on_control(key, value, final)`` → ``Session.set_control(key, value, commit=final)`` → Snapshot
3. ``RenderWorker.submit(RenderRequest(snapshot, …))`` (``app/worker.py``; the newest request wins)
4. ``Session.render_snapshot`` → ``FrameRenderer.render(snapshot)`` → :class:`Frame` (in the render thread)
5. ``MainWindow._on_frame`` → ``ImageView.set_image(frame.image)``
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.editing import factors, photo_import
from engine.editing import sessionfile as files
from engine.editing.controls import (POSE_KEYS, ControlError, apply_controls, controls_for, light_params, lookup,
                                     relative_pose, set_light_params)
from engine.editing.frames import Frame, FrameRenderer
from engine.editing.photo_import import ImportCancelled as SessionCancelled
from engine.editing.sessionfile import SessionError
from engine.editing.state import DEFAULT_PSI, History, Keyframe, Snapshot, frame_times, interpolate, smoothstep
from engine.face.model import Coefficients, FaceModel, default_model
from engine.io.files import WeightsError
from engine.photo.renderer import limits_note, own_pose_degrees, turn_limits

GENERATOR_LIGHT_KEYS = tuple(f"light_{k}" for k in factors.GENERATOR_LIGHT_PARTS)  # believable_range: generator mode

NOISE_DIM = 32
__all__ = ["Session", "SessionError", "SessionCancelled", "Snapshot", "Frame", "Keyframe", "smoothstep"]


def _load_generator():
    """(the shipped generator or None, why not): preview mode when the weights are missing or unusable."""
    from engine.generator.networks import load_default_generator  # (77 ms to import: not for a photo edit)

    try:
        gen = load_default_generator()
    except (WeightsError, OSError) as exc:
        return None, f"generator weights unusable: {str(exc).strip().splitlines()[0]}"
    return gen, ("" if gen is not None else "no generator weights")


class Session:
    """The face being edited, its undo history and its keyframes."""

    def __init__(self, model: FaceModel | None = None, generator="auto", seed: int = 0, history_limit: int = 200):
        self.model = model if model is not None else default_model()
        auto = isinstance(generator, str) and generator == "auto"
        self.generator, self.generator_note = _load_generator() if auto else (generator, "")
        self.noise_dim = int(self.generator.G.noise_dim) if self.generator is not None else NOISE_DIM
        self.controls = controls_for(self.model.exp_names, self.model)
        self.frames = FrameRenderer(self.model, self.generator)
        self.conform = files.Conform(self.model.exp_names, self.model.albedo_dim, self.noise_dim)
        c = self.model.zeros(1)
        c.light[:] = factors.default_light(self.generator)
        self.history = History(Snapshot(c, factors.seed_noise(seed, self.noise_dim), int(seed)), history_limit)
        self.source: str | None = None
        self._gen_light: dict | None = None  # believable_range's generator light ranges, made on first use

    # -- reading ------------------------------------------------------------------------------------------ #
    @property
    def state(self) -> Snapshot:
        return self.history.current

    coeffs = property(lambda self: self.state.coeffs)
    noise = property(lambda self: self.state.noise)
    seed = property(lambda self: self.state.seed)
    truncation_psi = property(lambda self: self.state.psi)
    w_offsets = property(lambda self: self.state.w_offsets)
    photo = property(lambda self: self.state.photo)
    keyframes = property(lambda self: list(self.state.keyframes), doc="a copy; edit with add/remove/clear")
    duration = property(lambda self: self.state.duration)
    can_undo = property(lambda self: self.history.can_undo)
    can_redo = property(lambda self: self.history.can_redo)

    @property
    def native_size(self) -> int:
        """The longest side of a full frame: the photo's in photo mode, else the renderer's."""
        return max(self.photo.size) if self.photo is not None else self.frames.native_size

    @property
    def mode(self) -> str:
        return self.frames.view_for(self.state)

    @property
    def mode_text(self) -> str:
        if self.state.photo is not None:
            return f"photo mode: {self.state.photo.describe()}"
        if self.generator is not None:
            return f"generator ({int(self.generator.resolution)} px)"
        return f"preview: 3DMM render — {self.generator_note or 'no generator weights'}"

    def control_value(self, key: str, snap: Snapshot | None = None) -> float:
        return self.controls[key].get((snap or self.state).coeffs)

    def pose_degrees(self) -> dict[str, float]:
        return {k: self.control_value(k) for k in ("yaw", "pitch", "roll")}

    def light_params(self) -> dict:
        return light_params(self.coeffs)

    def expression_value(self, name: str) -> float:
        if name not in self.model.exp_names:
            raise SessionError(f"unknown expression {name!r}")
        return self.control_value(name)

    # -- edits: each returns the new Snapshot ---------------------------------------------------------------- #
    def _apply(self, new: Snapshot, commit: bool = True) -> Snapshot:
        return self.history.apply(new, commit)

    def set_controls(self, values: dict, commit: bool = True, force: bool = True, relative: bool = False
                     ) -> Snapshot:
        """Set named controls (the control table's keys, user units); all checked before any is applied.
        ``force=False`` also refuses values outside the trained range. ``relative``: the values are as the editor
        shows them (:meth:`shown_value`): in photo mode yaw / pitch / roll are turns from the photo's own pose."""
        c = self.coeffs.clone()
        try:
            if relative and self.photo is not None:
                values = relative_pose({lookup(self.controls, k).key: v for k, v in values.items()},
                                       own_pose_degrees(self.photo.fit))
            apply_controls(c, values, self.controls, force=force)
        except ControlError as exc:
            raise SessionError(str(exc)) from None
        return self._apply(self.state.edited(coeffs=c), commit)

    def set_control(self, key: str, value, commit: bool = True, force: bool = True, relative: bool = False
                    ) -> Snapshot:
        return self.set_controls({key: value}, commit, force, relative)

    # -- how the editor shows a control: photo mode's pose is a turn from the photo's own pose ------------------- #
    # The coefficients (and so session files, keyframes, undo) always hold absolute angles; only what a slider shows
    # and takes is measured from the photo's own fitted pose, as the CLI's ``--set yaw=+10`` is.
    def control_origin(self, key: str, snap: Snapshot | None = None) -> float:
        """What a control's shown value counts from: in photo mode the photo's own yaw / pitch / roll (degrees),
        else 0 (generator and 3DMM preview keep absolute angles)."""
        snap = self.state if snap is None else snap
        if snap.photo is None or key not in POSE_KEYS:
            return 0.0
        return own_pose_degrees(snap.photo.fit)[key]

    def shown_value(self, key: str, snap: Snapshot | None = None) -> float:
        """The control's value as the editor shows it (photo mode's pose: the turn from the photo's own pose)."""
        snap = self.state if snap is None else snap
        return self.controls[key].get(snap.coeffs) - self.control_origin(key, snap)

    def believable_range(self, key: str, snap: Snapshot | None = None) -> tuple[float, float] | None:
        """Photo mode's pose: the turn this photo shows believably (degrees from its own pose; yaw and pitch
        measured per photo by ``PhotoRenderer.turn_range``, roll the trained range); generator mode's light strength
        and ambient: the lights the generator was trained on (``factors.generator_light_ranges``); None for other
        controls."""
        snap = self.state if snap is None else snap
        if snap.photo is None and key in GENERATOR_LIGHT_KEYS:
            if self._gen_light is None:
                self._gen_light = factors.generator_light_ranges(self.generator) or {}
            return self._gen_light.get(key[len("light_"):])
        if snap.photo is None or key not in POSE_KEYS:
            return None
        lim = turn_limits(snap.photo.fit)
        return tuple(float(x) for x in lim[key]) if key in lim else self.controls[key].trained

    def control_range(self, key: str, full: bool = False, snap: Snapshot | None = None) -> tuple[float, float]:
        """A slider's range in shown units: the trained range (``full``: the whole range); photo mode's pose: this
        photo's believable turn (``full``: every turn that keeps the angle inside the control's whole range)."""
        snap = self.state if snap is None else snap
        spec = self.controls[key]
        good = self.believable_range(key, snap)
        if good is None:
            return spec.range(full)
        o = self.control_origin(key, snap)  # whole tenths, inward: a slider's grid then holds 0 and +10 exactly
        lo, hi = math.ceil(10 * max(spec.lo, spec.lo - o)) / 10, math.floor(10 * min(spec.hi, spec.hi - o)) / 10
        if full:
            return lo, hi
        return (max(lo, math.floor(10 * min(good[0], 0.0)) / 10),
                min(hi, math.ceil(10 * max(good[1], 0.0)) / 10))

    def control_warning(self, key: str, snap: Snapshot | None = None) -> str | None:
        """A one-line note when the control's value is beyond what is believable: photo mode's pose against this
        photo's turn range (``engine.photo.renderer.limits_note``), else outside the trained range."""
        snap = self.state if snap is None else snap
        spec = self.controls[key]
        if snap.photo is not None and key in POSE_KEYS:
            note = limits_note(snap.photo.fit, snap.coeffs)
            if note is None and key == "roll":
                return spec.warning(self.shown_value(key, snap))
            return note
        if snap.photo is None and self.believable_range(key, snap) is not None:  # generator mode's light
            return factors.generator_light_note(self._gen_light, key, spec.get(snap.coeffs), spec.label)
        return spec.warning(spec.get(snap.coeffs))

    def set_pose_degrees(self, yaw=None, pitch=None, roll=None, commit: bool = True) -> Snapshot:
        vals = {k: v for k, v in (("yaw", yaw), ("pitch", pitch), ("roll", roll)) if v is not None}
        return self.set_controls(vals, commit)

    def set_expression(self, name: str, value, commit: bool = True) -> Snapshot:
        if name not in self.model.exp_names:
            raise SessionError(f"unknown expression {name!r} (e.g. jawOpen, mouthSmile_L, eyeBlink_R)")
        return self.set_control(name, value, commit)

    def set_identity_component(self, k: int, value, commit: bool = True) -> Snapshot:
        if not 0 <= int(k) < self.coeffs.identity.shape[1]:
            raise SessionError(f"identity component {k} does not exist (0..{self.coeffs.identity.shape[1] - 1})")
        return self.set_control(f"id{int(k)}", value, commit)

    def set_light(self, azimuth=None, elevation=None, intensity=None, ambient=None, color=None,
                  commit: bool = True) -> Snapshot:
        """Directional light in user terms; unspecified parts keep their value, SH band 2 is kept."""
        vals = {f"light_{k}": v for k, v in (("azimuth", azimuth), ("elevation", elevation),
                                             ("intensity", intensity), ("ambient", ambient)) if v is not None}
        if color is not None:
            try:
                col = [float(x) for x in color]
            except (TypeError, ValueError):
                raise SessionError("light colour must be three numbers") from None
            if len(col) != 3 or min(col) < 0 or not all(map(math.isfinite, col)):
                raise SessionError("light colour must be three non-negative values")
        c = self.coeffs.clone()
        try:
            apply_controls(c, vals, self.controls, force=True)
        except ControlError as exc:
            raise SessionError(str(exc)) from None
        if color is not None:
            set_light_params(c, color=col)
        return self._apply(self.state.edited(coeffs=c), commit)

    def set_coefficients(self, coeffs: Coefficients, noise: torch.Tensor | None = None,
                         commit: bool = True) -> Snapshot:
        """Replace the whole face (one undo entry)."""
        changes = {"coeffs": self.conform.coeffs(coeffs)}
        if noise is not None:
            changes["noise"] = self.conform.noise(noise)
        return self._apply(self.state.edited(**changes), commit)

    def randomize(self, factor: str, seed: int | None = None, commit: bool = True) -> Snapshot:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else int(seed)
        new = factors.randomized(self.state, factor, seed, self.model, self.generator, self.noise_dim)
        if factor == "pose" and self.photo is not None:  # photo mode: a random turn this photo shows believably
            turns = {}  # the random angle's share of the trained range, as a share of this photo's range (≤ 80 %)
            for k in POSE_KEYS:
                lo, hi = self.believable_range(k)
                t = self.controls[k].get(new.coeffs) / self.controls[k].trained[1]
                f_lo, f_hi = self.control_range(k, full=True)  # and the angle inside the control's whole range
                turns[k] = min(f_hi, max(f_lo, 0.8 * max(-1.0, min(1.0, t)) * (hi if t > 0 else -lo)))
            c = new.coeffs.clone()
            apply_controls(c, relative_pose(turns, own_pose_degrees(self.photo.fit)), self.controls, force=True)
            new = new.edited(coeffs=c)
        return self._apply(new.edited(coeffs=self.conform.coeffs(new.coeffs)), commit)

    def new_random_face(self, seed: int | None = None) -> Snapshot:
        """A fresh random face (identity, expression, light, noise; frontal), outside photo mode, without the old
        face's keyframes (they would bring it back on the timeline); one undo step."""
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else int(seed)
        snap = factors.reset(self.state.edited(photo=None, w_offsets=None, psi=DEFAULT_PSI, keyframes=()),
                             factors.FACTORS, self.noise_dim, light=factors.default_light(self.generator))
        drawn = None
        if self.generator is not None:  # one random face of the generator's (its sampler may read candidates)
            with torch.no_grad():
                drawn = self.generator.sample(1, seed)
        # an identity-code generator's noise is the code drawn with the identity: "noise" would replace it
        code_is_identity = self.generator is not None and getattr(self.generator.G, "identity_noise", False)
        for f in ("identity", "expression", "light") + (() if code_is_identity else ("noise",)):
            snap = factors.randomized(snap, f, seed, self.model, self.generator, self.noise_dim, drawn)
        self.commit()
        self.source = None
        return self._apply(snap.edited(coeffs=self.conform.coeffs(snap.coeffs)))

    def set_seed(self, seed: int, commit: bool = True) -> Snapshot:
        return self.randomize("identity", int(seed), commit=commit)

    def reseed_noise(self, seed: int | None = None, commit: bool = True) -> Snapshot:
        return self.randomize("noise", seed, commit=commit)

    def reset(self, factor: str | None = None, commit: bool = True) -> Snapshot:
        neutral = self.conform.coeffs(self.photo.fit.coeffs) if self.photo is not None else None
        return self._apply(factors.reset(self.state, factors.FACTORS if factor is None else (factor,),
                                         self.noise_dim, neutral, factors.default_light(self.generator)), commit)

    def commit(self) -> bool:
        return self.history.commit()

    def undo(self) -> Snapshot | None:
        return self.history.current if self.history.undo() else None

    def redo(self) -> Snapshot | None:
        return self.history.current if self.history.redo() else None

    # -- keyframes -------------------------------------------------------------------------------------------- #
    def _set_keyframes(self, ks) -> Snapshot:
        self.commit()  # a keyframe edit is its own undo step, after any open drag
        return self._apply(self.state.edited(keyframes=tuple(sorted(ks, key=lambda k: k.time))))

    def add_keyframe(self, time_s: float | None = None) -> int:
        """Store the current face at ``time_s`` (default: a second after the last keyframe; the same time replaces
        that keyframe); returns its index. Undoable."""
        ks = self.keyframes
        t = (ks[-1].time + 1.0 if ks else 0.0) if time_s is None else time_s
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise SessionError(f"keyframe time {t!r} is not a number") from None
        if not math.isfinite(t) or t < 0:
            raise SessionError("keyframe time must be a finite number ≥ 0")
        ks = [k for k in ks if abs(k.time - t) > 1e-9] + [Keyframe(t, self.coeffs.clone(), self.noise.clone())]
        self._set_keyframes(ks)
        return next(i for i, k in enumerate(self.keyframes) if k.time == t)

    def set_keyframes(self, keyframes) -> Snapshot:
        """Replace all keyframes at once — ONE undo step, linear time (a driven video track of thousands).

        ``keyframes``: (time, face) pairs; a face is a :class:`Snapshot`, :class:`Coefficients` (the current noise)
        or a (Coefficients, noise) pair. The same time twice: the later pair wins. Everything is checked before
        anything changes (:class:`SessionError`)."""
        by_time: dict[float, Keyframe] = {}
        for i, item in enumerate(keyframes):
            try:
                t, face = item
                t = float(t)
            except (TypeError, ValueError):
                raise SessionError(f"keyframe {i}: expected a (time, face) pair with a numeric time") from None
            if not math.isfinite(t) or t < 0:
                raise SessionError(f"keyframe {i}: time must be a finite number ≥ 0, got {t}")
            noise = None
            if isinstance(face, Snapshot):
                face, noise = face.coeffs, face.noise
            elif isinstance(face, (tuple, list)) and len(face) == 2:
                face, noise = face
            if not isinstance(face, Coefficients):
                raise SessionError(f"keyframe {i}: the face must be a Snapshot, Coefficients or (coefficients, "
                                   f"noise), got {type(face).__name__}")
            by_time[t] = Keyframe(t, self.conform.coeffs(face),
                                  self.noise.clone() if noise is None else self.conform.noise(noise))
        return self._set_keyframes(by_time.values())

    def remove_keyframe(self, index: int) -> Snapshot:
        ks = self.keyframes
        if not 0 <= index < len(ks):
            raise SessionError(f"no keyframe {index} (there are {len(ks)})")
        del ks[index]
        return self._set_keyframes(ks)

    def clear_keyframes(self) -> Snapshot:
        return self._set_keyframes([]) if self.state.keyframes else self.state

    def interpolate_keyframes(self, t: float) -> tuple[Coefficients, torch.Tensor]:
        if not self.state.keyframes:
            raise SessionError("there are no keyframes: add at least one")
        return interpolate(self.state.keyframes, t)

    def seek(self, t: float) -> Snapshot:
        """Show the timeline's face at ``t`` (playing, scrubbing): the current face, but no undo entry — a seek is
        not an edit, so Ctrl+Z after playback undoes the last edit, not the seek."""
        c, n = self.interpolate_keyframes(t)
        self.commit()  # an open edit stays undoable
        new = self.state.edited(coeffs=self.conform.coeffs(c), noise=self.conform.noise(n))
        self.history.replace_silently(new)
        return new

    def go_to_time(self, t: float, commit: bool = False) -> Snapshot:
        """The timeline's face at ``t`` (scrubbing: no undo entry unless committed)."""
        c, n = self.interpolate_keyframes(t)
        return self.set_coefficients(c, n, commit=commit)

    def keyframe_times(self, n_frames: int) -> list[float]:
        if not self.state.keyframes:
            raise SessionError("there are no keyframes to export: add at least one")
        if n_frames < 1:
            raise SessionError("the number of frames must be at least 1")
        return frame_times(self.state.keyframes, n_frames)

    def frame_at(self, t: float, size: int | None = None, snap: Snapshot | None = None) -> np.ndarray:
        """The uint8 image of the keyframes at ``t`` (of ``snap``'s keyframes; default the current state's)."""
        snap = self.state if snap is None else snap
        c, n = interpolate(snap.keyframes, t)
        return self.render_snapshot(snap.edited(coeffs=c, noise=n), size).image

    def iter_frames(self, n_frames: int, size: int | None = None, workers: int | None = 1) -> Iterator[np.ndarray]:
        """uint8 images along the keyframes (for export; photo mode: at the photo's resolution). ``workers``: render
        processes (:mod:`engine.render.frame_pool`; None: one per core); they fork at this call."""
        from engine.render.frame_pool import render_frames

        snap = self.state
        times = self.keyframe_times(n_frames)
        return render_frames(lambda i: self.frame_at(times[i], size, snap), len(times), workers)

    # -- rendering ---------------------------------------------------------------------------------------------- #
    def render_snapshot(self, snap: Snapshot, size: int | None = None, final: bool = True,
                        view: str = "auto") -> Frame:
        return self.frames.render(snap, size, view=view, final=final)

    def render(self, size: int | None = None, preview: bool = False) -> Frame:
        return self.render_snapshot(self.state, size, view="preview" if preview else "auto")

    def render_state(self, coeffs: Coefficients, noise: torch.Tensor, size: int | None = None,
                     preview: bool = False, w_offsets: torch.Tensor | None = None) -> Frame:
        """Render any (coefficients, noise) of this session's face without touching the session."""
        snap = self.state.edited(coeffs=coeffs[0:1], noise=noise, w_offsets=w_offsets)
        return self.render_snapshot(snap, size, view="preview" if preview else "auto")

    # -- files ------------------------------------------------------------------------------------------------- #
    def to_json_dict(self) -> dict:
        return files.to_json_dict(self.state, self.source, photo_import.photo_record(self.state.photo))

    def save(self, path: Path | str) -> None:
        files.save(path, self.state, self.source, photo_import.photo_record(self.state.photo))

    def _read(self, path) -> Snapshot:
        data = files.read(path, self.conform)
        photo = photo_import.resolve_photo_record(data.photo, Path(path).parent) if data.photo else None
        return data.snapshot.edited(photo=photo), data.source

    def load_file(self, path: Path | str) -> Snapshot:
        """Replace the face, keyframes (and photo) with a file's: all or nothing, undoable."""
        snap, src = self._read(path)
        self.commit()
        self.source = src
        return self._apply(snap)

    def copy(self) -> "Session":
        """A new session holding this one's current face exactly (noise, truncation, offsets, keyframes, photo),
        sharing the model and generator, without this one's undo history. Snapshots are immutable: nothing is
        copied but the references."""
        s = type(self)(model=self.model, generator=self.generator)
        s.history.replace_silently(self.state)
        s.source = self.source
        return s

    @classmethod
    def load(cls, path: Path | str, model: FaceModel | None = None, generator="auto") -> "Session":
        s = cls(model=model, generator=generator)
        snap, s.source = s._read(path)
        s.history.replace_silently(snap)
        return s

    @classmethod
    def from_embedding(cls, res, source: str | None = None, model: FaceModel | None = None,
                       generator="auto") -> "Session":
        """A session holding an embedding (coefficients, noise, per-layer offsets) as its start (no undo entry)."""
        s = cls(model=model, generator=generator)
        s.history.replace_silently(s._embedding_snapshot(res))
        s.source = source
        return s

    def open_photo_source(self, src: "photo_import.PhotoSource", renderer=None) -> str:
        """Photo mode from a photo fitted already (a :class:`~engine.editing.photo_import.PhotoSource`; one undo
        step), ``renderer``: its :class:`~engine.photo.renderer.PhotoRenderer` when made already (the command
        line's photo cache); returns the one-line summary."""
        new, summary = self._photo_snapshot(src, renderer)
        self.commit()
        self._apply(new)
        self.source = str(src.path)
        return summary

    def _photo_snapshot(self, src, renderer=None) -> tuple[Snapshot, str]:
        self.frames.photo_renderer(src, renderer)  # its source-side set-up here (the open job), not in the first frame
        new = self.state.edited(coeffs=self.conform.coeffs(src.fit.coeffs), photo=src, w_offsets=None, keyframes=())
        return new, src.summary()

    def _embedding_snapshot(self, res) -> Snapshot:
        wo = None if res.w_offsets is None else res.w_offsets.detach().clone()
        return self.state.edited(coeffs=self.conform.coeffs(res.coeffs), noise=self.conform.noise(res.noise.detach()),
                                 w_offsets=wo, psi=1.0, photo=None)

    # -- photos ------------------------------------------------------------------------------------------------ #
    def open_photo(self, path: Path | str, progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None, how: str = "photo", *, face: int | None = None) -> str:
        """Set the face from a photo (one undo step); returns a one-line summary. ``how``: ``"photo"`` (photo mode:
        fit once, then every edit warps / relights the photo itself), ``"embed"`` (the generator's latents, no
        photo) or ``"fit"`` (3DMM coefficients only); ``face``: photo mode's face (``fit_photo``). Cancel → :class:`SessionCancelled`; user-facing failures are
        ValueErrors with one line."""
        if how == "photo":  # through the photo cache: a photo opened before skips its fit and layers
            src, renderer = photo_import.open_photo_cached(path, progress, cancel, face=face, model=self.model)
            new, summary = self._photo_snapshot(src, renderer)
        elif how == "embed":
            if self.generator is None:
                raise SessionError("embedding a photo needs generator weights (assets/generator.safetensors)")
            imp = photo_import.embed_photo(path, self.generator, progress, cancel)
            new, summary = self._embedding_snapshot(imp), imp.summary
        elif how == "fit":
            imp = photo_import.fit_3dmm(path, progress, cancel)
            new, summary = self.state.edited(coeffs=self.conform.coeffs(imp.coeffs), photo=None), imp.summary
        else:
            raise SessionError(f"unknown way to open a photo {how!r}: photo, embed or fit")
        self.commit()
        self._apply(new)
        self.source = str(path)
        return summary
