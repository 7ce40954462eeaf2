"""Photo commands: ``fit`` (3DMM coefficients), ``embed`` (the generator's latents), ``edit`` (photo mode)."""
from __future__ import annotations

import math
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.editing.photo_cache import PhotoCache, open_cached
from engine.cli.common import (UsageError, add_keyframe_args, add_keyframes, add_set_args, check_size, out_path,
                               parse_keyframes, settings)

if TYPE_CHECKING:
    from engine.generator.embed import EmbedResult, PhotoEmbedder

VIDEO_SUFFIXES = (".mp4", ".gif")
PREFETCH_ENV = "DISCOFACE_PREFETCH"  # "off": no face search in a second process (prefetch_faces)


def cmd_fit(args) -> int:
    """Fit the 3DMM to a photo: coefficients JSON (+ overlay PNG)."""
    from engine.fit import fit_photo_crop, overlay_image
    from engine.io.files import save_image, write_json_atomic

    out = out_path(args.output, (".json",))
    if args.overlay:
        out_path(args.overlay, what="overlay")
    coeffs, crop, _alignment, result = fit_photo_crop(args.photo)
    write_json_atomic(out, coeffs.to_json_dict())
    print(f"wrote {out} (landmark NME {float(result.landmark_nme.mean()):.3f})")
    if args.overlay:
        save_image(args.overlay, overlay_image(crop, coeffs))
        print(f"wrote {args.overlay}")
    return 0


def _progress_bar(desc: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
    return bar, (lambda d, t: bar.update(max(0, int(d * total / max(t, 1)) - bar.n)))


def cmd_embed(args) -> int:
    """``discoface embed photo.jpg -o me.json [--overlay grid.png] [--paste-back out.png] [--keyframe …]``.

    Checks every output path and the photo first, embeds with a progress bar, then writes the outputs (each
    atomically; all or nothing)."""
    import torch.nn.functional as F

    from engine.editing.paste import paste_into_photo
    from engine.editing.session import Session
    from engine.face.model import default_model
    from engine.generator.embed import EmbedConfig, PhotoEmbedder
    from engine.generator.networks import load_default_generator
    from engine.io.files import check_writable, save_image
    from engine.perception.align import load_image
    from tqdm import tqdm

    out = out_path(args.output, (".json",))
    overlay = out_path(args.overlay, what="overlay") if args.overlay else None
    paste = out_path(args.paste_back, what="paste-back output") if args.paste_back else None
    for p in (out, overlay, paste):  # checked before the minutes of embedding, not after (missing folders are made)
        if p is not None:
            check_writable(p)
    if args.steps is not None and int(args.steps) < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    photo = load_image(args.photo)  # unreadable files fail here, before the weights are loaded
    keyframes = parse_keyframes(args.keyframe, args.animate, default_model().exp_names, args.force)
    gen = load_default_generator()
    if gen is None:
        raise UsageError("no generator weights in assets/ (assets/generator.safetensors): cannot embed")
    emb = PhotoEmbedder(gen, config=EmbedConfig(steps=args.steps) if args.steps else None)
    total = emb.config.steps
    bar = None

    def on_progress(i, n, loss):  # the bar appears once the face is found and optimisation starts
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="embedding", unit="step", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        res = emb.embed(photo, seed=int(args.seed or 0), progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
    # every output in memory first, then written (atomic writes; nothing half-written on a failure)
    sess = Session.from_embedding(res, source=str(args.photo), generator=gen)
    add_keyframes(sess, keyframes)
    grid = None
    if overlay:
        grid = embedding_grid(res, emb, standard_edits())
        if grid.shape[1] < 128:  # small generators: tiles upscaled to 128 px so the overlay is readable
            grid = F.interpolate(grid[None], scale_factor=128 // grid.shape[1], mode="bilinear",
                                 align_corners=False)[0].clamp(0, 1)
    pasted = paste_into_photo(res, res.reconstruction, photo, renderer=emb.renderer) if paste else None
    written = []
    try:
        sess.save(out)
        written.append(out)
        if grid is not None:
            save_image(overlay, grid)
            written.append(overlay)
        if pasted is not None:
            save_image(paste, pasted)
            written.append(paste)
    except BaseException:
        for p in written:  # all or nothing
            Path(p).unlink(missing_ok=True)
        raise
    m = res.metrics
    idd = f", identity distance {m['id_distance']:.3f}" if "id_distance" in m else ""
    kf = f", {len(keyframes)} keyframes" if keyframes else ""
    print(f"wrote {out}  (face PSNR {m['psnr_face']:.1f} dB{idd}, {m['seconds']:.1f} s, init: {m['init']}{kf})")
    if overlay:
        print(f"wrote {overlay}  (photo | reconstruction | yaw -20 | yaw +20 | smile | relit)")
    if paste:
        print(f"wrote {paste}")
    return 0


def cmd_edit(args) -> int:
    """``discoface edit photo.jpg --set yaw=15 smile=0.7 -o out.png``: photo mode from the command line.

    ``--set`` values are the sliders' values; yaw / pitch / roll are *turns from the photo's own pose*
    (``yaw=+10``; the control table's :func:`~engine.editing.controls.relative_pose`), checked against this photo's
    believable turn (a warning beyond it; ``--animate turn`` stays inside it); unset controls keep the fitted ones;
    no ``--set`` gives the photo back unchanged at its own size. ``-o`` ending in .json saves the session (photo +
    fit + keyframes); .mp4/.gif exports the keyframes (``--keyframe`` / ``--animate``) at the photo's resolution."""
    from engine.editing.controls import relative_pose
    from engine.editing.session import Session, SessionError
    from engine.face.model import default_model
    from engine.io.files import ALPHA_SUFFIXES, check_writable, read_alpha, save_image
    from engine.io.mesh import MESH_SUFFIXES
    from engine.photo.renderer import own_pose_degrees, turn_note

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        from engine.io.export import format_for

        format_for(out)
    else:
        out_path(args.output, (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".json") + MESH_SUFFIXES)
    mesh_out = out_path(args.mesh, MESH_SUFFIXES, what="mesh output") if args.mesh else None
    for p in (out, mesh_out):
        if p is not None:
            check_writable(p)
    size = check_size(args.size)
    model = default_model()
    values = settings(args.set, model.exp_names, args.force)
    keyframes = parse_keyframes(args.keyframe, args.animate, model.exp_names, args.force)
    if suffix in VIDEO_SUFFIXES and not keyframes:
        raise UsageError(f"{out.name}: a video needs keyframes (--keyframe \"yaw=-20@0\" \"yaw=20@2\" or --animate "
                         f"turn)")
    if suffix in VIDEO_SUFFIXES:
        from engine.render import fast_raster

        fast_raster.warm_up(background=True)  # many frames: the compiled rasterizer loads while the photo is fitted
    cache = PhotoCache.for_photo(args.photo, enabled=not args.no_cache)
    face = choose_face(args.photo, args.face, cache) if args.face is not None else None
    # photo mode draws with the photo renderer: the generator (0.12 s to load) only for a session file or mesh
    sess = Session(model=model, generator="auto" if suffix == ".json" or suffix in MESH_SUFFIXES else None)
    finder = getattr(args, "prefetched", None)
    try:
        src, renderer, cached = open_photo_cached(args.photo, face, cache, model, finder)
    finally:
        if finder is not None:
            finder.close()
    summary = sess.open_photo_source(src, renderer) + ("; fit and layers from the photo cache" if cached else "")
    own = own_pose_degrees(src.fit)
    lim = sess.frames.photo_renderer(src).turn_range()
    print(f"photo's own pose: yaw {own['yaw']:+.1f}°, pitch {own['pitch']:+.1f}°, roll {own['roll']:+.1f}°; "
          f"believable turn: yaw {lim['yaw'][0]:+.0f}..{lim['yaw'][1]:+.0f}°, pitch {lim['pitch'][0]:+.0f}.."
          f"{lim['pitch'][1]:+.0f}°", file=sys.stderr)
    if args.animate == "turn":  # the built-in turn (±25°), kept inside this photo's believable yaw
        lo, hi = lim["yaw"]
        keyframes = [(t, {"yaw": max(float(v["yaw"]), lo) if v["yaw"] < 0 else min(float(v["yaw"]), hi)})
                     for t, v in keyframes]
    for vals in [values] + [v for _, v in keyframes]:
        note = turn_note(src.fit, vals)
        if note is not None:
            print(f"warning: {note}", file=sys.stderr)
    try:
        values = relative_pose(values, own)
        keyframes = [(t, relative_pose(v, own)) for t, v in keyframes]
        if values:
            sess.set_controls(values)
        add_keyframes(sess, keyframes)
    except SessionError as exc:
        raise UsageError(f"{exc} (the photo's own pose plus the turn)") from None
    if mesh_out is not None or suffix in MESH_SUFFIXES:
        from engine.editing.meshes import export_mesh
    if mesh_out is not None:
        files = export_mesh(sess, mesh_out)
        print(f"wrote {', '.join(str(f) for f in files)}  (the fitted head, edits baked in, textured with the photo)")
    if suffix in MESH_SUFFIXES:
        files = export_mesh(sess, out)
        print(f"wrote {', '.join(str(f) for f in files)}  ({summary})")
        return 0
    if suffix == ".json":
        sess.save(out)
    elif suffix in VIDEO_SUFFIXES:
        from engine.io.export import export_sequence
        from tqdm import tqdm

        n = max(1, int(round(sess.duration * float(args.fps))) + 1)
        frames = sess.iter_frames(n, size, workers=None)  # in parallel (engine.render.frame_pool): forks here
        bar = tqdm(total=n, desc="exporting", unit="frame", file=sys.stderr)
        try:
            export_sequence(frames, out, fps=args.fps, n_frames=n, size=size,
                            progress=lambda d, t: bar.update(d - bar.n))
        finally:
            frames.close()
            bar.close()
    else:
        frame = sess.render_snapshot(sess.state, size)
        if frame.note:
            print(f"warning: {frame.note}", file=sys.stderr)
        alpha = read_alpha(args.photo)  # a transparent PNG stays transparent (RGBA in, RGBA out)
        if alpha is not None and suffix not in ALPHA_SUFFIXES:
            print(f"note: {Path(args.photo).name} has transparency, which {suffix} cannot keep: write .png or .webp "
                  f"to keep it", file=sys.stderr)
        save_image(out, frame.image, alpha=alpha)
    print(f"wrote {out}  ({summary})")
    return 0


def _describe_faces(choices, picked: int | None) -> str:
    return "; ".join(f"{n}: {b[2] - b[0]:.0f} px at x {b[0]:.0f}–{b[2]:.0f}, y {b[1]:.0f}–{b[3]:.0f}"
                     + (" (edited)" if i == picked else "") for n, (i, b, _) in enumerate(choices, 1))


class FaceFinder:
    """The photo's faces and 68 landmarks found in a forked process while this one imports torch and loads the
    face models: what ``fit_photo`` would find itself (the same functions on the same pixels), for its ``found``.
    dlib's detector and landmark model take ~1.5 s of CPU to load, ``import torch`` as long: on two cores they
    overlap. :meth:`result` is None when the child failed (the fit then finds the face itself)."""

    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd

    @classmethod
    def start(cls, photo) -> "FaceFinder | None":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: dlib and OpenCV only (no torch, no threads of the parent's), then _exit
            code = 1
            try:
                os.close(r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                out = pickle.dumps(find_face(photo))
                with os.fdopen(w, "wb") as f:
                    f.write(out)
                code = 0
            except BaseException:
                pass
            finally:
                os._exit(code)
        os.close(w)
        return cls(pid, r)

    def result(self):
        """``(boxes, box, landmarks)``, or None (no answer); waits for the child."""
        if self.fd is None:
            return None
        try:
            with os.fdopen(self.fd, "rb") as f:
                data = f.read()
            self.fd = None
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            if status != 0 or not data:
                return None
            found = pickle.loads(data)
            return found if found is not None and len(found[0]) and found[2] is not None else None
        except (OSError, ValueError, pickle.UnpicklingError, EOFError, TypeError, IndexError):
            return None

    def close(self) -> None:
        """Stop the child if its answer is not wanted (a cache hit, an error): never waited on."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.pid = None
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def find_face(photo):
    """``fit_photo``'s own face search on ``photo`` (path): :func:`engine.perception.align.find_face` on its pixels."""
    from engine.perception.align import find_face as search, load_image

    return search(load_image(str(photo)))


def prefetch_faces(args) -> FaceFinder | None:
    """Called by ``engine.cli.main`` before torch is imported: a :class:`FaceFinder` for ``discoface edit``'s photo
    when the photo cache has no entry for it (a fit will be needed), else None. Only in a process that has not
    imported torch yet (forking one that runs torch's threads is not safe) and where ``fork`` exists."""
    if args.face is not None or "torch" in sys.modules or not hasattr(os, "fork") or not Path(args.photo).is_file():
        return None
    if os.environ.get(PREFETCH_ENV, "").strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        if PhotoCache.for_photo(args.photo, enabled=not args.no_cache).has_entry(None):
            return None
        return FaceFinder.start(args.photo)
    except OSError:
        return None


def open_photo_cached(photo, face: int | None, cache: PhotoCache, model, finder: FaceFinder | None = None):
    """Photo mode's source and renderer for ``photo`` (``face``: ``fit_photo``'s index, None: its pick), from the
    photo cache (:func:`engine.editing.photo_cache.open_cached`) when it holds them, else computed (with a progress
    bar) and stored. ``finder``: the photo's faces being found in a second process (:func:`prefetch_faces`). Returns
    ``(PhotoSource, PhotoRenderer, cached)``."""
    from engine.editing.photo_import import PhotoSource, check_photo_path

    path = check_photo_path(photo)
    bar = []

    def progress(f: float) -> None:
        if not bar:
            bar.extend(_progress_bar("fitting", 100))
        bar[1](int(round(f * 1000)), 1000)

    def faces(fit, stored):
        if face is None and stored is None:
            return _face_note(path, fit)
        if face is None and stored.get("note"):
            print(stored["note"], file=sys.stderr)
        return stored

    try:
        fit, renderer, hit = open_cached(path, face, cache, model, progress=progress,
                                         found=finder.result if finder is not None else None, faces=faces)
    finally:
        if bar:
            bar[0].close()
    return PhotoSource(str(path), fit), renderer, hit


def _face_note(path: Path, fit) -> dict:
    """The several-faces note (printed; stored in the cache entry); the photo is searched again only when its fit
    found more than one face."""
    from engine.perception.align import detect_faces, face_choices, pick_face

    note = None
    if fit.alignment.n_faces > 1:
        img = fit.image
        boxes = detect_faces(img)
        choices = face_choices(img, boxes)
        if len(choices) > 1:
            picked = boxes.index(pick_face(img, boxes))
            note = (f"note: {len(choices)} faces in {path.name} — {_describe_faces(choices, picked)}; "
                    f"choose another with --face N")
            print(note, file=sys.stderr)
    return {"note": note}


def choose_face(photo, number: int | None, cache: PhotoCache | None = None) -> int | None:
    """``--face N`` (1-based, the faces numbered left to right) → the index ``fit_photo(face=…)`` takes; None: the
    fit's own pick. Several faces and no ``--face``: says which are there and which one is edited (stderr).
    ``cache``: the faces found are kept there (the photo is not searched again on a later run)."""
    from engine.perception.align import detect_faces, face_choices, pick_face
    from engine.photo.fit import as_photo

    if number is None and not Path(photo).is_file():
        return None  # the fit reports a missing / unreadable photo
    faces = cache.load("faces").faces if cache is not None else None
    try:
        boxes = [tuple(float(v) for v in b) for b in faces["boxes"]]
        choices = [(int(i), tuple(float(v) for v in b), None) for i, b in faces["choices"]]
        picked = faces["picked"]
    except (TypeError, KeyError, ValueError):
        img = as_photo(str(photo))
        boxes = detect_faces(img)
        choices = face_choices(img, boxes)
        picked = boxes.index(pick_face(img, boxes)) if len(choices) > 1 else None
        if cache is not None:
            cache.store("faces", faces={"boxes": [list(b) for b in boxes], "picked": picked,
                                        "choices": [[i, list(b)] for i, b, _ in choices]})
    if number is None:
        if len(choices) > 1:
            print(f"note: {len(choices)} faces in {Path(photo).name} — {_describe_faces(choices, picked)}; "
                  f"choose another with --face N", file=sys.stderr)
        return None
    if not choices:
        if number == 1 and boxes:
            return None
        raise UsageError(f"--face {number}: {Path(photo).name} has "
                         f"{'one face (--face 1)' if boxes else 'no face found'}")
    if not 1 <= number <= len(choices):
        raise UsageError(f"--face {number}: {Path(photo).name} has {len(choices)} faces — "
                         f"{_describe_faces(choices, None)}")
    return choices[number - 1][0]


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit the 3D face model to a photo")
    p.add_argument("photo")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overlay")
    p.set_defaults(fn=cmd_fit)

    p = sub.add_parser("embed", help="embed a photo into the generator's factor latents (a session file)")
    p.add_argument("photo")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overlay", help="before/after grid PNG: photo | reconstruction | yaw -20 | yaw +20 | smile | relit")
    p.add_argument("--paste-back", dest="paste_back", metavar="OUT.png",
                   help="the reconstruction composited back into the original photo")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="allow keyframe values beyond the trained range")
    add_keyframe_args(p)
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser("edit", help="edit a photo in photo mode: out.png, a session .json, or a .mp4/.gif animation")
    p.add_argument("photo")
    p.add_argument("-o", "--output", required=True)
    add_set_args(p, what="slider values; yaw/pitch/roll are turns from the photo's own pose (yaw=+10: 10° to the "
                        "subject's left, yaw=0: as in the photo; a warning beyond this photo's believable turn)")
    add_keyframe_args(p)
    p.add_argument("--size", type=int, default=None, help="longest side of the output (default: the photo's own)")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--mesh", metavar="HEAD.glb", help="also write the fitted head as a mesh with the edits baked in "
                   "and the photo as texture (.glb .gltf .obj .ply; -o may name one too)")
    p.add_argument("--face", type=int, default=None, metavar="N",
                   help="which face to edit when the photo has several (numbered left to right; listed when "
                        "ambiguous)")
    p.add_argument("--no-cache", dest="no_cache", action="store_true",
                   help="fit the photo afresh: neither read nor write the photo cache (what an edit keeps of a "
                        "photo between runs: its fit and layers; $DISCOFACE_PHOTO_CACHE names the folder, 'off' "
                        "turns it off)")
    p.set_defaults(fn=cmd_edit, prefetch=prefetch_faces)
def embedding_grid(result: EmbedResult, embedder: PhotoEmbedder, edits: dict | None = None) -> torch.Tensor:
    """(3, S, S * n) row: photo crop | reconstruction | each edit (name → function(Coefficients) -> Coefficients)."""
    import torch

    tiles = [torch.from_numpy(result.crop).permute(2, 0, 1).float() / 255, result.reconstruction[0]]
    for fn in (edits or {}).values():
        c = fn(result.coeffs.clone())
        tiles.append(embedder.render(result, c)[0])
    return torch.cat(tiles, 2)


def standard_edits() -> dict:
    """The edits of the before/after grid: yaw −20°, yaw +20°, smile, relit from the side."""
    from engine.render import light_from_direction

    def yaw(deg):
        def f(c):
            y = math.degrees(float(c.pose[0, 0]))
            c.set_pose_degrees(yaw=y + deg)
            return c
        return f

    def smile(c):
        for n in ("mouthSmile_L", "mouthSmile_R"):
            if n in c.exp_names:
                c.expr[n] = 0.7
        return c

    def relit(c):
        c.light[:] = light_from_direction(-60, 15, 0.6, ambient=0.6)
        return c

    return {"yaw-20": yaw(-20), "yaw+20": yaw(20), "smile": smile, "relit": relit}


