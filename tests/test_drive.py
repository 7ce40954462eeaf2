"""Driving a face from a video (engine/drive): One-Euro filter, video reading/writing with audio and fallbacks,
tracking with lost frames, the expression + pose solve, retargeting, the drive pipeline, CLI errors.

Clips are made here, in temporary folders, from 3DMM renders (nothing from the shared data is written)."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch

from engine.drive import (DriveCancelled, NoFaceError, Track, VideoError, drive, retarget, track_video)
from engine.drive.smoothing import OneEuroFilter
from engine.drive.video import ffmpeg_exe, has_audio, iter_frames, probe_video, write_video

FPS = 12.0


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def model(ict_path):
    from engine.face.model import default_model

    return default_model()


@pytest.fixture(scope="module")
def face_coeffs(model):
    from engine.render.shading import light_from_direction

    g = torch.Generator().manual_seed(1)
    c = model.zeros(1)
    c.identity[:] = torch.randn(1, 100, generator=g) * 0.6
    if model.albedo_dim:
        c.albedo[:] = torch.randn(1, model.albedo_dim, generator=g) * 0.5
    c.light[:] = light_from_direction(20, 20, 0.4, 0.8)
    return c


def render_frame(model, c0, yaw=0.0, jaw=0.0, size=(320, 240), dx=0, dy=0, side=192):
    """The face rendered ``side`` px large, centred in a grey frame and moved by (dx, dy) px."""
    from engine.fit import renderer_for

    c = c0.clone()
    c.set_pose_degrees(yaw, 0, 0)
    c.expr["jawOpen"] = jaw
    with torch.no_grad():
        r = renderer_for(model)(c, side, background=0.4)
    img = (r.image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    w, h = size
    f = np.full((h, w, 3), 100, np.uint8)
    y0, x0 = (h - side) // 2 + dy, (w - side) // 2 + dx
    f[y0:y0 + side, x0:x0 + side] = img
    return f


@pytest.fixture(scope="module")
def clip(tmp_path_factory, model, face_coeffs):
    """18 frames at 12 fps: the head turns and the jaw opens; frames 8-10 have no face; a 440 Hz tone."""
    d = tmp_path_factory.mktemp("drive")
    frames = [render_frame(model, face_coeffs, yaw=12 * math.sin(i / 4), jaw=0.35 * (1 - math.cos(i / 3)))
              for i in range(18)]
    for i in (8, 9, 10):
        frames[i] = np.full_like(frames[i], 100)
    silent = d / "silent.mp4"
    write_video(frames, silent, FPS)
    with_audio = d / "talk.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(silent), "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-c:v", "copy", "-c:a", "aac", "-shortest", str(with_audio)],
                   check=True)
    return {"dir": d, "silent": silent, "audio": with_audio, "frames": frames}


@pytest.fixture(scope="module")
def track(clip):
    return track_video(clip["audio"])


@pytest.fixture(scope="module")
def session_target(tmp_path_factory, model):
    from engine.editing.session import Session

    p = tmp_path_factory.mktemp("target") / "target.json"
    s = Session(model=model, generator=None, seed=3)
    s.randomize("identity", seed=5)
    s.set_expression("mouthSmile_L", 0.3)
    s.save(p)
    return p


def stream_kinds(path) -> list[str]:
    import re

    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return re.findall(r"Stream #\S+.*?: (Video|Audio):", r.stderr)


def no_partial_files(folder) -> bool:
    return not [p for p in folder.iterdir() if ".part" in p.name]


# ---------------------------------------------------------------------------------------------- One-Euro
def test_one_euro_still_input_is_steadied():
    rng = np.random.default_rng(0)
    x = 0.3 + rng.normal(0, 0.02, size=(120, 2))
    y = OneEuroFilter(30, min_cutoff=1.0, beta=0.5).filter_sequence(x)
    assert np.std(y[20:], axis=0).max() < 0.45 * np.std(x[20:], axis=0).min()
    assert abs(y[20:].mean() - 0.3) < 0.01


def test_one_euro_follows_a_step_within_a_few_frames():
    x = np.r_[np.zeros(30), np.ones(30)][:, None]
    fast = OneEuroFilter(30, min_cutoff=1.0, beta=5.0).filter_sequence(x)[:, 0]
    slow = OneEuroFilter(30, min_cutoff=1.0, beta=0.0).filter_sequence(x)[:, 0]
    frames_to_90 = int(np.argmax(fast[30:] > 0.9))
    assert fast[30:].max() > 0.9 and frames_to_90 <= 4
    assert slow[30 + 4] < 0.7  # without the speed term the same filter lags: beta is what removes the lag
    assert OneEuroFilter(30, 1.0, 5.0).filter_sequence(np.ones((5, 3))).shape == (5, 3)


# ---------------------------------------------------------------------------------------------- video I/O
def test_probe_and_stream_a_generated_clip(clip):
    info = probe_video(clip["audio"])
    assert (info.n_frames, info.fps, info.size) == (18, FPS, (320, 240))
    assert info.has_audio and not info.variable_rate and not info.notes
    frames = list(iter_frames(info))
    assert len(frames) == 18 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    # the content survives the round trip (H.264: close, not exact)
    assert np.abs(frames[3].astype(int) - clip["frames"][3].astype(int)).mean() < 4
    assert not has_audio(clip["silent"])


def test_gif_clip_is_read(tmp_path, clip):
    import imageio.v2 as imageio

    p = tmp_path / "loop.gif"
    imageio.mimsave(p, [f[::2, ::2] for f in clip["frames"][:6]], duration=100, loop=0)
    info = probe_video(p)
    assert info.n_frames == 6 and info.size == (160, 120) and not info.has_audio
    assert len(list(iter_frames(info))) == 6


def test_large_frames_are_scaled_for_tracking(tmp_path):
    p = tmp_path / "uhd.mp4"
    write_video([np.full((2160, 3840, 3), 60 + 40 * i, np.uint8) for i in range(3)], p, 10)
    info = probe_video(p)
    assert info.source_size == (3840, 2160) and max(info.size) <= 1280 and info.scaled
    assert any("large frames" in n for n in info.notes)
    frames = list(iter_frames(info))
    assert len(frames) == 3 and frames[0].shape == (info.size[1], info.size[0], 3)


def test_variable_frame_rate_is_resampled(tmp_path):
    src = tmp_path / "cfr.mp4"
    write_video([np.full((64, 96, 3), 10 * i, np.uint8) for i in range(20)], src, 10)
    vfr = tmp_path / "vfr.mp4"
    # frames 0-9 every 0.1 s, then every 0.3 s: a variable frame rate
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-vf",
                    "setpts='if(lt(N,10),N*0.1,1.0+(N-10)*0.3)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    str(vfr)], check=True)
    info = probe_video(vfr)
    assert info.variable_rate and any("variable frame rate" in n for n in info.notes)
    n = len(list(iter_frames(info)))
    assert abs(n - info.duration * info.fps) <= 2 and n > 20  # resampled to constant rate: more frames than stored


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"hello, not a video" * 50, "not a video")])
def test_bad_video_files(tmp_path, content, message):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoError, match=message):
        probe_video(p)


def test_zero_length_and_truncated_videos(tmp_path, clip):
    zero = tmp_path / "zero.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=s=64x64:r=10",
                    "-frames:v", "0", "-c:v", "libx264", str(zero)], check=True)
    with pytest.raises(VideoError, match="zero-length"):
        probe_video(zero)
    cut = tmp_path / "cut.mp4"
    data = clip["audio"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoError, match="truncated"):
        probe_video(cut)


def test_missing_folder_and_still_image(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="folder"):
        probe_video(tmp_path)
    img = tmp_path / "still.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(img)  # a real picture (a file only named .png is "not a video": test_drive_defects)
    with pytest.raises(VideoError, match="still image"):
        probe_video(img)


# ---------------------------------------------------------------------------------------------- tracking
def test_face_lost_mid_clip_holds_the_last_fit(track):
    assert isinstance(track, Track) and track.n_frames == 18
    assert list(np.nonzero(~track.found)[0]) == [8, 9, 10] and track.n_lost == 3
    assert np.array_equal(track.raw[8], track.raw[7]) and np.array_equal(track.raw[10], track.raw[7])
    assert "3 of 18" in " ".join(track.notes) and "3 frame(s) without a face" in track.summary()
    assert track.n_detections >= 2  # the first frame and the re-detection after the gap


def test_lost_face_is_searched_near_its_last_box_and_reacquired(model, face_coeffs, tmp_path):
    """The face vanishes for 12 frames and comes back where it was (found at once by the local search), then
    vanishes again and comes back far away (found by the full-frame search, run only every 5th lost frame)."""
    from engine.drive.track import FaceTracker
    from engine.fit import renderer_for
    from engine.perception.rnet import default_rnet

    with torch.no_grad():
        r = renderer_for(model)(face_coeffs, 160, background=0.4)
    face = (r.image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    def frame(x):
        f = np.full((270, 480, 3), 100, np.uint8)
        if x is not None:
            f[55:215, x:x + 160] = face
        return f

    seq = [20] * 4 + [None] * 12 + [20] * 3 + [None] * 12 + [300] * 6
    t = FaceTracker(default_rnet(), full_search_every=5)
    found, full, local = [], [], []
    for i, x in enumerate(seq):
        found.append(t.observe(frame(x), i, need_rnet=False) is not None)
        full.append(t.n_detections)
        local.append(t.n_local_searches)
    assert found[:4] == [True] * 4 and not any(found[4:16]) and found[16:19] == [True] * 3
    # while lost: the region around the last box every frame, the full frame on frames 0, 5, 10 of the gap only
    assert full[15] - full[3] == 3 and local[15] - local[3] == 12
    assert full[16] == full[15]  # back where it was: re-acquired by the local search, no full-frame detection
    # far away: the local search cannot see it; the next full-frame search (lost frame 15) finds it
    assert not any(found[19:34]) and found[34:] == [True] * 3
    assert full[33] - full[18] == 3 and full[34] - full[33] == 1
    # through track_video: the last fit is held over both gaps and counted
    vid = tmp_path / "gaps.mp4"
    write_video([frame(x) for x in seq], vid, FPS)
    tr = track_video(vid, full_search_every=5)
    assert tr.n_lost == 12 + 12 + 3 and not tr.found[4:16].any() and tr.found[16:19].all() and tr.found[34:].all()
    assert np.array_equal(tr.raw[15], tr.raw[3]) and np.array_equal(tr.raw[33], tr.raw[18])


def test_track_follows_head_turn_and_jaw(track):
    yaw_true = np.array([12 * math.sin(i / 4) for i in range(18)])
    jaw_true = np.array([0.35 * (1 - math.cos(i / 3)) for i in range(18)])
    ok = track.found
    yaw = track.series("yaw", smoothed=False)
    # the 3DMM render is not a photo (empty eyes and mouth): loose bounds, but the motion must be there
    corr = np.corrcoef(yaw[ok], yaw_true[ok])[0, 1]
    assert corr > 0.95 and abs(np.ptp(yaw[ok]) - np.ptp(yaw_true[ok])) < 6
    jaw = track.series("jawOpen", smoothed=False)
    assert np.corrcoef(jaw[ok], jaw_true[ok])[0, 1] > 0.6
    assert track.smoothed.shape == track.raw.shape and (track.smoothed[:, :53] >= 0).all()


def test_track_carries_the_heads_move_and_size_in_the_frame(model, face_coeffs, tmp_path):
    """The head's placement (its pivot in the frame, its size) is tracked: a face sliding 48 px sideways and 16 px
    down while growing from 160 to 192 px reads as that move (in the first frame's crop widths) and size ratio."""
    n = 7
    dxs = np.linspace(-24, 24, n).round().astype(int)
    dys = np.linspace(0, 16, n).round().astype(int)
    sides = np.linspace(160, 192, n).round().astype(int)
    vid = tmp_path / "move.mp4"
    write_video([render_frame(model, face_coeffs, size=(400, 320), dx=int(dxs[i]), dy=int(dys[i]), side=int(sides[i]))
                 for i in range(n)], vid, FPS)
    tr = track_video(vid, smoothing=False)
    assert tr.found.all() and tr.placement_raw is not None
    unit = math.exp(tr.placement_raw[0, 2]) * tr.crop_size  # frame px per crop width in the first frame
    got = np.array([tr.placement_change(i, smoothed=False) for i in range(n)])
    # the render scales about its centre; the pivot sits a little off it: allow a few px
    assert np.allclose(got[:, 0] * unit, dxs - dxs[0], atol=4), got[:, 0] * unit
    assert np.allclose(got[:, 1] * unit, dys - dys[0], atol=6), got[:, 1] * unit
    assert np.allclose(np.exp(got[:, 2]), sides / sides[0], atol=0.04), np.exp(got[:, 2])
    # retargeting hands the move on (scaled with the pose strength); no move without a placement
    from engine.drive import retarget_placement

    assert np.allclose(retarget_placement(tr, n - 1, 0.5, smoothed=False), 0.5 * got[-1])
    assert np.array_equal(_gaze_track(model, [[0, 0]]).placement_change(0), np.zeros(3))


def test_photo_head_moves_with_the_placement(track, tmp_path):
    """A photo target moves and scales its head by a placement (photo mode's flow); the photo's corner stays."""
    from pathlib import Path

    from engine.drive import PhotoTarget

    torch.set_num_threads(1)
    target = PhotoTarget(Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg")
    assert target.placement_matrix((0.0, 0.0, 0.0)) is None
    r = target.renderer
    f0 = r.render(target.coeffs)
    al = target.fit.alignment
    width = al.size / al.scale
    m = target.placement_matrix((0.06, -0.03, math.log(1.1)))
    f1 = r.render(target.coeffs, placement=m)
    eyes0 = f0.landmarks[36:48].mean(0)
    eyes1 = f1.landmarks[36:48].mean(0)
    assert np.allclose(eyes1, m[:, :2] @ eyes0 + m[:, 2], atol=0.5)
    size0 = np.linalg.norm(f0.landmarks[45] - f0.landmarks[36])
    size1 = np.linalg.norm(f1.landmarks[45] - f1.landmarks[36])
    assert size1 / size0 == pytest.approx(1.1, abs=0.01)
    # the head grows about its pivot (the point turns are about), which moves by 0.06 / -0.03 crop widths
    proj = r.proj
    c = proj.to_photo(proj.camera_space(torch.tensor(proj.camera.pivot, dtype=torch.float32)[None]))[0].numpy()
    assert np.allclose(m[:, :2] @ c + m[:, 2], c + np.array([0.06, -0.03]) * width, atol=1e-3)
    assert np.array_equal(target.placement_matrix((0.06, -0.03, math.log(1.1))), m)  # (the pivot kept)
    # the pixels follow: the face region changed, the photo's corner did not
    x0, y0 = np.floor(f0.landmarks.min(0)).astype(int)
    x1, y1 = np.ceil(f0.landmarks.max(0)).astype(int)
    assert np.abs(f1.image[y0:y1, x0:x1].astype(int) - f0.image[y0:y1, x0:x1].astype(int)).mean() > 5
    assert np.array_equal(f1.image[:30, :30], f0.image[:30, :30])
    img = target.render(target.coeffs, (0.06, -0.03, math.log(1.1)))
    assert np.array_equal(img, f1.image)


def test_solver_recovers_known_expression_and_pose(model, face_coeffs):
    from engine.fit import ExpressionPoseSolver, renderer_for

    r = renderer_for(model)
    sol = ExpressionPoseSolver(model, r, face_coeffs.identity, 80, iterations=8, sliding=False)
    c = face_coeffs.clone()
    c.set_pose_degrees(14, -6, 5)
    c.expr["jawOpen"] = 0.5
    c.expr["mouthSmile_L"] = c.expr["mouthSmile_R"] = 0.6
    lm = r.landmarks(c, 80)[0].numpy()
    x = sol.solve(lm, np.zeros(56))
    names = model.exp_names
    assert abs(x[names.index("jawOpen")] - 0.5) < 0.05
    assert abs(x[names.index("mouthSmile_L")] - 0.6) < 0.08
    assert np.allclose(np.degrees(x[53:56]), [14, -6, 5], atol=0.5)
    assert (x[:53] >= 0).all() and (x[:53] <= 1).all()


def test_no_face_video_is_a_clear_error_and_writes_nothing(tmp_path, session_target):
    vid = tmp_path / "wall.mp4"
    write_video([np.full((120, 160, 3), 90 + i, np.uint8) for i in range(6)], vid, 6)
    out = tmp_path / "out.mp4"
    with pytest.raises(NoFaceError, match="no face found in any of its 6 frames"):
        drive(vid, session_target, out, side_by_side=True, track_path=tmp_path / "t.json")
    assert not out.exists() and not (tmp_path / "t.json").exists() and no_partial_files(tmp_path)


# ---------------------------------------------------------------------------------------------- retarget
def test_landmark_residual_is_what_the_model_misses_in_the_frames_orientation(model, face_coeffs):
    """The residual of a frame: its landmarks minus the fitted model's, in crop widths, turned from the crop (which
    the alignment rolled upright) back to the frame's orientation; 0 where the model reaches the landmarks."""
    from engine.fit import ExpressionPoseSolver, renderer_for
    from engine.drive.track import landmark_residual

    sol = ExpressionPoseSolver(model, renderer_for(model), face_coeffs.identity, 100)
    x = np.zeros(59)
    x[model.exp_names.index("jawOpen")] = 0.3
    lm = sol.landmarks(x)
    a = math.radians(30)  # the frame -> crop alignment turns by +30 degrees and scales by 2
    m = np.array([[2 * math.cos(a), -2 * math.sin(a), 5.0], [2 * math.sin(a), 2 * math.cos(a), -3.0]])
    assert np.abs(landmark_residual(sol, x, lm, m)).max() < 1e-9
    d = np.zeros((68, 2))
    d[54] = (10.0, 0.0)  # the mouth corner 10 crop px further out (along the crop's x axis)
    got = landmark_residual(sol, x, lm + d, m)
    assert np.allclose(got[54], [0.1 * math.cos(a), -0.1 * math.sin(a)]) and np.abs(np.delete(got, 54, 0)).max() < 1e-9


def test_residual_change_is_carried_on_its_points_and_drawn_on_a_photo(model):
    """Retargeting hands on the residual's change since the first frame on the carried points only (times the
    strength); a photo target moves those landmark vertices by it (its px per crop width) and the surface around
    them along, not across the mouth's slit; no change draws the same frame as none."""
    from pathlib import Path

    from engine.drive import PhotoTarget
    from engine.drive.retargeting import RESIDUAL_POINTS, retarget_residual

    n = 3
    res = np.zeros((n, 68, 2))
    res[:, 54] = [[0.01, 0.0], [0.03, 0.0], [0.01, 0.02]]  # the mouth corner's residual
    res[:, 5] = [[0.0, 0.0], [0.05, 0.0], [0.0, 0.0]]  # a jaw-line point: not carried
    tr = _gaze_track(model, np.zeros((n, 2)))
    tr.residual, tr.residual_raw = res, res.copy()
    assert np.array_equal(retarget_residual(tr, 0), np.zeros((68, 2)))
    got = retarget_residual(tr, 1, 0.5)
    assert np.allclose(got[54], [0.01, 0.0]) and np.abs(np.delete(got, 54, 0)).max() == 0
    assert 5 not in RESIDUAL_POINTS and 54 in RESIDUAL_POINTS

    torch.set_num_threads(1)
    target = PhotoTarget(Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg")
    al = target.fit.alignment
    width = al.size / al.scale  # photo px per crop width
    assert target.residual_offsets(np.zeros((68, 2))) is None
    move = retarget_residual(tr, 2)  # (0, 0.02): the corner down by 0.02 crop widths
    off = target.residual_offsets(move)
    lm = target.renderer.head.lm68.numpy()
    assert np.allclose(off[lm[54]], [0.0, 0.02 * width], atol=0.1 * 0.02 * width)
    assert abs(off[lm[48], 1]) < 0.05 * 0.02 * width  # the other corner stays
    lip = np.zeros((68, 2))
    lip[62] = (0.0, 0.02)  # the upper inner lip down: the lower one, across the slit, stays
    off_lip = target.residual_offsets(lip)
    assert off_lip[lm[62], 1] > 0.8 * 0.02 * width and abs(off_lip[lm[66], 1]) < 0.02 * 0.02 * width
    r = target.renderer
    f0, f1 = r.render(target.coeffs), r.render(target.coeffs, offsets=off)
    assert np.allclose(f1.landmarks[54] - f0.landmarks[54], off[lm[54]], atol=1e-3)
    y0, x0 = np.floor(f0.landmarks[54] - 0.01 * width).astype(int)[::-1]
    y1, x1 = np.ceil(f0.landmarks[54] + 0.03 * width).astype(int)[::-1]
    assert np.abs(f1.image[y0:y1, x0:x1].astype(int) - f0.image[y0:y1, x0:x1].astype(int)).mean() > 2
    assert np.array_equal(f1.image[:30, :30], f0.image[:30, :30])
    assert np.array_equal(target.render(target.coeffs, None, move), f1.image)
    assert np.array_equal(target.render(target.coeffs, None, np.zeros((68, 2))), f0.image)


def test_retarget_keeps_target_identity_and_takes_source_expression(track, model):
    from engine.fit import rotation_np

    g = torch.Generator().manual_seed(9)
    tgt = model.zeros(1)
    tgt.identity[:] = torch.randn(1, 100, generator=g)
    tgt.light[:] = torch.randn(1, 27, generator=g) * 0.1
    tgt.set_pose_degrees(-10, 5, 0)
    tgt.expr["mouthSmile_L"] = 0.4
    i = 5
    out = retarget(tgt, track, i)
    assert torch.equal(out.identity, tgt.identity) and torch.equal(out.albedo, tgt.albedo)
    assert torch.equal(out.light, tgt.light)
    assert np.allclose(out.expression[0].numpy(), track.smoothed[i, :53], atol=1e-6)
    # pose: the target's, turned by the source's rotation since its first tracked frame
    ref, cur = track.smoothed[track.first_found, 53:], track.smoothed[i, 53:]
    want = rotation_np(cur) @ rotation_np(ref).T @ rotation_np(tgt.pose[0].double().numpy())
    assert np.allclose(rotation_np(out.pose[0].double().numpy()), want, atol=1e-5)
    assert torch.allclose(retarget(tgt, track, track.first_found).pose, tgt.pose, atol=1e-6)
    # options: expression only keeps the pose; strength 0 keeps the target's expression; half way is half way
    assert torch.equal(retarget(tgt, track, i, head_motion=False).pose, tgt.pose)
    assert torch.allclose(retarget(tgt, track, i, expression_strength=0.0).expression, tgt.expression)
    half = retarget(tgt, track, i, expression_strength=0.5).expression
    assert torch.allclose(half, 0.5 * (tgt.expression + out.expression), atol=1e-6)
    # relative: the target's own expression plus the source's change since its first frame (gaze: see below)
    rel = retarget(tgt, track, i, relative_expression=True).expression[0].numpy()
    delta = track.smoothed[i, :53] - track.smoothed[track.first_found, :53]
    keep = np.array([not n.startswith(("eyeLook", "eyeBlink", "eyeWide")) for n in model.exp_names])
    assert np.allclose(rel[keep], np.clip(tgt.expression[0].numpy() + delta, 0, 1)[keep], atol=1e-6)


def test_relative_blink_closes_fully_and_opens_past_the_targets_own_lid(model):
    """The lids, relative: the source's closing arrives times BLINK_GAIN (a fit of dlib's landmarks reads a closed eye
    as a half blink), and an opening beyond the target's own open lid (the source's first frame caught mid-blink, the
    target's fit reading less blink) goes on as eyeWide that raises the model's upper lid as far, not cut at 0."""
    from engine.drive.retargeting import BLINK_GAIN

    names = model.exp_names
    raw = np.zeros((3, 56))
    for side in "LR":
        raw[:, names.index(f"eyeBlink_{side}")] = [0.4, 0.0, 0.7]  # mid-blink first frame, open, closing
    tr = Track(info=None, raw=raw, smoothed=raw.copy(), found=np.ones(3, bool), base=model.zeros(1), exp_names=names)
    tgt = model.zeros(1)
    tgt.expr["eyeBlink_L"] = tgt.expr["eyeBlink_R"] = 0.2
    out = [retarget(tgt, tr, i, relative_expression=True) for i in range(3)]
    assert out[0].expr["eyeBlink_L"].item() == pytest.approx(0.2) and out[0].expr["eyeWide_L"].item() == 0
    assert BLINK_GAIN > 1.2
    assert out[2].expr["eyeBlink_L"].item() == pytest.approx(0.2 + BLINK_GAIN * 0.3, abs=1e-6)
    assert out[1].expr["eyeBlink_L"].item() == 0 and out[1].expr["eyeWide_L"].item() > 0.2
    # the upper lid where a blink of 0.2 - 0.4 (linear in the weights) would put it
    up = model.lm68[[37, 38, 43, 44]]

    def lid_y(c):
        return float(model.vertices(c)[0, up, 1].mean())

    want = model.zeros(1)
    y_open = lid_y(want)
    want.expr["eyeBlink_L"] = want.expr["eyeBlink_R"] = 0.2
    y_02 = lid_y(want)
    assert lid_y(out[1]) == pytest.approx(y_open + (y_open - y_02), abs=1e-4)


def _gaze_track(model, gaze):
    """A Track whose only content is an iris reading per frame (eyeLook weights from it), for the gaze tests."""
    from engine.drive.track import gaze_to_look

    n = len(gaze)
    raw = np.zeros((n, 56))
    for j, col in gaze_to_look(np.asarray(gaze, float), model.exp_names).items():
        raw[:, j] = col
    return Track(info=None, raw=raw, smoothed=raw.copy(), found=np.ones(n, bool), base=model.zeros(1),
                 exp_names=model.exp_names, gaze=np.asarray(gaze, float))


def test_gaze_becomes_eyelook_weights_with_the_right_sides(model):
    from engine.drive.track import _gaze_geometry, gaze_to_look

    names = model.exp_names
    look = gaze_to_look(np.array([[0.12, 0.0], [-0.12, 0.0], [0.0, 0.08], [0.0, -0.08], [np.nan, np.nan]]), names)
    w = {names[j]: v for j, v in look.items()}
    # toward the image's right = the subject's left eye looking out, the right eye looking in; both eyes alike
    assert w["eyeLookOut_L"][0] > 0.2 and w["eyeLookIn_R"][0] == w["eyeLookOut_L"][0] and w["eyeLookIn_L"][0] == 0
    assert w["eyeLookIn_L"][1] == w["eyeLookOut_L"][0] and w["eyeLookOut_L"][1] == 0
    assert w["eyeLookDown_L"][2] > 0 and w["eyeLookUp_L"][2] == 0 and w["eyeLookUp_R"][3] > 0
    assert all(v[4] == 0 for v in w.values())  # no reading: no gaze
    radius, deg = _gaze_geometry()
    # full size: the eye layer's iris shift for these weights is the tracked shift
    assert radius * math.sin(math.radians(w["eyeLookOut_L"][0] * deg["horizontal"])) == pytest.approx(0.12)


def test_relative_gaze_crosses_the_centre(model):
    """A glance from the source's first-frame gaze to the other side arrives as one signed change on top of the
    target's own gaze, not cut at zero on each one-sided weight."""
    tr = _gaze_track(model, [[0.1, 0.0], [0.0, 0.0], [-0.1, 0.0]])
    tgt = model.zeros(1)
    tgt.expr["eyeLookIn_L"] = tgt.expr["eyeLookOut_R"] = 0.1  # the target looks a little to the image's left
    e = {k: [retarget(tgt, tr, i, relative_expression=True).expr[k].item() for i in range(3)]
         for k in ("eyeLookIn_L", "eyeLookOut_L")}
    step = tr.raw[0, model.exp_names.index("eyeLookOut_L")]
    assert e["eyeLookIn_L"][0] == pytest.approx(0.1, abs=1e-6) and e["eyeLookOut_L"][0] == 0
    assert e["eyeLookIn_L"][1] == pytest.approx(0.1 + step, abs=1e-5)
    assert e["eyeLookIn_L"][2] == pytest.approx(0.1 + 2 * step, abs=1e-5) and e["eyeLookOut_L"][2] == 0


def test_relative_gaze_is_divided_by_the_targets_read_gain(model):
    """The sideways glance is carried as the iris shift the target's eye layer must draw for the iris reader to see
    the source's shift: the tracked change divided by the target's read gain (in shift, not in weight); the vertical
    gaze as it was."""
    from engine.drive.retargeting import _iris_shift

    tr = _gaze_track(model, [[0.0, 0.0], [0.06, 0.04], [-0.06, 0.0]])
    tgt = model.zeros(1)
    tgt.expr["eyeLookIn_L"] = tgt.expr["eyeLookOut_R"] = 0.05

    def shift(c, side="L"):
        h = c.expr[f"eyeLookOut_{side}"].item() - c.expr[f"eyeLookIn_{side}"].item()
        return _iris_shift(h if side == "L" else -h)

    base = shift(tgt)
    for i, want in ((1, 0.06), (2, -0.06)):
        one = retarget(tgt, tr, i, relative_expression=True)
        half = retarget(tgt, tr, i, relative_expression=True, gaze_gain=0.6)
        assert shift(one) - base == pytest.approx(want, abs=2e-3)  # (gain 1: added in weight, as before)
        assert shift(half) - base == pytest.approx(want / 0.6, abs=1e-6)
        assert shift(half, "R") == pytest.approx(shift(half, "L"), abs=1e-9)  # both eyes alike
        for k in ("eyeLookDown_L", "eyeLookUp_L", "eyeLookDown_R"):
            assert half.expr[k].item() == pytest.approx(one.expr[k].item(), abs=1e-9)
    assert retarget(tgt, tr, 1, relative_expression=True).expr["eyeLookDown_L"].item() > 0


def test_photo_target_gaze_read_gain_is_what_the_reader_sees_of_its_eye_layer():
    """The photo's iris read gain: the tracker's iris reader, on the photo's own eye layer turned sideways, sees
    this share of the shift drawn (the still lash line and corners pull its centroid back); a drive of a photo
    passes it to retargeting."""
    import math
    from pathlib import Path

    from engine.drive import PhotoTarget
    from engine.drive.retargeting import _iris_shift
    from engine.perception import iris

    target = PhotoTarget(Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg")
    gain = target.gaze_read_gain()
    assert 0.5 <= gain < 0.97
    r = target.renderer
    lm = np.asarray(r.fit.alignment.landmarks_photo, np.float64)
    g0 = iris.gaze(r.image, lm)
    reads = []
    for w in (-0.15, 0.15):  # not among the probes
        c = target.coeffs.clone()
        for k, s in (("eyeLookOut_L", 1), ("eyeLookIn_R", 1), ("eyeLookIn_L", -1), ("eyeLookOut_R", -1)):
            c.expr[k] = max(0.0, s * w)
        reads.append(float(iris.gaze(r.eyes.apply(r.image, c, 1.0), lm)[0] - g0[0]))
    seen = (reads[1] - reads[0]) / (2 * _iris_shift(0.15))
    assert seen == pytest.approx(gain, abs=0.12) and math.isfinite(seen)


# ---------------------------------------------------------------------------------------------- drive
def test_drive_writes_video_with_audio_preview_and_track(clip, track, session_target, tmp_path, model):
    from engine.drive import SessionTarget
    from engine.editing.session import Session

    target = SessionTarget(session_target, size=96, generator=None)
    out = tmp_path / "out.mp4"
    res = drive(clip["audio"], target, out, track=track, side_by_side=True, track_path=tmp_path / "track.json",
                track_every=2)
    info = probe_video(out)
    assert (info.n_frames, info.fps, info.size) == (18, FPS, (96, 96)) and info.has_audio and res.audio
    assert stream_kinds(out) == ["Video", "Audio"]  # one of each (the source's video is not carried along)
    assert abs(info.duration - 18 / FPS) < 0.1
    sbs = probe_video(tmp_path / "out_side_by_side.mp4")
    assert sbs.n_frames == 18 and sbs.size == (96 + 128, 96)
    frames = list(iter_frames(info))
    assert np.abs(frames[6].astype(int) - frames[0].astype(int)).mean() > 1.0  # the face moves
    s = Session.load(tmp_path / "track.json", model=model, generator=None)
    times = [k.time for k in s.keyframes]
    assert len(times) == 10 and times[0] == 0 and abs(times[-1] - 17 / FPS) < 1e-6
    src = Session.load(session_target, model=model, generator=None)
    assert torch.allclose(s.keyframes[3].coeffs.identity, src.coeffs.identity)
    assert torch.allclose(s.keyframes[3].noise, src.noise)
    assert no_partial_files(tmp_path)


def test_track_for_a_photo_target_reopens_in_photo_mode(track, model, tmp_path, monkeypatch):
    """The track saved for a photo target is a photo-mode session (path + fit): it reopens without refitting and
    scrubbing it moves the photo's own mouth."""
    from pathlib import Path

    from engine.drive import PhotoTarget, save_track_session
    from engine.editing.session import Session
    from engine.photo import fit as photo_fit

    torch.set_num_threads(1)
    photo = Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"
    target = PhotoTarget(photo)
    p = save_track_session(track, target, tmp_path / "photo_track.json")
    monkeypatch.setattr(photo_fit, "fit_photo", lambda *a, **k: pytest.fail("reopening must not refit"))
    s = Session.load(p, model=model, generator=None)
    assert s.mode == "photo" and s.photo is not None and Path(s.photo.path) == photo.resolve()
    assert len(s.keyframes) == track.n_frames and abs(s.keyframes[-1].time - (track.n_frames - 1) / FPS) < 1e-6
    jaw = track.series("jawOpen")
    k = int(np.argmax(jaw))
    assert jaw[k] - jaw[0] > 0.15, jaw  # the clip opens the jaw
    f0 = s.render_snapshot(s.go_to_time(0.0))
    fk = s.render_snapshot(s.go_to_time(k / FPS))
    assert f0.mode == fk.mode == "photo" and f0.image.shape == fk.image.shape == target.fit.image.shape
    assert s.keyframes[k].coeffs.expr["jawOpen"].item() == pytest.approx(jaw[k], abs=1e-4)
    lm = f0.landmarks[48:68]  # the mouth in photo px
    x0, y0 = np.floor(lm.min(0)).astype(int) - 4
    x1, y1 = np.ceil(lm.max(0)).astype(int) + 12
    d = np.abs(fk.image[y0:y1, x0:x1].astype(int) - f0.image[y0:y1, x0:x1].astype(int)).mean()
    far = np.abs(fk.image[:40, :40].astype(int) - f0.image[:40, :40].astype(int)).mean()
    assert d > 5 and far < 0.5, (d, far)  # the mouth moves, the photo's corner does not


def test_drive_without_audio_and_cancel_leaves_nothing(clip, track, session_target, tmp_path):
    from engine.drive import SessionTarget

    target = SessionTarget(session_target, size=64, generator=None)
    res = drive(clip["silent"], target, tmp_path / "a.mp4", track=track.__class__(**{**track.__dict__,
                                                                                    "info": probe_video(clip["silent"])}))
    assert not res.audio and not probe_video(tmp_path / "a.mp4").has_audio
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(DriveCancelled):
        drive(clip["audio"], target, tmp_path / "b.mp4", track=track, side_by_side=True, cancel=cancel)
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "b_side_by_side.mp4").exists()
    assert no_partial_files(tmp_path)


def test_drive_passes_the_targets_read_gain_to_retargeting(clip, track, session_target, tmp_path, monkeypatch):
    """A target with an iris read gain (a photo) has the sideways gaze retargeted with it; relative expression only
    (absolute weights are the source's own)."""
    from engine.drive import SessionTarget, pipeline

    class Gained(SessionTarget):
        def gaze_read_gain(self):
            return 0.55

    seen = []
    real = pipeline.retarget

    def spy(*a, **kw):
        seen.append(kw.get("gaze_gain"))
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "retarget", spy)
    target = Gained(session_target, size=48, generator=None)
    drive(clip["silent"], target, tmp_path / "a.mp4", track=track, keep_audio=False)
    assert seen and set(seen) == {0.55}
    seen.clear()
    drive(clip["silent"], target, tmp_path / "b.mp4", track=track, keep_audio=False, relative_expression=False)
    assert seen and set(seen) == {None}


def test_cli_errors_are_one_line(tmp_path, clip, session_target, capsys):
    from engine.cli import main

    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"")
    assert main(["drive", "--video", str(bad), "--target", str(session_target), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: x.mp4: the file is empty"]
    assert main(["drive", "--video", str(clip["audio"]), "--target", str(session_target), "-o",
                 str(tmp_path / "o.avi")]) == 2
    assert "must be an .mp4" in capsys.readouterr().err
    assert main(["drive", "--video", str(clip["audio"]), "--target", str(tmp_path / "none.jpg"), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    assert "target not found" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


# ---------------------------------------------------------------------------------------------- editor dialog
def test_drive_dialog_runs_opens_the_track_and_cancels(qtbot, clip, model, tmp_path):
    from app.drive_dialog import DriveDialog
    from engine.editing.session import Session

    sess = Session(model=model, generator=None, seed=2)
    sess.set_expression("mouthSmile_L", 0.5)
    ident = sess.coeffs.identity.clone()
    dlg = DriveDialog(sess)
    qtbot.addWidget(dlg)
    loaded = []
    dlg.trackLoaded.connect(loaded.append)
    out = tmp_path / "dlg.mp4"
    job = dlg.start_drive(clip["audio"], out, side_by_side=False)
    qtbot.waitUntil(lambda: not job.running, timeout=120000)
    assert dlg.last_error is None and dlg.result is not None and out.exists()
    assert loaded == [str(tmp_path / "dlg_track.json")]
    assert len(sess.keyframes) == 18 and torch.equal(sess.keyframes[5].coeffs.identity, ident)
    assert "3 frame(s) without a face" in dlg.info.text() and dlg.progress.value() == dlg.progress.maximum()
    assert sess.undo()  # opening the track is one undoable step
    assert not sess.keyframes
    # cancel: nothing written
    out2 = tmp_path / "dlg2.mp4"
    job = dlg.start_drive(clip["audio"], out2)
    job.cancel()
    qtbot.waitUntil(lambda: not job.running, timeout=120000)
    assert "cancelled" in dlg.info.text().lower() and not out2.exists() and no_partial_files(tmp_path)
    # a bad video is a one-line message in the dialog
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    job = dlg.start_drive(bad, tmp_path / "dlg3.mp4")
    qtbot.waitUntil(lambda: not job.running, timeout=60000)
    assert dlg.last_error == "bad.mp4: the file is empty"


def test_cli_placement_and_expression_flags_reach_the_drive(monkeypatch, tmp_path):
    """``--keep-placement`` keeps the photo's head placement, ``--absolute-expression`` turns the (default) relative
    expression off; without them the head moves and the expression is relative."""
    import argparse
    from types import SimpleNamespace

    import engine.drive
    from engine.cli.drive import add_drive_parser
    from engine.render import fast_raster

    seen = []

    def fake_drive(video, target, output, **kw):
        seen.append(kw)
        return SimpleNamespace(summary=lambda: "ok", side_by_side=None, track_file=None,
                               track=SimpleNamespace(notes=[]))

    monkeypatch.setattr(engine.drive, "drive", fake_drive)
    monkeypatch.setattr(fast_raster, "warm_up", lambda **k: None)
    ap = argparse.ArgumentParser()
    add_drive_parser(ap.add_subparsers())
    base = ["drive", "--video", "v.mp4", "--target", "t.jpg", "-o", str(tmp_path / "o.mp4")]
    for extra in ([], ["--keep-placement", "--absolute-expression"]):
        args = ap.parse_args(base + extra)
        assert args.fn(args) == 0
    assert seen[0]["keep_placement"] is False and seen[0]["relative_expression"] is True
    assert seen[1]["keep_placement"] is True and seen[1]["relative_expression"] is False


# ------------------------------------------------------------------------ tracking and rendering at once
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, model, face_coeffs):
    """110 frames at 12 fps (more than the identity's IDENTITY_SPAN): turns, jaw, a move; frames 95-96 without face."""
    frames = [render_frame(model, face_coeffs, yaw=12 * math.sin(i / 6), jaw=0.3 * (1 - math.cos(i / 5)),
                           dx=int(round(12 * math.sin(i / 9)))) for i in range(110)]
    for i in (95, 96):
        frames[i] = np.full_like(frames[i], 100)
    p = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(frames, p, FPS)
    return p


@pytest.fixture(scope="module")
def long_track(long_clip):
    return track_video(long_clip)


def test_track_stream_gives_final_frames_before_the_end_as_the_whole_track(long_clip, long_track):
    from engine.drive import IDENTITY_SPAN
    from engine.drive.track import TrackStream

    whole = long_track
    st = TrackStream(long_clip)
    parts = [(k + 1, p) for k, p in enumerate(st) if p is not None]
    observed, first = parts[0]
    assert observed == IDENTITY_SPAN < whole.n_frames and first.n_frames >= 18  # final frames long before the end
    assert [p.n_frames for _, p in parts] == sorted({p.n_frames for _, p in parts}) and parts[-1][1].n_frames == 110
    for name in ("raw", "smoothed", "found", "placement_raw", "placement", "gaze", "residual_raw",
                 "residual"):  # the stream's Track: the same
        assert np.array_equal(getattr(st.track, name), getattr(whole, name), equal_nan=name == "gaze"), name
    assert (st.track.n_lost, st.track.notes) == (2, whole.notes)
    for _, p in parts:  # every frame given out early: the whole track's smoothing within the bound
        k = p.n_frames
        assert np.array_equal(p.raw, whole.raw[:k]) and np.array_equal(p.found, whole.found[:k])
        assert np.abs(p.smoothed - whole.smoothed[:k]).max() < 1e-9
        assert np.abs(p.placement - whole.placement[:k]).max() < 1e-6  # px
        assert np.array_equal(p.residual_raw, whole.residual_raw[:k])
        assert np.abs(p.residual - whole.residual[:k]).max() < 1e-9  # crop widths


def test_drive_renders_while_it_tracks_and_writes_the_same_video(long_clip, long_track, session_target, tmp_path,
                                                                 monkeypatch):
    """With render workers a drive renders each frame as soon as its values are final, while the video is still
    being tracked, and writes what tracking first, rendering after writes."""
    from engine.drive import SessionTarget, pipeline

    started = []
    real = pipeline.render_stream

    def spy(render, jobs, workers=None):
        def watched():
            for j in jobs:
                if j is not None and not started:
                    started.append(jobs.gi_frame.f_locals["stream"]._n)  # frames tracked at the first job
                yield j
        return real(render, watched(), workers)

    monkeypatch.setattr(pipeline, "render_stream", spy)
    monkeypatch.setenv("DISCOFACE_RENDER_WORKERS", "2")
    target = SessionTarget(session_target, size=64, generator=None)
    seen = []
    res = drive(long_clip, target, tmp_path / "s.mp4", track_path=tmp_path / "s.json", side_by_side=True,
                progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert started and started[0] < 110, started
    stages = [st for st, _, _ in seen]
    first = stages.index("rendering")  # once frames come out only the rendering is reported (one bar at a time)
    assert "tracking" in stages[:first] and set(stages[first:]) == {"rendering"} and seen[-1] == ("rendering", 110, 110)
    assert probe_video(tmp_path / "s_side_by_side.mp4").n_frames == 110
    ref = drive(long_clip, target, tmp_path / "r.mp4", track=long_track)
    assert np.array_equal(res.track.smoothed, long_track.smoothed) and res.n_frames == ref.n_frames == 110
    a = list(iter_frames(probe_video(tmp_path / "s.mp4")))
    b = list(iter_frames(probe_video(tmp_path / "r.mp4")))
    assert len(a) == len(b) == 110
    assert max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(a, b)) == 0
    assert (tmp_path / "s.json").exists() and no_partial_files(tmp_path)
