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

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import Coefficients, FaceModel, default_model
from engine.fit.common import FitCancelled, crops_to_tensor, renderer_for, resize_crops
from engine.fit.landmarks import LANDMARK_WEIGHTS, LandmarkGeometry, landmark_nme
from engine.perception.align import align_face

__all__ = ["FitResult", "skin_weights", "fit_coefficients", "fit_photo_crop", "overlay_image"]


@dataclass
class FitResult:
    coeffs: Coefficients  # fitted coefficients (detached)
    landmark_nme: torch.Tensor  # (B,) mean landmark error / outer-eye-corner distance
    photometric: torch.Tensor  # (B,) mean colour distance inside the mask (0..√3), NaN if not run
    gain: torch.Tensor  # (B, 3) per-image RGB gain applied on top of the rendered colour
    landmarks: torch.Tensor  # (B, 68, 2) fitted landmarks, in the input crop's pixels

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
        target = resize_crops(crops, size)
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


def fit_photo_crop(path, size: int = 128, steps=(200, 80), fit_size: int = 96, progress=None, cancel=None):
    """Detect, align and fit one photo → (Coefficients, crop uint8 (size, size, 3), Alignment, FitResult).

    Raises ``engine.perception.align.AlignError`` (a clear message) when the file or face is unusable.
    """
    crop, al = align_face(path, size)
    model = default_model()
    renderer = renderer_for(model)
    res = fit_coefficients(crops_to_tensor(crop), torch.from_numpy(np.asarray(al.landmarks_crop))[None],
                           model, renderer, steps=steps, size=fit_size, progress=progress, cancel=cancel)
    return res.coeffs, crop, al, res


_RENDERERS: dict[int, object] = {}

def overlay_image(crop, coeffs: Coefficients, landmarks=None, model: FaceModel | None = None,
                  gain=None) -> np.ndarray:
    """photo | render | blend (with fitted landmarks in green, ``landmarks`` targets in red) as uint8 (H, 3W, 3)."""
    model = model or default_model()
    renderer = renderer_for(model)
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
