"""Photo mode v2: the layered photo (DESIGN.md §6b, issue 20) — the interface every photo-mode layer follows.

Once per photo (in the :class:`~engine.photo.renderer.PhotoRenderer` constructor, i.e. in the session's open-photo
worker; the drag-preview renderer shares the same :class:`PhotoLayers`, it is not recomputed) :func:`build_layers`
splits the photo, inside the work box, into

* **plate** — the background: the photo with the head region (head matte, dilated) filled from a context band
  *outside* the head only (never from face or hair pixels); low-res pull-push fill upsampled into the hole. What a
  turning head reveals behind itself is taken from here and only here.
* **head layer** — face, hair, ears and the neck down to the fitted neck cut (lower neck, collar, shirt stay in the
  plate): its foreground colour ``fg[..., :3]`` (solved so that ``fg·α + plate·(1-α)`` gives the photo back exactly)
  and its soft **matte** ``fg[..., 3]`` (grabCut seeded by the rasterised head on a ≤ ``MATTE_MAX_SIDE`` px copy,
  edges refined with a guided filter, cut below the chin at the fitted neck).
* **3D points** — every work-grid pixel gets a source point in *head coordinates* (unposed model cm, the frame the
  pose rotates): the fitted mesh where the mesh is; beyond it the camera depth is continued smoothly (pull-push),
  pushed out a little (hair is a shell outside the scalp) and the pixel is back-projected at that depth. With a
  stay-weight (0 = turns with the head, 1 = stays with the torso: the lower neck and what hangs below it) this gives
  every head-layer pixel a target position under any pose, in perspective (:meth:`GridLayers.forward`).

Per edit (:meth:`PhotoRenderer.render`), on the work grid and then once at the photo's own resolution, the
composition order is fixed:

1. **plate** (background; the photo itself outside the work box and far from the head);
2. **warped head layer**: mesh pixels by the target rasterisation (barycentric source positions, as before), the
   rest of the head layer (hair, ears, strands, neck top) by splatting its 3D points into the target grid with a
   z-buffer; ``fg`` and its matte are resampled *once* (one ``cv2.remap`` of the RGBA head layer) through the
   combined map and composed over the plate;
3. **fills**: revealed far-side skin (mirror point, shading divided out), the mouth interior (model colours);
4. **extra layers** — the hook: ``PhotoRenderer.layer_hooks`` is a list of callables
   ``hook(renderer, coeffs, field) -> LayerFill | None`` called in order after the fills; helper "eyes" (issue 21)
   appends the eyeball layer here. ``field`` is the :class:`~engine.photo.renderer.FlowField` of this edit
   (``field.target`` the :class:`~engine.photo.flow.TargetRaster`: its ``frags.face_id`` / ``tris`` say which grid
   pixels show sclera/iris *under the lids* — the lids are skin triangles in front in the same z-buffer). A hook's
   :class:`LayerFill` is composed over the region in that order;
5. **relighting** (ratio on the skin; hooks that draw colour should give it in the photo's own light).

A :class:`LayerFill` is defined on the work grid (``R × R``) and is upsampled by the renderer:

* ``alpha`` (R, R) float 0..1 — how much of the pixel the layer takes;
* ``disp`` (R, R, 2) photo px, optional — the layer's pixels are the *photo* resampled at ``p + disp`` (like
  ``FlowField.displacement``: e.g. the eyeball's own pixels following its rotation);
* ``rgb`` (R, R, 3) optional — premultiplied colour in [0, 1] (e.g. the person's sclera colour where the lids hid
  it); used where ``disp`` is None (give two LayerFills for both kinds);
* ``gain`` (R, R, 3) optional — multiplies the layer's resampled photo (shading correction), 1 = unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MATTE_MAX_SIDE = 512  # grabCut runs on a copy of the work box at most this large


@dataclass
class LayerFill:
    """One extra layer of an edit on the work grid (see module doc, step 4)."""

    alpha: np.ndarray  # (R, R) float32 0..1
    disp: np.ndarray | None = None  # (R, R, 2) photo px: the layer shows the photo at p + disp
    rgb: np.ndarray | None = None  # (R, R, 3) premultiplied colour in [0, 1] (used when disp is None)
    gain: np.ndarray | None = None  # (R, R, 3) multiplies the resampled photo (with disp)


@dataclass
class PhotoLayers:
    """The per-photo layers (photo resolution, inside ``box``); computed once by :func:`build_layers`."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 photo px (the work box ∩ the photo)
    plate: np.ndarray  # (bh, bw, 3) uint8: background, head region filled from outside the head
    fg: np.ndarray  # (bh, bw, 4) uint8: head-layer colour (RGB) and matte (A)
    seconds: float = 0.0  # time :func:`build_layers` took
    timings: dict = field(default_factory=dict)
