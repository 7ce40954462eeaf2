"""The sharp frame's composition of the layered head (issue 24): resampled and blended only where the head layer can
show (bands of rows, each over the columns it can reach), it must give the same picture as composing the whole box."""
import math
from pathlib import Path

import numpy as np
import pytest

ASTRONAUT = Path(__file__).resolve().parent.parent / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def astronaut():
    from engine.perception.align import load_image
    from engine.photo.fit import fit_photo
    from engine.photo.renderer import PhotoRenderer

    fit = fit_photo(load_image(ASTRONAUT))
    return fit, PhotoRenderer(fit)


def _edits(c0):
    turn = c0.clone()
    turn.pose[0, 0] += math.radians(14)
    turn.pose[0, 1] += math.radians(-5)
    turn.expr["mouthSmile_L"] = turn.expr["mouthSmile_R"] = 0.5
    blink = turn.clone()
    blink.pose[0, 0] -= math.radians(25)
    blink.expr["eyeBlink_L"] = 1.0
    return [turn, blink]


@pytest.mark.parametrize("max_side", [None, 300])
def test_banded_composition_equals_the_full_one(astronaut, max_side):
    fit, r = astronaut
    for c in _edits(fit.coeffs):
        fast = r.render(c, max_side=max_side).image
        rr = r.preview_renderer() if max_side is not None else r
        try:
            rr.compose_bands = False
            full = r.render(c, max_side=max_side).image
        finally:
            rr.compose_bands = True
        assert fast.shape == full.shape
        # the edit really moved the head (the comparison is not between two copies of the photo)
        photo = fit.image if max_side is None else r._photo_at(fast.shape[0] / fit.image.shape[0])
        assert np.abs(full.astype(int) - photo).max() > 60
        assert np.abs(fast.astype(int) - full).max() <= 1
