"""One table of the editor's controls: the window's sliders, the CLI's ``--set`` and the session's checks read it.

A :class:`ControlSpec` names a control once (``key``, the same word in the GUI, the CLI and session files), says
where it sits (``group``), its ``label`` and ``unit``, the full range a user may reach (``lo``..``hi``, with
``--force`` / the "full range" toggle), the range the shipped generator was trained on (``trained``: outside it the
status bar / CLI warns), its neutral ``default``, and how it reads and writes :class:`Coefficients` (``get`` /
``set``, in place, in user units: degrees, ARKit weights, light strengths).

Ranges come from how the shipped generator (``assets/generator.safetensors``, ``training/warmup.py``) was trained;
its file does not record them, so they are constants here:

* yaw ±40°, pitch ±20°: the warm-up drew the imitation samples' yaw in ±``--imit-yaw`` (40°) and pitch in ±20°
  (``assets/MODEL_CARD.md``: rainbow streaks appear near 58°). Roll was never swept (aligned crops are upright);
  ±20° is a guess at what stays believable, not a measurement.
* light: the fitted training lights come from the front half-space; a light from behind (|azimuth| > 90°) gives a
  black face, so the trained azimuth is ±90°, elevation ±60°.
* expressions: ARKit weights 0..1 (the blendshapes are defined there; values outside are extrapolations).
* named identity controls (``face_width``, ``jaw_width``, …; ``engine/face/directions.py``): ±3 standard
  deviations of the trait over the ~N(0, 1) identity modes the generator was trained on. The raw modes stay
  reachable as ``id<k>`` (the window's Identity tab shows the first :data:`N_ID_CONTROLS` under "More").

**Pose in photo mode is relative.** A photo has its own (fitted) pose; a photo edit's ``yaw`` / ``pitch`` /
``roll`` are *turns from that pose* (``discoface edit photo.jpg --set yaw=+10``: ten degrees to the subject's left
from however the head sits in the photo; ``yaw=0`` is the photo's own pose; ``--animate turn`` turns within the
photo's believable range). :func:`relative_pose` turns such values into the coefficients' absolute angles; the
ranges below then apply to the turn. The generator and the 3DMM preview keep absolute angles.

The named identity controls read back through the *dual* basis of their directions: with V the (100 × T) matrix
of unit directions and W = V⁺ (T × 100, W V = I), control i reads ``(W_i · identity) / std_i`` and a write moves
``identity`` along V_i only. The directions are not orthogonal (face width and jaw width share a lot), so a
projection ``V_i · identity`` would let "face width" move the "jaw width" slider; with the dual rows setting one
control leaves every other named control's read-back unchanged, and the value reads as the trait's (linearised)
distance from the mean face in its standard deviations.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from engine.face.directions import identity_directions
from engine.face.model import EXPRESSION_GROUPS, Coefficients, FaceModelError, default_model
from engine.render.shading import direction_from_light, light_from_direction

N_ID_CONTROLS = 8  # raw identity components shown under "More" (all 100 are reachable as id<k> from the CLI)
IDENTITY_STD_RANGE = 3.0  # named identity controls: ±3 standard deviations of the trait


class ControlError(ValueError):
    """An unknown control or a value outside its range; the message names the control and the range."""


@dataclass(frozen=True)
class ControlSpec:
    key: str
    group: str  # "pose" | "expression" | "light" | "identity"
    label: str
    lo: float  # full range (reachable with force / the "full range" toggle)
    hi: float
    unit: str
    default: float
    trained: tuple[float, float]  # what the shipped generator was trained on (the sliders' normal range)
    get: Callable[[Coefficients], float]
    set: Callable[[Coefficients, float], None]
    subgroup: str = ""  # expression sub-group (brows, eyes, …; "common" for composites); identity: "named" | "raw"
    decimals: int = 2
    help: str = ""

    def range(self, full: bool = False) -> tuple[float, float]:
        return (self.lo, self.hi) if full else self.trained

    def in_trained_range(self, value: float) -> bool:
        lo, hi = self.trained
        return lo - 1e-6 <= value <= hi + 1e-6

    def check(self, value, force: bool = False) -> float:
        """The value as a float, or :class:`ControlError` when it is not a finite number or outside the range
        (the trained range, or the full range with ``force``)."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ControlError(f"{self.key}: {value!r} is not a number") from None
        if not math.isfinite(v):
            raise ControlError(f"{self.key}: value must be finite")
        lo, hi = self.lo, self.hi
        if not lo - 1e-6 <= v <= hi + 1e-6:
            raise ControlError(f"{self.key} = {v:g}{self.unit} is outside its range {_fmt_range(lo, hi, self.unit)}")
        if not force and not self.in_trained_range(v):
            raise ControlError(f"{self.key} = {v:g}{self.unit} is outside the range the generator was trained on "
                               f"({_fmt_range(*self.trained, self.unit)}); use --force / the full range toggle")
        return v

    def warning(self, value: float) -> str | None:
        """A one-line note when ``value`` lies outside the trained range (None inside)."""
        if self.in_trained_range(value):
            return None
        return (f"{self.label} {value:g}{self.unit} is outside the trained range {_fmt_range(*self.trained, self.unit)}"
                f": expect artefacts")


def _fmt_range(lo: float, hi: float, unit: str) -> str:
    if lo == -hi:
        return f"±{hi:g}{unit}"
    return f"{lo:g}..{hi:g}{unit}"


# -- pose ------------------------------------------------------------------------------------------------------ #
def _pose(i: int, name: str):
    def get(c: Coefficients) -> float:
        return math.degrees(float(c.pose[0, i]))

    def set_(c: Coefficients, v: float) -> None:
        c.set_pose_degrees(**{name: v})
    return get, set_


# -- expressions ------------------------------------------------------------------------------------------------ #
def _expr(*names: str):
    def get(c: Coefficients) -> float:
        return sum(float(c.expr[n][0]) for n in names) / len(names)

    def set_(c: Coefficients, v: float) -> None:
        for n in names:
            c.expr[n] = v
    return get, set_


# -- light: one part of (azimuth, elevation, intensity, ambient); SH band 2 and the colour are kept ---------------- #
LIGHT_PARTS = ("azimuth", "elevation", "intensity", "ambient")
DEFAULT_INTENSITY_WHEN_DARK = 0.5  # a direction asked of a light with no directional part gets this strength


def light_params(c: Coefficients) -> dict:
    return direction_from_light(c.light[:1])


def set_light_params(c: Coefficients, **parts) -> None:
    """Write user light parameters (azimuth/elevation in degrees, intensity, ambient, color RGB) into ``c`` in place;
    the parts not given keep their value and SH band 2 (the finer shape of a fitted light) is kept."""
    cur = light_params(c)
    p = {k: (cur[k] if parts.get(k) is None else float(parts[k])) for k in LIGHT_PARTS}
    if cur["intensity"] < 1e-8 and parts.get("intensity") is None and (
            parts.get("azimuth") is not None or parts.get("elevation") is not None):
        p["intensity"] = DEFAULT_INTENSITY_WHEN_DARK
    col = cur["color"] if parts.get("color") is None else [float(x) for x in parts["color"]]
    sh = light_from_direction(p["azimuth"], p["elevation"], p["intensity"], p["ambient"], tuple(col))
    sh_all = c.light.view(-1, 3, 9)
    band2 = sh_all[:, :, 4:].clone()
    c.light[:] = sh
    sh_all[:, :, 4:] = band2


def _light(part: str):
    def get(c: Coefficients) -> float:
        return float(light_params(c)[part])

    def set_(c: Coefficients, v: float) -> None:
        set_light_params(c, **{part: v})
    return get, set_


def _identity(k: int):
    def get(c: Coefficients) -> float:
        return float(c.identity[0, k])

    def set_(c: Coefficients, v: float) -> None:
        c.identity[:, k] = v
    return get, set_


def _named_identity(row: torch.Tensor, vector: torch.Tensor, std: float):
    """Read back with the dual row (other named directions read 0 on it), write along the direction itself."""
    def get(c: Coefficients) -> float:
        return float(c.identity[0].to(row.dtype) @ row) / std

    def set_(c: Coefficients, v: float) -> None:
        delta = (float(v) - get(c)) * std
        c.identity[:] += (delta * vector).to(c.identity.dtype)
    return get, set_


def identity_controls(model) -> dict[str, ControlSpec]:
    """The named identity controls of a face model (face_width, face_length, jaw_width, nose_length, nose_width,
    eye_spacing, lip_fullness), in trait standard deviations, ±:data:`IDENTITY_STD_RANGE`."""
    dirs = identity_directions(model)
    vecs = torch.stack([d.vector.double() for d in dirs.values()], 1)  # (n_id, T)
    dual = torch.linalg.pinv(vecs)  # (T, n_id): dual @ vecs = I
    lim = IDENTITY_STD_RANGE
    out = {}
    for i, (key, d) in enumerate(dirs.items()):
        g, s = _named_identity(dual[i].float(), d.vector.float(), float(d.std))
        out[key] = ControlSpec(key, "identity", d.label, -lim, lim, "σ", 0.0, (-lim, lim), g, s, subgroup="named",
                               help=f"{d.description}; 1σ = {d.cm_per_std:.2f} cm (0 = the mean face)")
    return out


# ---------------------------------------------------------------------------------------------------------------- #
POSE_TRAINED = {"yaw": 40.0, "pitch": 20.0, "roll": 20.0}
POSE_FULL = {"yaw": 60.0, "pitch": 40.0, "roll": 40.0}
COMPOSITES = {  # controls people understand, over the ARKit pairs (0..1)
    "smile": ("Smile", ("mouthSmile_L", "mouthSmile_R")),
    "blink": ("Blink", ("eyeBlink_L", "eyeBlink_R")),
    "brows_up": ("Brows up", ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R")),
    "mouth_open": ("Mouth open", ("jawOpen",)),
}
# bipolar gaze controls (-1..1): positive = toward the viewer's right (the subject's left, like positive yaw) / up
GAZE = {
    "look_horizontal": ("Look left / right", ("eyeLookOut_L", "eyeLookIn_R"), ("eyeLookIn_L", "eyeLookOut_R")),
    "look_vertical": ("Look down / up", ("eyeLookUp_L", "eyeLookUp_R"), ("eyeLookDown_L", "eyeLookDown_R")),
}


def _bipolar(pos: tuple, neg: tuple):
    def get(c: Coefficients) -> float:
        return (sum(float(c.expr[n][0]) for n in pos) - sum(float(c.expr[n][0]) for n in neg)) / len(pos)

    def set_(c: Coefficients, v: float) -> None:
        for n in pos:
            c.expr[n] = max(0.0, v)
        for n in neg:
            c.expr[n] = max(0.0, -v)
    return get, set_


def _expression_subgroup(name: str) -> str:
    low = name.lower()
    for group, keys in EXPRESSION_GROUPS.items():
        if any(low.startswith(k) for k in keys):
            return group
    return "other"


def build_controls(exp_names, model=None) -> dict[str, ControlSpec]:
    """The control table for a face model's expression names (ordered: pose, expression, light, identity: the
    named identity controls of ``model`` when given, then the raw components ``id<k>``)."""
    t: dict[str, ControlSpec] = {}
    for i, axis in enumerate(("yaw", "pitch", "roll")):
        g, s = _pose(i, axis)
        lim, tr = POSE_FULL[axis], POSE_TRAINED[axis]
        t[axis] = ControlSpec(axis, "pose", axis.capitalize(), -lim, lim, "°", 0.0, (-tr, tr), g, s, decimals=1)
    names = set(exp_names)
    for key, (label, parts) in COMPOSITES.items():
        if all(p in names for p in parts):
            g, s = _expr(*parts)
            t[key] = ControlSpec(key, "expression", label, 0.0, 1.0, "", 0.0, (0.0, 1.0), g, s, subgroup="common",
                                 help=" + ".join(parts))
    for key, (label, pos, neg) in GAZE.items():
        if all(p in names for p in pos + neg):
            g, s = _bipolar(pos, neg)
            t[key] = ControlSpec(key, "expression", label, -1.0, 1.0, "", 0.0, (-1.0, 1.0), g, s, subgroup="common",
                                 help=f"+: {' + '.join(pos)}; -: {' + '.join(neg)}")
    for n in exp_names:
        g, s = _expr(n)
        t[n] = ControlSpec(n, "expression", n, 0.0, 1.0, "", 0.0, (0.0, 1.0), g, s, subgroup=_expression_subgroup(n))
    for part, lo, hi, unit, tr, label in (("azimuth", -180.0, 180.0, "°", (-90.0, 90.0), "Light azimuth"),
                                          ("elevation", -90.0, 90.0, "°", (-60.0, 60.0), "Light elevation"),
                                          ("intensity", 0.0, 1.5, "", (0.0, 1.5), "Light intensity"),
                                          ("ambient", 0.0, 1.5, "", (0.0, 1.5), "Ambient")):
        g, s = _light(part)
        t[f"light_{part}"] = ControlSpec(f"light_{part}", "light", label, lo, hi, unit, 0.0, tr, g, s,
                                         decimals=1 if unit else 2)
    if model is not None:
        t.update(identity_controls(model))
    for k in range(100):
        g, s = _identity(k)
        t[f"id{k}"] = ControlSpec(f"id{k}", "identity", f"Component {k + 1}", -3.0, 3.0, "", 0.0, (-3.0, 3.0), g, s,
                                  subgroup="raw", help=f"identity mode {k} of the face model (~N(0, 1))")
    return t


_CACHE: dict[tuple, dict[str, ControlSpec]] = {}


def controls_for(exp_names, model=None) -> dict[str, ControlSpec]:
    """The control table (cached). ``model``: the face model whose named identity directions to include; None →
    the process-wide default model (the CLI's), or no named identity controls when it cannot be loaded."""
    if model is None:
        try:
            model = default_model()
        except (FaceModelError, OSError):
            model = None
    key = (tuple(exp_names), id(model))
    if key not in _CACHE:
        _CACHE[key] = build_controls(key[0], model)
    return _CACHE[key]


def lookup(table: dict[str, ControlSpec], key: str) -> ControlSpec:
    """The control named ``key``, in any letter case (``Yaw``, ``jawopen``); an unknown name → :class:`ControlError`
    with the closest names ("did you mean …?")."""
    spec = table.get(key)
    if spec is not None:
        return spec
    folded = {k.casefold(): k for k in table}
    name = folded.get(str(key).casefold())
    if name is not None:
        return table[name]
    close = difflib.get_close_matches(str(key).casefold(), list(folded), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(folded[c] for c in close)}?" if close else ""
    raise ControlError(f"unknown setting {key!r}{hint} (use yaw, pitch, roll, smile, blink, look_horizontal, "
                       f"face_width, jaw_width, nose_length (named identity), id<k>, light_azimuth, light_elevation, "
                       f"light_intensity, light_ambient or an expression name, e.g. jawOpen, mouthSmile_L, eyeBlink_R)")


def apply_controls(c: Coefficients, values: dict[str, float], table: dict[str, ControlSpec],
                   force: bool = False) -> list[str]:
    """Check every value first, then write them into ``c`` (in place, all or nothing); returns the warnings for
    values outside the trained range (only possible with ``force``)."""
    checked = [(lookup(table, k), v) for k, v in values.items()]
    checked = [(spec, spec.check(v, force)) for spec, v in checked]
    warnings = []
    for spec, v in checked:
        spec.set(c, v)
        w = spec.warning(v)
        if w:
            warnings.append(w)
    return warnings


POSE_KEYS = ("yaw", "pitch", "roll")


def relative_pose(values: dict, own: dict) -> dict:
    """Photo mode: ``values`` with their pose entries (turns from the photo's own pose, degrees) made absolute by
    adding the photo's own ``own[axis]`` (degrees); other entries unchanged."""
    return {k: (float(own[k]) + float(v) if k in POSE_KEYS else v) for k, v in values.items()}


def parse_assignments(items) -> dict[str, float]:
    """``["yaw=20", "jawOpen=0.5"]`` → ``{"yaw": 20.0, "jawOpen": 0.5}``; bad items → :class:`ControlError`."""
    out: dict[str, float] = {}
    for it in items or []:
        if "=" not in it:
            raise ControlError(f"setting {it!r} must look like name=value (e.g. yaw=20 or jawOpen=0.5)")
        k, v = it.split("=", 1)
        k = k.strip()
        try:
            val = float(v)
        except ValueError:
            raise ControlError(f"setting {k!r}: {v!r} is not a number") from None
        if not math.isfinite(val):
            raise ControlError(f"setting {k!r}: value must be finite")
        out[k] = val
    return out
