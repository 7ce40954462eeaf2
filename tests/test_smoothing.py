"""The One-Euro filter (engine.drive.smoothing): the cutoff follows the *low-passed* speed (the paper's dx̂, filtered
at ``d_cutoff``), so jitter at rest — large raw frame-to-frame speed, near-zero mean speed — stays smoothed almost
as strongly as with ``beta = 0``, while a real movement still opens the cutoff."""
from __future__ import annotations

import numpy as np

from engine.drive.smoothing import OneEuroFilter


def _jitter(n=240, amp=0.01):
    """A still value with frame-to-frame jitter (alternating ±amp around 0.3)."""
    return 0.3 + amp * (-1.0) ** np.arange(n)[:, None]


def test_jitter_at_rest_does_not_open_the_cutoff():
    x = _jitter()
    calm = OneEuroFilter(30, min_cutoff=1.0, beta=0.0).filter_sequence(x)[120:, 0]
    fast = OneEuroFilter(30, min_cutoff=1.0, beta=5.0, d_cutoff=1.0).filter_sequence(x)[120:, 0]
    # with the speed low-passed (1 Hz at 30 fps) the jitter adds ~0.3 Hz to the cutoff: its output ripple stays
    # within 1.5x of beta = 0's; the raw speed in the cutoff (or a_d = 1) would add 3 Hz and triple the ripple
    r_calm, r_fast = np.ptp(calm), np.ptp(fast)
    assert r_calm > 0 and r_fast < 1.5 * r_calm, (r_fast, r_calm)


def test_the_speed_filter_matters_and_a_real_move_opens_the_cutoff():
    x = _jitter()
    loose = OneEuroFilter(30, min_cutoff=1.0, beta=5.0, d_cutoff=30.0).filter_sequence(x)[120:, 0]
    tight = OneEuroFilter(30, min_cutoff=1.0, beta=5.0, d_cutoff=1.0).filter_sequence(x)[120:, 0]
    assert np.ptp(loose) > 1.5 * np.ptp(tight)  # a fast speed filter lets the jitter through: d_cutoff is used
    ramp = np.linspace(0.0, 1.0, 31)[:, None]  # a steady move of 1 unit per second
    lag_fast = ramp[-1, 0] - OneEuroFilter(30, 1.0, 5.0).filter_sequence(ramp)[-1, 0]
    lag_calm = ramp[-1, 0] - OneEuroFilter(30, 1.0, 0.0).filter_sequence(ramp)[-1, 0]
    assert lag_fast < 0.5 * lag_calm



def _lag(true: np.ndarray, y: np.ndarray) -> int:
    """Frames by which ``y`` trails ``true`` (cross-correlation peak within ±5 frames)."""
    a, b = true - true.mean(), y - y.mean()
    cc = [np.dot(a[10:-10], np.roll(b, -k)[10:-10]) for k in range(-5, 6)]
    return int(np.argmax(cc)) - 5


def _turns(fps: float, seconds: float = 6.0, amp: float = 0.1, period: float = 1.0) -> np.ndarray:
    """A head turning back and forth (radians), sampled at ``fps``."""
    return amp * np.sin(2 * np.pi * np.arange(int(seconds * fps)) / fps / period)


def test_centred_pass_has_no_lag():
    true = _turns(30)[:, None]
    causal = OneEuroFilter(30, 0.8, 6.0, 2.0).filter_sequence(true)[:, 0]
    centred = OneEuroFilter(30, 0.8, 6.0, 2.0).filter_sequence_centred(true)[:, 0]
    assert _lag(true[:, 0], causal) >= 1 and _lag(true[:, 0], centred) == 0
    assert OneEuroFilter(30, 1.0, 5.0).filter_sequence_centred(np.ones((5, 3))).shape == (5, 3)
    assert OneEuroFilter(30, 1.0, 5.0).filter_sequence_centred(np.ones((0, 3))).shape == (0, 3)


def test_track_pose_and_placement_follow_the_motion_closer_than_the_jitter():
    """A tracked turn (and the head's move and size change) with frame-to-frame tracking jitter of 0.01: the track's
    smoothing puts the pose and placement closer to the true motion than the jitter itself, with no lag, at 30 and
    at 12 fps (the causal 0.8 Hz / beta 6 filter this replaced: 0.013-0.019 off, 1 frame late at 30 fps)."""
    from engine.drive.track import N_EXP, _smooth, _smooth_placement

    rng = np.random.default_rng(0)
    for fps in (30.0, 12.0):
        true = _turns(fps)
        n = len(true)
        raw = np.zeros((n, N_EXP + 3))
        raw[:, N_EXP] = true + rng.normal(0, 0.01, n)
        yaw = _smooth(raw, fps)[:, N_EXP]
        assert _lag(true, yaw) == 0
        assert np.std(yaw - true) < 0.01, (fps, np.std(yaw - true))
        place = np.zeros((n, 3))
        place[:, 0] = 300 + 250 * (true + rng.normal(0, 0.01, n))  # px, a head of ~250 px
        place[:, 2] = np.log(2.0) + true + rng.normal(0, 0.01, n)
        p = _smooth_placement(place, fps)
        assert _lag(true, p[:, 2]) == 0 and np.std(p[:, 2] - np.log(2.0) - true) < 0.01
        assert _lag(true, p[:, 0]) == 0


def test_track_expression_but_the_eyes_without_lag():
    """The mouth, jaw and brows are smoothed without lag (a mouth that opens late costs the aligned-face match); the
    eye weights (blinks, glances) keep the causal filter."""
    from engine.drive.track import N_EXP, _smooth, centred_channels

    names = ["eyeBlink_L", "jawOpen"] + [f"other{i}" for i in range(N_EXP - 2)]
    mask = centred_channels(names)
    assert mask.shape == (N_EXP + 3,) and not mask[0] and mask[1] and mask[N_EXP:].all()
    true = 0.3 + _turns(30, amp=0.2)
    raw = np.zeros((len(true), N_EXP + 3))
    raw[:, 0] = raw[:, 1] = true
    out = _smooth(raw, 30.0, centred=mask)
    from engine.drive.track import SMOOTHING

    causal = OneEuroFilter(30.0, *SMOOTHING["expression"], SMOOTHING["d_cutoff"]).filter_sequence(true[:, None])[:, 0]
    assert np.allclose(out[:, 0], causal)  # the blink weight: the causal filter
    assert _lag(true, out[:, 1]) == 0 and np.abs(out[:, 1] - true).mean() < 0.5 * np.abs(causal - true).mean()


def _rough(n: int, d: int, seed: int) -> np.ndarray:
    """A random walk with tracking noise, 1-unit jumps and outliers: what makes the adaptive cutoff move most."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.05, (n, d)), 0) + rng.normal(0, 0.02, (n, d))
    x[n // 3:n // 3 + 10] += 1.0
    x[::37] += rng.normal(0, 0.5, (len(x[::37]), d))
    return x


def test_streamed_centred_filter_matches_the_whole_sequence():
    """The lag-free filter over a stream (a drive renders while it tracks) gives what the whole-track filter gives:
    early samples within the settling bound, the last ``window`` ones bit for bit; it holds a bounded buffer."""
    from engine.drive.smoothing import CentredStream, settle_frames
    from engine.drive.track import PLACEMENT_SMOOTHING, SMOOTHING

    for fps in (12.0, 25.0, 30.0, 60.0):
        for mc, beta in (SMOOTHING["pose"], SMOOTHING["expression"], PLACEMENT_SMOOTHING):
            f = OneEuroFilter(fps, np.full(4, mc), np.full(4, beta), SMOOTHING["d_cutoff"])
            x = _rough(500, 4, int(fps))
            whole = f.filter_sequence_centred(x)
            s = CentredStream(f)
            assert s.window == settle_frames(fps, mc, SMOOTHING["d_cutoff"]) and s.window < 200
            parts, held = [], 0
            for row in x:
                parts.append(s.push(row))
                held = max(held, len(s._xs))
            parts.append(s.finish())
            assert [len(p) for p in parts[:s.window + s.block - 1]] == [0] * (s.window + s.block - 1)
            assert len(parts[s.window + s.block - 1]) == s.block  # the first frames come out long before the end
            out = np.concatenate(parts)
            assert out.shape == whole.shape and held <= s.window + s.block
            assert np.abs(out - whole).max() < 1e-9, (fps, mc, beta, np.abs(out - whole).max())
            assert np.array_equal(out[-s.window:], whole[-s.window:])
    # a window too short to forget the fresh start is visibly off: the bound above is what the window buys
    f = OneEuroFilter(30.0, 1.5, 20.0, 2.0)
    s = CentredStream(f, window=3, block=3)
    x = _rough(200, 1, 1)
    out = np.concatenate([s.push(r) for r in x] + [s.finish()])
    assert np.abs(out - f.filter_sequence_centred(x)).max() > 1e-3
