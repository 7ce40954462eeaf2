"""Photo mode, step 2: the backward flow from the fitted head (DESIGN.md §6).

Everything happens on a *work grid*: a square box in photo pixels around the face (``BOX_SCALE`` x the aligned crop,
``WORK_RES`` px across). The fitted head λ0 (the *source*) and the edited head λ1 (the *target*) are projected
through the canonical camera into the crop and from there through ``alignment.inverse()`` into the photo and the
grid.

* The **source** side is computed once per photo (:class:`SourceHead`): the photo position of every head vertex,
  which vertices the photo actually shows (a depth test against the source's own rasterisation, with a tolerance),
  and for hidden skin vertices a stand-in photo position (a harmonic fill over the mesh from the visible
  vertices: the nearest visible skin is stretched over what the photo never showed) and, where the mirror point
  (``HeadModel.mirror``) is visible face, that point's photo position and a shading gain (the renderer blends the
  mirrored sample over the stretched one inside the hidden skin).
* The **target** side is rasterised per frame; the renderer's barycentrics interpolate the per-vertex source
  positions, so each covered grid pixel knows where in the photo its surface point was.
* Outside the head the displacement is extended by pull-push (a smooth, seam-free continuation of the values at the
  silhouette) and faded out with the distance from the head, so hair and neck follow and the background stays.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine.face.head import EYE_PARTS, MOUTH_PARTS, NARROW_FACE_VERTICES, SKIN_PARTS, HeadModel
from engine.face.model import Coefficients
from engine.perception.align import Alignment
from engine.photo.relight import irradiance
from engine.render.camera import Camera, rotation_matrix
from engine.render.fast_raster import rasterize_forward as rasterize  # no gradients here: the compiled z-buffer
from engine.render.fast_raster import rotate_about
from engine.render.rasterizer import Fragments, interpolate
from engine.shapes import assert_shape

BOX_SCALE = 2.6  # work box side / crop side
WORK_RES = 256  # work grid pixels across the box
VIS_TOL_CM = 0.45  # depth tolerance of the source visibility test
VIS_TOL_INNER_CM = 0.12  # mouth interior and eyes
VIS_SLOPE = 1.5  # extra tolerance per cm of depth change per grid pixel
UPPER_TEETH_SHIFT_CM = (0.0, -0.3, 0.25)
EXPR_DELTA_MAX = 8  # blendshapes changed from the reference expression up to which only the change is multiplied
MIRROR_RAMP = 3  # neighbour-averaging passes: the mirror fill fades in over ~3 vertices inside the hidden skin
MIRROR_GAIN_RANGE = (0.5, 2.0)
MIRROR_MIN_FACING = -0.2  # z of the mirror point's (camera-space) normal above which it is used (fades in over 0.2)
FALLOFF = 0.22  # displacement fades to 0 over this fraction of the box beyond the head's silhouette
FALLOFF_BELOW = 0.06  # … and over this much below the chin (collars, shoulders stay put)
# the lower neck joins the (unmoving) torso: its vertices blend from the edited to the fitted pose
NECK_FREE_Y, NECK_FIXED_Y = -9.0, -14.0
# parts drawn into the flow (irises and eye sockets lie behind the scleras and are never seen)
FLOW_PARTS = SKIN_PARTS + MOUTH_PARTS + ("sclera_l", "sclera_r")


@dataclass(frozen=True)
class WorkGrid:
    """Square box in photo pixels: ``photo = origin + grid * step`` (continuous coordinates, both)."""

    origin: tuple[float, float]
    step: float  # photo px per grid px
    res: int

    def to_grid(self, photo_xy: np.ndarray | torch.Tensor):
        return (photo_xy - torch.as_tensor(self.origin, dtype=photo_xy.dtype)) / self.step \
            if isinstance(photo_xy, torch.Tensor) else (photo_xy - np.asarray(self.origin)) / self.step

    def to_photo(self, grid_xy):
        return grid_xy * self.step + (torch.as_tensor(self.origin, dtype=grid_xy.dtype)
                                      if isinstance(grid_xy, torch.Tensor) else np.asarray(self.origin))

    def centres(self) -> np.ndarray:
        """(res, res, 2) photo positions of the grid's pixel centres."""
        c = (np.arange(self.res, dtype=np.float32) + 0.5) * self.step
        return np.stack(np.meshgrid(c + self.origin[0], c + self.origin[1]), -1).astype(np.float32)


def work_grid(alignment: Alignment, res: int = WORK_RES, box_scale: float = BOX_SCALE) -> WorkGrid:
    inv = alignment.inverse()
    size = alignment.size
    centre = inv[:, :2] @ np.array([size / 2, size / 2]) + inv[:, 2]
    side = box_scale * size / alignment.scale
    return WorkGrid((float(centre[0] - side / 2), float(centre[1] - side / 2)), float(side / res), int(res))


def _jaw_only(head: HeadModel) -> Coefficients:
    c = head.model.zeros(1)
    c.expr["jawOpen"] = 1.0
    return c


class HeadProjector:
    """Head vertices for coefficients → camera space → photo px (via the alignment); caches the identity shape."""

    def __init__(self, head: HeadModel, alignment: Alignment, camera: Camera | None = None):
        self.head = head
        m = head.model
        self.camera = camera or Camera.canonical(m.mean, m.lm68)
        self.size = int(alignment.size)
        self.inv = torch.from_numpy(alignment.inverse().astype(np.float32))
        self._id_key: bytes | None = None
        self._id_shape: torch.Tensor | None = None
        self._verts_key: bytes | None = None
        self._ref_expr: torch.Tensor | None = None  # (1, E) expression of self._ref_verts
        self._ref_verts: torch.Tensor | None = None
        self._verts: torch.Tensor | None = None
        # the kit's upper teeth sit behind the upper lip: bring them down and forward a little so an open mouth
        # shows teeth, as most people's do (upper teeth = the teeth that jawOpen does not move)
        teeth = head.vertex_in(["teeth"])
        jaw = head.expression_offsets(_jaw_only(head))[0].norm(dim=-1)
        upper = teeth & (jaw < 0.5)
        off = torch.zeros(head.n_vertices, 3)
        off[upper] = torch.tensor(UPPER_TEETH_SHIFT_CM)
        self._teeth_offset = off

    def model_vertices(self, c: Coefficients) -> torch.Tensor:
        """(V, 3) unposed vertices; the identity part is cached between calls with the same identity."""
        key = c.identity.numpy().tobytes()
        if key != self._id_key:
            self._id_shape = self.head.identity_shape(c)[0]
            self._id_key = key
            self._verts_key = None
            self._ref_expr = None
        # a drag moves one slider: pose or light drags reuse the last expression's vertices; an expression drag
        # adds only the blendshapes that differ from a reference expression (the first one seen: the fit's)
        vkey = c.expression.numpy().tobytes()
        if vkey != self._verts_key:
            e = c.expression[0:1]
            d = e - self._ref_expr if self._ref_expr is not None else None
            if d is None or int((d != 0).sum()) > EXPR_DELTA_MAX:
                self._ref_verts = self._id_shape + self.head.expression_offsets(c)[0] + self._teeth_offset
                self._ref_expr = e.clone()
                self._verts = self._ref_verts
            else:
                dc = c[0:1].clone()
                dc.expression = d
                self._verts = self._ref_verts + self.head.expression_offsets(dc)[0]
            self._verts_key = vkey
        return self._verts

    def posed(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(V, 3) vertices rotated about the camera pivot (model cm, y up, z toward the viewer)."""
        pivot = torch.tensor(self.camera.pivot, dtype=verts.dtype)
        rot = rotation_matrix(pose.reshape(1, 3))[0]
        out = rotate_about(verts, rot, pivot)
        return (verts - pivot) @ rot.T + pivot if out is None else out

    def camera_space(self, posed: torch.Tensor) -> torch.Tensor:
        x, y, z = posed.unbind(-1)
        return torch.stack([x, y + self.camera.offset_y, self.camera.distance - z], -1)

    def to_photo(self, cam: torch.Tensor) -> torch.Tensor:
        """(V, 3) camera space → (V, 2) continuous photo px."""
        crop = self.camera.project(cam.unsqueeze(0), self.size)[0]
        return crop @ self.inv[:, :2].T + self.inv[:, 2]


def _harmonic_fill(values: torch.Tensor, known: torch.Tensor, adjacency: torch.Tensor, iters: int = 150
                   ) -> torch.Tensor:
    """Fill unknown rows of (V, C) ``values`` by repeated neighbour averaging with the known rows held fixed
    (a discrete harmonic interpolation; rows never reached keep their own value)."""
    v = values.clone()
    reached = known.clone().float().unsqueeze(1)
    acc = torch.where(known.unsqueeze(1), v, torch.zeros_like(v))
    for _ in range(iters):
        num = torch.sparse.mm(adjacency, acc * reached)
        den = torch.sparse.mm(adjacency, reached)
        new = num / den.clamp_min(1e-8)
        upd = (~known).unsqueeze(1) & (den > 1e-8)
        acc = torch.where(upd, new, acc)
        reached = torch.where(upd, torch.ones_like(reached), reached)
    return torch.where(reached > 0, acc, values)


# SourceHead's arrays that depend only on the photo's fit (the photo cache keeps them): name -> (columns, dtype)
SOURCE_STATE = {"visible": (0, np.bool_), "src_xy": (2, np.float32), "render_fill": (0, np.float32),
                "mirror_w": (0, np.float32), "mirror_xy": (2, np.float32), "mirror_gain": (3, np.float32)}


class SourceHead:
    """What the photo shows of the fitted head (computed once per photo). ``state``: :meth:`state` of an earlier
    SourceHead of the same fit, head and grid (the photo cache's): its visibility, harmonic and mirror fills are
    taken from there instead of computed (~0.2 s); a state that does not fit this head is ignored."""

    def __init__(self, head: HeadModel, proj: HeadProjector, coeffs: Coefficients, grid: WorkGrid,
                 state: dict | None = None):
        self.head = head
        with torch.no_grad():
            verts = proj.model_vertices(coeffs)
            self.verts = verts
            self.pose = coeffs.pose[0].clone()
            self.posed = proj.posed(verts, coeffs.pose[0])
            self.cam = proj.camera_space(self.posed)
            self.photo_xy = proj.to_photo(self.cam)  # (V, 2)
            gxy = grid.to_grid(self.photo_xy)
            self.mouth_open = mouth_open(head, verts)
            tris = flow_triangles(head)
            frags = rasterize(gxy.unsqueeze(0), self.cam[:, 2].unsqueeze(0), tris, grid.res)
            self.frags = frags
            self.restored = state is not None and self._restore(state)
            if self.restored:
                return
            inner = head.vertex_in(MOUTH_PARTS)
            self.visible = self._visibility(gxy, self.cam[:, 2], frags.depth[0], grid.res, inner)
            stretch = head.vertex_in(SKIN_PARTS + EYE_PARTS)
            # stand-in photo positions for hidden skin and eyes: harmonic fill from the visible ones over the mesh
            known = self.visible | ~stretch
            self.src_xy = _harmonic_fill(self.photo_xy, known, head.adjacency())
            # vertices the photo never showed and that are drawn from the model instead: the mouth interior
            # (painted eyes next to real ones looked worse than stretched eyelid/sclera pixels)
            fillable = head.vertex_in(MOUTH_PARTS)
            self.render_fill = (fillable & ~self.visible).float()
            self._mirror_fill(head, proj, coeffs)

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that depend only on the fit, head and grid (:data:`SOURCE_STATE`), as numpy."""
        return {k: getattr(self, k).numpy().copy() for k in SOURCE_STATE}

    def _restore(self, state: dict) -> bool:
        """Take :meth:`state`'s arrays when every one is there with this head's shape and dtype and finite."""
        got = {}
        nv = self.head.n_vertices
        for k, (cols, dtype) in SOURCE_STATE.items():
            a = state.get(k)
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != ((nv, cols) if cols else (nv,)):
                return False
            if a.dtype != np.bool_ and not np.isfinite(a).all():
                return False
            got[k] = torch.from_numpy(np.array(a))
        for k, v in got.items():
            setattr(self, k, v)
        return True

    def _mirror_fill(self, head: HeadModel, proj: "HeadProjector", coeffs: Coefficients) -> None:
        """Skin a turn reveals is drawn from its mirror image (the photo's other cheek, flipped), with the
        difference in fitted shading between the two points divided out. Per vertex: ``mirror_xy`` (V, 2) photo
        position of the mirror point, ``mirror_w`` (V,) blend weight (0 on visible skin, ramping to 1 a few
        vertices inside the hidden region, 0 where the mirror point is hidden too), ``mirror_gain`` (V, 3)."""
        skin = head.vertex_in(SKIN_PARTS)
        mir = head.mirror()
        hidden = (skin & ~self.visible).float().unsqueeze(1)
        a = head.adjacency()
        hs = hidden
        for _ in range(MIRROR_RAMP):
            hs = torch.sparse.mm(a, hs)
        rot = rotation_matrix(coeffs.pose.reshape(1, 3))[0]
        n0 = head.vertex_normals(self.verts.unsqueeze(0))[0] @ rot.T
        for _ in range(4):  # smoothed normals (the fit's are noisy at the nose and the rim)
            n0 = torch.sparse.mm(a, n0)
        n0 = torch.nn.functional.normalize(n0, dim=-1, eps=1e-8)
        # the mirror point must lie on the face proper (no ears, scalp or neck: hair and shadow there) and face the
        # camera (near the silhouette the photo shows hair or background); elsewhere the rim is stretched
        face = torch.zeros_like(skin)
        face[:NARROW_FACE_VERTICES] = True
        ok = (skin & self.visible[mir] & face[mir] & (n0[mir, 2] > MIRROR_MIN_FACING)).float()
        # fade the weight in with the facing (no edge where the condition starts to hold)
        ok = ok * ((n0[mir, 2] - MIRROR_MIN_FACING) / 0.2).clamp(0, 1)
        self.mirror_w = ((hs[:, 0] - 0.5) * 2.0).clamp(0, 1) * hidden[:, 0] * ok
        self.mirror_xy = self.photo_xy[mir]
        e0 = irradiance(n0, coeffs.light[0]).clamp_min(0)
        floor = 0.3 * e0[skin].median(0).values.clamp_min(1e-3)
        self.mirror_gain = (torch.maximum(e0, floor) / torch.maximum(e0[mir], floor)).clamp(*MIRROR_GAIN_RANGE)

    @staticmethod
    def _visibility(gxy: torch.Tensor, z: torch.Tensor, depth: torch.Tensor, res: int, inner: torch.Tensor
                    ) -> torch.Tensor:
        """Depth test against the source's own z-buffer; lenient on the skin (rims, grazing sides), strict for
        the mouth interior and eyes (the teeth sit a few mm behind the lips)."""
        d = depth.numpy().astype(np.float32)
        empty = d <= 0
        # most distant of the 3x3 neighbourhood: lenient at silhouettes (a vertex on the rim stays visible), plus a
        # tolerance that grows with the depth slope (grazing surfaces change depth by cm per grid pixel)
        filled = np.where(empty, d.max(initial=0), d)
        slope = (np.abs(cv2.Sobel(filled, cv2.CV_32F, 1, 0, ksize=3))
                 + np.abs(cv2.Sobel(filled, cv2.CV_32F, 0, 1, ksize=3)))
        slope = cv2.dilate(np.minimum(slope / 8.0, 3.0), np.ones((3, 3)))
        dmax = cv2.dilate(np.where(empty, 1e9, d + VIS_SLOPE * slope).astype(np.float32), np.ones((3, 3)))
        dmax = torch.from_numpy(dmax)
        dnear = torch.from_numpy(np.where(empty, 1e9, d).astype(np.float32))
        ix = gxy[:, 0].floor().long()
        iy = gxy[:, 1].floor().long()
        inside = (ix >= 0) & (ix < res) & (iy >= 0) & (iy < res)
        zb = torch.full_like(z, 1e9)
        zb[inside] = dmax[iy[inside], ix[inside]]
        zn = torch.full_like(z, 1e9)
        zn[inside] = dnear[iy[inside], ix[inside]]
        lenient = z <= zb + VIS_TOL_CM
        strict = z <= zn + VIS_TOL_INNER_CM
        return inside & torch.where(inner, strict, lenient)


_TRI_CACHE: dict[tuple[int, bool], torch.Tensor] = {}
LIP_GAP_CM = 0.2  # inner-lip gap below which the mouth counts as closed (its interior cannot show)
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def flow_triangles(head: HeadModel, mouth: bool = True) -> torch.Tensor:
    """Triangles drawn into the flow; ``mouth=False`` leaves out the mouth interior (a closed mouth hides it)."""
    key = (id(head), bool(mouth))
    t = _TRI_CACHE.get(key)
    if t is None:
        parts = FLOW_PARTS if mouth else tuple(p for p in FLOW_PARTS if p not in MOUTH_PARTS)
        t = _TRI_CACHE[key] = head.triangles[head.triangle_in(parts)].contiguous()
    return t


def mouth_open(head: HeadModel, verts: torch.Tensor) -> bool:
    lm = head.lm68
    a = verts[lm[[p[0] for p in _INNER_LIP_PAIRS]]]
    b = verts[lm[[p[1] for p in _INNER_LIP_PAIRS]]]
    return bool((a - b).norm(dim=-1).max() > LIP_GAP_CM)


def neck_weights(head: HeadModel, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-neck vertices and their weights (0 = follows the edited pose, 1 = stays with the torso):
    ((N,) indices, (N, 1) weights)."""
    y = verts[:, 1]
    t = ((NECK_FREE_Y - y) / (NECK_FREE_Y - NECK_FIXED_Y)).clamp(0, 1)
    w = t * t * (3 - 2 * t)
    w = torch.where(head.vertex_in(SKIN_PARTS), w, torch.zeros_like(w))
    idx = (w > 0).nonzero(as_tuple=True)[0]
    return idx, w[idx].unsqueeze(1)


@dataclass
class TargetRaster:
    frags: Fragments
    grid_xy: torch.Tensor  # (V, 2) target vertices on the grid
    photo_xy: torch.Tensor  # (V, 2) target vertices in photo px
    posed: torch.Tensor  # (V, 3)
    verts: torch.Tensor  # (V, 3) unposed
    covered: np.ndarray  # (R, R) bool
    tris: torch.Tensor  # (F', 3) the triangles drawn (``frags.face_id`` indexes these)


def rasterize_target(head: HeadModel, proj: HeadProjector, src: SourceHead, coeffs: Coefficients, grid: WorkGrid,
                     neck: tuple[torch.Tensor, torch.Tensor], placement: np.ndarray | None = None,
                     offsets: np.ndarray | None = None) -> TargetRaster:
    """The target head on the grid. ``placement``: an optional (2, 3) affine of photo px applied to the projected
    head (a driven head's move and size change in the frame; the lower neck stays, as it does for a turn);
    ``offsets``: an optional (V, 2) photo-px shift of each projected vertex, before the placement."""
    verts = proj.model_vertices(coeffs)
    posed = proj.posed(verts, coeffs.pose[0])
    # lower neck: keep its fitted pose (the shoulders do not turn with the head) and its fitted shape (it joins the
    # photo's torso: an identity or expression edit that widens or moves the neck's base dragged the collar and
    # shirt along, and the background beside them)
    idx, w = neck
    if not torch.equal(coeffs.pose[0], src.pose):
        posed[idx] = posed[idx] + w * (proj.posed(verts[idx], src.pose) - posed[idx])
    if not torch.equal(verts[idx], src.verts[idx]):
        posed[idx] = posed[idx] + w * (src.posed[idx] - proj.posed(verts[idx], src.pose))
    cam = proj.camera_space(posed)
    photo_xy = proj.to_photo(cam)
    if offsets is not None:
        photo_xy = photo_xy + torch.as_tensor(np.asarray(offsets), dtype=photo_xy.dtype)
    if placement is not None:  # the lower neck stays with the torso here too
        m = torch.as_tensor(np.asarray(placement, np.float64), dtype=photo_xy.dtype)
        moved = photo_xy @ m[:, :2].T + m[:, 2]
        moved[idx] = moved[idx] + w * (photo_xy[idx] - moved[idx])
        photo_xy = moved
    gxy = grid.to_grid(photo_xy)
    tris = flow_triangles(head, mouth_open(head, verts) or src.mouth_open)
    frags = rasterize(gxy.unsqueeze(0), cam[:, 2].unsqueeze(0), tris, grid.res)
    covered = (frags.face_id[0] >= 0).numpy()
    return TargetRaster(frags, gxy, photo_xy, posed, verts, covered, tris)


def interpolate_attrs(attr: torch.Tensor, t: TargetRaster, head: HeadModel) -> np.ndarray:
    """(V, C) per-vertex values → (R, R, C) float32 grid (0 where the head does not cover). No gradient: the
    covered pixels' values (the same sums as :func:`~engine.render.rasterizer.interpolate`) are written straight
    into a zero grid, channels last."""
    assert_shape(attr, [t.verts.shape[0], None], "attr")
    f = t.frags
    _, h, w = f.face_id.shape
    c = attr.shape[1]
    if attr.requires_grad or f.face_id.shape[0] != 1:
        img = interpolate(attr.unsqueeze(0), f, t.tris)[0]
        return img.permute(1, 2, 0).contiguous().numpy()
    vals = (attr.index_select(0, t.tris[f.pix_face].reshape(-1)).view(-1, 3, c) * f.pix_bary.unsqueeze(-1)).sum(1)
    out = np.zeros((h * w, c), np.float32)
    out[f.pix_index.numpy()] = vals.numpy()
    return out.reshape(h, w, c)


def pull_push(values: np.ndarray, weight: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Smooth continuation of (R, R, C) ``values`` known where ``weight`` (R, R) > 0 into the rest of the grid."""
    levels = []
    v = values * weight[..., None]
    w = weight.astype(np.float32)
    while True:
        levels.append((v, w))
        h, ww = w.shape
        if min(h, ww) <= min_size:
            break
        nh, nw = (h + 1) // 2, (ww + 1) // 2
        v = cv2.resize(v, (nw, nh), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (nw, nh), interpolation=cv2.INTER_AREA)
        if v.ndim == 2:
            v = v[..., None]
    # push: coarse to fine
    vc, wc = levels[-1]
    est = vc / np.maximum(wc, 1e-8)[..., None]
    for v, w in reversed(levels[:-1]):
        h, ww = w.shape
        up = cv2.resize(est, (ww, h), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[..., None]
        # est = a·own + (1 − a)·up with a = min(w, 1) (w ≥ 0), as up + a·(own − up), in place
        own = v / np.maximum(w, np.float32(1e-8))[..., None]
        own -= up
        own *= np.minimum(w, np.float32(1))[..., None]
        own += up
        est = own
    return est.astype(np.float32, copy=False)


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(first row, last row, first column, last column) holding a True of the 2-D ``mask``, or None when it has
    none; from its row and column ``any`` (~10x faster than ``np.nonzero`` on a work grid)."""
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def pull_push_near(values: np.ndarray, weight: np.ndarray, margin: int, outside: float = 0.0) -> np.ndarray:
    """:func:`pull_push` only within ``margin`` grid px of the known pixels' bounding box (the continuation is
    faded out or masked beyond it anyway); ``outside`` elsewhere. Same result inside the box, a fraction of the cost."""
    bb = mask_bounds(weight > 0)
    out = np.full(values.shape, outside, np.float32)
    if bb is None:
        return out
    h, w = weight.shape
    y0, y1 = max(0, bb[0] - margin), min(h, bb[1] + margin + 1)
    x0, x1 = max(0, bb[2] - margin), min(w, bb[3] + margin + 1)
    out[y0:y1, x0:x1] = pull_push(np.ascontiguousarray(values[y0:y1, x0:x1]),
                                  np.ascontiguousarray(weight[y0:y1, x0:x1])).reshape(y1 - y0, x1 - x0, -1)
    return out


UNSTRETCH_MIN = 0.45  # source px per target px along a row below which a turn's flow draws a streak
UNSTRETCH_ROW_SIGMA = 2.0  # grid rows: the band and the fold's source are low-passed across rows
UNSTRETCH_HARD = 0.2  # ... and that reach below this somewhere (a streak; a band spread less is left as it is)
UNSTRETCH_DEPTH = 0.025  # of the grid side: how far into the face side a fold reaches at most
UNSTRETCH_MAX_RUN = 0.2  # of the grid side: longer stretched runs are left as they are (no fold that wide)
UNSTRETCH_KEEP_SHARE = 0.3  # a band with this share of its source on ``keep_src`` (hair over the rim) is not folded


def unstretch_rows(disp: np.ndarray, step: float, centre_x: float, mask: np.ndarray,
                   min_slope: float | None = None, avoid: np.ndarray | None = None,
                   keep_src: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold the streaks out of a turn's backward flow, along the grid's rows (a yaw turn stretches sideways).

    ``disp`` (R, R, 2) photo px (output pixel p shows the photo at p + disp); ``step`` photo px per grid px. Where,
    inside ``mask`` (R, R) bool, the source x advances by less than ``min_slope`` (default ``UNSTRETCH_MIN``) grid px
    per grid px, and somewhere in the run by less than ``UNSTRETCH_HARD`` (the surface the photo saw edge-on — the
    side of the head, the far ear, the jaw's rim — spread over the band a turn shows frontally: a streak, the old outline drawn as a line, background dragged into the face), the band between the
    two unstretched pixels ``L`` and ``R`` around it is redrawn at scale 1 from the side facing ``centre_x`` (the
    face): at pixel ``x`` the source is the nearer of (a) the band's outer end continued at slope 1 and (b) the
    face side mirrored about the band's inner end — a fold: the outline stays at the band's outer edge, the skin or
    hair just inside it is shown again, mirrored, where the streak was. The source never leaves the head's own
    visible pixels; the result is continuous at both ends of the band. Returns the new ``disp`` and the (R, R) bool
    of the pixels it changed. Runs wider than ``UNSTRETCH_MAX_RUN`` of the grid are left alone; a fold reaches at most
    ``UNSTRETCH_DEPTH`` of the grid into the face side (a wider band shows that much, spread: no eye corner or glasses
    frame mirrored into the band); a run whose fold would reach into ``avoid`` (R, R) bool (the eyes and brows) is
    left as it is (a mirrored eye corner is worse than a stretched one). A band whose own source lies mostly on
    ``keep_src`` (R, R) bool, in the photo's grid (hair lying over the cheek's rim: a fold would mirror the face's
    skin into it, a skin patch where the hair was), is left as it is too: stretched hair still reads as hair."""
    if min_slope is None:
        min_slope = UNSTRETCH_MIN
    res_y, res_x = mask.shape
    col = np.arange(res_x, dtype=np.float32)
    sx = col[None, :] + disp[..., 0] / step  # source x, grid px
    slope = np.empty_like(sx)
    slope[:, 1:-1] = 0.5 * (sx[:, 2:] - sx[:, :-2])
    slope[:, 0] = slope[:, -1] = 1.0
    # neighbouring rows agree on where the band is (a run that jumps by a pixel from row to row mirrors a different
    # stretch of skin or hair: a wavy pattern)
    slope = cv2.GaussianBlur(slope, (1, 0), sigmaX=0.1, sigmaY=UNSTRETCH_ROW_SIGMA)
    bad = (slope < min_slope) & mask
    bad[:, 0] = bad[:, -1] = False
    changed = np.zeros_like(bad)
    if not bad.any():
        return disp, changed
    # runs of stretched pixels: (row, first, last)
    pad = np.zeros((res_y, res_x + 2), bool)
    pad[:, 1:-1] = bad
    dd = np.diff(pad.astype(np.int8), axis=1)
    rs, xs = np.nonzero(dd == 1)
    re_, xe = np.nonzero(dd == -1)  # same order (row-major): run k starts at xs[k], ends at xe[k] - 1
    lo, hi = xs - 1, xe  # the unstretched pixels around the run
    keep = (hi - lo) <= max(2, int(UNSTRETCH_MAX_RUN * res_x))
    # only a band that is a streak somewhere (a hard stretch): a mildly stretched one (hair spread 2x, still hair) is
    # left as it is — folded here and there, from row to row, it ripples
    flat = slope.reshape(-1)
    idx = np.stack([rs * res_x + xs, rs * res_x + xe], 1).reshape(-1).astype(np.int64)  # [start, end) of each run
    run_min = np.minimum.reduceat(flat, idx)[::2]
    keep &= run_min < UNSTRETCH_HARD
    if avoid is not None and avoid.any():
        # what the fold would read on the face side: from the inner end up to min(W / 2, depth) into it
        reach = np.minimum((hi - lo) / 2.0, UNSTRETCH_DEPTH * res_x) + 1
        in_r = np.abs(hi + 0.5 - centre_x) <= np.abs(lo + 0.5 - centre_x)
        a0 = np.where(in_r, lo, np.floor(lo - reach)).astype(np.int64)
        a1 = np.where(in_r, np.ceil(hi + reach), hi).astype(np.int64)
        a0, a1 = np.clip(a0, 0, res_x), np.clip(a1 + 1, 0, res_x)
        cum = np.concatenate([np.zeros((res_y, 1), np.int32), np.cumsum(avoid, axis=1, dtype=np.int32)], 1)
        keep &= (cum[rs, a1] - cum[rs, a0]) == 0
    rs, lo, hi = rs[keep], lo[keep], hi[keep]
    if not len(rs):
        return disp, changed
    n = hi - lo - 1
    rid = np.repeat(np.arange(len(rs)), n)
    x = (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n) + 1).astype(np.int64)
    r = rs[rid]
    L, R = lo[rid], hi[rid]
    # the face side: the end nearer the face's centre column
    inner_right = np.abs(R + 0.5 - centre_x) <= np.abs(L + 0.5 - centre_x)
    g = np.where(inner_right, R, L)  # the inner end (mirror about it)
    o = np.where(inner_right, L, R)  # the outer end (continued at slope 1)
    # at most UNSTRETCH_DEPTH of the grid is taken from the face side (a wide band would mirror an eye corner or a
    # glasses frame into itself): a wider band shows that much, spread by up to W / (2 depth)
    k = np.minimum(1.0, 2.0 * UNSTRETCH_DEPTH * res_x / np.maximum(np.abs(R - L), 1)).astype(np.float32)
    sgn = np.where(inner_right, 1.0, -1.0).astype(np.float32)
    mxf = np.clip(g + sgn * np.abs(x - g) * k, 0, res_x - 1).astype(np.float32)
    m0 = np.floor(mxf).astype(np.int64)
    m1 = np.minimum(m0 + 1, res_x - 1)
    fm = mxf - m0
    src_m_x = sx[r, m0] * (1 - fm) + sx[r, m1] * fm
    src_o_x = sx[r, o] + (x - o) * k
    # inner on the right: the source increases to the right, the fold takes the smaller; on the left the larger
    use_m = np.where(inner_right, src_m_x < src_o_x, src_m_x > src_o_x)
    out = disp.copy()
    cx = x.astype(np.float32)
    new_x = np.where(use_m, src_m_x, src_o_x)
    new_y_disp = np.where(use_m, disp[r, m0, 1] * (1 - fm) + disp[r, m1, 1] * fm, disp[r, o, 1])
    if keep_src is not None and keep_src.any():
        # what the band shows now: its own source (the rim the photo saw edge-on), per run the share on keep_src
        hx = np.clip(np.round(sx[r, x]), 0, res_x - 1).astype(np.int64)
        hy = np.clip(np.round(r + disp[r, x, 1] / step), 0, res_y - 1).astype(np.int64)
        share = np.bincount(rid, keep_src[hy, hx].astype(np.float64), len(rs)) / np.maximum(n, 1)
        # neighbouring rows agree (a band folded in one row and not the next ripples)
        sk = np.zeros((res_y, res_x), np.float32)
        on = np.zeros((res_y, res_x), np.float32)
        sk[r, x] = share[rid]
        on[r, x] = 1.0
        sk = (cv2.GaussianBlur(sk, (1, 0), sigmaX=0.1, sigmaY=UNSTRETCH_ROW_SIGMA)
              / np.maximum(cv2.GaussianBlur(on, (1, 0), sigmaX=0.1, sigmaY=UNSTRETCH_ROW_SIGMA), 1e-6))
        fold = sk[r, x] < UNSTRETCH_KEEP_SHARE
        r, x, cx, new_x, new_y_disp = r[fold], x[fold], cx[fold], new_x[fold], new_y_disp[fold]
    out[r, x, 0] = (new_x - cx) * step
    out[r, x, 1] = new_y_disp
    changed[r, x] = True
    # the fold's source, low-passed across the rows (inside the folded bands only)
    cf = changed.astype(np.float32)
    k = cv2.GaussianBlur(cf, (1, 0), sigmaX=0.1, sigmaY=UNSTRETCH_ROW_SIGMA)
    sm = cv2.GaussianBlur(out * cf[..., None], (1, 0), sigmaX=0.1, sigmaY=UNSTRETCH_ROW_SIGMA)
    out = np.where(changed[..., None], sm / np.maximum(k, 1e-6)[..., None], out).astype(np.float32)
    return out, changed
