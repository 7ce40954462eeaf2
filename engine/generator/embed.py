"""Embed a real photo into the generator's factor latents (the part DiscoFaceGAN described but never released).

Pipeline: ``PhotoEmbedder(generator).embed(photo)``

1. **Align**: detect the face, 68 landmarks, similarity warp to the canonical crop (``perception.align``). The crop
   is made at ``max(128, G resolution)`` for the initialiser and area-resized to the generator's resolution.
2. **Initialise** the coefficients with the R-Net (``perception.rnet``) when its weights exist, otherwise with a
   short landmark + photometric 3DMM fit (``engine.fit``). The noise code starts from the best of a few seeded
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
5. Pasting an (edited) reconstruction back into the photo lives in ``engine.editing.paste``; the CLI command and
   its before/after overlay in ``engine.cli.photo``; measured figures in ``bench/embed.py``.

Every weight of the optimisation is in :class:`EmbedConfig`; the loss is one function (:func:`embedding_loss`),
used for the steps and for choosing the best state.

Progress is reported through ``progress(step, total, loss)`` (called exactly ``steps`` times); ``cancel()`` returning
True stops the run and raises :class:`EmbedCancelled`. Nothing is written to disk by the embedder itself.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import Coefficients, default_model
from engine.fit import FitCancelled, fit_coefficients, solve_albedo, solve_light
from engine.perception import align as A
from engine.perception.identity import default_identity_net
from engine.perception.rnet import default_rnet
from engine.render import FaceRenderer

DEFAULT_STEPS = 100


@dataclass(frozen=True)
class EmbedConfig:
    """The optimisation's settings; the defaults are tuned for the CPU at 64 px (bench/embed.py measures them)."""

    steps: int = DEFAULT_STEPS
    lr: float = 0.05
    w_face: float = 1.0  # L1 inside the (dilated) face mask
    w_all: float = 0.3  # L1 over the whole crop
    w_id: float = 0.8  # identity-net distance 1 - cos, every id_every steps
    w_lm: float = 100.0  # 3DMM landmarks 17-67 vs the photo's
    w_offset: float = 1.0  # per-layer style offsets stay small
    w_prior: float = 0.02  # identity / albedo / light near the initialiser
    w_noise: float = 0.01  # the noise code near N(0, I)'s shell
    offset_start: float = 0.35  # share of the steps before the offsets are optimised
    id_every: int = 2
    noise_candidates: int = 8


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


def embedding_loss(cfg: EmbedConfig, img: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   lm: torch.Tensor, lm_target: torch.Tensor, coeffs: Coefficients | None = None,
                   init: Coefficients | None = None, noise: torch.Tensor | None = None,
                   offsets: torch.Tensor | None = None, id_term: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, image loss) of one reconstruction.

    The image loss (face L1 + whole-crop L1 + landmarks) is what picks the best state; the total adds the priors
    (when ``coeffs``/``init``/``noise``/``offsets`` are given) and the identity term (``id_term``: 1 − cos)."""
    size = img.shape[-1]
    diff = (img - target).abs()
    face_l1 = (diff * mask).sum() / (mask.sum() * 3).clamp_min(1)
    lm_loss = ((lm - lm_target) / size).pow(2).sum(-1)[:, 17:].mean()
    image = cfg.w_face * face_l1 + cfg.w_all * diff.mean() + cfg.w_lm * lm_loss
    total = image
    if coeffs is not None and init is not None:
        prior = ((coeffs.identity - init.identity).pow(2).mean()
                 + (coeffs.albedo - init.albedo).pow(2).sum() / max(1, coeffs.albedo.numel())
                 + 10.0 * (coeffs.light - init.light).pow(2).mean())
        total = total + cfg.w_prior * prior
    if noise is not None:
        total = total + cfg.w_noise * (noise.pow(2).mean() - 1.0).pow(2)
    if offsets is not None:
        total = total + cfg.w_offset * offsets.pow(2).mean()
    if id_term is not None:
        total = total + cfg.w_id * id_term
    return total, image


class PhotoEmbedder:
    """photo → (coefficients, noise, offsets) of ``generator`` (an ``engine.generator.networks.FaceGenerator``).

    ``config`` holds the optimisation settings (:class:`EmbedConfig`); keyword overrides (``steps=24``) replace
    single fields. ``rnet``/``idnet``: None loads the shipped one when the embedding needs it, False does without
    (3DMM-fit initialisation / no identity term)."""

    def __init__(self, generator, rnet=None, idnet=None, renderer=None, config: EmbedConfig | None = None,
                 model=None, **overrides):
        if generator is None:
            raise EmbedError("photo embedding needs generator weights (assets/generator.safetensors)")
        try:
            self.config = dataclasses.replace(config or EmbedConfig(), **overrides)
        except TypeError as exc:
            raise EmbedError(f"unknown embedding setting: {exc}") from None
        self.gen = generator
        self.model = model if model is not None else default_model()
        self.renderer = renderer or FaceRenderer(self.model)
        self.rnet = rnet
        self.idnet = idnet

    @property
    def resolution(self) -> int:
        """G's own size: the embedding optimises (and reconstructs) before any upsampler; the editor shows the
        result through :meth:`FaceGenerator.synthesize_ws` at the native size."""
        return int(getattr(self.gen, "base_resolution", self.gen.resolution))

    @property
    def steps(self) -> int:
        return self.config.steps

    # -- components, loaded when first needed -------------------------------------------------------------- #
    def _rnet(self):
        if self.rnet is None:
            try:
                self.rnet = default_rnet() or False
            except (ValueError, OSError):  # no / broken weights (RNetError): fall back to the 3DMM fit
                self.rnet = False
        return self.rnet or None

    def _idnet(self):
        if self.idnet is None:
            try:
                self.idnet = default_identity_net() or False
            except (ValueError, OSError, RuntimeError):  # dlib's model files missing: no identity term
                self.idnet = False
        return self.idnet or None

    def _model_coeffs(self, c: Coefficients) -> Coefficients:
        """``c`` with the albedo size the face model (renderer) expects."""
        return conform_albedo(c, self.model.albedo_dim)

    # -- the pipeline ------------------------------------------------------------------------------------- #
    def align(self, photo):
        """(photo uint8, crop at the generator's size, its Alignment, crop at the initialiser's size, its Alignment)."""
        img = A.as_rgb(photo)
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
            lm = torch.as_tensor(np.asarray(landmarks_big), dtype=torch.float32)[None]
            try:
                res = fit_coefficients(target, lm, self.model, self.renderer, steps=(80, 0), size=64, cancel=cancel)
            except FitCancelled:
                raise EmbedCancelled() from None
            c = res.coeffs.detach()
            # linear robust SH light (+ albedo when the model has a learned basis) for the fitted geometry
            light, _gain, _ = solve_light(target, c, self.model, self.renderer, size=target.shape[-1])
            c.light.copy_(light)
            if self.model.albedo_dim:
                alb, _gain, _ = solve_albedo(target, c, self.model, self.renderer, size=target.shape[-1])
                c.albedo.copy_(alb)
            how = "fit"
        c = Coefficients(c.identity, c.albedo, c.expression, c.light, c.pose, exp_names=self.model.exp_names)
        return conform_albedo(c, int(self.gen.albedo_dim)).clone(), how

    def _face_mask(self, coeffs: Coefficients, size: int, dilate: int) -> torch.Tensor:
        return face_mask(self.renderer, coeffs, size, dilate)

    def embed(self, photo, seed: int = 0, steps: int | None = None,
              progress: Callable[[int, int, float], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> EmbedResult:
        cfg = self.config if steps is None else dataclasses.replace(self.config, steps=int(steps))
        t0 = time.perf_counter()
        steps = cfg.steps
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
        cands = torch.cat([torch.zeros(1, noise_dim), torch.randn(max(1, cfg.noise_candidates) - 1, noise_dim,
                                                                  generator=g)])
        idnet = self._idnet() if cfg.w_id > 0 or G.identity_noise else None
        if G.identity_noise and idnet is not None:  # the noise is an identity code: the photo's own one first
            with torch.no_grad():
                cands = torch.cat([G.identity_code(idnet.embed_crops(target)), cands])
        with torch.no_grad():
            imgs = synthesize_embedding(self.gen, init.repeat(len(cands)), cands, clamp=False)
            d = (imgs - target).abs()
            score = cfg.w_face * (d * mask).sum((1, 2, 3)) / (mask.sum() * 3).clamp_min(1) + cfg.w_all * d.mean(
                (1, 2, 3))
        noise = cands[int(score.argmin())].clone()[None].requires_grad_(True)

        coeffs = init.clone().requires_grad_(True)
        offsets = torch.zeros(1, G.num_ws, G.w_dim, requires_grad=True)
        lr = cfg.lr
        opt = torch.optim.Adam([
            {"params": [coeffs.identity, coeffs.albedo], "lr": lr, "name": "identity"},
            {"params": [coeffs.expression], "lr": lr * 0.5, "name": "expression"},
            {"params": [coeffs.light], "lr": lr * 0.5, "name": "light"},
            {"params": [coeffs.pose], "lr": lr * 0.2, "name": "pose"},
            {"params": [noise], "lr": lr * 2, "name": "noise"},
            {"params": [offsets], "lr": lr, "name": "offsets"},
        ], betas=(0.9, 0.99))
        base_lr = [grp["lr"] for grp in opt.param_groups]
        if cfg.w_id <= 0:
            idnet = None
        with torch.no_grad():
            id_target = F.normalize(idnet.embed_crops(target), dim=1) if idnet is not None else None
        start_off = int(round(cfg.offset_start * steps))
        id_every = max(1, int(cfg.id_every))
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
            lm = self.renderer.landmarks(self._model_coeffs(coeffs), size)
            id_term = None
            if id_target is not None and step % id_every == 0:
                emb = F.normalize(idnet.embed_crops(img.clamp(0, 1)), dim=1)
                id_term = (1 - (emb * id_target).sum(1)).mean()
            loss, image_loss = embedding_loss(cfg, img, target, mask, lm, lm_target, coeffs, init, noise, offsets,
                                              id_term)
            lval = float(loss.detach())
            if not math.isfinite(lval):
                raise EmbedError("the embedding diverged (non-finite loss); try another seed or fewer steps")
            # keep the best state by the image loss (the id term is not evaluated every step)
            key = float(image_loss.detach())
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
            lm = self.renderer.landmarks(self._model_coeffs(coeffs), size)
            key = float(embedding_loss(cfg, img, target, mask, lm, lm_target)[1])
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

    # -- after embedding ---------------------------------------------------------------------------------- #
    def render(self, result: EmbedResult, coeffs: Coefficients | None = None) -> torch.Tensor:
        """The generator's image (1, 3, S, S) in [0, 1] of the embedding, optionally with edited coefficients."""
        c = result.coeffs if coeffs is None else conform_albedo(coeffs, int(self.gen.albedo_dim))
        with torch.no_grad():
            return synthesize_embedding(self.gen, c, result.noise, result.w_offsets)


def face_mask(renderer, coeffs: Coefficients, size: int, dilate: int = 1) -> torch.Tensor:
    """(B, 1, size, size) render mask of ``coeffs`` (albedo conformed to the renderer's model), max-pool dilated."""
    c = conform_albedo(coeffs.detach(), renderer.model.albedo_dim)
    with torch.no_grad():
        m = renderer(c, size).mask
        if dilate > 1:
            m = F.max_pool2d(m, dilate, 1, dilate // 2)
    return m


__all__ = ["PhotoEmbedder", "EmbedConfig", "EmbedResult", "EmbedError", "EmbedCancelled", "embedding_loss", "psnr",
           "synthesize_embedding", "conform_albedo", "face_mask"]
