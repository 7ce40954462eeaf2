"""Named identity directions: face width, face length, jaw width, nose length, nose width, eye spacing, lip fullness.

The ICT identity modes are PCA modes (coefficients ~ N(0, 1)); mode 1 alone changes many things a little, so
"Component 1…8" sliders mean little to a user. Here each trait is *measured* on the face model's 68 landmarks
(distances in cm, e.g. face width = landmark 1 ↔ 15), and its direction in identity-coefficient space is found from
the Jacobian J (traits × 100) at the mean face:

- the direction of trait i is the least-norm coefficient change that moves trait i and holds every other listed
  trait still (to first order): ``v_i = J⁺ e_i`` — the columns of the pseudo-inverse — normalised to unit length;
- ``cm_per_std`` = ‖J_i‖: the trait's standard deviation (cm) when c ~ N(0, I);
- ``std`` = the coefficient length along ``vector`` that moves the trait by one of its standard deviations, so a
  slider value s ∈ [−3, 3] applies ``identity += s · std · vector`` and reads in trait standard deviations.

Moving along "face width" therefore widens the face and leaves the face length, nose and eye spacing (almost)
unchanged; traits outside the list (e.g. the forehead shape) may still change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# 68-point (iBUG) landmark indices; 0-16 jaw contour (8 = chin), 27-30 nose bridge, 31-35 nostrils,
# 36-41 / 42-47 eyes, 48-59 outer lip, 60-67 inner lip
TRAITS: dict[str, tuple[str, str]] = {
    "face_width": ("Face width", "cheek to cheek: landmarks 1 ↔ 15"),
    "face_length": ("Face length", "nose bridge to chin: landmarks 27 ↔ 8"),
    "jaw_width": ("Jaw width", "jaw angle to jaw angle: landmarks 4 ↔ 12"),
    "nose_length": ("Nose length", "nose bridge to the base of the nose: landmarks 27 ↔ 33"),
    "nose_width": ("Nose width", "nostril to nostril: landmarks 31 ↔ 35"),
    "eye_spacing": ("Eye spacing", "inner eye corners: landmarks 39 ↔ 42"),
    "lip_fullness": ("Lip fullness", "upper + lower lip height: landmarks 51 ↔ 62 and 57 ↔ 66"),
}


def _dist(lm: torch.Tensor, a: int, b: int) -> torch.Tensor:
    return (lm[..., a, :] - lm[..., b, :]).norm(dim=-1)


MEASURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "face_width": lambda lm: _dist(lm, 1, 15),
    "face_length": lambda lm: _dist(lm, 27, 8),
    "jaw_width": lambda lm: _dist(lm, 4, 12),
    "nose_length": lambda lm: _dist(lm, 27, 33),
    "nose_width": lambda lm: _dist(lm, 31, 35),
    "eye_spacing": lambda lm: _dist(lm, 39, 42),
    "lip_fullness": lambda lm: _dist(lm, 51, 62) + _dist(lm, 57, 66),
}


@dataclass(frozen=True)
class IdentityDirection:
    """One named identity control: ``identity += value · std · vector`` with value in trait standard deviations."""

    label: str
    vector: torch.Tensor  # (n_id,) unit length
    std: float  # coefficient length along ``vector`` for one standard deviation of the trait
    cm_per_std: float = 0.0  # the trait's standard deviation in cm
    description: str = ""

    def offset(self, value: float) -> torch.Tensor:
        """The identity-coefficient change for a slider ``value`` (in standard deviations)."""
        return float(value) * self.std * self.vector

    def value_of(self, identity: torch.Tensor) -> float:
        """Where ``identity`` (n_id,) or (1, n_id) sits along this direction, in standard deviations."""
        return float(identity.reshape(-1) @ self.vector) / self.std


def measure_traits(model, identity: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every trait (cm) of the neutral face with these identity coefficients ((B, n_id) → dict of (B,))."""
    identity = identity.reshape(-1, model.id_basis.shape[0]).to(model.mean.dtype)
    lm = _landmarks(model, identity)
    return {k: f(lm) for k, f in MEASURES.items()}


def _landmarks(model, identity: torch.Tensor) -> torch.Tensor:
    basis = model.id_basis[:, model.lm68]  # (n_id, 68, 3)
    return model.mean[model.lm68].unsqueeze(0) + torch.einsum("bk,kld->bld", identity, basis)


_cache: dict[int, dict[str, IdentityDirection]] = {}


def identity_directions(model) -> dict[str, IdentityDirection]:
    """The named directions for ``model`` (computed once per model; a few ms)."""
    key = id(model)
    if key in _cache:
        return _cache[key]
    n_id = model.id_basis.shape[0]
    names = list(MEASURES)

    def traits(c: torch.Tensor) -> torch.Tensor:
        lm = _landmarks(model, c.unsqueeze(0))
        return torch.stack([MEASURES[k](lm)[0] for k in names])

    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(traits, torch.zeros(n_id, dtype=torch.float64).to(
            model.mean.dtype)).double()  # (T, n_id)
    pinv = torch.linalg.pinv(jac)  # (n_id, T): column i moves trait i by 1 cm, the others by 0
    out = {}
    for i, k in enumerate(names):
        raw = pinv[:, i]
        norm = float(raw.norm())
        cm_std = float(jac[i].norm())
        label, desc = TRAITS[k]
        out[k] = IdentityDirection(label=label, vector=(raw / norm).float(), std=cm_std * norm,
                                   cm_per_std=cm_std, description=desc)
    _cache[key] = out
    return out
