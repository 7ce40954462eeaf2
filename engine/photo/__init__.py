"""Photo mode (DESIGN.md §6): fit the 3D head to a real photo once, then warp, fill and relight the photo itself
at its own resolution for any edit. ``fit_photo`` lives in :mod:`engine.photo.fit`; the renderer here."""
from engine.photo.renderer import (PHOTO_PITCH_LIMIT_DEG, PHOTO_YAW_LIMIT_DEG, FlowField, PhotoFrame,
                                   PhotoRenderError, PhotoRenderer, limits_note)

__all__ = ["PHOTO_PITCH_LIMIT_DEG", "PHOTO_YAW_LIMIT_DEG", "FlowField", "PhotoFrame", "PhotoRenderError",
           "PhotoRenderer", "limits_note"]
