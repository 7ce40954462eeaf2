"""What the commands share: the user-error type, output checks, ``--set`` / ``--keyframe`` / ``--animate``."""
from __future__ import annotations

import math
import sys
from pathlib import Path


EXIT_USER_ERROR = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ANIMATIONS = {  # built-in keyframe animations (--animate): control values at times in seconds
    "turn": [(0.0, {"yaw": -25.0}), (1.0, {"yaw": 0.0}), (2.0, {"yaw": 25.0})],
    "smile": [(0.0, {"smile": 0.0}), (1.0, {"smile": 0.8}), (2.0, {"smile": 0.0})],
    "nod": [(0.0, {"pitch": -12.0}), (1.0, {"pitch": 12.0}), (2.0, {"pitch": -12.0})],
    "talk": [(0.0, {"jawOpen": 0.0}), (0.5, {"jawOpen": 0.5}), (1.0, {"jawOpen": 0.1}), (1.5, {"jawOpen": 0.4}),
             (2.0, {"jawOpen": 0.0})],
}


class UsageError(ValueError):
    """A bad command-line value."""


def out_path(p: str, suffixes=IMAGE_SUFFIXES, what: str = "output") -> Path:
    path = Path(p)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{what} {p!r} must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise UsageError(f"{what} {p!r} is a folder")
    return path


def check_size(size, lo: int = 8, hi: int = 4096) -> int | None:
    if size is None:
        return None
    if not lo <= int(size) <= hi:
        raise UsageError(f"--size must be between {lo} and {hi} px, got {size}")
    return int(size)


def add_set_args(p, what: str = "slider values") -> None:
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE", default=[],
                   help=f"{what}: yaw=20 smile=0.5 jawOpen=0.5 light_azimuth=40 id3=1.5 … (the editor's names and "
                        f"ranges)")
    p.add_argument("--force", action="store_true",
                   help="allow values beyond the range the generator was trained on (a warning is printed)")


def add_keyframe_args(p) -> None:
    p.add_argument("--keyframe", nargs="+", metavar="NAME=VALUE[,NAME=VALUE]@SECONDS", default=[],
                   help='keyframes over the face, e.g. --keyframe "yaw=-20@0" "yaw=20@2" (replace any keyframes)')
    p.add_argument("--animate", choices=sorted(ANIMATIONS),
                   help="a built-in keyframe animation: turn (yaw -25° → 25°), smile, nod, talk (2 s each)")


def settings(items, exp_names, force: bool):
    """Parse and check ``--set`` items against the control table; prints the trained-range warnings."""
    from engine.editing.controls import ControlError, controls_for, lookup, parse_assignments

    try:
        table = controls_for(exp_names)
        values = {lookup(table, k).key: v for k, v in parse_assignments(items).items()}  # any case → the table's
        for k, v in values.items():
            table[k].check(v, force)
    except ControlError as exc:
        raise UsageError(str(exc)) from None
    for k, v in values.items():
        w = table[k].warning(v)
        if w:
            print(f"warning: {w}", file=sys.stderr)
    return values


def apply_settings(coeffs, values: dict, force: bool = True):
    """Apply checked settings in place (the control table's setters)."""
    from engine.editing.controls import ControlError, apply_controls, controls_for

    try:
        apply_controls(coeffs, values, controls_for(coeffs.exp_names), force=force)
    except ControlError as exc:
        raise UsageError(str(exc)) from None
    return coeffs


def parse_keyframes(items, animate: str | None, exp_names, force: bool) -> list[tuple[float, dict]]:
    """``["yaw=-20@0", "yaw=20,smile=0.5@2"]`` (or a built-in animation) → [(time, values)], checked."""
    if items and animate:
        raise UsageError("use either --keyframe or --animate, not both")
    if animate:
        return [(t, dict(v)) for t, v in ANIMATIONS[animate]]
    out = []
    for it in items:
        if "@" not in it:
            raise UsageError(f"keyframe {it!r} must look like name=value@seconds (e.g. yaw=20@2)")
        vals, t = it.rsplit("@", 1)
        try:
            time_s = float(t)
        except ValueError:
            raise UsageError(f"keyframe {it!r}: time {t!r} is not a number of seconds") from None
        if not math.isfinite(time_s) or time_s < 0:
            raise UsageError(f"keyframe {it!r}: the time must be ≥ 0 seconds")
        out.append((time_s, settings([v for v in vals.split(",") if v.strip()], exp_names, force)))
    times = [t for t, _ in out]
    if len(set(times)) != len(times):
        raise UsageError("two keyframes have the same time")
    return sorted(out, key=lambda k: k[0])


def add_keyframes(session, keyframes: list[tuple[float, dict]]) -> None:
    """Replace the session's keyframes by the face with each keyframe's values; the face itself is unchanged."""
    if not keyframes:
        return
    base = session.coeffs.clone()
    session.clear_keyframes()
    for t, values in keyframes:
        session.set_coefficients(base)
        session.set_controls(values)
        session.add_keyframe(t)
    session.set_coefficients(base)
