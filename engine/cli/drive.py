"""``discoface drive``: put the expression (and head motion) of a person in a video on a photo or a session's face.

Registered in ``discoface``'s command table (:data:`engine.cli.COMMANDS`); the drive itself is
:func:`engine.drive.drive`. User mistakes raise a ValueError subclass, which ``engine.cli.main`` prints as one
``error: ...`` line (exit 2); nothing partial is ever written.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["register", "add_drive_parser", "cmd_drive"]


def register(sub) -> None:
    add_drive_parser(sub)  # sets fn=cmd_drive


def add_drive_parser(sub) -> argparse.ArgumentParser:
    """Add the ``drive`` sub-command to an ``argparse`` sub-parsers object; returns its parser."""
    p = sub.add_parser("drive", help="drive a photo or a session's face with the expression (and head motion) "
                                     "of a person in a video",
                       description="Track the face in VIDEO and put its expression (and, unless --expression-only, "
                                   "its head motion relative to the first frame) on TARGET: a photo (edited at its "
                                   "own resolution in photo mode) or a session .json (generator / preview). Writes "
                                   "an MP4 with the video's frame count, fps and audio.")
    p.add_argument("--video", required=True, help="the driving video (mp4, mov, webm, mkv, avi, gif)")
    p.add_argument("--target", required=True, help="photo.jpg|png or session.json")
    p.add_argument("-o", "--output", required=True, help="the result, .mp4")
    p.add_argument("--expression-only", action="store_true", help="keep the target's head still")
    p.add_argument("--side-by-side", nargs="?", const=True, default=None, metavar="OUT.mp4",
                   help="also write a preview with the source beside the result (default name: "
                        "<output>_side_by_side.mp4)")
    p.add_argument("--track", metavar="OUT.json", help="also write the driven coefficients as a session whose "
                                                       "keyframes the editor opens")
    p.add_argument("--track-every", type=int, default=1, metavar="N", help="one keyframe every N frames (default 1)")
    p.add_argument("--expression-strength", type=float, default=1.0, help="0 = the target's own, 1 = the video's")
    p.add_argument("--pose-strength", type=float, default=1.0, help="scale of the head motion")
    p.add_argument("--keep-placement", action="store_true",
                   help="photo targets: keep the head where the photo has it (turns and expression only; by default "
                        "it also moves and scales in the frame as the video's head does since its first frame)")
    p.add_argument("--absolute-expression", action="store_true",
                   help="give the target the video's expression weights as they are (default: the target's own "
                        "expression plus the video's changes since its first frame)")
    p.add_argument("--relative-expression", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--size", type=int, default=None, help="session targets: render size in px (default: native); "
                                                          "photos: longest side (default: the photo's own)")
    p.add_argument("--no-audio", action="store_true", help="do not copy the video's audio")
    p.add_argument("--no-smoothing", action="store_true", help="raw per-frame fits (no One-Euro filter)")
    p.set_defaults(fn=cmd_drive)
    return p


def cmd_drive(args) -> int:
    from tqdm import tqdm

    from engine.drive import drive
    from engine.render import fast_raster

    fast_raster.warm_up(background=True)  # many frames: the compiled rasterizer loads while the video is tracked
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for b in bars.values():
                b.close()
            bar = bars[stage] = tqdm(total=max(total, 1), desc=stage, unit="frame", file=sys.stderr, leave=False)
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        res = drive(args.video, args.target, args.output, expression_only=args.expression_only,
                    expression_strength=args.expression_strength, pose_strength=args.pose_strength,
                    relative_expression=not args.absolute_expression, keep_placement=args.keep_placement,
                    side_by_side=args.side_by_side,
                    track_path=args.track, track_every=args.track_every, size=args.size,
                    keep_audio=not args.no_audio, smoothing=False if args.no_smoothing else None,
                    progress=progress)
    finally:
        for b in bars.values():
            b.close()
    print(res.summary())
    if res.side_by_side:
        print(f"wrote {res.side_by_side} (source | result)")
    if res.track_file:
        print(f"wrote {res.track_file} (keyframe track: open it in the editor)")
    for note in res.track.notes:
        print(f"note: {note}")
    return 0
