"""The session file: JSON, ``format: discoface.session``, versioned.

Version 1 holds the face (coefficients, noise, seed, truncation, an embedding's style offsets) and the keyframes;
version 2 adds ``photo`` (photo mode: the photo's path and its fit, so a session reopens without refitting). A file
that is corrupt, of another format or from a newer build raises :class:`SessionError` before anything is changed;
writes are atomic (a temporary file renamed into place).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.face.model import Coefficients, CoefficientsError
from engine.io.files import write_json_atomic
from engine.editing.state import DEFAULT_PSI, Keyframe, Snapshot

SESSION_FORMAT = "discoface.session"
SESSION_VERSION = 2  # 2: optional "photo"; files without a photo are still written as version 1


class SessionError(ValueError):
    """A session problem the user can fix (bad file, bad value); the message says which."""


@dataclass
class Conform:
    """What a parsed face must fit: the face model's expression names and albedo size, the generator's noise size."""
    exp_names: tuple
    albedo_dim: int
    noise_dim: int

    def coeffs(self, c: Coefficients) -> Coefficients:
        c = c[0:1].detach().clone()
        c.exp_names = tuple(self.exp_names)
        k = self.albedo_dim
        if c.albedo.shape[1] != k:
            a = torch.zeros(c.batch, k)
            m = min(k, c.albedo.shape[1])
            a[:, :m] = c.albedo[:, :m]
            c = Coefficients(c.identity, a, c.expression, c.light, c.pose, exp_names=self.exp_names)
        return c.to(torch.float32)

    def noise(self, noise) -> torch.Tensor:
        n = torch.as_tensor(noise, dtype=torch.float32).reshape(1, -1).clone()
        if n.shape[1] != self.noise_dim:
            out = torch.zeros(1, self.noise_dim)
            m = min(self.noise_dim, n.shape[1])
            out[:, :m] = n[:, :m]
            n = out
        if not torch.isfinite(n).all():
            raise SessionError("noise contains non-finite values")
        return n


@dataclass
class SessionData:
    snapshot: Snapshot  # photo is None here: the caller resolves ``photo`` (the photo file may have moved)
    source: str | None
    photo: dict | None  # {"path": str, "fit": dict} in photo mode


def _noise_list(n: torch.Tensor) -> list:
    return [round(x, 6) for x in n[0].tolist()]


def to_json_dict(snap: Snapshot, source: str | None = None, photo: dict | None = None) -> dict:
    d = {"format": SESSION_FORMAT, "version": 2 if photo else 1, "seed": snap.seed, "truncation_psi": snap.psi,
         "coefficients": snap.coeffs.to_json_dict(), "noise": _noise_list(snap.noise),
         "keyframes": [{"time": k.time, "coefficients": k.coeffs.to_json_dict(), "noise": _noise_list(k.noise)}
                       for k in snap.keyframes]}
    if snap.w_offsets is not None:
        d["w_offsets"] = {"shape": list(snap.w_offsets.shape), "values": snap.w_offsets.flatten().tolist()}
    if source:
        d["source"] = source
    if photo:
        d["photo"] = photo
    return d


def save(path: Path | str, snap: Snapshot, source: str | None = None, photo: dict | None = None) -> None:
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise SessionError(f"session files end in .json: {path.name}")
    try:
        write_json_atomic(path, to_json_dict(snap, source, photo))
    except OSError as exc:
        raise SessionError(f"cannot write {path}: {exc.strerror or exc}") from None


def parse(d, conform: Conform, where: str = "session") -> SessionData:
    """A session dict → :class:`SessionData`; anything malformed → :class:`SessionError` naming the part."""
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
            return conform.coeffs(Coefficients.from_json_dict(obj, conform.exp_names))
        except CoefficientsError as exc:
            raise SessionError(f"{where}: {what}: {exc}") from None
        except (TypeError, AttributeError, KeyError, ValueError):
            raise SessionError(f"{where}: {what} are malformed") from None

    def noise(obj, what):
        if not isinstance(obj, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                for x in obj):
            raise SessionError(f"{where}: {what} must be a list of numbers")
        try:
            return conform.noise(obj)
        except SessionError as exc:
            raise SessionError(f"{where}: {what}: {exc}") from None

    try:
        seed = int(d.get("seed", 0))
        psi = float(d.get("truncation_psi", DEFAULT_PSI))
    except (TypeError, ValueError, OverflowError):
        raise SessionError(f"{where}: seed / truncation_psi are not numbers") from None
    if not math.isfinite(psi):
        raise SessionError(f"{where}: truncation_psi must be finite")
    if "coefficients" not in d:
        raise SessionError(f"{where}: session has no coefficients")
    c = coeffs(d["coefficients"], "coefficients")
    n = noise(d.get("noise", [0.0] * conform.noise_dim), "noise")
    w_offsets = None
    wo = d.get("w_offsets")
    if wo is not None:
        try:
            w_offsets = torch.tensor(wo["values"], dtype=torch.float32).reshape(wo["shape"])
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise SessionError(f"{where}: w_offsets is malformed") from None
        if not torch.isfinite(w_offsets).all():
            raise SessionError(f"{where}: w_offsets contains non-finite values")
    kfs = d.get("keyframes", [])
    if not isinstance(kfs, list):
        raise SessionError(f"{where}: keyframes must be a list")
    keyframes = []
    for i, k in enumerate(kfs):
        if not isinstance(k, dict) or not isinstance(k.get("time"), (int, float)) or isinstance(k.get("time"), bool) \
                or not math.isfinite(k["time"]) or k["time"] < 0:
            raise SessionError(f"{where}: keyframe {i} is malformed (needs a time ≥ 0)")
        keyframes.append(Keyframe(float(k["time"]), coeffs(k.get("coefficients"), f"keyframe {i} coefficients"),
                                  noise(k.get("noise", [0.0] * conform.noise_dim), f"keyframe {i} noise")))
    keyframes.sort(key=lambda k: k.time)
    photo = d.get("photo")
    if photo is not None and not (isinstance(photo, dict) and isinstance(photo.get("path"), str)
                                  and isinstance(photo.get("fit"), dict)):
        raise SessionError(f"{where}: photo must hold the photo's path and its fit")
    src = d.get("source")
    snap = Snapshot(c, n, seed, w_offsets, psi, tuple(keyframes))
    return SessionData(snap, src if isinstance(src, str) else None, photo)


def read(path: Path | str, conform: Conform) -> SessionData:
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
    except (json.JSONDecodeError, RecursionError) as exc:
        line = getattr(exc, "lineno", "?")
        raise SessionError(f"{path.name}: corrupt session file (invalid JSON at line {line})") from None
    return parse(d, conform, path.name)
