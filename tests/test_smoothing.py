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
