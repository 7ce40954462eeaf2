"""Photo mode: edit a real photo at its own resolution with the fitted 3D head (DESIGN.md §6, issue 13).

``PhotoRenderer(fit).render(coeffs)`` turns a :class:`~engine.photo.fit.PhotoFit` and *any* target coefficients
into the edited photo:

1. the target head (face region + neck, back of head, mouth, eyes) is rasterised on a work grid around the face;
   every covered pixel gets the photo position its surface point had in the fit (:mod:`engine.photo.flow`);
2. off the mesh, the layered photo (:mod:`engine.photo.layers`, built once per photo): for a turn, the head layer's
   3D points (hair, ears, outline, neck top) are splatted to the target pose and the head layer is composed over the
   background plate (what the head uncovers is background, never a stretched outline); for other edits (or with
   ``layers=False``) the displacement is continued smoothly outside the head and faded out;
3. the photo (with layers: the head layer's colour and matte) is resampled once (``cv2.remap``) through the
   upsampled flow, only inside the affected box;
4. what the photo never showed is filled: the mouth interior from the model (:mod:`engine.photo.fill`; its edge
   drawn at photo resolution on large photos), skin a turn reveals from its mirror point on the face (a second
   remap, shading corrected), skin the photo saw only edge-on from the model under the photo's light;
5. light and albedo edits multiply the skin by a low-passed shading ratio (:mod:`engine.photo.relight`).

The sharp frame (``max_side=None``) is resampled bicubically on a ``WORK_RES`` grid; drag previews (``max_side``
given) bilinearly on a ``PREVIEW_RES`` grid (a second renderer, :meth:`PhotoRenderer.preview_renderer`, made on
first use or ahead of the first drag).

Source-side work is done once in the constructor; :meth:`PhotoRenderer.render` is one stateless call. Rendering the
fit's own coefficients returns the photo unchanged (a fast path).
"""
from __future__ import annotations

import math
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from engine import runtime
from engine.face.head import NARROW_FACE_VERTICES, SKIN_PARTS, HeadModel, default_head
from engine.face.model import Coefficients, FaceModel, default_model
from engine.photo import eyes, fill, flow, layers as photo_layers, relight
from engine.photo.fit import as_photo
from engine.render import fast_raster

if TYPE_CHECKING:  # pragma: no cover
    from engine.photo.fit import PhotoFit
PHOTO_YAW_LIMIT_DEG = 20.0  # |change from the fitted yaw| beyond which results stop being believable
PHOTO_PITCH_LIMIT_DEG = 15.0
REVEAL_LIMIT = 0.08  # share of the turned head the photo never showed (well), beyond which a turn is not believable
SKIN_DIST_FULL, SKIN_DIST_ZERO = 0.25, 0.45  # colour distance from the face's median (relative): skin .. not skin
HAIR_BINS = 8  # Lab histogram bins per axis of the hair / skin colour models
HAIR_ODDS = 2.0  # a colour this much more frequent in the hair than in the face is hair
GRAZING_FULL = 0.1  # … at or below which it is replaced by the model's skin when a turn shows it frontally
STRETCH_FULL = 0.3  # camera-facing gained by a turn at which that replacement is complete
UNSEEN_FACING = 0.3  # camera-facing (normal z) below which the photo showed a surface too obliquely to reuse it
NECK_STRETCH = 1.75  # a pitch: neck area grown beyond this x the photo's counts as unseen, fully at twice this
FLOW_SIGMA = 1.0  # grid px
TORSO_NECK_W = 0.2  # the lower neck's weight from which the clothing over it is in front of it in full
OUTER_SIGMA = 3.0  # px of the 256 px work grid: low-pass of a turn's flow on the ears, scalp and neck
OUTER_RAMP = 3  # vertex rings over which that low-pass fades out into the face
# the model's skin is matched to the photo's skin around it (renderer._skin_match): on a ring of SKIN_MATCH_RING grid px
# outside where the fill takes over SKIN_MATCH_CORE, where it takes less than SKIN_MATCH_OUTSIDE
SKIN_MATCH_CORE, SKIN_MATCH_OUTSIDE, SKIN_MATCH_RING = 0.3, 0.15, 4
SKIN_MATCH_MIN_PX = 8
SKIN_MATCH_RANGE = (0.5, 1.6)
SKIN_MATCH_SIGMA = 2.0  # grid px
# grid px around the model skin's pixels over which it is computed: its alpha's blur (3) + the ring (SKIN_MATCH_RING)
# + the ring's continuation (4 x SKIN_MATCH_RING) + SKIN_MATCH_SIGMA's blur (8) + 1: the whole grid's values there
SKIN_CROP_MARGIN = 32
MIRROR_CROP_MARGIN = 6  # the same for the mirror fill: its alpha's blur (3) and its displacement's continuation (4)
PREVIEW_RES = 128  # work grid of drag previews (render with max_side): CPU p50 39 -> 21 ms at 512 px
_SKIP_EPS = 0.02  # displacement (photo px) below which a grid pixel counts as unchanged
FILL_SHARPEN_FROM = 1.5  # output px per work-grid px above which the mouth fill's edge is sharpened
FILL_EDGE_GAIN_MAX = 2.5
REMAP_INTERP = cv2.INTER_CUBIC  # bilinear resampling visibly softened the warped face (mean |Laplacian| -20..-30 %)
COMPILED_BLEND = True  # the head layer blended by fast_raster.blend_over (False: OpenCV's, the reference)
# the sharp frame's head layer: bicubic resampling as a bilinear remap of the layer upsampled 2x bicubically (once
# per photo and size): OpenCV's 4-channel bicubic remap has no SIMD path (~10x its bilinear one: ~14 of a 1 MP
# frame's ~50 ms); the two agree within 1 grey level but on ~0.03 % of pixels (False: the direct bicubic remap)
HEAD_REMAP_2X = True
HEAD_REMAP_2X_MAX_PX = 2048 * 2048  # larger head layers keep the direct remap (the 2x copy: 16 bytes a layer pixel)
COMPOSE_BAND = 48  # output rows per band of the head layer's composition (each band: only the columns it can reach)


class PhotoRenderError(ValueError):
    """Coefficients or a fit the photo renderer cannot use; the message says which and why."""


@dataclass
class PhotoFrame:
    image: np.ndarray  # (h, w, 3) uint8: the edited photo (full resolution unless max_side asked smaller)
    landmarks: np.ndarray  # (68, 2) target landmarks in `image` pixels
    vertices: np.ndarray  # (V, 3) posed head vertices (model cm, y up, z toward the viewer) for the mesh panel
    scale: float  # image size / photo size


@dataclass
class FlowField:
    """The work-grid result of one edit (for tests, debugging and overlays)."""

    grid: flow.WorkGrid
    displacement: np.ndarray  # (R, R, 2) photo px: output pixel p shows the photo at p + displacement
    covered: np.ndarray  # (R, R) bool: the target head covers the pixel
    hidden: np.ndarray  # (R, R) float 0..1: the surface point there was hidden in the photo
    fill_alpha: np.ndarray  # (R, R) float 0..1: share drawn from the model (mouth interior, eyes)
    fill_rgb: np.ndarray | None  # (R, R, 3) premultiplied fill colour in [0, 1], None when nothing is filled
    ratio: np.ndarray | None  # (R, R, 3) relighting factor, None when light and albedo are unchanged
    target: flow.TargetRaster
    # skin a turn reveals, drawn from its mirror point (None when the edit reveals none):
    mirror_disp: np.ndarray | None = None  # (R, R, 2) photo px, like ``displacement``
    mirror_alpha: np.ndarray | None = None  # (R, R) float 0..1: share of the mirror sample
    mirror_gain: np.ndarray | None = None  # (R, R, 3) linear-light shading correction of the mirror sample
    # the head layer (photo mode v2, :mod:`engine.photo.layers`): None when the renderer has no layers
    layer_cover: np.ndarray | None = None  # (R, R) float 0..1: the warped head matte is kept here (0: plate shows)
    layer_solid: np.ndarray | None = None  # (R, R) float 0..1: revealed surface, opaque whatever the matte says
    extra: list = None  # LayerFill's of the layer hooks (eyeballs, …), composed after the fills, before relighting

    def in_photo(self, grid_array: np.ndarray, shape: tuple[int, int], scale: float = 1.0,
                 border: float = 0.0) -> np.ndarray:
        """Resample a work-grid array (R, R[, C]) to photo pixels (``shape`` (h, w), photo scaled by ``scale``)."""
        g = self.grid
        s = 1.0 / (scale * g.step)
        b = (0.5 / scale - g.origin[0]) / g.step - 0.5, (0.5 / scale - g.origin[1]) / g.step - 0.5
        m = np.array([[s, 0, b[0]], [0, s, b[1]]], np.float64)
        return cv2.warpAffine(np.ascontiguousarray(grid_array, dtype=np.float32), m, (shape[1], shape[0]),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=border)


def _any_channel(m: np.ndarray) -> np.ndarray:
    """(H, W, C) bool → (H, W): numpy's reductions over a short last axis are slow; OR the planes instead."""
    out = m[..., 0].copy()
    for i in range(1, m.shape[-1]):
        out |= m[..., i]
    return out


# Threads. A frame's work-grid steps (256 px arrays, torch on a few thousand vertices) run on one thread: split by
# torch's or OpenCV's own pools they only add hand-offs (and wait for a core another job holds). Frames above
# SMALL_FRAME_PX output pixels share their head layer's bands (the frame's big resampling and blend) between the
# calling thread and up to torch's thread count - 1 helper threads while the machine has idle cores for them
# (runtime.usable_threads), each band taken from one queue by whichever is free: a helper that gets no core leaves
# its bands to the others, so a second thread costs at most a band's wait.
# Frames up to SMALL_FRAME_PX render on the calling thread alone (bench/photo_latency.py: 512 px drag previews 22 %
# slower at p95 on 2 threads than on 1).
SMALL_FRAME_PX = 512 * 512
_FG_EDGE_SKIP = 2  # px: the head layer continued beyond a photo border mirrors what lies this far inside it
_FG2_PAD = 3  # zero border of the 2x head layer (bicubic taps reach 2 px)
# an eye edit's head layer: the eyes' change patched into a copy of the unedited layer's padded copy, kept (False: the
# whole layer edited and padded each frame, the reference); with EYE_PATCH_2X into its 2x copy (the sharp frame then
# resampled as without an eye edit: ~3.4 ms less of a driven 1 MP frame, but not the same bytes as the direct remap)
EYE_PATCH = True
EYE_PATCH_2X = False
_EYE_PATCH_MARGIN = 6  # layer px around the eye edit upsampled again (bicubic taps: 2 px; the window's own edge)
_FG2_INTERP = cv2.INTER_CUBIC  # (Lanczos: sharper than the direct remap by as much as cubic is softer, more pixels differ)


_helpers: ThreadPoolExecutor | None = None
_helpers_n = 0
_helpers_lock = threading.Lock()


def _forget_helpers() -> None:
    """In a forked child (a render worker process): the parent's helper threads do not exist there."""
    global _helpers, _helpers_n, _helpers_lock
    _helpers, _helpers_n, _helpers_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def _helper_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least ``n`` helper threads for :func:`_run_bands` (made on first use)."""
    global _helpers, _helpers_n
    with _helpers_lock:
        if _helpers is None or _helpers_n < n:
            _helpers, _helpers_n = ThreadPoolExecutor(n, thread_name_prefix="photo-bands"), n
        return _helpers


def _run_bands(fn, items: list, workers: int) -> None:
    """``fn(item)`` for every item (disjoint bands of one frame): on the calling thread, and with ``workers`` > 1
    also on ``workers`` - 1 helper threads, every band taken from one queue by whichever thread is free. Returns
    when every band is done (never waits for a helper that has not started: it finds the queue empty); a band's
    exception is raised here."""
    if workers <= 1 or len(items) < 2:
        for it in items:
            fn(it)
        return
    queue = iter(items)
    lock = threading.Lock()
    left = [len(items)]
    errors: list = []
    done = threading.Event()

    def work():
        while True:
            with lock:
                it = next(queue, None)
            if it is None:
                return
            try:
                fn(it)
            except BaseException as e:  # noqa: BLE001 (re-raised on the calling thread)
                errors.append(e)
            with lock:
                left[0] -= 1
                if not left[0]:
                    done.set()

    pool = _helper_pool(workers - 1)
    for _ in range(min(workers - 1, len(items) - 1)):
        pool.submit(work)
    work()
    done.wait()
    if errors:
        raise errors[0]


class _one_thread:
    """torch and OpenCV on one thread inside the block, their counts restored after it (~10 us each way)."""

    def __enter__(self):
        self.torch_n, self.cv_n = torch.get_num_threads(), cv2.getNumThreads()
        if self.torch_n != 1:
            torch.set_num_threads(1)
        if self.cv_n != 1:
            cv2.setNumThreads(1)
        return self

    def __exit__(self, *exc):
        if self.torch_n != 1:
            torch.set_num_threads(self.torch_n)
        if self.cv_n != 1:
            cv2.setNumThreads(self.cv_n)
        return False


def _same(a: Coefficients, b: Coefficients) -> bool:
    return all(torch.equal(getattr(a, n), getattr(b, n)) for n in Coefficients.FACTORS)


# per-photo believable turn ranges, filled by PhotoRenderer.turn_range() (keyed by the fit, weakly)
_RANGES: dict[int, tuple] = {}  # id(fit) -> (weakref to the fit, ranges)


def _range_of(fit) -> dict | None:
    got = _RANGES.get(id(fit))
    return got[1] if got is not None and got[0]() is fit else None


def _store_range(fit, r: dict) -> None:
    for k in [k for k, (ref, _) in _RANGES.items() if ref() is None]:
        del _RANGES[k]
    _RANGES[id(fit)] = (weakref.ref(fit), r)


def _tri_areas(xy: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """(F,) unsigned areas of ``tris`` over the (V, 2) points ``xy``."""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    return (0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))).abs()


def turn_limits(fit: "PhotoFit") -> dict[str, tuple[float, float]]:
    """{"yaw": (lo, hi), "pitch": (lo, hi)}: the believable turn (degrees, relative to the photo's own pose) — this
    photo's own range once a renderer has measured it (:meth:`PhotoRenderer.turn_range`), else the general one."""
    r = _range_of(fit)
    if r is not None:
        return r
    return {"yaw": (-PHOTO_YAW_LIMIT_DEG, PHOTO_YAW_LIMIT_DEG),
            "pitch": (-PHOTO_PITCH_LIMIT_DEG, PHOTO_PITCH_LIMIT_DEG)}


def own_pose_degrees(fit: "PhotoFit") -> dict[str, float]:
    """The photo's own fitted yaw / pitch / roll in degrees."""
    p = fit.coeffs.pose[0]
    return {k: math.degrees(float(p[i])) for i, k in enumerate(("yaw", "pitch", "roll"))}


def turn_note(fit: "PhotoFit", turn: dict) -> str | None:
    """The one wording of "this turn is beyond what the photo shows believably": ``turn`` holds yaw / pitch in
    degrees from the photo's own pose (missing axes are not turned); None inside this photo's range
    (:func:`turn_limits`). The editor's status bar (:func:`limits_note`) and the CLI's ``--set`` warning say it."""
    own = own_pose_degrees(fit)
    lim = turn_limits(fit)
    parts = []
    for axis in ("yaw", "pitch"):
        if axis not in turn:
            continue
        v = float(turn[axis])
        lo, hi = lim[axis]
        if not lo - 0.5 <= v <= hi + 0.5:
            parts.append(f"{axis} {v:+.0f}° from the photo's own {own[axis]:+.0f}° is beyond this photo's "
                         f"believable turn ({lo:+.0f}..{hi:+.0f}°)")
    if not parts:
        return None
    return " and ".join(parts) + ": the photo never showed what this turn reveals, expect invented skin and hair"


def limits_note(fit: "PhotoFit", coeffs: Coefficients) -> str | None:
    """A one-line warning for the status bar when the edit turns the head beyond what this photo shows believably
    (its own range, :func:`turn_limits`); speaks of the turn relative to the photo's own pose (:func:`turn_note`)."""
    d = coeffs.pose[0] - fit.coeffs.pose[0]
    note = turn_note(fit, {"yaw": math.degrees(float(d[0])), "pitch": math.degrees(float(d[1]))})
    return None if note is None else f"Photo mode: {note}."


class PhotoRenderer:
    """Warp, fill and relight ``fit.image`` for any target coefficients (see module doc)."""

    def __init__(self, fit: "PhotoFit", model: FaceModel | None = None, head: HeadModel | None = None,
                 work_res: int = flow.WORK_RES, preview_res: int | None = PREVIEW_RES,
                 layers: "photo_layers.PhotoLayers | bool | None" = None, source_state: dict | None = None):
        self.model = model or (head.model if head is not None else default_model())
        self.head = head or default_head(self.model)
        self.fit = fit
        self.image = as_photo(fit.image)
        if fit.coeffs.batch != 1:
            raise PhotoRenderError(f"the fit must hold one set of coefficients, got a batch of {fit.coeffs.batch}")
        self.coeffs0 = fit.coeffs.detach().clone().to("cpu")
        self.gain = np.asarray(fit.gain, np.float32).reshape(3)
        sample = self.image[::7, ::7].astype(np.int16)
        self.gray = bool(np.abs(sample[..., 0] - sample[..., 1]).max(initial=0) <= 1
                         and np.abs(sample[..., 1] - sample[..., 2]).max(initial=0) <= 1)
        self.fast_path = True
        # drag previews (render with max_side) run on a coarser work grid: a second renderer, made on first use
        self.preview_res = preview_res if preview_res is not None and preview_res < work_res else None
        self._preview: PhotoRenderer | None = None
        self._lock = threading.Lock()
        self.grid = flow.work_grid(fit.alignment, work_res)
        self.proj = flow.HeadProjector(self.head, fit.alignment)
        # blink, eyeWide and gaze are drawn by the eye layer in the photo's frame, before the flow (§6c)
        self.eyes = eyes.EyeLayer(self.image, fit.alignment.landmarks_photo,
                                  eyes.model_lid_projector(self.head, self.proj, self.coeffs0.pose[0]), self.coeffs0)
        with torch.no_grad():
            self.src = flow.SourceHead(self.head, self.proj, self.coeffs0, self.grid, state=source_state)
            self.neck = flow.neck_weights(self.head, self.src.verts)
            self.albedo0 = self.head.albedo(self.coeffs0)[0]
        # the mouth interior's plain colours, their brightness taken from this photo's lips and eye whites
        self.mouth_colors = fill.photo_mouth_colors(self.image, fit.alignment.landmarks_photo)
        self._skin_model: relight.SkinModel | None = None  # relighting spares hair, beards (:attr:`skin`)
        self._mouth_base = fill.mouth_base_colors(self.head, self.mouth_colors)
        self._centres = self.grid.centres()
        res = self.grid.res
        e = np.clip(np.minimum(np.arange(res) + 0.5, res - np.arange(res) - 0.5) / (0.04 * res), 0, 1)
        self._border_window = np.minimum(e[:, None], e[None, :])[..., None].astype(np.float32)
        self._skin_attr = self.head.vertex_in(SKIN_PARTS).float()
        self._scaled: dict[float, np.ndarray] = {}
        self._normals_for: torch.Tensor | None = None
        self._normals: torch.Tensor | None = None
        self._has_mirror = bool(self.src.mirror_w.max() > 1e-3)
        self._any_render_fill = bool(self.src.render_fill.max() > 0)
        self._fill_idx = (self.src.render_fill > 0).nonzero(as_tuple=True)[0]
        self._subsets = {"fill": self._subset(self._fill_idx)}
        self._sub_normals: dict = {}
        self._base_attr = torch.cat([self.src.src_xy, self.src.render_fill.unsqueeze(1),
                                     (~self.src.visible).float().unsqueeze(1)], 1)
        # beyond the face proper (ears, scalp, neck; ramped over a few vertices): a turn moves these as a smooth shell
        # (their fine geometry — the ear's folds — drags the hair lying over them into waves)
        outer = (source_state or {}).get("turn_outer")
        if isinstance(outer, np.ndarray) and outer.shape == (self.head.n_vertices, 1) and outer.dtype == np.float32 \
                and np.isfinite(outer).all():
            outer = torch.from_numpy(np.array(outer))
            self.source_restored = self.src.restored  # everything source_state() holds was taken from it
        else:
            self.source_restored = False
            outer = torch.zeros(self.head.n_vertices, 1)
            outer[NARROW_FACE_VERTICES:] = 1.0
            adj = self.head.adjacency()
            for _ in range(OUTER_RAMP):
                outer = torch.maximum(outer, torch.sparse.mm(adj, outer))  # grown into the face's rim ...
            for _ in range(OUTER_RAMP):
                outer = torch.sparse.mm(adj, outer)  # ... then softened
        self._outer = outer
        # _skin_setup's arrays, taken on first use (only with the rest of the state: they derive from it)
        self._skin_state = source_state if self.source_restored else None
        # and the lower neck's weight (0 = turns with the head, 1 = stays with the torso: flow.neck_weights)
        neck_w = torch.zeros(self.head.n_vertices, 1)
        neck_w[self.neck[0]] = self.neck[1]
        self._turn_attr = torch.cat([self._base_attr, outer * self.head.vertex_in(SKIN_PARTS).float().unsqueeze(1),
                                     neck_w], 1)
        self._mirror_attr = torch.cat([self.src.mirror_xy, self.src.mirror_w.unsqueeze(1), self.src.mirror_gain], 1)
        # photo mode v2: the layered photo (built once; a preview renderer gets its parent's), ``layers=False``: none
        if layers is None or layers is True:
            layers = photo_layers.build_layers(self.image, self.grid, self.head, self.proj, self.src)
        self.layers = layers or None
        skin = (source_state or {}).get("grid_skin") if self.source_restored else None  # (from the photo cache)
        torso = (source_state or {}).get("grid_torso") if self.source_restored else None
        self.grid_layers = (photo_layers.GridLayers(self.layers, self.grid, self.head, self.proj, self.src, self.neck,
                                                    skin=skin, torso=torso) if self.layers is not None else None)
        hs = (source_state or {}).get("hair_src") if self.source_restored else None  # (_hair_src's, from the cache)
        if isinstance(hs, np.ndarray) and hs.dtype == bool and hs.shape in ((self.grid.res, self.grid.res), (0,)):
            self._hair_src_cache = np.array(hs)
        self._layer_scaled: dict = {}
        self._fg2: tuple | None = None  # (head layer, its 2x upsampling, the padded layer upsampled): _fg_2x
        self._fg_pad: tuple | None = None  # (head layer, it padded beyond the photo, pads): _fg_beyond
        self._eye_work: list = [None, None]  # [layer, its copy with an eye edit patched in, the patch] (1x, 2x)
        # extra layers composed after the fills (see engine.photo.layers, step 4): hook(renderer, coeffs, field)
        self.layer_hooks: list = []
        self.compose_bands = True  # False: layers composed over their whole boxes (the reference, for tests)
        self.unstretch = True  # False: a turn's flow keeps its streaks (flow.unstretch_rows; for tests and benches)
        self.skin_crop = True  # False: the model's skin computed over the whole grid (the reference, for tests)
        self.compiled_interp = True  # False: the per-vertex values interpolated by torch (the reference, for tests)
        self.band_threads = True  # False: a large frame's head layer bands on the calling thread alone (see _run_bands)

    @property
    def skin(self) -> relight.SkinModel:
        """The photo's skin colour model, made on first use: only a relit edit needs it, and its first Lab
        conversion costs ~60 ms (OpenCV builds its tables), a tenth of a cached ``discoface edit``."""
        if self._skin_model is None:
            self._skin_model = relight.SkinModel(self.image, self.fit.alignment.landmarks_photo)
        return self._skin_model

    def source_state(self) -> dict[str, np.ndarray]:
        """What this renderer computed from the fit alone (the source head's visibility and fills, the turn's
        outer-shell weights, the hair a turn keeps, the layers' skin and clothing masks: their Lab conversions ~55 ms
        each): kept in the photo cache and given back as ``source_state`` (same fit, head, grid)."""
        if not hasattr(self, "_model_w"):
            self._skin_setup()
        fc = self._face_col if self._face_col is not None else np.zeros(0, np.float32)
        return {**self.src.state(), "turn_outer": self._outer.numpy().copy(),
                "skin_n0z": self._n0z.numpy().copy(), "skin_model_w": self._model_w.numpy().copy(),
                "skin_cal": self._model_cal.numpy().copy(), "skin_face_col": np.asarray(fc, np.float32).copy(),
                "hair_src": np.array(hs) if (hs := self._hair_src()) is not None else np.zeros(0, bool),
                "grid_skin": np.array(gs) if (gs := getattr(self.grid_layers, "skin", None)) is not None
                else np.zeros(0, bool),
                "grid_torso": np.array(gt) if (gt := getattr(self.grid_layers, "torso", None)) is not None
                else np.zeros(0, np.float32)}

    # ------------------------------------------------------------------------------------------ helpers
    def _photo_at(self, scale: float) -> np.ndarray:
        if scale >= 1.0:
            return self.image
        img = self._scaled.get(scale)
        if img is None:
            h, w = self.image.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
            self._scaled = {scale: img}  # keep one (the drag preview size)
        return img

    def _check(self, coeffs: Coefficients) -> Coefficients:
        if not isinstance(coeffs, Coefficients):
            raise PhotoRenderError(f"expected Coefficients, got {type(coeffs).__name__}")
        c = coeffs[0:1].detach().to("cpu")
        if c.albedo_dim != self.coeffs0.albedo_dim:
            raise PhotoRenderError(f"coefficients carry {c.albedo_dim} albedo values, the fit "
                                   f"{self.coeffs0.albedo_dim}")
        for n in Coefficients.FACTORS:
            if not torch.isfinite(getattr(c, n)).all():
                raise PhotoRenderError(f"coefficient {n} contains NaN or infinite values")
        return c

    # ------------------------------------------------------------------------------------------- flow
    @torch.no_grad()
    def flow_field(self, coeffs: Coefficients, placement: np.ndarray | None = None,
                   offsets: np.ndarray | None = None) -> FlowField:
        """Everything about an edit on the work grid (no full-resolution work). ``placement``, ``offsets``: see
        :meth:`render`."""
        c = self._check(coeffs)
        head, src = self.head, self.src
        t = flow.rasterize_target(head, self.proj, src, c, self.grid, self.neck, placement, offsets)
        light_changed = not torch.equal(c.light, self.coeffs0.light)
        albedo_changed = not torch.equal(c.albedo, self.coeffs0.albedo)
        fill_v = src.render_fill
        relit = light_changed or albedo_changed
        # every per-vertex attribute goes through one interpolation (its gathers cost more than the channels)
        may_fill = self._any_render_fill and t.tris is flow.flow_triangles(head, True)
        turning = not torch.equal(c.pose, self.coeffs0.pose)
        cols = [self._turn_attr if turning else self._base_attr]
        if self._has_mirror:
            cols.append(self._mirror_attr)
        if may_fill or relit:
            rot = flow.rotation_matrix(c.pose)[0]
            if relit:
                normals = self._unposed_normals(t.verts) @ rot.T
            if may_fill:
                # the fill's colours on its vertices the grid shows only (corners of the drawn triangles; with
                # their normals from the faces around them): the mouth interior is ~40 % of the mesh, a sliver of it
                # shows
                shown = torch.zeros(head.n_vertices, dtype=torch.bool)
                shown[t.tris[t.frags.pix_face].reshape(-1)] = True
                fidx = self._fill_idx[shown[self._fill_idx]]
                col = torch.zeros(head.n_vertices, 3)
                if len(fidx):
                    n_f = normals[fidx] if relit else self._normals_at(t.verts, fidx, "fill") @ rot.T
                    col[fidx] = fill.part_colors(head, self._mouth_base[fidx], t.verts[fidx], n_f,
                                                 self.coeffs0.light[0], c.light[0], fidx) * fill_v[fidx].unsqueeze(1)
                cols.append(col)
            if relit:
                n_s = relight.smooth_normals(head, normals)
                delta = relight.key_vertex_ratio(head, n_s, t.posed, flow.flow_triangles(head, False),
                                                 self.coeffs0.light[0], c.light[0],
                                                 self.albedo0 if albedo_changed else None,
                                                 head.albedo(c)[0] if albedo_changed else None)
                cols.append(relight.limit_face_exposure(head, delta, n_s))
                cols.append(self._skin_attr.unsqueeze(1))
        skin_v = self._model_skin_attrs(c, t)
        if skin_v is not None:
            cols.append(skin_v)
        allv = self._interpolate(torch.cat(cols, 1), t)
        base = allv[..., :4]
        k = 6 if turning else 4
        outer_w = allv[..., 4] if turning else None
        neck_t = allv[..., 5] if turning else None  # the target's lower-neck weight (0 off the mesh)
        mirror_v = None
        if self._has_mirror:
            mirror_v, k = allv[..., k:k + 6], k + 6
        extra = allv[..., k:]
        fill_a, hidden = base[..., 2], base[..., 3]
        any_fill = may_fill and bool(fill_a.max(initial=0) > 1e-3)
        cov = t.covered
        disp = np.where(cov[..., None], base[..., :2] - self._centres, 0.0).astype(np.float32)
        res = self.grid.res
        r = max(flow.FALLOFF, flow.FALLOFF_BELOW) * res
        ext = flow.pull_push_near(disp, cov.astype(np.float32), int(math.ceil(r)) + 2)
        dist = cv2.distanceTransform((~cov).astype(np.uint8), cv2.DIST_L2, 3)
        # hair and the head's surroundings follow over FALLOFF; below the chin (collar, shoulders) over less
        chin_y = float(t.grid_xy[self.head.lm68[8], 1])
        below = np.clip((np.arange(res, dtype=np.float32) + 0.5 - chin_y) / (0.06 * res), 0, 1)[:, None]
        rmap = (flow.FALLOFF + (flow.FALLOFF_BELOW - flow.FALLOFF) * below) * res
        fall = np.clip(1.0 - dist / rmap, 0.0, 1.0)
        fall = fall * fall * (3 - 2 * fall)
        disp = np.where(cov[..., None], disp, ext * fall[..., None]).astype(np.float32)
        layer_cover = layer_solid = None
        gl = self.grid_layers
        # the layered photo when the head moves (a turn, a driven placement); other edits warp the photo itself (a
        # static head layer over the plate would only add rounding at the matte's soft edge)
        if gl is not None and (placement is not None or not torch.equal(c.pose, self.coeffs0.pose)):
            sd, hit = gl.splat(c.pose[0], placement)
            disp = np.where(cov[..., None], disp, sd).astype(np.float32)
            # the layer's tears (where it moved apart from itself) closed, drawn opaque
            layer_cover, tears = photo_layers.close_tears(np.where(cov, 1.0, hit).astype(np.float32))
            layer_solid = np.maximum(hidden * cov, tears).astype(np.float32)
        if turning and self.unstretch:
            # the ears and scalp turn as a smooth shell: their flow low-passed (the face keeps its own)
            w = outer_w[..., None]
            disp = (disp * (1 - w) + cv2.GaussianBlur(disp, (0, 0), OUTER_SIGMA * res / flow.WORK_RES) * w
                    ).astype(np.float32)
            # what the photo saw edge-on, shown frontally by the turn, is folded in from the face side, not streaked
            head_px = cov if layer_cover is None else layer_cover > 0
            disp, _ = flow.unstretch_rows(disp, self.grid.step, float(t.grid_xy[self.head.lm68[30], 0]), head_px,
                                          avoid=self._eye_zone(t), keep_src=self._hair_src())
        if turning and gl is not None and layer_cover is not None and getattr(gl, "torso", None) is not None:
            # the clothing under the chin (collar, shirt, tie) stays where it is, in front of the lower neck turning
            # behind it (the mesh's lower neck turned part of the way and carried the collar along: a sheared collar
            # and tie knot); the face and jaw (neck weight 0) go in front of it
            w = gl.torso * np.where(cov, np.clip(neck_t / TORSO_NECK_W, 0.0, 1.0), 0.0)
            disp = (disp * (1.0 - w)[..., None]).astype(np.float32)
        # a light low-pass: no stair steps where the surface flow meets its continuation
        disp = cv2.GaussianBlur(disp, (0, 0), FLOW_SIGMA)
        # the box border never moves (the rest of the photo is a copy)
        disp *= self._border_window
        k = 0
        fill_rgb = None
        if may_fill and not any_fill:
            k = 3  # colours were interpolated but nothing shows
        if any_fill:
            # a touch of antialiasing on the fill's edge (the raster is binary per grid pixel)
            fill_a = cv2.GaussianBlur(fill_a, (0, 0), 0.6)
            fill_rgb = cv2.GaussianBlur(extra[..., 0:3], (0, 0), 0.6)
            if self.gray:  # a black-and-white photo gets grey teeth
                fill_rgb = np.repeat(fill_rgb.mean(-1, keepdims=True), 3, -1)
            k = 3
        ratio = None
        if relit:
            ratio = relight.feather_ratio(extra[..., k:k + 3], extra[..., k + 3])
        mirror = self._mirror(mirror_v, cov, hidden)
        f = FlowField(self.grid, disp, cov, hidden, fill_a, fill_rgb, ratio, t, *mirror, layer_cover=layer_cover,
                      layer_solid=layer_solid, extra=[])
        skin = self._model_skin(allv[..., -4:], f) if skin_v is not None else None
        if skin is not None:
            f.extra.append(skin)
        for hook in self.layer_hooks:
            lf = hook(self, c, f)
            if lf is not None:
                f.extra.append(lf)
        return f

    def _interpolate(self, attr: torch.Tensor, t: flow.TargetRaster) -> np.ndarray:
        """:func:`flow.interpolate_attrs` (V, C) → (R, R, C), by the compiled kernel where it runs (the same sums,
        ~5x faster: torch's gathers of a few thousand pixels' corners dominate it)."""
        f = t.frags
        if self.compiled_interp and f.face_id.shape[0] == 1 and not attr.requires_grad:
            _, h, w = f.face_id.shape
            out = fast_raster.interpolate(attr.numpy(), t.tris.numpy(), f.pix_face.numpy(), f.pix_bary.numpy(),
                                          f.pix_index.numpy(), h * w)
            if out is not None:
                return out.reshape(h, w, attr.shape[1])
        return flow.interpolate_attrs(attr, t, self.head)

    def _skin_setup(self):
        """Once per photo: the ramped weight of skin the photo never showed (fading in a few vertices inside it, as
        the mirror fill does) and the colour calibration of the model's skin (learned albedo × the fitted light ×
        gain) against this photo's visible face."""
        if not self._restore_skin():
            self._compute_skin()
        self._has_model_skin = bool(self._model_w.max() > 1e-3)
        self._skin_idx = (self._model_w > 0).nonzero(as_tuple=True)[0]
        self._subsets["skin"] = self._subset(self._skin_idx)

    def _restore_skin(self) -> bool:
        """:meth:`_skin_setup`'s arrays from the ``source_state`` given (:meth:`source_state`), when they fit."""
        st, nv = self._skin_state, self.head.n_vertices
        self._skin_state = None
        if not st:
            return False
        want = {"skin_n0z": (nv,), "skin_model_w": (nv,), "skin_cal": (3,), "skin_face_col": None}
        for k, shape in want.items():
            a = st.get(k)
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not np.isfinite(a).all() \
                    or (a.shape != shape if shape else a.shape not in ((3,), (0,))):
                return False
        self._n0z = torch.from_numpy(np.array(st["skin_n0z"]))
        self._model_w = torch.from_numpy(np.array(st["skin_model_w"]))
        self._model_cal = torch.from_numpy(np.array(st["skin_cal"]))
        self._face_col = np.array(st["skin_face_col"]) if st["skin_face_col"].size else None
        return True

    def _compute_skin(self) -> None:
        head, src = self.head, self.src
        skin = head.vertex_in(SKIN_PARTS)
        hid = (skin & ~src.visible).float().unsqueeze(1)
        a = head.adjacency()
        hs = hid
        for _ in range(flow.MIRROR_RAMP + 1):
            hs = torch.sparse.mm(a, hs)
        rot = flow.rotation_matrix(self.coeffs0.pose.reshape(1, 3))[0]
        n0 = self._unposed_normals(src.verts) @ rot.T
        for _ in range(4):  # smoothed normals (the fit's are noisy at the nose and the rim)
            n0 = torch.sparse.mm(a, n0)
        n0 = torch.nn.functional.normalize(n0, dim=-1, eps=1e-8)
        self._n0z = n0[:, 2].clone()
        # hidden skin (ramped in), and skin the photo saw only at a grazing angle: a turn stretches it into streaks
        grazing = ((UNSEEN_FACING - self._n0z) / (UNSEEN_FACING - GRAZING_FULL)).clamp(0, 1) * skin.float()
        self._model_w = torch.maximum(((hs[:, 0] - 0.5) * 2.0).clamp(0, 1) * hid[:, 0], grazing)
        # the face proper only: on the scalp a short crop of hair passes for skin (a pale patch on the temple)
        self._model_w[NARROW_FACE_VERTICES:] = 0.0
        col0 = self.albedo0 * relight.irradiance(n0, self.coeffs0.light[0]).clamp_min(0)
        face = torch.zeros_like(skin)
        face[:NARROW_FACE_VERTICES] = True
        sel = (src.visible & face & (n0[:, 2] > 0.6)).numpy()
        cal = np.ones(3, np.float32)
        if sel.sum() > 50:
            xy = np.round(src.photo_xy.numpy()[sel]).astype(int)
            h, w = self.image.shape[:2]
            ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
            if ok.sum() > 50:
                pix = self.image[xy[ok, 1], xy[ok, 0]].astype(np.float32) / 255.0
                mod = col0.numpy()[sel][ok]
                cal = (np.median(pix, 0) / np.maximum(np.median(mod, 0), 1e-3)).astype(np.float32)
        self._model_cal = torch.from_numpy(np.clip(cal, 0.05, 20.0))
        self._face_col = None
        # only where the photo shows skin there (hair over the temples, a beard, the collar keep their own pixels)
        if sel.sum() > 50:
            h, w = self.image.shape[:2]
            face_col = np.median(self.image[np.clip(xy[ok, 1], 0, h - 1), np.clip(xy[ok, 0], 0, w - 1)]
                                 .astype(np.float32), 0)
            self._face_col = face_col / 255.0
            sxy = np.round(src.src_xy.numpy()).astype(int)
            px = self.image[np.clip(sxy[:, 1], 0, h - 1), np.clip(sxy[:, 0], 0, w - 1)].astype(np.float32)
            d = np.sqrt(((px - face_col) ** 2).sum(1)) / max(float(np.linalg.norm(face_col)), 30.0)
            like = np.clip((SKIN_DIST_ZERO - d) / (SKIN_DIST_ZERO - SKIN_DIST_FULL), 0, 1).astype(np.float32)
            self._model_w = self._model_w * torch.from_numpy(like)

    def _eye_zone(self, t) -> np.ndarray:
        """(R, R) bool: the target's eyes and brows on the grid (their landmarks' hulls, grown by half an eye width)."""
        res = self.grid.res
        lm = t.grid_xy[self.head.lm68].numpy()
        zone = np.zeros((res, res), np.uint8)
        for a, b in ((36, 42), (42, 48), (17, 22), (22, 27)):
            cv2.fillConvexPoly(zone, cv2.convexHull(np.round(lm[a:b]).astype(np.int32)), 1)
        r = max(1, int(round(0.5 * float(np.linalg.norm(lm[39] - lm[36])))))
        return cv2.dilate(zone, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0

    def _model_skin_attrs(self, c: Coefficients, t) -> torch.Tensor | None:
        """Per-vertex (V, 4) premultiplied colour and weight of :meth:`_model_skin`, or None (no such skin):
        computed on the vertices that can take it only."""
        if torch.equal(c.pose, self.coeffs0.pose):
            return None
        if not hasattr(self, "_model_w"):
            self._skin_setup()
        if not self._has_model_skin:
            return None
        idx = self._skin_idx
        rot = flow.rotation_matrix(c.pose)[0]
        n = self._normals_of(t.verts, "skin") @ rot.T
        # only where the turn shows the surface more frontally than the photo did (there it would be stretched)
        gain = ((n[:, 2] - self._n0z[idx].clamp_min(0)) / STRETCH_FULL).clamp(0, 1)
        wv = self._model_w[idx] * torch.maximum(gain, (~self.src.visible[idx]).float())
        col = (self.albedo0[idx] * relight.irradiance(n, self.coeffs0.light[0]).clamp_min(0) * self._model_cal
               ).clamp(0, 1)
        if self.gray:
            col = col.mean(1, keepdim=True).expand(-1, 3)
        out = torch.zeros(self.head.n_vertices, 4)
        out[idx, :3] = col * wv.unsqueeze(1)
        out[idx, 3] = wv
        return out

    def _model_skin(self, v: np.ndarray, f: "FlowField"):
        """Revealed skin neither the photo nor its mirror point shows: the model's skin under the photo's light
        (colour matched to the visible face) instead of the rim stretched into a streak; a LayerFill, or None.
        ``v``: (R, R, 4) :meth:`_model_skin_attrs` interpolated on the grid. Computed on the grid's box around the
        pixels that carry it (plus :data:`SKIN_CROP_MARGIN`, as far as its blurs and the colour match reach: the
        same values; 0 beyond, as the whole grid gives there) — without ``skin_crop``: over the whole grid."""
        wc = v[..., 3] * f.covered
        res = self.grid.res
        (r0, r1, c0, c1) = (0, res, 0, res)
        if self.skin_crop:
            bb = flow.mask_bounds(wc > 0)
            if bb is None:
                return None
            m = SKIN_CROP_MARGIN
            r0, r1, c0, c1 = max(0, bb[0] - m), min(res, bb[1] + m + 1), max(0, bb[2] - m), min(res, bb[3] + m + 1)
        win = (slice(r0, r1), slice(c0, c1))
        wc, v, cov = wc[win], v[win], f.covered[win]
        mirror = None if f.mirror_alpha is None else f.mirror_alpha[win]
        a = wc
        if mirror is not None:
            a = a * (1.0 - np.clip(mirror, 0, 1))
        if float(a.max(initial=0)) < 1e-3:
            return None
        a = cv2.GaussianBlur(a.astype(np.float32), (0, 0), 0.8)
        # the colour where the antialiased alpha reaches: the premultiplied colour blurred alike (unblurred it is
        # 0 just outside the vertices that carry skin, and that sliver of alpha drew a dark, broken line on the
        # revealed cheek: ffhq 00002 / 00003 at +20°)
        col = (cv2.GaussianBlur((v[..., :3] * cov[..., None]).astype(np.float32), (0, 0), 0.8)
               / np.maximum(cv2.GaussianBlur(wc.astype(np.float32), (0, 0), 0.8), 1e-4)[..., None])
        rgb = col * self._skin_match(col, v[..., 3], a, cov, mirror, f.displacement[win], (c0, r0)) * a[..., None]
        if (r0, r1, c0, c1) == (0, res, 0, res):
            return photo_layers.LayerFill(alpha=a, rgb=rgb.astype(np.float32))
        full_a = np.zeros((res, res), np.float32)
        full_a[win] = a
        full_rgb = np.zeros((res, res, 3), np.float32)
        full_rgb[win] = rgb
        return photo_layers.LayerFill(alpha=full_a, rgb=full_rgb)

    def _hair_src(self) -> np.ndarray | None:
        """(R, R) bool on the photo's grid: hair (a beard, a hat) in the head layer — what grabCut itself took for
        the head (not the background the fitted mesh's rim reaches over), coloured as this photo's hair beyond the
        face rather than its skin, and connected to that hair. A stretched band of it is not folded
        (:func:`flow.unstretch_rows`' ``keep_src``). None: unknown (no layers, too little face or hair to tell)."""
        hs = getattr(self, "_hair_src_cache", None)
        if hs is not None:
            return hs if hs.size else None
        gl, L = self.grid_layers, self.layers
        if gl is None or L is None:
            return None
        g = self.grid
        photo = self._grid_photo()
        # skin or hair by this photo's own colours (Lab histograms): skin from inside the face's outline, hair from
        # the head layer off the fitted mesh above the chin (blond hair is as bright as the face, a cheek in shadow
        # darker: no fixed distance from the face's colour tells them apart)
        lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)  # float input: L 0..100, a/b about -128..127
        q = np.stack([lab[..., 0] / 100.0, (lab[..., 1] + 64.0) / 128.0, (lab[..., 2] + 64.0) / 128.0], -1)
        bins = np.clip((q * HAIR_BINS).astype(np.int64), 0, HAIR_BINS - 1)
        code = (bins[..., 0] * HAIR_BINS + bins[..., 1]) * HAIR_BINS + bins[..., 2]
        lm = g.to_grid(self.src.photo_xy[self.head.lm68].numpy())
        face = np.zeros((g.res, g.res), np.uint8)
        pts = np.concatenate([lm[0:17], lm[17:27]])
        c0 = lm[27:36].mean(0)  # the nose: the face's inner 80 % (hair lies over the cheeks' rim)
        cv2.fillConvexPoly(face, cv2.convexHull(np.round(c0 + 0.8 * (pts - c0)).astype(np.int32)), 1)
        face = face.astype(bool) & gl.src_covered
        rows = np.arange(g.res)[:, None] + 0.5
        hair = (gl.cut > 0.5) & ~cv2.dilate(gl.src_covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        hair &= rows < float(lm[8, 1])
        nb = HAIR_BINS ** 3
        if face.sum() < 50 or hair.sum() < 50:
            self._hair_src_cache = np.zeros(0, bool)
            return None
        hs_ = np.bincount(code[face], minlength=nb) / face.sum()
        hh_ = np.bincount(code[hair], minlength=nb) / hair.sum()
        not_skin = hh_[code] > HAIR_ODDS * hs_[code]
        hs = not_skin & (gl.cut > 0.5) & (gl.matte > 0.5)
        # ... and connected to the hair beyond the face (a shadow under the jaw, a dark collar are not hair)
        n, comp = cv2.connectedComponents(hs.astype(np.uint8))
        if n > 1:
            keep = np.zeros(n, bool)
            keep[np.unique(comp[hs & hair])] = True
            keep[0] = False
            hs = keep[comp]
        self._hair_src_cache = hs
        return hs

    def _grid_photo(self) -> np.ndarray:
        """The photo on the work grid (float32 RGB in [0, 1], one value per grid pixel, area-averaged)."""
        gp = getattr(self, "_grid_photo_cache", None)
        if gp is None:
            g = self.grid
            m = np.array([[g.step, 0.0, g.origin[0] + 0.5 * g.step - 0.5],
                          [0.0, g.step, g.origin[1] + 0.5 * g.step - 0.5]])
            flags = (cv2.INTER_AREA if g.step > 1.5 else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
            gp = cv2.warpAffine(self.image, m, (g.res, g.res), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            gp = self._grid_photo_cache = gp.astype(np.float32) / 255.0
        return gp

    def _skin_match(self, col: np.ndarray, w: np.ndarray, a: np.ndarray, covered: np.ndarray,
                    mirror_alpha: np.ndarray | None, disp: np.ndarray, at: tuple[int, int] = (0, 0)) -> np.ndarray:
        """(h, w, 3) gain that matches the model's skin to the photo's own skin around it: the ratio of the warped
        photo to the model's colour on a ring of skin just outside the fill, continued smoothly inside it (the far
        cheek of a 3/4 view lies in shadow; the model's light alone filled it pale). 1 where there is no ring. The
        arrays are a window of the grid whose first column and row are ``at``."""
        h, wd = a.shape
        ones = np.ones((h, wd, 3), np.float32)
        core = (a > SKIN_MATCH_CORE).astype(np.uint8)
        if not core.any() or self._face_col is None:
            return ones
        k = SKIN_MATCH_RING
        near = cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))) > 0
        ring = near & (a < SKIN_MATCH_OUTSIDE) & covered
        if mirror_alpha is not None:
            ring &= mirror_alpha < SKIN_MATCH_OUTSIDE
        if ring.sum() < SKIN_MATCH_MIN_PX:
            return ones
        # the photo warped by the edit, on the ring's pixels only (the gain is read there)
        ry, rx = np.nonzero(ring)
        step = np.float32(self.grid.step)
        mx = (rx + at[0]).astype(np.float32) + disp[ry, rx, 0] / step
        my = (ry + at[1]).astype(np.float32) + disp[ry, rx, 1] / step
        warped = cv2.remap(self._grid_photo(), mx[None], my[None], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)[0]
        fc = self._face_col
        d = np.sqrt(((warped - fc) ** 2).sum(-1)) / max(float(np.linalg.norm(fc)), 30.0 / 255.0)
        skin = d < SKIN_DIST_ZERO  # skin only (hair, a beard, the background beside the cheek say nothing)
        if skin.sum() < SKIN_MATCH_MIN_PX:
            return ones
        ry, rx, warped = ry[skin], rx[skin], warped[skin]
        ring = np.zeros_like(ring)
        ring[ry, rx] = True
        known = w > 1e-3
        col_ext = flow.pull_push_near(np.where(known[..., None], col, 0).astype(np.float32),
                                      known.astype(np.float32), 2 * k)
        g = np.zeros((h, wd, 3), np.float32)
        g[ry, rx] = np.clip(warped / np.maximum(col_ext[ry, rx], 1e-3), *SKIN_MATCH_RANGE)
        g = flow.pull_push_near(g, ring.astype(np.float32), 4 * k, outside=1.0)
        g = cv2.GaussianBlur(g, (0, 0), SKIN_MATCH_SIGMA)
        return np.clip(g, *SKIN_MATCH_RANGE).astype(np.float32)

    def _normals_of(self, verts: torch.Tensor, which: str) -> torch.Tensor:
        """Unposed vertex normals of a subset of the vertices (``"fill"``: the mouth fill's, ``"skin"``: the model
        skin's), from the faces around them only; the whole mesh's when those are at hand."""
        idx, faces = self._subsets[which]
        if verts is self._normals_for:
            return self._normals[idx]
        hit = self._sub_normals.get(which)
        if hit is not None and hit[0] is verts:
            return hit[1]
        tv = verts[faces]
        fn = torch.linalg.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
        acc = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
        n = torch.nn.functional.normalize(acc[idx], dim=-1, eps=1e-8)
        self._sub_normals[which] = (verts, n)
        return n

    def _normals_at(self, verts: torch.Tensor, idx: torch.Tensor, which: str) -> torch.Tensor:
        """Unposed vertex normals of the vertices ``idx`` (some of the ``which`` subset's, see :meth:`_normals_of`)
        from the faces around them only."""
        if verts is self._normals_for:
            return self._normals[idx]
        faces = self._subsets[which][1]
        need = torch.zeros(self.head.n_vertices, dtype=torch.bool)
        need[idx] = True
        faces = faces[need[faces].any(1)]
        tv = verts[faces]
        fn = torch.linalg.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
        acc = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
        return torch.nn.functional.normalize(acc[idx], dim=-1, eps=1e-8)

    def _subset(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertex ids, the head's triangles touching them) for :meth:`_normals_of`."""
        mask = torch.zeros(self.head.n_vertices, dtype=torch.bool)
        mask[idx] = True
        tri = self.head.triangles
        return idx, tri[mask[tri].any(1)].contiguous()

    def _unposed_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """Vertex normals of the unposed mesh, kept while the expression stays (a pose or light drag)."""
        if verts is not self._normals_for:
            self._normals = self.head.vertex_normals(verts.unsqueeze(0))[0]
            self._normals_for = verts
        return self._normals

    def _mirror(self, mv: np.ndarray | None, cov: np.ndarray, hidden: np.ndarray):
        """Mirror-fill fields on the grid (see :meth:`flow.SourceHead._mirror_fill`) from the interpolated
        (R, R, 6) mirror attributes, or Nones. Computed on the box around the pixels that take it (plus the reach of
        its blur and continuation; beyond: displacement 0, alpha 0, gain 1, as over the whole grid) — the whole grid
        without ``skin_crop``."""
        if mv is None or float(hidden.max(initial=0)) < 0.05:  # (hidden: 0 off the head)
            return None, None, None
        w = mv[..., 2]
        res = self.grid.res
        r0, r1, c0, c1 = 0, res, 0, res
        if self.skin_crop:
            bb = flow.mask_bounds(w > 0)
            if bb is None:
                return None, None, None
            m = MIRROR_CROP_MARGIN
            r0, r1, c0, c1 = max(0, bb[0] - m), min(res, bb[1] + m + 1), max(0, bb[2] - m), min(res, bb[3] + m + 1)
        win = (slice(r0, r1), slice(c0, c1))
        mv, w, cov = mv[win], w[win], cov[win]
        if float(w.max(initial=0)) < 1e-3:
            return None, None, None
        known = (w > 1e-4) & cov
        d = np.where(known[..., None], mv[..., :2] - self._centres[win], 0.0).astype(np.float32)
        # the displacement is continued around the filled area (the upsampling reads there; the gain can be 1)
        d = flow.pull_push_near(d, known.astype(np.float32), 4)
        a = (cv2.GaussianBlur(w, (0, 0), 0.8) * cov).astype(np.float32)
        gain = np.where(known[..., None], mv[..., 3:6], 1.0).astype(np.float32)
        if (r0, r1, c0, c1) == (0, res, 0, res):
            return d, a, gain
        full_d, full_a, full_g = (np.zeros((res, res, 2), np.float32), np.zeros((res, res), np.float32),
                                  np.ones((res, res, 3), np.float32))
        full_d[win], full_a[win], full_g[win] = d, a, gain
        return full_d, full_a, full_g

    # ----------------------------------------------------------------------------------------- render
    def render(self, coeffs: Coefficients, max_side: int | None = None, placement: np.ndarray | None = None,
               offsets: np.ndarray | None = None) -> PhotoFrame:
        """The photo edited to ``coeffs`` (all target values). ``max_side`` asks for a smaller image (drag preview).
        ``placement``: an optional (2, 3) affine of photo px that moves and scales the head in the frame (driving).
        ``offsets``: an optional (V, 2) photo-px shift of each projected head vertex before the placement (driving:
        the part of a filmed face's landmark motion the model's shapes do not reach)."""
        h, w = self.image.shape[:2]
        side = max(h, w) if max_side is None else min(max(h, w), max(1, int(max_side)))
        small = side * side * min(h, w) / max(h, w) <= SMALL_FRAME_PX
        workers = 1 if small or not self.band_threads else runtime.usable_threads(torch.get_num_threads())
        with self._lock, _one_thread():  # (see SMALL_FRAME_PX)
            return self._render(coeffs, max_side, placement, offsets, workers)

    @torch.no_grad()
    def _render(self, coeffs: Coefficients, max_side: int | None, placement: np.ndarray | None = None,
                offsets: np.ndarray | None = None, workers: int = 1) -> PhotoFrame:
        h, w = self.image.shape[:2]
        if max_side is not None and int(max_side) < 1:
            raise PhotoRenderError(f"max_side must be a positive number of pixels, got {max_side}")
        scale = 1.0 if max_side is None else min(1.0, int(max_side) / max(h, w))
        base = self._photo_at(scale)
        oh, ow = base.shape[:2]
        sx, sy = ow / w, oh / h  # exact per-axis scale of the output
        c = self._check(coeffs)
        if placement is not None and np.allclose(placement, [[1, 0, 0], [0, 1, 0]], atol=1e-6):
            placement = None
        if offsets is not None and not np.any(offsets):
            offsets = None
        unchanged = self.fast_path and placement is None and offsets is None and _same(c, self.coeffs0)
        if max_side is not None and self.preview_res is not None and not unchanged:
            p = self.preview_renderer()
            p.fast_path = self.fast_path
            return p._render(c, max_side, placement, offsets, workers)
        eye_orig = None
        if eyes.eye_expression_change(c, self.coeffs0):  # the eye layer edits the photo, the flow the head
            eye_orig = base  # the head layer's colour takes the edited eyes too (see _compose_layers)
            base = self.eyes.apply_kept(base, c, scale)  # (read here only: out is a copy of it)
            c = eyes.flow_coeffs(c, self.coeffs0)
        if self.fast_path and placement is None and offsets is None and _same(c, self.coeffs0):
            t = self._frame_geometry(c)
            lm = t[1][self.model.lm68.numpy()] * np.array([sx, sy])
            return PhotoFrame(base.copy(), lm.astype(np.float32), t[0], scale)
        f = self.flow_field(c, placement, offsets)
        out = base.copy()
        g = self.grid
        # affected part of the grid: moved, filled or relit pixels (plus a margin), as output pixels
        active = _any_channel(np.abs(f.displacement) > _SKIP_EPS)
        if f.fill_rgb is not None:
            active |= f.fill_alpha > 1e-3
        if f.mirror_alpha is not None:
            active |= f.mirror_alpha > 1e-3
        if f.ratio is not None:
            active |= _any_channel(np.abs(f.ratio - 1) > 1e-3)
        for lf in f.extra:
            active |= lf.alpha > 1e-3
        if f.layer_cover is not None and (placement is not None or not torch.equal(c.pose, self.coeffs0.pose)):
            # a turn or a move takes the whole head layer along and reveals the plate where it was
            active |= (self.grid_layers.matte > photo_layers.MIN_ALPHA) | ((f.layer_cover > 0) & ~f.covered)
        bb = flow.mask_bounds(active)
        if bb is not None:
            gx0, gx1, gy0, gy1 = bb[2] - 2, bb[3] + 3, bb[0] - 2, bb[1] + 3
            x0 = int(np.clip(np.floor((g.origin[0] + gx0 * g.step) * sx), 0, ow))
            x1 = int(np.clip(np.ceil((g.origin[0] + gx1 * g.step) * sx), 0, ow))
            y0 = int(np.clip(np.floor((g.origin[1] + gy0 * g.step) * sy), 0, oh))
            y1 = int(np.clip(np.ceil((g.origin[1] + gy1 * g.step) * sy), 0, oh))
            if x1 > x0 and y1 > y0:
                # a drag preview (max_side given) resamples bilinearly, the sharp frame bicubically
                interp = cv2.INTER_LINEAR if max_side is not None else REMAP_INTERP
                view = out[y0:y1, x0:x1]  # a copy of base: the layered head is composed in place there
                region = self._compose(base, f, (x0, y0, x1, y1), sx, sy, interp, eye_orig, view, workers)
                if region is not view:
                    view[...] = region
        lm = f.target.photo_xy[self.model.lm68].numpy() * np.array([sx, sy])
        return PhotoFrame(out, lm.astype(np.float32), f.target.posed.numpy().astype(np.float32), scale)

    def preview_renderer(self) -> "PhotoRenderer":
        """The renderer drag previews use (work grid ``preview_res``); made once (about half the constructor's
        time), call it ahead (e.g. from the thread that made this renderer) to keep the first drag frame fast."""
        if self.preview_res is None:
            return self
        if self._preview is None:
            self._preview = PhotoRenderer(self.fit, self.model, self.head, work_res=self.preview_res,
                                          preview_res=None, layers=self.layers or False)
            self._preview.layer_hooks = self.layer_hooks  # the same list: hooks added later reach previews too
            self.turn_range()  # this photo's believable turn, for the status bar (measured on the preview grid)
        return self._preview

    @torch.no_grad()
    def turn_range(self, threshold: float = REVEAL_LIMIT, step: float = 5.0, max_deg: float = 40.0
                   ) -> dict[str, tuple[float, float]]:
        """This photo's believable turn, per axis and direction: the turn (degrees from the photo's own pose, up to
        ``max_deg``) at which the surface the photo never showed well — hidden, or seen at a grazing angle (camera
        facing below ``UNSEEN_FACING``, fading in) — covers ``threshold`` of the turned head (above the neck;
        measured on the drag-preview grid every ``step``, interpolated). A pitch also counts the neck below that: it
        bends against its fixed base, so lifting the chin shows the neck the chin hid and either way stretches
        parts of the neck (area beyond ``NECK_STRETCH`` x the photo's, fading in: drawn from too few photo
        pixels, the neck and collar tear); a yaw twists the neck about its own axis and keeps the head-only count.
        Cached; :func:`limits_note` and :func:`turn_limits` use it from then on."""
        got = _range_of(self.fit)
        if got is not None:
            return got
        r = self.preview_renderer() if self.preview_res is not None else self
        rot = flow.rotation_matrix(self.coeffs0.pose.reshape(1, 3))[0]
        n0 = r.head.vertex_normals(r.src.verts.unsqueeze(0))[0] @ rot.T
        head_v = (r.src.verts[:, 1] > flow.NECK_FREE_Y + 2.0).float()
        skin = r.head.vertex_in(SKIN_PARTS).float()
        unseen = ((UNSEEN_FACING - n0[:, 2]) / UNSEEN_FACING).clamp(0, 1)
        unseen = torch.maximum(unseen, (~r.src.visible).float()) * skin
        neck_v = skin * (1.0 - head_v)
        tris = r.head.triangles[r.head.triangle_in(SKIN_PARTS)]
        flat = tris.reshape(-1)
        area0 = _tri_areas(r.grid.to_grid(r.src.photo_xy), tris).clamp_min(1e-4)
        n_tris = torch.zeros(len(head_v)).index_add_(0, flat, torch.ones(flat.numel())).clamp_min(1.0)
        out = {}
        for i, axis in ((0, "yaw"), (1, "pitch")):
            lims = []
            for sign in (-1.0, 1.0):
                prev_deg, prev_share, lim = 0.0, 0.0, max_deg
                k = 1
                while k * step <= max_deg + 1e-6:
                    c = self.coeffs0.clone()
                    c.pose[0, i] += math.radians(sign * k * step)
                    t = flow.rasterize_target(r.head, r.proj, r.src, c, r.grid, r.neck)
                    bad = unseen * head_v
                    if axis == "pitch":
                        grow = _tri_areas(t.grid_xy, tris) / area0
                        st = ((grow - NECK_STRETCH) / NECK_STRETCH).clamp(0, 1).repeat_interleave(3)
                        st = torch.zeros(len(head_v)).index_add_(0, flat, st) / n_tris
                        bad = bad + torch.maximum(unseen, st) * neck_v
                    v = flow.interpolate_attrs(torch.stack([bad, head_v], 1), t, r.head)
                    share = float(v[..., 0].sum()) / max(1.0, float(v[..., 1].sum()))
                    if share > threshold:
                        lim = prev_deg + (k * step - prev_deg) * (threshold - prev_share) / max(share - prev_share,
                                                                                                1e-6)
                        break
                    prev_deg, prev_share = k * step, share
                    k += 1
                lims.append(sign * max(lim, step))
            out[axis] = (round(lims[0], 1), round(lims[1], 1))
        _store_range(self.fit, out)
        return out

    def _frame_geometry(self, c: Coefficients):
        src = self.src
        return src.posed.numpy().astype(np.float32), src.photo_xy.numpy()

    def _compose(self, base: np.ndarray, f: FlowField, box, sx: float, sy: float,
                 interp: int = REMAP_INTERP, eye_orig: np.ndarray | None = None, dst: np.ndarray | None = None,
                 workers: int = 1) -> np.ndarray:
        """The edited ``box`` of the output; ``dst`` (optional): a writable copy of ``base[box]`` the layered head
        is composed into (then returned); ``workers``: threads sharing the head layer's bands (:func:`_run_bands`)."""
        x0, y0, x1, y1 = box
        g = f.grid
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

        def to_grid(bx0, by0):
            """output pixel index (i, j) → grid index coordinates, for a sub-box starting at (bx0, by0)."""
            return np.array([[1.0 / (sx * g.step), 0, ((bx0 + 0.5) / sx - g.origin[0]) / g.step - 0.5],
                             [0, 1.0 / (sy * g.step), ((by0 + 0.5) / sy - g.origin[1]) / g.step - 0.5]])

        planes_of: dict = {}  # id(array) -> (array, its planes): split once a frame, not once a band

        def up(a, sub, border=0.0):
            bx0, by0, bx1, by1 = sub
            m, size = to_grid(bx0, by0), (bx1 - bx0, by1 - by0)
            if a.ndim == 3:  # one plane at a time: cv2's multi-channel float warpAffine is ~8x slower (and coarser)
                got = planes_of.get(id(a))
                if got is None or got[0] is not a:
                    got = planes_of[id(a)] = (a, [np.ascontiguousarray(a[..., i], dtype=np.float32)
                                                  for i in range(a.shape[-1])])
                return cv2.merge([up(q, sub, border) for q in got[1]])
            return cv2.warpAffine(np.ascontiguousarray(a, dtype=np.float32), m, size, flags=flags,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=border)

        # the sampling map: each output pixel's own position plus the upsampled displacement. The displacement is
        # 0 outside the grid (constant border), so pixels beyond the grid's last centre sample themselves (an
        # upsampled *absolute* map would fade to the border value 0 there: a line of pixels from the photo's corner).
        # One plane at a time: cv2's two-channel float warpAffine is ~8x slower than two single-channel ones.
        if self.layers is not None and f.layer_cover is not None:
            region = self._compose_layers(base, f, box, sx, sy, interp, up, eye_orig, dst, workers)
        else:
            mx = up(f.displacement[..., 0] * np.float32(sx), box)
            my = up(f.displacement[..., 1] * np.float32(sy), box)
            mx += np.arange(x0, x1, dtype=np.float32)[None, :]
            my += np.arange(y0, y1, dtype=np.float32)[:, None]
            region = cv2.remap(base, mx, my, interp, borderMode=cv2.BORDER_REFLECT101)
        if f.mirror_alpha is not None:
            mgain = np.power(np.maximum(f.mirror_gain, 1e-6), relight.RATIO_EXPONENT)
            mdisp = f.mirror_disp * np.array([sx, sy], np.float32)
            for sub in self._boxes(f.mirror_alpha > 1e-3, g, box, sx, sy):
                bx0, by0, bx1, by1 = sub
                mm = up(mdisp, sub)
                mm[..., 0] += np.arange(bx0, bx1, dtype=np.float32)[None, :]
                mm[..., 1] += np.arange(by0, by1, dtype=np.float32)[:, None]
                alt = cv2.remap(base, mm, None, interp, borderMode=cv2.BORDER_REFLECT101)
                gain = up(mgain, sub, 1.0)
                a2 = up(f.mirror_alpha, sub)
                self._fill_into(region[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0], a2,
                                alt.astype(np.float32) * gain * a2[..., None])
        for lf in f.extra:
            region = self._compose_fill(base, lf, g, box, sx, sy, interp, up, region)
        if f.ratio is not None:
            sub = self._sub_box(_any_channel(np.abs(f.ratio - 1) > 1e-3), g, box, sx, sy)
            if sub is not None:
                r = up(np.power(np.maximum(f.ratio, 1e-6), relight.RATIO_EXPONENT * relight.RELIGHT_EXPONENT), sub,
                       1.0)
                a0, b0, a1, b1 = sub[0] - x0, sub[1] - y0, sub[2] - x0, sub[3] - y0
                region[b0:b1, a0:a1] = relight.apply_ratio_luminance(region[b0:b1, a0:a1], r, self.skin)
        if f.fill_rgb is not None:
            sub = self._sub_box(f.fill_alpha > 1e-3, g, box, sx, sy)
            if sub is not None:
                k = g.step * max(sx, sy)  # output px per grid px
                if k > FILL_SHARPEN_FROM:
                    # large output: the fill's edge (lips over teeth) drawn at photo resolution, not with the grid's
                    # blur: the grid's coverage smoothed a little more (its 0.5 contour loses the grid's stair
                    # steps), upsampled, then steepened around 0.5
                    a = up(cv2.GaussianBlur(f.fill_alpha, (0, 0), 0.8), sub)[..., None]
                    rgb = up(f.fill_rgb * 255.0, sub) / np.maximum(up(f.fill_alpha, sub)[..., None], 1e-3)
                    a = np.clip((a - 0.5) * min(k, FILL_EDGE_GAIN_MAX) + 0.5, 0.0, 1.0)
                    col = rgb * a
                else:
                    a = up(f.fill_alpha, sub)[..., None]
                    col = up(f.fill_rgb * 255.0, sub)
                a0, b0, a1, b1 = sub[0] - x0, sub[1] - y0, sub[2] - x0, sub[3] - y0
                reg = region[b0:b1, a0:a1].astype(np.float32)
                region[b0:b1, a0:a1] = np.clip(reg * (1 - a) + col + 0.5, 0, 255).astype(np.uint8)
        return region

    def _layers_at(self, base_img: np.ndarray, sx: float, sy: float):
        """(plate, fg RGBA, (x0, y0)) of the layers in output pixels (the photo scaled by sx, sy)."""
        oh, ow = base_img.shape[:2]
        key = (ow, oh)
        hit = self._layer_scaled.get(key)
        if hit is not None:
            return hit
        L = self.layers
        x0, y0, x1, y1 = L.box
        if sx == 1.0 and sy == 1.0:
            out = (L.plate, L.fg, (x0, y0))
        else:
            ox0, oy0 = int(round(x0 * sx)), int(round(y0 * sy))
            ox1, oy1 = max(ox0 + 1, int(round(x1 * sx))), max(oy0 + 1, int(round(y1 * sy)))
            size = (ox1 - ox0, oy1 - oy0)
            # resized as differences from the photo, onto the scaled photo itself: exact where the layers are the
            # photo (no seam at the layers' box in a drag preview)
            photo = self.image[y0:y1, x0:x1].astype(np.float32)
            base = base_img[oy0:oy1, ox0:ox1].astype(np.float32)
            if base.shape[:2] != (size[1], size[0]):
                base = cv2.resize(self.image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32)

            def rs(a):
                return cv2.resize(a, size, interpolation=cv2.INTER_AREA)

            plate = np.clip(base + rs(L.plate.astype(np.float32) - photo) + 0.5, 0, 255).astype(np.uint8)
            fg = np.empty((size[1], size[0], 4), np.uint8)
            fg[..., :3] = np.clip(base + rs(L.fg[..., :3].astype(np.float32) - photo) + 0.5, 0, 255)
            fg[..., 3] = rs(L.fg[..., 3])
            out = (plate, fg, (ox0, oy0))
        self._layer_scaled = {key: out}
        return out

    def _compose_layers(self, base, f: FlowField, box, sx, sy, interp, up, eye_orig=None, dst=None,
                        workers: int = 1) -> np.ndarray:
        """Plate, then the head layer resampled once through the sampling map (output px) and composed by its
        warped matte × the grid's cover, the revealed surface opaque. Only where the head layer can show (the
        upsampled cover or revealed surface is > 0) is it resampled and blended; elsewhere the result is the plate
        (what the full composition gives there, exactly: its blend weight is 0): bands of rows, each over the
        columns the layer can reach (:meth:`_sub_bands`), the sampling map and the cover upsampled there only."""
        x0, y0, x1, y1 = box
        plate, fg, (lx, ly) = self._layers_at(base, sx, sy)
        ph, pw = plate.shape[:2]
        edit = None
        if eye_orig is not None and eye_orig.shape == base.shape:
            # an eye edit: the unedited layer's padded copy (and 2x copy) kept, the eyes' change patched into a
            # working copy of it (editing and padding the whole layer each frame cost a driven 1 MP frame ~2.5 ms)
            pfg, (qx, qy) = self._fg_beyond(fg, lx, ly, base.shape[:2], max(sx, sy)) if EYE_PATCH else (None, (0, 0))
            edit = self._eye_edit(fg, pfg, (qx, qy), lx, ly, base, eye_orig, max(sx, sy)) if EYE_PATCH else None
            if edit is None:  # (not patchable: the whole layer edited)
                fg = self._eye_edited_fg(fg, lx, ly, base, eye_orig)
            elif not edit:  # the eyes changed nothing in the layer
                edit = None
        fg2 = None
        if edit is not None:
            fg2 = self._fg_2x(fg, pfg) if interp == cv2.INTER_CUBIC and HEAD_REMAP_2X and EYE_PATCH_2X else None
            fg = pfg
            if fg2 is not None:
                fg2 = self._eye_patched(fg2, edit, True)
            else:
                fg = self._eye_patched(pfg, edit, False)
        else:
            src_fg = fg
            # beyond a photo border that cuts through the head, the head layer goes on (its colour reflected, as the
            # grid's matte is: GridLayers.off_photo_px): a turn brings the photo's own content into the frame there
            fg, (qx, qy) = self._fg_beyond(fg, lx, ly, base.shape[:2], max(sx, sy))
            fg2 = self._fg_2x(src_fg, fg) if interp == cv2.INTER_CUBIC and HEAD_REMAP_2X else None
        # the plate stays (outside the layers' box: the photo)
        region = base[y0:y1, x0:x1].copy() if dst is None else dst  # dst: a copy of base's box to compose into
        ax0, ay0 = max(x0, lx), max(y0, ly)
        ax1, ay1 = min(x1, lx + pw), min(y1, ly + ph)
        if ax1 > ax0 and ay1 > ay0:
            region[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = plate[ay0 - ly:ay1 - ly, ax0 - lx:ax1 - lx]
        # the revealed surface (opaque) is small: its rows and columns only
        solid = None
        sb = self._sub_box(f.layer_solid > 0, f.grid, box, sx, sy)
        if sb is not None:
            sx0, sy0, sx1, sy1 = sb
            solid = np.clip(up(f.layer_solid, sb) * np.float32(1.5), 0, 1)  # rows sy0:sy1, columns sx0:sx1
        # the sampling map (see _compose) in the layer's pixels: the upsampled displacement plus each pixel's own
        # column / row there; on the 2x layer (fg2) pixel 2u + 2·pad + 0.5 is fg's u (pixel centres at integers, the
        # zero pad): the factor 2 goes into the grid's displacement and the box's columns / rows, once a frame
        k2 = 2 if fg2 is not None else 1
        off = np.float32(2 * _FG2_PAD + 0.5) if fg2 is not None else np.float32(0)
        dx = f.displacement[..., 0] * np.float32(k2 * sx)
        dy = f.displacement[..., 1] * np.float32(k2 * sy)
        cols = np.arange(x0 - lx + qx, x1 - lx + qx, dtype=np.float32) * np.float32(k2) + off
        rows = np.arange(y0 - ly + qy, y1 - ly + qy, dtype=np.float32) * np.float32(k2) + off

        def band(sub):
            bx0, by0, bx1, by1 = sub
            # the sampling map and the cover: in this band only
            mx = up(dx, sub)
            mx += cols[None, bx0 - x0:bx1 - x0]
            my = up(dy, sub)
            my += rows[by0 - y0:by1 - y0, None]
            if fg2 is not None:
                head = cv2.remap(fg2, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0, 0))
            else:
                head = cv2.remap(fg, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
            cover = up(f.layer_cover, sub)
            view = region[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
            # region·(1 − a) + head·a, a = head alpha × cover (or the opaque part), in one compiled pass
            if COMPILED_BLEND and fast_raster.blend_over(head, cover, view, solid,
                                                         (0, 0) if solid is None else (sy0 - by0, sx0 - bx0)):
                return
            a = cv2.multiply(cv2.extractChannel(head, 3), cover, scale=1.0 / 255.0, dtype=cv2.CV_32F)
            if solid is not None:  # where the band meets the opaque part's box
                r0, r1, q0, q1 = max(by0, sy0), min(by1, sy1), max(bx0, sx0), min(bx1, sx1)
                if r1 > r0 and q1 > q0:
                    part = a[r0 - by0:r1 - by0, q0 - bx0:q1 - bx0]
                    np.maximum(part, solid[r0 - sy0:r1 - sy0, q0 - sx0:q1 - sx0], out=part)
            # the same with OpenCV (the numpy float blend was ~40 % of a 2048 px frame)
            view[...] = cv2.blendLinear(cv2.cvtColor(head, cv2.COLOR_RGBA2RGB), view, a, 1.0 - a)

        _run_bands(band, self._boxes((f.layer_cover > 0) | (f.layer_solid > 0), f.grid, box, sx, sy), workers)
        return region

    def prepare_sharp(self) -> None:
        """Make ahead what the first full-size frame would make (the head layer's 2x upsampling, ~15 ms for 1 MP):
        the editor's open job calls it, so the first sharp frame after a drag does not pay it."""
        if self.layers is not None and HEAD_REMAP_2X:
            with self._lock:
                _, fg, (lx, ly) = self._layers_at(self.image, 1.0, 1.0)
                self._fg_2x(fg, self._fg_beyond(fg, lx, ly, self.image.shape[:2], 1.0)[0])

    def _fg_beyond(self, fg: np.ndarray, lx: int, ly: int, shape, scale: float):
        """(the head layer ``fg`` (output px, at (lx, ly)) padded by its own pixels reflected across the photo's
        border where that border cuts through the head, (left, top) pad): ``fg`` itself, (0, 0) when none does.
        Kept for the layer it was made from."""
        gl = self.grid_layers
        d = 0.0 if gl is None else float(getattr(gl, "off_photo_px", 0.0))
        if d <= 0:
            return fg, (0, 0)
        got = self._fg_pad
        if got is not None and got[0] is fg:
            return got[1], got[2]
        fh, fw = fg.shape[:2]
        p = int(math.ceil(d * scale)) + 2
        sl, st, sr, sb = gl.off_photo_sides
        pads = (p if st and ly == 0 else 0, p if sb and ly + fh == shape[0] else 0,
                p if sl and lx == 0 else 0, p if sr and lx + fw == shape[1] else 0)
        if not any(pads):
            return fg, (0, 0)
        # mirrored about a line _FG_EDGE_SKIP px inside, the outermost pixels too: a photo's outermost pixels are
        # often a compression or scanning edge (a dark or light line), else drawn as a line where the head moved in
        b = [_FG_EDGE_SKIP if q and n > 4 * _FG_EDGE_SKIP else 0 for q, n in zip(pads, (fh, fh, fw, fw))]
        out = cv2.copyMakeBorder(fg[b[0]:fh - b[1], b[2]:fw - b[3]], *(q + e for q, e in zip(pads, b)),
                                 cv2.BORDER_REFLECT_101)
        # the pad only where the grid's head layer goes on (not the face's or the neck's mirror image: transparent
        # there, the plate shows, as the mesh's own flow beyond the photo showed it before)
        g = self.grid
        k = 1.0 / (scale * g.step)
        ox, oy = lx - pads[2], ly - pads[0]
        m = np.array([[k, 0, ((ox + 0.5) / scale - g.origin[0]) / g.step - 0.5],
                      [0, k, ((oy + 0.5) / scale - g.origin[1]) / g.step - 0.5]])
        keep = cv2.warpAffine((gl.matte > photo_layers.MIN_ALPHA).astype(np.float32), m,
                              (out.shape[1], out.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        keep[pads[0]:pads[0] + fh, pads[2]:pads[2] + fw] = 1.0
        out[..., 3] = np.clip(out[..., 3] * keep + 0.5, 0, 255).astype(np.uint8)
        self._fg_pad = (fg, out, (pads[2], pads[0]))
        return out, (pads[2], pads[0])

    def _fg_2x(self, fg: np.ndarray, padded_fg: np.ndarray | None = None) -> np.ndarray | None:
        """The head layer ``fg`` (as padded by :meth:`_fg_beyond`: ``padded_fg``) zero-padded by :data:`_FG2_PAD`
        px and upsampled 2x bicubically (the padding: beyond the layer's box the bicubic taps see transparency, as the
        direct remap's constant border gives), kept for the layer it was made from; None for a layer made per frame
        (an eye edit's): the direct remap is cheaper then."""
        got = self._fg2
        if got is not None and got[0] is fg:
            return got[1]
        if self._layer_scaled and not any(fg is v[1] for v in self._layer_scaled.values()):
            return None
        if fg.shape[0] * fg.shape[1] > HEAD_REMAP_2X_MAX_PX:  # (the photo's own layer: a pad beyond it may add)
            return None
        src = fg if padded_fg is None else padded_fg
        p = _FG2_PAD
        padded = cv2.copyMakeBorder(src, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
        fg2 = cv2.resize(padded, (2 * padded.shape[1], 2 * padded.shape[0]), interpolation=_FG2_INTERP)
        self._fg2 = (fg, fg2, src)
        return fg2

    def _eye_edit(self, fg, pfg, pad, lx, ly, base, eye_orig, scale: float):
        """The eye layer's change of ``base`` (vs ``eye_orig``) inside the head layer ``fg`` at (lx, ly), as
        :meth:`_eye_edited_fg` carries it into the layer's colour, located in ``fg`` padded by :meth:`_fg_beyond`
        (``pfg``, (left, top) ``pad``): ((r0, r1, c0, c1) rows and columns of ``pfg``, their edited RGB), () when the
        eyes changed nothing in the layer, None when a patch of ``pfg`` would not give the edited layer's padding
        (the edit within reach of a reflected pad, or too near the layer's edge for the 2x patch's margin)."""
        fh, fw = fg.shape[:2]
        boxes = self.eyes.edit_boxes(eye_orig, scale)
        # the changed pixels: only in the eye layer's boxes (inside the layer)
        ex0, ey0 = max(min((b[0] for b in boxes), default=0), lx), max(min((b[1] for b in boxes), default=0), ly)
        ex1 = min(max((b[2] for b in boxes), default=0), lx + fw)
        ey1 = min(max((b[3] for b in boxes), default=0), ly + fh)
        if ex1 <= ex0 or ey1 <= ey0:
            return ()
        diff = _any_channel(base[ey0:ey1, ex0:ex1] != eye_orig[ey0:ey1, ex0:ex1])
        ys = np.flatnonzero(diff.any(1))
        if not len(ys):
            return ()
        xs = np.flatnonzero(diff[ys[0]:ys[-1] + 1].any(0))
        r0, r1 = ey0 - ly + int(ys[0]), ey0 - ly + int(ys[-1]) + 1  # (in fg)
        c0, c1 = ex0 - lx + int(xs[0]), ex0 - lx + int(xs[-1]) + 1
        qx, qy = pad
        ph, pw = pfg.shape[:2]
        # a reflected pad shows the layer's pixels up to its width + _FG_EDGE_SKIP inside the border
        m = _EYE_PATCH_MARGIN
        bottom, right = ph - fh - qy, pw - fw - qx
        reach = (qy + _FG_EDGE_SKIP + 2 if qy else 0, bottom + _FG_EDGE_SKIP + 2 if bottom else 0,
                 qx + _FG_EDGE_SKIP + 2 if qx else 0, right + _FG_EDGE_SKIP + 2 if right else 0)
        if r0 < max(reach[0], m) or fh - r1 < max(reach[1], m) or c0 < max(reach[2], m) or fw - c1 < max(reach[3], m):
            return None
        d = base[ly + r0:ly + r1, lx + c0:lx + c1].astype(np.int16) - eye_orig[ly + r0:ly + r1, lx + c0:lx + c1]
        rgb = np.clip(fg[r0:r1, c0:c1, :3] + d, 0, 255).astype(np.uint8)
        return (r0 + qy, r1 + qy, c0 + qx, c1 + qx), rgb

    def _eye_patched(self, layer: np.ndarray, edit, twice: bool) -> np.ndarray:
        """A working copy of ``layer`` (the padded head layer, or with ``twice`` its 2x upsampling, :meth:`_fg_2x`)
        with :meth:`_eye_edit`'s ``edit`` in it, the previous frame's patch undone first: the bytes the edited
        layer gives. The 2x patch: the edited box with a margin wider than the bicubic taps upsampled again, its
        rows / columns whose taps stayed inside (the same fixed-point sums as the whole layer's upsampling)."""
        (r0, r1, c0, c1), rgb = edit
        if twice:
            m = _EYE_PATCH_MARGIN
            pfg = self._fg2[2]  # the padded layer fg2 was made from
            a0, b0 = r0 - m, c0 - m
            win = pfg[a0:r1 + m, b0:c1 + m].copy()
            win[m:m + r1 - r0, m:m + c1 - c0, :3] = rgb
            up = cv2.resize(win, (2 * win.shape[1], 2 * win.shape[0]), interpolation=_FG2_INTERP)
            k = 4  # window rows / columns from 4 on: the taps of 2x bicubic reach 2 source px
            top, left = 2 * (a0 + _FG2_PAD) + k, 2 * (b0 + _FG2_PAD) + k  # (fg2's pixel 2v: the zero-padded v)
            patch = up[k:up.shape[0] - k, k:up.shape[1] - k]
            slot = 1
        else:
            top, left, patch, slot = r0, c0, None, 0
        work = self._eye_work[slot]
        if work is None or work[0] is not layer:
            work = self._eye_work[slot] = [layer, layer.copy(), None]
        elif work[2] is not None:  # the last frame's patch undone
            ot, ol, oh, ow = work[2]
            work[1][ot:ot + oh, ol:ol + ow] = layer[ot:ot + oh, ol:ol + ow]
        if patch is None:
            work[1][r0:r1, c0:c1, :3] = rgb
            work[2] = (r0, c0, r1 - r0, c1 - c0)
        else:
            work[1][top:top + patch.shape[0], left:left + patch.shape[1]] = patch
            work[2] = (top, left, patch.shape[0], patch.shape[1])
        return work[1]

    @staticmethod
    def _eye_edited_fg(fg, lx, ly, base, eye_orig):
        """The eye layer edited ``base``: carry its change into the head layer's colour (fg ≈ photo on the face);
        only inside the box where ``base`` changed."""
        fh, fw = fg.shape[:2]
        diff = _any_channel(base[ly:ly + fh, lx:lx + fw] != eye_orig[ly:ly + fh, lx:lx + fw])
        ys = np.flatnonzero(diff.any(1))
        if not len(ys):
            return fg
        xs = np.flatnonzero(diff[ys[0]:ys[-1] + 1].any(0))
        r0, r1, c0, c1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        fg = fg.copy()
        d = base[ly + r0:ly + r1, lx + c0:lx + c1].astype(np.int16) - eye_orig[ly + r0:ly + r1, lx + c0:lx + c1]
        fg[r0:r1, c0:c1, :3] = np.clip(fg[r0:r1, c0:c1, :3] + d, 0, 255)
        return fg

    def _compose_fill(self, base, lf, g, box, sx, sy, interp, up, region) -> np.ndarray:
        """One hook's :class:`~engine.photo.layers.LayerFill` over ``region``."""
        if lf.disp is None and lf.rgb is None:
            return region
        disp = None if lf.disp is None else lf.disp * np.array([sx, sy], np.float32)  # (once, not once a band)
        for sub in self._boxes(lf.alpha > 1e-3, g, box, sx, sy):
            self._compose_fill_box(base, lf, box, sub, sx, sy, interp, up, region, disp)
        return region

    @staticmethod
    def _compose_fill_box(base, lf, box, sub, sx, sy, interp, up, region, disp=None) -> None:
        """``disp``: ``lf.disp`` in output px (scaled by sx, sy)."""
        x0, y0 = box[0], box[1]
        bx0, by0, bx1, by1 = sub
        a2 = np.clip(up(lf.alpha, sub), 0, 1)
        a = a2[..., None]
        if lf.disp is not None:
            mm = up(lf.disp * np.array([sx, sy], np.float32) if disp is None else disp, sub)
            mm[..., 0] += np.arange(bx0, bx1, dtype=np.float32)[None, :]
            mm[..., 1] += np.arange(by0, by1, dtype=np.float32)[:, None]
            col = cv2.remap(base, mm, None, interp, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
            if lf.gain is not None:
                col *= up(lf.gain, sub, 1.0)
            col *= a
        else:
            col = up(lf.rgb, sub)
            col *= 255.0
        PhotoRenderer._fill_into(region[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0], a2, col)

    @staticmethod
    def _fill_into(view: np.ndarray, a2: np.ndarray, col: np.ndarray) -> None:
        """``view`` (h, w, 3) uint8, in place ← view·(1 − a2) + col, rounded: a layer's premultiplied colour ``col``
        (float32) at alpha ``a2`` (h, w) — by fast_raster.fill_over in one compiled pass, else the same bytes here."""
        if COMPILED_BLEND and fast_raster.fill_over(a2, col, view):
            return
        reg = view.astype(np.float32)
        reg *= 1 - a2[..., None]
        reg += col
        reg += 0.5
        view[...] = np.clip(reg, 0, 255, out=reg)

    def _boxes(self, active: np.ndarray, g, box, sx: float, sy: float) -> list:
        """Output boxes to compose a layer in: :meth:`_sub_bands`, or its whole box without ``compose_bands``."""
        if self.compose_bands:
            return self._sub_bands(active, g, box, sx, sy)
        whole = self._sub_box(active, g, box, sx, sy)
        return [] if whole is None else [whole]

    @staticmethod
    def _sub_bands(active: np.ndarray, g, box, sx: float, sy: float, band: int = COMPOSE_BAND) -> list:
        """:meth:`_sub_box` cut into bands of ``band`` output rows, each only as wide as the active grid pixels
        its rows read (bilinear upsampling: the two grid rows around each output row), so a sparse layer is not
        composed over its whole bounding box; the bands do not overlap."""
        whole = PhotoRenderer._sub_box(active, g, box, sx, sy)
        if whole is None:
            return []
        bx0, by0, bx1, by1 = whole
        # each grid row's first and last active column (none: n_cols, -1), then plain Python per band (numpy's
        # per-call overhead over ~30 bands of a 2048 px frame was ~2 ms a layer)
        n_rows, n_cols = active.shape
        row_any = active.any(1)
        first = np.where(row_any, active.argmax(1), n_cols).tolist()
        last = np.where(row_any, n_cols - 1 - active[:, ::-1].argmax(1), -1).tolist()
        ox, oy, step = g.origin[0], g.origin[1], g.step
        out = []
        for y in range(by0, by1, band):
            ye = min(by1, y + band)
            r0 = max(math.floor(((y + 0.5) / sy - oy) / step - 0.5), 0)
            r1 = max(0, min(math.floor(((ye - 0.5) / sy - oy) / step - 0.5) + 2, n_rows))
            if r1 <= r0:
                continue
            c0, c1 = min(first[r0:r1]), max(last[r0:r1])
            if c1 < c0:
                continue
            x0 = min(max(math.floor((ox + (c0 - 1) * step) * sx), bx0), bx1)
            x1 = min(max(math.ceil((ox + (c1 + 2) * step) * sx), bx0), bx1)
            if x1 > x0:
                out.append((x0, y, x1, ye))
        return out

    @staticmethod
    def _sub_box(active: np.ndarray, g, box, sx: float, sy: float):
        """Output-pixel box (inside ``box``) around the active grid pixels, or None."""
        bb = flow.mask_bounds(active)
        if bb is None:
            return None
        ymin, ymax, xmin, xmax = bb
        x0, y0, x1, y1 = box
        bx0 = int(np.clip(np.floor((g.origin[0] + (xmin - 1) * g.step) * sx), x0, x1))
        bx1 = int(np.clip(np.ceil((g.origin[0] + (xmax + 2) * g.step) * sx), x0, x1))
        by0 = int(np.clip(np.floor((g.origin[1] + (ymin - 1) * g.step) * sy), y0, y1))
        by1 = int(np.clip(np.ceil((g.origin[1] + (ymax + 2) * g.step) * sy), y0, y1))
        return (bx0, by0, bx1, by1) if bx1 > bx0 and by1 > by0 else None
