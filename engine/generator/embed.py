"""Embed a real photo into the generator's factor latents (the part DiscoFaceGAN described but never released).

Pipeline: ``PhotoEmbedder(generator).embed(photo)``

1. **Align**: detect the face, 68 landmarks, similarity warp to the canonical crop (``perception.align``). The crop
   is made at ``max(128, G resolution)`` for the initialiser and area-resized to the generator's resolution.
2. **Initialise** the coefficients with the R-Net (``perception.rnet``) when its weights exist, otherwise with a
   short landmark + photometric 3DMM fit (``engine.face.fitting``). The noise code starts from the best of a few seeded
   candidates (one batched forward pass), so the seed matters and the result is deterministic for a seed.
3. **Optimise** (Adam, cosine-decayed learning rate) in two phases:
   * phase 1 (first ``offset_start`` fraction of the steps): coefficients λ and the noise code only — the
     factorised latent explains as much of the photo as it can;
   * phase 2: additionally per-layer offsets of the style vectors (``G.ws(λ, noise) + offsets``), L2-regularised,
     which absorb what the factorised code cannot (they must stay small for edits to stay disentangled).
   Losses:
     * L1 colour distance inside the face region (the render mask of the current λ, dilated), weight ``w_face``,
     * L1 over the whole crop (hair, background), weight ``w_all``,
     * identity-net distance ``1 − cos`` between reconstruction and photo (``perception.identity``), ``w_id``,
       evaluated every ``id_every`` steps (it is the costliest term on the CPU),
     * landmarks: the 3DMM landmarks of λ (points 17–67) vs the photo's detected landmarks, ``w_lm`` — keeps λ
       meaning what it says, so pose / expression edits after embedding move the right things,
     * priors: identity, albedo and light stay near the initialiser, the noise near N(0, I)'s shell, offsets small.
4. The result is a session latent: coefficients + noise + offsets (``Session.from_embedding``). Editing a factor
   afterwards changes that factor's coefficients; the offsets and the noise ride along unchanged, so the person stays.
5. ``paste_into_photo`` composites an (edited) reconstruction back into the original photo through the inverse
   alignment with a feathered face mask.

Progress is reported through ``progress(step, total, loss)`` (called exactly ``steps`` times); ``cancel()`` returning
True stops the run and raises :class:`EmbedCancelled`. Nothing is written to disk by the embedder itself.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import Coefficients

DEFAULT_STEPS = 100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class EmbedError(ValueError):
    """The photo cannot be embedded (no generator, unreadable, no face …); the message says why."""


class EmbedCancelled(Exception):
    """The user cancelled the embedding."""


@dataclass
class EmbedResult:
    coeffs: Coefficients
    noise: torch.Tensor  # (1, noise_dim)
    w_offsets: torch.Tensor | None  # (1, num_ws, w_dim) or None
    crop: np.ndarray  # aligned photo crop at the generator's resolution, uint8 (S, S, 3)
    alignment: object  # perception.align.Alignment of ``crop`` (photo px -> crop px)
    reconstruction: torch.Tensor  # (1, 3, S, S) in [0, 1]
    metrics: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)  # total loss per optimisation step
    init_coeffs: Coefficients | None = None  # the initialiser's coefficients (R-Net or 3DMM fit)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [0, 1]; with a (B, 1, H, W) mask, over the masked pixels only."""
    err = (a - b).pow(2)
    if mask is not None:
        err = (err * mask).sum() / (mask.sum() * a.shape[1]).clamp_min(1)
    else:
        err = err.mean()
    return float(10 * torch.log10(1.0 / err.clamp_min(1e-10)))


def synthesize_embedding(generator, coeffs: Coefficients, noise: torch.Tensor,
                         w_offsets: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
    """The generator's image (B, 3, S, S) in [0, 1] for coefficients + noise (+ per-layer style offsets), no
    truncation (an embedding is a specific person, not a sample to pull toward the average)."""
    G = generator.G
    dev = G.coeff_mean.device
    ws = G.ws(coeffs.to(dev), noise.to(dev))
    if w_offsets is not None:
        ws = ws + w_offsets.to(ws)
    img = G.synthesis(ws) * 0.5 + 0.5
    return img.clamp(0.0, 1.0) if clamp else img


def conform_albedo(c: Coefficients, k: int) -> Coefficients:
    """The same coefficients with the albedo vector zero-padded / truncated to ``k`` values."""
    a = c.albedo
    if a.shape[1] == k:
        return c
    if a.shape[1] > k:
        a = a[:, :k]
    else:
        a = torch.cat([a, a.new_zeros(a.shape[0], k - a.shape[1])], 1)
    return Coefficients(c.identity, a, c.expression, c.light, c.pose, exp_names=c.exp_names)


def _as_uint8_hwc(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        from engine.io.files import to_uint8_image

        return to_uint8_image(img)
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255.0 if a.max(initial=0) <= 1.0 else a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


class PhotoEmbedder:
    """photo → (coefficients, noise, offsets) of ``generator`` (an ``engine.generator.networks.FaceGenerator``).

    Defaults are tuned for the CPU at 64 px (see bench/embed.py for the measured figures)."""

    def __init__(self, generator, rnet=None, idnet=None, renderer=None, steps: int = DEFAULT_STEPS,
                 lr: float = 0.05, *, w_face: float = 1.0, w_all: float = 0.3, w_id: float = 0.8,
                 w_lm: float = 100.0, w_offset: float = 1.0, w_prior: float = 0.02, offset_start: float = 0.35,
                 id_every: int = 2, noise_candidates: int = 8, model=None):
        from engine.face.model import default_model
        from engine.render import FaceRenderer

        if generator is None:
            raise EmbedError("photo embedding needs generator weights (assets/generator.safetensors)")
        self.gen = generator
        self.model = model if model is not None else default_model()
        self.renderer = renderer or FaceRenderer(self.model)
        self.rnet = rnet  # None: load the shipped one lazily; False: do not use an R-Net (3DMM fit init)
        self.idnet = idnet  # None: load lazily; False: no identity loss
        self.steps = int(steps)
        self.lr = float(lr)
        self.w_face, self.w_all, self.w_id, self.w_lm = w_face, w_all, w_id, w_lm
        self.w_offset, self.w_prior, self.offset_start = w_offset, w_prior, offset_start
        self.id_every = max(1, int(id_every))
        self.noise_candidates = max(1, int(noise_candidates))

    @property
    def resolution(self) -> int:
        return int(self.gen.resolution)

    # -- components, loaded lazily ------------------------------------------------------------ #
    def _rnet(self):
        if self.rnet is None:
            try:
                from engine.perception.rnet import default_rnet

                self.rnet = default_rnet()
            except (ImportError, ValueError, OSError):  # no / broken weights: fall back to the 3DMM fit
                self.rnet = False
        return self.rnet or None

    def _idnet(self):
        if self.idnet is None:
            try:
                from engine.perception.identity import default_identity_net

                self.idnet = default_identity_net()
            except (ImportError, ValueError, OSError, RuntimeError):
                self.idnet = False
        return self.idnet or None

    def _model_coeffs(self, c: Coefficients) -> Coefficients:
        """``c`` with the albedo size the face model (renderer) expects."""
        return conform_albedo(c, self.model.albedo_dim)

    # -- the pipeline ------------------------------------------------------------------------- #
    def align(self, photo):
        """(photo uint8, crop at the generator's size, its Alignment, crop at the initialiser's size, its Alignment)."""
        from engine.perception import align as A

        img = A.load_image(photo) if not isinstance(photo, np.ndarray) else A._as_rgb(photo)
        size = self.resolution
        big = max(128, size)
        crop_big, al_big = A.align_face(img, size=big)
        if big == size:
            return img, crop_big, al_big, crop_big, al_big
        crop, al = A.align_with_landmarks(img, al_big.landmarks_photo, size, n_faces=al_big.n_faces, box=al_big.box)
        return img, crop, al, crop_big, al_big

    def initialise(self, crop_big: np.ndarray, landmarks_big: np.ndarray, cancel: Callable[[], bool] | None = None
                   ) -> tuple[Coefficients, str]:
        """Coefficients for the aligned crop: R-Net when available, else a short 3DMM fit."""
        target = torch.from_numpy(crop_big).permute(2, 0, 1)[None].float() / 255.0
        rnet = self._rnet()
        if rnet is not None:
            with torch.no_grad():
                c = rnet.predict(target).detach()
            how = "rnet"
        else:
            from engine.face.fitting import FitCancelled, fit_coefficients, solve_albedo, solve_light

            lm = torch.as_tensor(np.asarray(landmarks_big), dtype=torch.float32)[None]
            try:
                res = fit_coefficients(target, lm, self.model, self.renderer, steps=(80, 0), size=64, cancel=cancel)
            except FitCancelled:
                raise EmbedCancelled() from None
            c = res.coeffs.detach()
            # linear robust SH light (+ albedo when the model has a learned basis) for the fitted geometry
            light, gain, _ = solve_light(target, c, self.model, self.renderer, size=target.shape[-1])
            c.light.copy_(light)
            if self.model.albedo_dim:
                alb, gain, _ = solve_albedo(target, c, self.model, self.renderer, size=target.shape[-1])
                c.albedo.copy_(alb)
            how = "fit"
        c = Coefficients(c.identity, c.albedo, c.expression, c.light, c.pose, exp_names=self.model.exp_names)
        return conform_albedo(c, int(self.gen.albedo_dim)).clone(), how

    def _face_mask(self, coeffs: Coefficients, size: int, dilate: int) -> torch.Tensor:
        return face_mask(self.renderer, coeffs, size, dilate)

    def embed(self, photo, seed: int = 0, steps: int | None = None,
              progress: Callable[[int, int, float], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> EmbedResult:
        t0 = time.perf_counter()
        steps = self.steps if steps is None else int(steps)
        if steps < 1:
            raise EmbedError(f"steps must be at least 1, got {steps}")
        check = cancel if cancel is not None else (lambda: False)
        _, crop, alignment, crop_big, al_big = self.align(photo)
        if check():
            raise EmbedCancelled()
        size = self.resolution
        G = self.gen.G
        target = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        lm_target = torch.as_tensor(np.asarray(alignment.landmarks_crop), dtype=torch.float32)[None]
        init, how = self.initialise(crop_big, al_big.landmarks_crop, cancel)
        t_init = time.perf_counter() - t0
        if check():
            raise EmbedCancelled()

        dilate = max(3, (size // 16) | 1)
        mask = self._face_mask(init, size, dilate)

        # noise start: the best of a few seeded candidates (zero included), one batched forward pass
        noise_dim = int(G.noise_dim)
        g = torch.Generator().manual_seed(int(seed))
        cands = torch.cat([torch.zeros(1, noise_dim), torch.randn(self.noise_candidates - 1, noise_dim, generator=g)])
        with torch.no_grad():
            imgs = synthesize_embedding(self.gen, init.repeat(len(cands)), cands, clamp=False)
            d = (imgs - target).abs()
            score = self.w_face * (d * mask).sum((1, 2, 3)) / (mask.sum() * 3).clamp_min(1) + self.w_all * d.mean(
                (1, 2, 3))
        noise = cands[int(score.argmin())].clone()[None].requires_grad_(True)

        coeffs = init.clone().requires_grad_(True)
        offsets = torch.zeros(1, G.num_ws, G.w_dim, requires_grad=True)
        lr = self.lr
        opt = torch.optim.Adam([
            {"params": [coeffs.identity, coeffs.albedo], "lr": lr, "name": "identity"},
            {"params": [coeffs.expression], "lr": lr * 0.5, "name": "expression"},
            {"params": [coeffs.light], "lr": lr * 0.5, "name": "light"},
            {"params": [coeffs.pose], "lr": lr * 0.2, "name": "pose"},
            {"params": [noise], "lr": lr * 2, "name": "noise"},
            {"params": [offsets], "lr": lr, "name": "offsets"},
        ], betas=(0.9, 0.99))
        base_lr = [grp["lr"] for grp in opt.param_groups]
        idnet = self._idnet() if self.w_id > 0 else None
        with torch.no_grad():
            id_target = F.normalize(idnet.embed_crops(target), dim=1) if idnet is not None else None
        start_off = int(round(self.offset_start * steps))
        alb_n = max(1, coeffs.albedo.numel())
        losses: list[float] = []
        best = None
        for step in range(steps):
            if check():
                raise EmbedCancelled()
            # cosine decay with a short warm-up; offsets are frozen during phase 1
            frac = step / max(1, steps - 1)
            scale = min(1.0, (step + 1) / 5) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for grp, blr in zip(opt.param_groups, base_lr):
                grp["lr"] = blr * scale if (grp["name"] != "offsets" or step >= start_off) else 0.0
            if step > 0 and step % 10 == 0:
                mask = self._face_mask(coeffs, size, dilate)
            img = synthesize_embedding(self.gen, coeffs, noise, offsets, clamp=False)
            diff = (img - target).abs()
            face_l1 = (diff * mask).sum() / (mask.sum() * 3).clamp_min(1)
            all_l1 = diff.mean()
            lm = self.renderer.landmarks(self._model_coeffs(coeffs), size)
            lm_loss = ((lm - lm_target) / size).pow(2).sum(-1)[:, 17:].mean()
            prior = ((coeffs.identity - init.identity).pow(2).mean()
                     + (coeffs.albedo - init.albedo).pow(2).sum() / alb_n
                     + 10.0 * (coeffs.light - init.light).pow(2).mean())
            noise_prior = (noise.pow(2).mean() - 1.0).pow(2)
            loss = (self.w_face * face_l1 + self.w_all * all_l1 + self.w_lm * lm_loss + self.w_prior * prior
                    + 0.01 * noise_prior + self.w_offset * offsets.pow(2).mean())
            if id_target is not None and step % self.id_every == 0:
                emb = F.normalize(idnet.embed_crops(img.clamp(0, 1)), dim=1)
                loss = loss + self.w_id * (1 - (emb * id_target).sum(1)).mean()
            lval = float(loss.detach())
            if not math.isfinite(lval):
                raise EmbedError("the embedding diverged (non-finite loss); try another seed or fewer steps")
            # keep the best state by the per-step image loss (the id term is not evaluated every step)
            key = float((self.w_face * face_l1 + self.w_all * all_l1 + self.w_lm * lm_loss).detach())
            if best is None or key < best[0]:
                best = (key, coeffs.detach().clone(), noise.detach().clone(), offsets.detach().clone(), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                coeffs.expression.clamp_(0.0, 1.0)
                coeffs.pose[:, 0].clamp_(-1.4, 1.4)
                coeffs.pose[:, 1:].clamp_(-1.0, 1.0)
            losses.append(lval)
            if progress is not None:
                progress(step + 1, steps, lval)
        # the final state is usually the best; compare it with the best one seen
        with torch.no_grad():
            img = synthesize_embedding(self.gen, coeffs, noise, offsets, clamp=False)
            mask = self._face_mask(coeffs, size, dilate)
            diff = (img - target).abs()
            lm = self.renderer.landmarks(self._model_coeffs(coeffs), size)
            key = float(self.w_face * (diff * mask).sum() / (mask.sum() * 3).clamp_min(1) + self.w_all * diff.mean()
                        + self.w_lm * ((lm - lm_target) / size).pow(2).sum(-1)[:, 17:].mean())
        if key <= best[0]:
            best = (key, coeffs.detach().clone(), noise.detach().clone(), offsets.detach().clone(), steps)
        _, c_best, n_best, o_best, best_step = best
        c_best.exp_names = self.model.exp_names
        with torch.no_grad():
            recon = synthesize_embedding(self.gen, c_best, n_best, o_best)
            fmask = self._face_mask(c_best, size, 1)
        metrics = {"seconds": time.perf_counter() - t0, "init_seconds": t_init, "init": how, "steps": steps,
                   "best_step": best_step, "psnr_face": psnr(recon, target, fmask), "psnr_all": psnr(recon, target),
                   "offset_rms": float(o_best.pow(2).mean().sqrt())}
        if idnet is not None:
            with torch.no_grad():
                metrics["id_distance"] = float((idnet.embed_crops(recon) - idnet.embed_crops(target)).norm())
        return EmbedResult(c_best, n_best, o_best, crop, alignment, recon, metrics, losses, init)

    # -- after embedding ---------------------------------------------------------------------- #
    def render(self, result: EmbedResult, coeffs: Coefficients | None = None) -> torch.Tensor:
        """The generator's image (1, 3, S, S) in [0, 1] of the embedding, optionally with edited coefficients."""
        c = result.coeffs if coeffs is None else conform_albedo(coeffs, int(self.gen.albedo_dim))
        with torch.no_grad():
            return synthesize_embedding(self.gen, c, result.noise, result.w_offsets)

    def paste_mask(self, result: EmbedResult, coeffs: Coefficients | None = None, size: int | None = None
                   ) -> np.ndarray:
        return paste_mask(result, coeffs, size, self.renderer)


def face_mask(renderer, coeffs: Coefficients, size: int, dilate: int = 1) -> torch.Tensor:
    """(B, 1, size, size) render mask of ``coeffs`` (albedo conformed to the renderer's model), max-pool dilated."""
    c = conform_albedo(coeffs.detach(), renderer.model.albedo_dim)
    with torch.no_grad():
        m = renderer(c, size).mask
        if dilate > 1:
            m = F.max_pool2d(m, dilate, 1, dilate // 2)
    return m


def paste_mask(result: EmbedResult, coeffs: Coefficients | None = None, size: int | None = None,
               renderer=None) -> np.ndarray:
    """(S, S) float mask for pasting back: the face region of the fit (union that of ``coeffs``, e.g. an edit),
    dilated by ~10 % of the crop so the seam falls on skin/hair rather than on the face."""
    if renderer is None:
        from engine.face.model import default_model
        from engine.render import FaceRenderer

        renderer = FaceRenderer(default_model())
    size = int(size or result.crop.shape[0])
    dil = max(3, (size // 10) | 1)
    m = face_mask(renderer, result.coeffs, size, dil)
    if coeffs is not None:
        m = torch.maximum(m, face_mask(renderer, coeffs, size, dil))
    return m[0, 0].numpy()


def paste_into_photo(result: EmbedResult, edited_crop_image, photo, feather: float = 0.08, mask=None,
                     coeffs: Coefficients | None = None, embedder: PhotoEmbedder | None = None,
                     mode: str = "replace") -> np.ndarray:
    """Composite an (edited) reconstruction back into the original photo → uint8 (H, W, 3).

    ``edited_crop_image``: (1, 3, S, S) / (3, S, S) tensor in [0, 1] or (S, S, 3) uint8, in the canonical crop
    framing of ``result`` (any S; the alignment is rescaled). ``photo``: the photo that was embedded (path, bytes or
    array; EXIF orientation is applied as during embedding). ``mask``: (S, S) weights; by default the render mask of
    the fit (union the edited ``coeffs``' mask when given), dilated, then feathered and blurred by ``align.paste_back``.

    ``mode="replace"`` pastes the generator's pixels (what the generator can draw, at its resolution);
    ``mode="delta"`` adds only the *change* the edit makes (edited − reconstruction) to the photo, so the photo's own
    detail and sharpness survive — best for light / expression edits and small pose changes with a low-resolution
    generator (large pose changes leave a ghost of the original face).
    """
    from engine.perception import align as A

    img = A.load_image(photo) if not isinstance(photo, np.ndarray) else A._as_rgb(photo)
    al = result.alignment
    shape = tuple(getattr(al, "photo_shape", ()) or ())
    if shape and tuple(img.shape[:2]) != tuple(shape[:2]):
        raise EmbedError(f"this photo is {img.shape[1]}x{img.shape[0]} px but the embedding was made from one of "
                         f"{shape[1]}x{shape[0]} px: paste back into the photo that was embedded")
    crop = _as_uint8_hwc(edited_crop_image)
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1] or crop.shape[2] != 3:
        raise EmbedError(f"the edited image must be a square RGB crop, got shape {crop.shape}")
    if mode not in ("replace", "delta"):
        raise EmbedError(f"paste mode must be 'replace' or 'delta', got {mode!r}")
    if mask is None:
        mask = paste_mask(result, coeffs, crop.shape[0], embedder.renderer if embedder is not None else None)
    if mode == "replace":
        return A.paste_back(img, crop, al, feather=feather, mask=mask)
    return _paste_delta(img, crop, result, feather, mask)


def _paste_delta(img: np.ndarray, crop: np.ndarray, result: EmbedResult, feather: float, mask) -> np.ndarray:
    import cv2

    from engine.perception import align as A

    size = crop.shape[0]
    rec = result.reconstruction[0].detach().float().permute(1, 2, 0).numpy() * 255.0
    if rec.shape[0] != size:
        rec = cv2.resize(rec, (size, size), interpolation=cv2.INTER_AREA if rec.shape[0] > size else cv2.INTER_LINEAR)
    delta = crop.astype(np.float32) - rec.astype(np.float32)
    m = np.asarray(result.alignment.matrix, np.float64)
    if size != result.alignment.size:
        m = np.diag([size / result.alignment.size, size / result.alignment.size, 1.0])[:2] @ A._h(m)
    inv = A.invert_affine(m)
    h, w = img.shape[:2]
    corners = A.apply_affine(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, 0, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, 0, h))
    out = img.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    to_region = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ A._h(inv))[:2]
    mi = A._to_index(to_region)
    rw, rh = x1 - x0, y1 - y0
    # bicubic keeps the upsampled change smooth; the weights fade it out at the mask edge and the crop border
    dw = cv2.warpAffine(delta, mi, (rw, rh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    wm = cv2.warpAffine(A.feather_mask(size, feather, mask), mi, (rw, rh), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    reg = out[y0:y1, x0:x1].astype(np.float32) + np.clip(wm, 0, 1)[..., None] * dw
    out[y0:y1, x0:x1] = np.clip(np.round(reg), 0, 255).astype(np.uint8)
    return out


def embedding_grid(result: EmbedResult, embedder: PhotoEmbedder, edits: dict | None = None) -> torch.Tensor:
    """(3, S, S * n) row: photo crop | reconstruction | each edit (name → function(Coefficients) -> Coefficients)."""
    tiles = [torch.from_numpy(result.crop).permute(2, 0, 1).float() / 255, result.reconstruction[0]]
    for fn in (edits or {}).values():
        c = fn(result.coeffs.clone())
        tiles.append(embedder.render(result, c)[0])
    return torch.cat(tiles, 2)


def standard_edits() -> dict:
    """The edits of the before/after grid: yaw −20°, yaw +20°, smile, relit from the side."""
    from engine.render import light_from_direction

    def yaw(deg):
        def f(c):
            y = math.degrees(float(c.pose[0, 0]))
            c.set_pose_degrees(yaw=y + deg)
            return c
        return f

    def smile(c):
        for n in ("mouthSmile_L", "mouthSmile_R"):
            if n in c.exp_names:
                c.expr[n] = 0.7
        return c

    def relit(c):
        c.light[:] = light_from_direction(-60, 15, 0.6, ambient=0.6)
        return c

    return {"yaw-20": yaw(-20), "yaw+20": yaw(20), "smile": smile, "relit": relit}


def _check_image_out(p: str | None, what: str):
    if p is None:
        return None
    path = Path(p)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise EmbedError(f"{what} {p!r} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise EmbedError(f"{what} {p!r} is a folder")
    if not path.parent.exists() and str(path.parent) not in ("", "."):
        raise EmbedError(f"{what} {p!r}: folder {path.parent} does not exist")
    return path


def main_embed(args) -> int:
    """``discoface embed photo.jpg -o me.json [--overlay grid.png] [--paste-back out.png] [--steps N] [--seed S]``.

    Checks every output path and the photo first, embeds with a progress bar, then writes the outputs (each
    atomically). Every user mistake is an :class:`EmbedError` (or the aligner's ValueError) with one clear line."""
    from tqdm import tqdm

    from engine.generator.networks import load_default_generator
    from engine.io.files import save_image
    from engine.perception.align import load_image

    out = Path(str(args.output))
    if out.suffix.lower() != ".json":
        raise EmbedError("output must be a .json session file")
    if out.is_dir():
        raise EmbedError(f"output {str(out)!r} is a folder")
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise EmbedError(f"output folder {out.parent} does not exist")
    overlay = _check_image_out(getattr(args, "overlay", None), "overlay")
    paste = _check_image_out(getattr(args, "paste_back", None), "paste-back output")
    steps = getattr(args, "steps", None)
    if steps is not None and int(steps) < 1:
        raise EmbedError(f"--steps must be at least 1, got {steps}")
    photo = load_image(args.photo)  # unreadable files fail here, before the weights are loaded
    gen = load_default_generator()
    if gen is None:
        raise EmbedError("no generator weights in assets/ (assets/generator.safetensors): cannot embed")
    emb = PhotoEmbedder(gen)
    total = int(steps or emb.steps)
    bar = None

    def on_progress(i, n, loss):  # the bar appears once the face is found and optimisation starts
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="embedding", unit="step")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        res = emb.embed(photo, seed=int(getattr(args, "seed", 0) or 0), steps=steps, progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
    # make every output in memory first, then write (atomic writes; nothing half-written on a failure)
    from engine.editing.session import Session

    sess = Session.from_embedding(res, source=str(args.photo), generator=gen)
    grid = None
    if overlay:
        grid = embedding_grid(res, emb, standard_edits())
        if grid.shape[1] < 128:  # small generators: tiles upscaled to 128 px so the overlay is readable
            grid = F.interpolate(grid[None], scale_factor=128 // grid.shape[1], mode="bilinear",
                                 align_corners=False)[0].clamp(0, 1)
    pasted = paste_into_photo(res, res.reconstruction, photo, embedder=emb) if paste else None
    written = []
    try:
        sess.save(out)
        written.append(out)
        if grid is not None:
            save_image(overlay, grid)
            written.append(overlay)
        if pasted is not None:
            save_image(paste, pasted)
            written.append(paste)
    except BaseException:
        for p in written:  # all or nothing
            Path(p).unlink(missing_ok=True)
        raise
    m = res.metrics
    idd = f", identity distance {m['id_distance']:.3f}" if "id_distance" in m else ""
    print(f"wrote {out}  (face PSNR {m['psnr_face']:.1f} dB{idd}, {m['seconds']:.1f} s, init: {m['init']})")
    if overlay:
        print(f"wrote {overlay}  (photo | reconstruction | yaw -20 | yaw +20 | smile | relit)")
    if paste:
        print(f"wrote {paste}")
    return 0


__all__ = ["PhotoEmbedder", "EmbedResult", "EmbedError", "EmbedCancelled", "psnr", "main_embed", "paste_into_photo",
           "synthesize_embedding", "embedding_grid", "standard_edits", "conform_albedo"]
