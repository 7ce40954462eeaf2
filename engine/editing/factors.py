"""Per-factor values for Randomise and Reset: what a fresh identity / expression / light / pose / noise looks like."""
from __future__ import annotations

import math

import torch

from engine.face.model import N_EXP, Coefficients, FaceModel
from engine.render.shading import direction_from_light, light_from_direction
from engine.editing.sessionfile import SessionError
from engine.editing.state import Snapshot

FACTORS = ("identity", "expression", "light", "pose", "noise")
DEFAULT_LIGHT = {"azimuth": 25.0, "elevation": 20.0, "intensity": 0.45, "ambient": 0.75}  # start / reset light


def check_factor(factor: str) -> None:
    if factor not in FACTORS:
        raise SessionError(f"unknown factor {factor!r}; one of {', '.join(FACTORS)}")


def default_light(generator=None) -> torch.Tensor:
    """The start / Reset light: :data:`DEFAULT_LIGHT`; with a generator (generator mode), the light its own light
    decoder gives the centre of its latent — the photos' typical light it learned (shipped: key 0.06 from above,
    ambient 0.80). The editor's key light (intensity 0.45) lies far beyond the generator's lights (key 0.04–0.18,
    5–95 %) and washes its faces out."""
    nets = getattr(getattr(generator, "decoders", None), "nets", None)  # a stand-in generator may have none
    if nets is not None and "light" in nets:
        net = nets["light"]
        with torch.no_grad():
            return net(net.skip.weight.new_zeros(1, net.skip.in_features)).detach().cpu().clone()
    d = DEFAULT_LIGHT
    return light_from_direction(d["azimuth"], d["elevation"], d["intensity"], d["ambient"])


GENERATOR_LIGHT_SAMPLES = 512  # light decoder draws behind generator_light_ranges (seeded: the same on every machine)
GENERATOR_LIGHT_PARTS = ("intensity", "ambient")


def generator_light_ranges(generator) -> dict[str, tuple[float, float]] | None:
    """The key strength and ambient a generator's light decoder produces (1–99 % of :data:`GENERATOR_LIGHT_SAMPLES`
    seeded draws, widened to whole hundredths): the lights it was trained on, so the lights it renders well.
    Generator mode's light sliders span this (shipped: key ≈ 0–0.2, not the photo relighting's 0–1.5, which washes its
    faces out); None without a generator (or a stand-in with no light decoder)."""
    nets = getattr(getattr(generator, "decoders", None), "nets", None)
    if nets is None or "light" not in nets:
        return None
    net = nets["light"]
    g = torch.Generator().manual_seed(4099)
    with torch.no_grad():
        z = torch.randn(GENERATOR_LIGHT_SAMPLES, net.skip.in_features, generator=g).to(net.skip.weight)
        lights = net(z).detach().cpu()
    parts = [direction_from_light(lights[i:i + 1]) for i in range(lights.shape[0])]
    out = {}
    for k in GENERATOR_LIGHT_PARTS:
        v = torch.tensor([float(p[k]) for p in parts])
        lo, hi = torch.quantile(v, torch.tensor([0.01, 0.99])).tolist()
        out[k] = (max(0.0, math.floor(100 * lo) / 100), math.ceil(100 * hi) / 100)
    return out


def generator_light_note(ranges: dict | None, key: str, value: float, label: str | None = None) -> str | None:
    """A one-line warning when a light control (``light_intensity`` / ``light_ambient``) is beyond the generator's
    trained lights (``ranges``: :func:`generator_light_ranges`); None inside, for other keys or without ranges."""
    part = key[len("light_"):] if key.startswith("light_") else None
    if not ranges or part not in ranges:
        return None
    lo, hi = ranges[part]
    if lo - 1e-9 <= value <= hi + 1e-9:
        return None
    return (f"{label or key} {value:g} is beyond the generator's trained lights ({lo:g}–{hi:g}): expect washed-out or "
            f"odd faces")


def seed_noise(seed: int, noise_dim: int) -> torch.Tensor:
    return torch.randn(1, noise_dim, generator=torch.Generator().manual_seed(int(seed) + 7919))


def _analytic(factor: str, model: FaceModel, g: torch.Generator) -> tuple:
    """Without a generator: identity ~ N(0, 1), a few small expressions, a random key light, a moderate pose."""
    def u(lo, hi):
        return lo + (hi - lo) * float(torch.rand(1, generator=g))
    if factor == "identity":
        return torch.randn(1, 100, generator=g), torch.randn(1, model.albedo_dim, generator=g)
    if factor == "expression":
        e = torch.zeros(1, N_EXP)
        idx = torch.randperm(N_EXP, generator=g)[:5]
        e[0, idx] = torch.rand(5, generator=g) * 0.5
        return (e,)
    if factor == "light":
        return (light_from_direction(u(-70, 70), u(-30, 50), u(0.15, 0.7), u(0.55, 1.0)),)
    yaw, pitch, roll = (torch.randn(3, generator=g) * torch.tensor([20.0, 10.0, 5.0])).tolist()
    p = torch.tensor([[max(-40, min(40, yaw)), max(-20, min(20, pitch)), max(-20, min(20, roll))]])
    return (torch.deg2rad(p),)


def randomized(snap: Snapshot, factor: str, seed: int, model: FaceModel, generator, noise_dim: int,
               drawn: tuple | None = None) -> Snapshot:
    """``snap`` with new random values for one factor (seeded); the other factors are untouched. With a generator
    the values come from its own random faces (``FaceGenerator.sample``: its factor decoders, through its identity
    sampler when one is attached — the faces the benches measure), else from simple priors. ``drawn``: that
    sample for ``seed``, when the caller already has it (one draw for several factors)."""
    check_factor(factor)
    if factor == "noise":
        return snap.edited(noise=seed_noise(seed, noise_dim))
    code = None
    if generator is not None:
        if drawn is None:
            with torch.no_grad():
                drawn = generator.sample(1, seed)
        c, code = drawn
        src = {"identity": (c.identity, c.albedo), "expression": (c.expression,), "light": (c.light,),
               "pose": (c.pose,)}[factor]
    else:
        src = _analytic(factor, model, torch.Generator().manual_seed(seed))

    def apply(c: Coefficients) -> None:
        if factor == "identity":
            c.identity[:] = src[0]
            if c.albedo.numel() and len(src) > 1 and src[1].shape == c.albedo.shape:
                c.albedo[:] = src[1]
        else:
            getattr(c, factor)[:] = src[0]
    if factor == "identity" and generator is not None and generator.G.identity_noise:
        # the noise is this generator's identity code: a new person gets the one drawn with it (same seed, same person)
        return snap.edited(apply, seed=seed, noise=code.detach().cpu().reshape(1, noise_dim).clone())
    return snap.edited(apply, seed=seed if factor == "identity" else snap.seed)


def reset(snap: Snapshot, factors, noise_dim: int, neutral: Coefficients | None = None,
          light: torch.Tensor | None = None) -> Snapshot:
    """``snap`` with ``factors`` back to neutral; light goes back to ``light`` (default: the default key light),
    not to flat ambient. With ``neutral`` (photo mode: the photo's fit) the factors go back to those values instead."""
    for f in factors:
        check_factor(f)
    changes = {}
    if "noise" in factors:
        changes.update(noise=seed_noise(0, noise_dim), w_offsets=None)

    def apply(c: Coefficients) -> None:
        for f in factors:
            if neutral is not None and f != "noise":
                for name in (("identity", "albedo") if f == "identity" else (f,)):
                    getattr(c, name)[:] = getattr(neutral, name)
            elif f == "identity":
                c.identity.zero_()
                c.albedo.zero_()
            elif f == "light":
                c.light[:] = default_light() if light is None else light
            elif f != "noise":
                getattr(c, f).zero_()
    return snap.edited(apply, **changes)
