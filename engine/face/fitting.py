"""3DMM fitting by analysis by synthesis: canonical crops + 68 landmarks → :class:`Coefficients`.

Batched, CPU-friendly, two stages (Adam):

1. **landmarks** — pose, identity and expression against the 68 detected landmarks. Only the 68 landmark
   vertices are computed (a (68·3)-row slice of the bases), no rasterizing, so this stage is cheap.
   Points are weighted (eyes, nose and mouth high; the jaw contour low, because a 2D detector's contour slides
   with the head's silhouette while our jaw landmarks are fixed vertices).
2. **photometric** — adds the rendered image: a robust per-pixel colour distance inside the render mask, with
   pixels whose colour is far from the face's median colour (hair, glasses, background showing through)
   down-weighted. Light (27 SH) and albedo (K learned components, when ``assets/albedo.safetensors`` exists)
   join; a per-image RGB gain carries the skin colour, and the light is pulled toward a grey (channel-equal)
   light so that the light/albedo split stays sane.

Priors: identity ~ N(0, 1) (weight on ||α||²), albedo ~ N(0, 1), expression kept in [0, 1] by projection after
every step plus a small L1 pull toward 0, light offsets small, gain near 1 when an albedo basis exists.

The landmark error is reported as NME: the mean point distance divided by the outer-eye-corner distance (36/45)
of the target landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import Coefficients, FaceModel

# landmark weights (iBUG 68 order)
LANDMARK_WEIGHTS = np.ones(68, np.float32)
LANDMARK_WEIGHTS[0:17] = 0.7  # jaw contour (points 0-5, 11-16 slide along the silhouette, see below)
LANDMARK_WEIGHTS[[0, 16]] = 0.3
LANDMARK_WEIGHTS[17:27] = 1.0  # brows
LANDMARK_WEIGHTS[27:36] = 1.5  # nose
LANDMARK_WEIGHTS[[30, 31, 33, 35]] = 3.0
LANDMARK_WEIGHTS[36:48] = 3.0  # eyes
LANDMARK_WEIGHTS[48:68] = 2.0  # mouth
LANDMARK_WEIGHTS[[48, 54, 60, 64]] = 3.0


class FitCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asks the fit to stop."""


@dataclass
class FitResult:
    coeffs: Coefficients  # fitted coefficients (detached)
    landmark_nme: torch.Tensor  # (B,) mean landmark error / outer-eye-corner distance
    photometric: torch.Tensor  # (B,) mean colour distance inside the mask (0..√3), NaN if not run
    gain: torch.Tensor  # (B, 3) per-image RGB gain applied on top of the rendered colour
    landmarks: torch.Tensor  # (B, 68, 2) fitted landmarks, in the input crop's pixels


def landmark_nme(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) mean point distance normalised by the target's outer-eye-corner distance (points 36 and 45)."""
    iod = (target[:, 36] - target[:, 45]).norm(dim=-1).clamp_min(1e-6)
    return (pred - target).norm(dim=-1).mean(-1) / iod


def _resize(crops: torch.Tensor, size: int) -> torch.Tensor:
    if crops.shape[-1] == size and crops.shape[-2] == size:
        return crops
    return F.interpolate(crops, size=(size, size), mode="area" if crops.shape[-1] > size else "bilinear",
                         align_corners=None if crops.shape[-1] > size else False)


class LandmarkGeometry:
    """The 68 landmark vertices only: (B, 68, 2) pixels from identity/expression/pose.

    With ``sliding=True`` the jaw-contour points 0–5 and 11–16 slide along the face like a detector's contour:
    each has a small set of candidate vertices at its height between the kit's front jawline (``lm68``) and its
    alternative, further-back jawline (``lm68_jaw_alt``); the candidate that projects furthest out (the
    silhouette) is used. The choice carries no gradient; the chosen vertex's position does.
    """

    def __init__(self, model: FaceModel, renderer, sliding: bool = True):
        idx = model.lm68
        self.sliding = sliding
        self.slots: list[tuple[int, torch.Tensor, float]] = []  # (landmark, positions in verts, side)
        allidx = [idx]
        if sliding:
            mv = model.mean
            alt = _jaw_alt(model)
            off = 68
            for i in list(range(0, 6)) + list(range(11, 17)):
                side = -1.0 if i < 8 else 1.0
                v_front, v_back = mv[idx[i]], mv[alt[i]]
                y_lo, y_hi = sorted((float(v_front[1]), float(v_back[1])))
                xmax = max(abs(float(v_front[0])), abs(float(v_back[0]))) + 0.3
                xmin = min(abs(float(v_front[0])), abs(float(v_back[0]))) - 0.6
                zmin = min(float(v_front[2]), float(v_back[2])) - 0.3
                sel = ((mv[:, 1] >= y_lo - 0.35) & (mv[:, 1] <= y_hi + 0.35) & (mv[:, 0] * side > xmin)
                       & (mv[:, 0] * side < xmax) & (mv[:, 2] >= zmin))
                cand = torch.unique(torch.cat([torch.nonzero(sel)[:, 0], idx[i:i + 1], alt[i:i + 1]]))
                self.slots.append((i, torch.arange(off, off + len(cand)), side))
                allidx.append(cand)
                off += len(cand)
        self.idx = torch.cat(allidx)
        n = len(self.idx)
        self.mean = model.mean[self.idx]
        self.id_b = model.id_basis[:, self.idx].reshape(model.id_basis.shape[0], n * 3)
        self.exp_b = model.exp_basis[:, self.idx].reshape(model.exp_basis.shape[0], n * 3)
        self.camera = renderer.camera

    def __call__(self, identity, expression, pose, size):
        v = self.mean + (identity @ self.id_b + expression @ self.exp_b).view(identity.shape[0], -1, 3)
        p = self.camera.project(self.camera.to_camera(v, pose), size)
        lm = p[:, :68]
        if not self.slots:
            return lm
        cols = [lm[:, j] for j in range(68)]
        for i, pos, side in self.slots:
            cand = p[:, pos]  # (B, n, 2)
            k = (cand[..., 0].detach() * side).argmax(1)
            cols[i] = cand[torch.arange(cand.shape[0]), k]
        return torch.stack(cols, 1)


def _jaw_alt(model: FaceModel) -> torch.Tensor:
    alt = getattr(model, "_lm68_jaw_alt", None)
    if alt is None:
        from engine.face.model import load_ict_arrays

        try:
            alt = torch.from_numpy(load_ict_arrays()["lm68_jaw_alt"].astype(np.int64))
        except KeyError:
            alt = model.lm68.clone()
        model._lm68_jaw_alt = alt
    return alt


def skin_weights(target: torch.Tensor, mask: torch.Tensor, sigma: float = 0.25) -> torch.Tensor:
    """(B,1,H,W) weights in (0, 1]: 1 near the median colour of the masked pixels, falling off with distance."""
    b = target.shape[0]
    w = torch.ones_like(mask)
    for i in range(b):
        m = mask[i, 0] > 0.5
        if m.sum() < 10:
            continue
        med = target[i][:, m].median(dim=1).values  # (3,)
        d2 = ((target[i] - med[:, None, None]) ** 2).sum(0)
        w[i, 0] = torch.exp(-d2 / (2 * sigma ** 2)).clamp_min(0.05)
    return w


def fit_coefficients(crops: torch.Tensor, landmarks: torch.Tensor, model: FaceModel, renderer,
                     steps: tuple[int, int] | int = (150, 60), size: int = 64,
                     progress: Callable[[float], None] | None = None,
                     cancel: Callable[[], bool] | None = None, init: Coefficients | None = None,
                     photometric: bool = True, lr: float = 0.1, w_id: float = 1e-5,
                     w_exp: float = 5e-6, w_light: float = 0.05, w_alb: float = 2e-4, w_lm_photo: float = 100.0) -> FitResult:
    """Fit coefficients to canonical crops.

    crops: (B, 3, H, W) float in [0, 1], canonical aligned crops; landmarks: (B, 68, 2) in crop pixels.
    steps: (landmark steps, photometric steps) or one int for the landmark stage only.
    Returns a :class:`FitResult` whose coefficients render onto the crop (any render size).
    """
    if isinstance(steps, int):
        steps = (steps, 0)
    n_lm, n_ph = steps
    if not photometric:
        n_ph = 0
    crops = crops.float()
    b, _, h, w = crops.shape
    dev = crops.device
    scale = size / float(w)
    lm_t = landmarks.float().to(dev) * scale
    lw = torch.from_numpy(LANDMARK_WEIGHTS).to(dev)
    lw = lw / lw.mean()
    geo = LandmarkGeometry(model, renderer)

    c0 = init.detach().clone() if init is not None else model.zeros(b).to(dev)
    identity = c0.identity.clone().requires_grad_(True)
    expression = c0.expression.clone().requires_grad_(True)
    pose = c0.pose.clone().requires_grad_(True)
    light = c0.light.clone().requires_grad_(True)
    albedo = c0.albedo.clone().requires_grad_(True)
    log_gain = torch.zeros(b, 3, device=dev, requires_grad=True)
    mclose = model.exp_names.index("mouthClose") if "mouthClose" in model.exp_names else None
    jopen = model.exp_names.index("jawOpen") if "jawOpen" in model.exp_names else None
    total = max(1, n_lm + n_ph)
    done = 0

    def lm_loss(pred):
        d2 = ((pred - lm_t) ** 2).sum(-1) / (size * size)  # (B, 68)
        return (d2 * lw).mean(-1)

    def prior_shape():
        p = w_id * (identity ** 2).sum(-1) + w_exp * expression.abs().sum(-1)
        if mclose is not None and jopen is not None:  # mouthClose is corrective: never beyond jawOpen
            p = p + 1e-2 * F.relu(expression[:, mclose] - expression[:, jopen]) ** 2
        return p

    def project():
        with torch.no_grad():
            expression.clamp_(0.0, 1.0)
            pose[:, 0].clamp_(-1.4, 1.4)
            pose[:, 1:].clamp_(-1.0, 1.0)

    def tick():
        nonlocal done
        done += 1
        if cancel is not None and cancel():
            raise FitCancelled("fitting cancelled")
        if progress is not None:
            progress(done / total)

    # ---- stage 1: landmarks --------------------------------------------------------------------------- #
    if n_lm:
        # pose first (a few steps, identity frozen), then everything
        opt = torch.optim.Adam([{"params": [pose], "lr": lr},
                                {"params": [identity], "lr": lr * 2},
                                {"params": [expression], "lr": lr}])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_lm, eta_min=lr * 0.05)
        for it in range(n_lm):
            opt.zero_grad(set_to_none=True)
            pred = geo(identity, expression, pose, size)
            loss = lm_loss(pred)
            if it >= n_lm // 6:
                loss = loss + prior_shape()
            else:  # pose warm-up: shape barely moves
                loss = loss + 1e-2 * (identity ** 2).sum(-1) + 1e-2 * expression.abs().sum(-1)
            loss.sum().backward()
            opt.step()
            sched.step()
            project()
            tick()

    # ---- stage 2: photometric ------------------------------------------------------------------------- #
    photo = torch.full((b,), float("nan"), device=dev)
    if n_ph:
        target = _resize(crops, size)
        c_cur = Coefficients(identity, albedo, expression, light, pose, model.exp_names)
        with torch.no_grad():
            m0 = renderer(c_cur.detach(), size).mask
            skin_w = skin_weights(target, m0)
            # initial gain: the face's median colour over the default render's
            r0 = renderer(c_cur.detach(), size).image
            for i in range(b):
                m = m0[i, 0] > 0.5
                if m.sum() > 10:
                    ratio = target[i][:, m].median(1).values / r0[i][:, m].median(1).values.clamp_min(1e-3)
                    log_gain[i] = ratio.clamp(0.2, 3.0).log()
        params = [{"params": [pose], "lr": lr * 0.2},
                  {"params": [identity], "lr": lr},
                  {"params": [expression], "lr": lr * 0.5},
                  {"params": [light], "lr": lr * 0.5},
                  {"params": [log_gain], "lr": lr * 0.5}]
        if albedo.shape[1]:
            params.append({"params": [albedo], "lr": lr})
        opt = torch.optim.Adam(params)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_ph, eta_min=lr * 0.05)
        has_alb = albedo.shape[1] > 0
        for it in range(n_ph):
            opt.zero_grad(set_to_none=True)
            c_cur = Coefficients(identity, albedo, expression, light, pose, model.exp_names)
            r = renderer(c_cur, size)
            img = r.image * log_gain.exp()[:, :, None, None]
            wmask = r.mask * skin_w
            dist = ((img - target) ** 2).sum(1, keepdim=True).add(1e-6).sqrt()
            ph = (dist * wmask).sum((1, 2, 3)) / wmask.sum((1, 2, 3)).clamp_min(1.0)
            lm = w_lm_photo * lm_loss(geo(identity, expression, pose, size))
            sh = light.view(b, 3, 9)
            l_prior = w_light * (light ** 2).sum(-1) + 0.5 * ((sh - sh.mean(1, keepdim=True)) ** 2).sum((1, 2))
            loss = ph + lm + w_lm_photo * prior_shape() + l_prior
            if has_alb:
                loss = loss + w_alb * (albedo ** 2).sum(-1) + 0.05 * (log_gain ** 2).sum(-1)
            loss.sum().backward()
            opt.step()
            sched.step()
            project()
            tick()
            photo = ph.detach()

    with torch.no_grad():
        final = Coefficients(identity.detach().clone(), albedo.detach().clone(), expression.detach().clone(),
                             light.detach().clone(), pose.detach().clone(), model.exp_names)
        pred_lm = geo(final.identity, final.expression, final.pose, w)
        nme = landmark_nme(pred_lm, landmarks.float().to(dev))
    return FitResult(final, nme, photo, log_gain.detach().exp(), pred_lm)


# ----------------------------------------------------------------------------------------------- conveniences
def crops_to_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy/torch (or one (H, W, 3)) → float (N, 3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float() / 255.0


def fit_photo(path, size: int = 128, steps=(200, 80), fit_size: int = 96, progress=None, cancel=None):
    """Detect, align and fit one photo → (Coefficients, crop uint8 (size, size, 3), Alignment, FitResult).

    Raises ``engine.perception.align.AlignError`` (a clear message) when the file or face is unusable.
    """
    from engine.face.model import default_model
    from engine.perception.align import align_face
    from engine.render import FaceRenderer

    crop, al = align_face(path, size)
    model = default_model()
    renderer = _renderer_for(model)
    res = fit_coefficients(crops_to_tensor(crop), torch.from_numpy(np.asarray(al.landmarks_crop))[None],
                           model, renderer, steps=steps, size=fit_size, progress=progress, cancel=cancel)
    return res.coeffs, crop, al, res


_RENDERERS: dict[int, object] = {}


def _renderer_for(model: FaceModel):
    from engine.render import FaceRenderer

    r = _RENDERERS.get(id(model))
    if r is None:
        r = _RENDERERS[id(model)] = FaceRenderer(model)
    return r


def overlay_image(crop, coeffs: Coefficients, landmarks=None, model: FaceModel | None = None,
                  gain=None) -> np.ndarray:
    """photo | render | blend (with fitted landmarks in green, ``landmarks`` targets in red) as uint8 (H, 3W, 3)."""
    import cv2

    from engine.face.model import default_model

    model = model or default_model()
    renderer = _renderer_for(model)
    crop = np.asarray(crop, np.uint8)
    h = crop.shape[0]
    with torch.no_grad():
        r = renderer(coeffs[0:1], h)
        img = r.image[0]
        if gain is not None:
            img = (img * torch.as_tensor(gain, dtype=img.dtype).reshape(3, 1, 1)).clamp(0, 1)
        rend = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        m = r.mask[0, 0].numpy()[..., None]
        lm = r.landmarks[0].numpy()
    blend = (crop * (1 - 0.6 * m) + rend * 0.6 * m).astype(np.uint8)
    blend = np.ascontiguousarray(blend)
    if landmarks is not None:
        for x, y in np.asarray(landmarks).reshape(68, 2):
            cv2.circle(blend, (int(x), int(y)), max(1, h // 128), (255, 40, 40), -1)
    for x, y in lm:
        cv2.circle(blend, (int(x), int(y)), max(1, h // 128), (40, 255, 40), -1)
    return np.concatenate([crop, rend, blend], 1)


# --------------------------------------------------------------------------- per-vertex colours and linear light
NARROW_FACE_VERTICES = 6706  # the kit's "narrow face area" is the vertex prefix 0..6705 (no ears, neck, scalp)


@torch.no_grad()
def sample_vertex_colors(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                         min_facing: float = 0.25):
    """Photo colours at the projected vertices of the fitted faces.

    Returns ``colors`` (B, V, 3) sampled bilinearly from the crops, ``valid`` (B, V) bool (visible by a z-buffer
    test, facing the camera with n·view > ``min_facing``, inside the crop) and ``normals`` (B, V, 3) in camera
    orientation (for SH shading).
    """
    from engine.render import rotation_matrix

    b = crops.shape[0]
    r = renderer(coeffs, size)
    screen, cam = r.screen, r.cam_vertices
    verts = model.vertices(coeffs)
    normals = model.vertex_normals(verts) @ rotation_matrix(coeffs.pose).transpose(1, 2)
    # z-buffer test at the vertex's pixel
    ix = screen[..., 0].floor().long().clamp(0, size - 1)
    iy = screen[..., 1].floor().long().clamp(0, size - 1)
    depth = r.depth[:, 0]
    zb = depth[torch.arange(b)[:, None], iy, ix]
    inside = (screen[..., 0] > 1) & (screen[..., 0] < size - 1) & (screen[..., 1] > 1) & (screen[..., 1] < size - 1)
    view = -torch.nn.functional.normalize(cam - torch.tensor([0.0, 0.0, 0.0]), dim=-1)  # toward the camera
    # camera space has z = distance in front, so the view direction toward the camera is (-x, -y, -z)/|.|
    # while normals are in model-rotated axes (+z toward the viewer): flip z of the camera vector
    view = torch.stack([view[..., 0], view[..., 1], -view[..., 2]], -1)
    facing = (normals * view).sum(-1)
    valid = inside & (zb > 0) & ((cam[..., 2] - zb).abs() < 0.6) & (facing > min_facing)
    grid = screen / size * 2 - 1  # align_corners=False convention: pixel centres at i + 0.5
    img = _resize(crops.float(), size)
    colors = F.grid_sample(img, grid.unsqueeze(1), mode="bilinear", align_corners=False)[:, :, 0].permute(0, 2, 1)
    return colors, valid, normals


LIGHT_SHARE = 0.3  # fraction (in log) of the overall brightness attributed to the light; the rest to the albedo


def split_light_gain(p: torch.Tensor, share: float = LIGHT_SHARE):
    """Per-channel SH light ``p`` (3, 9) (colour and brightness included) → (grey light offsets (27,), gain (3,)).

    Brightness and light intensity are ambiguous in a photo; ``share`` of it (in log) goes to the ambient light,
    the rest (and all colour) to the RGB gain, so dark skin stays dark albedo rather than dim light.
    """
    from engine.face.model import DEFAULT_AMBIENT

    p0 = p[:, 0].clamp_min(1e-3)
    s = p0.mean() / DEFAULT_AMBIENT
    l0 = DEFAULT_AMBIENT * s ** share
    g = p0 / l0
    lk = (p / g[:, None]).mean(0)
    full = lk.expand(3, 9).clone()
    full[:, 0] -= DEFAULT_AMBIENT
    return full.reshape(27), g


@torch.no_grad()
def solve_light(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                iters: int = 4, vertices: int = NARROW_FACE_VERTICES):
    """Linear least-squares SH light (grey) and per-image RGB gain for fixed geometry.

    colour_c(v) = albedo_c(v) · gain_c · Σ_k Y_k(n_v) L_k, solved per channel on the visible, camera-facing
    vertices of the narrow face region, iteratively reweighted (Cauchy) so hair, glasses and shadows that the
    model cannot explain are down-weighted. Returns (light offsets (B, 27), gain (B, 3), residual (B,) mean
    colour distance of the inliers).
    """
    from engine.render.shading import sh_basis
    from engine.face.model import DEFAULT_AMBIENT

    colors, valid, normals = sample_vertex_colors(crops, coeffs, model, renderer, size)
    colors, valid, normals = colors[:, :vertices], valid[:, :vertices], normals[:, :vertices]
    alb = model.albedo(coeffs)[:, :vertices]
    y = sh_basis(normals)  # (B, V, 9)
    b = colors.shape[0]
    light = torch.zeros(b, 27)
    gain = torch.ones(b, 3)
    resid = torch.full((b,), float("nan"))
    eye = torch.eye(9)
    prior = torch.zeros(9)
    prior[0] = DEFAULT_AMBIENT
    for i in range(b):
        m = valid[i]
        if m.sum() < 50:
            continue
        yi, ci, ai = y[i][m], colors[i][m], alb[i][m].clamp_min(1e-3)
        w = torch.ones(len(yi))
        for _ in range(iters):
            p = []
            for c in range(3):
                a = yi * ai[:, c:c + 1]  # (n, 9)
                aw = a * w[:, None]
                lam = 1e-2 * w.sum()
                sol = torch.linalg.solve(a.T @ aw + lam * eye, aw.T @ ci[:, c] + lam * prior)
                p.append(sol)
            p = torch.stack(p)  # (3, 9): per-channel light incl. colour
            pred = torch.einsum("nk,ck->nc", yi, p) * ai
            r = (pred - ci).norm(dim=-1)
            s = r.median().clamp_min(1e-3) * 1.5
            w = 1.0 / (1.0 + (r / s) ** 2)
        light[i], gain[i] = split_light_gain(p)
        resid[i] = (r * w).sum() / w.sum()
    return light, gain, resid


@torch.no_grad()
def solve_albedo(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                 iters: int = 3, ridge: float = 1.0, vertices: int = NARROW_FACE_VERTICES):
    """Linear robust albedo coefficients for fixed geometry and light (needs a learned albedo basis), then the
    light and gain once more with that albedo. Returns (albedo (B, K), gain (B, 3), residual (B,)); the light is
    written into ``coeffs.light``."""
    from engine.render.shading import sh_basis, full_light

    k = model.albedo_dim
    b = crops.shape[0]
    if k == 0:
        return coeffs.albedo.clone(), torch.ones(b, 3), torch.full((b,), float("nan"))
    colors, valid, normals = sample_vertex_colors(crops, coeffs, model, renderer, size)
    colors, valid, normals = colors[:, :vertices], valid[:, :vertices], normals[:, :vertices]
    irr = torch.einsum("bvk,bck->bvc", sh_basis(normals), full_light(coeffs.light))  # (B, V, 3)
    mean = model.albedo_mean[:vertices]
    basis = model.albedo_basis[:, :vertices]  # (K, V, 3)
    out = torch.zeros(b, k)
    for i in range(b):
        m = valid[i]
        if m.sum() < 50:
            continue
        a = (basis[:, m] * irr[i][m]).permute(1, 2, 0).reshape(-1, k)  # (n*3, K)
        rhs = (colors[i][m] - mean[m] * irr[i][m]).reshape(-1)
        w = torch.ones(int(m.sum()))
        for _ in range(iters):
            w3 = w.repeat_interleave(3)
            aw = a * w3[:, None]
            sol = torch.linalg.solve(a.T @ aw + ridge * torch.eye(k), aw.T @ rhs)
            r = (a @ sol - rhs).view(-1, 3).norm(dim=-1)
            s = r.median().clamp_min(1e-3) * 1.5
            w = 1.0 / (1.0 + (r / s) ** 2)
        out[i] = sol
    c2 = coeffs.clone()
    c2.albedo = out
    light, gain, resid = solve_light(crops, c2, model, renderer, size)
    coeffs.light = light
    return out, gain, resid
