"""``export``: a session's keyframes as PNG frames / GIF / MP4 (photo sessions at the photo's resolution)."""
from __future__ import annotations

import sys
from pathlib import Path

from engine.cli.common import ANIMATIONS, UsageError, add_keyframe_args, add_keyframes, check_size, parse_keyframes


def cmd_export(args) -> int:
    from engine.editing.session import Session
    from engine.io.export import MAX_FRAMES, export_sequence, format_for
    from tqdm import tqdm

    from engine.render import fast_raster

    fast_raster.warm_up(background=True)  # many frames: the compiled rasterizer pays for its load
    format_for(args.to)  # a bad target is refused before any work
    size = check_size(args.size, hi=2048)
    sess = Session.load(args.session)
    add_keyframes(sess, parse_keyframes(args.keyframe, args.animate, sess.model.exp_names, args.force))
    if not sess.keyframes:
        raise UsageError(f"{Path(args.session).name} has no keyframes: give them with --keyframe \"yaw=-20@0\" "
                         f"\"yaw=20@2\" or --animate {'|'.join(ANIMATIONS)}")
    n = args.frames if args.frames is not None else max(1, int(round(sess.duration * float(args.fps))) + 1)
    if not 1 <= n <= MAX_FRAMES:  # checked before the render workers start
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES}, got {n}")
    frames = sess.iter_frames(n, size, workers=None)  # in parallel (engine.render.frame_pool): forks here
    bar = tqdm(total=n, desc="exporting", unit="frame", file=sys.stderr)
    try:
        out = export_sequence(frames, args.to, fps=args.fps, n_frames=n, size=size,
                              progress=lambda d, t: bar.update(d - bar.n))
    finally:
        frames.close()
        bar.close()
    print(f"wrote {out} ({n} frames, {sess.mode_text})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a session's keyframes as PNG frames / GIF / MP4")
    p.add_argument("session")
    p.add_argument("--to", required=True, help="out.mp4, out.gif or a folder for PNG frames")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--force", action="store_true", help="allow keyframe values beyond the trained range")
    add_keyframe_args(p)
    p.set_defaults(fn=cmd_export)
