"""Embed a real photo into the generator's factor latents (the part DiscoFaceGAN described but never released).

Pipeline (one object per use case, LivePortrait-style): ``PhotoEmbedder(generator).embed(photo)``

1. **Align**: detect the face, 68 landmarks, similarity warp to the canonical crop (``perception.align``).
2. **Initialise** the coefficients with the R-Net (``perception.rnet``) — a good start for pose, expression, light.
3. **Optimise** coefficients λ, the noise code and (when the generator exposes its style vectors) small per-layer
   offsets of the style vectors, against
     * L1 colour distance inside the face region (the render mask of the current λ, slightly dilated) — weight 1,
     * L1 over the whole crop (hair, background) — weight 0.3,
     * identity-net distance between the reconstruction and the photo (``perception.identity``) — weight 0.5,
     * landmark loss: the 3DMM landmarks of λ vs the detected landmarks of the photo — keeps λ meaning what it
       says, so pose / expression edits after embedding still move the right things,
     * priors: λ stays near the R-Net start for identity/albedo, per-layer offsets are L2-penalised (they are the
       part that does not factorise, so they must stay small for edits to stay disentangled).
4. The result is a session latent: coefficients + noise (+ offsets). Editing a factor after embedding changes that
   factor's coefficients; the offsets ride along unchanged, so the person stays.

Progress is reported through ``progress(step, total, loss)``; ``cancel()`` returning True stops the run early and
raises :class:`EmbedCancelled`. Deterministic for a given seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .facemodel import Coefficients


class EmbedError(ValueError):
    """The photo cannot be embedded (no generator, unreadable, no face …); the message says why."""


class EmbedCancelled(Exception):
    """The user cancelled the embedding."""


@dataclass
class EmbedResult:
    coeffs: Coefficients
    noise: torch.Tensor  # (1, noise_dim)
    w_offsets: torch.Tensor | None  # (1, num_ws, w_dim) or None
    crop: np.ndarray  # aligned photo crop, uint8 (S, S, 3)
    alignment: object  # perception.align.Alignment
    reconstruction: torch.Tensor  # (1, 3, S, S) in [0, 1]
    metrics: dict = field(default_factory=dict)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    err = (a - b).pow(2)
    if mask is not None:
        err = (err * mask).sum() / (mask.sum() * a.shape[1]).clamp_min(1)
    else:
        err = err.mean()
    return float(10 * torch.log10(1.0 / err.clamp_min(1e-10)))


class PhotoEmbedder:
    """photo → (coefficients, noise, offsets) of ``generator`` (an ``engine.generator.FaceGenerator``)."""

    def __init__(self, generator, rnet=None, idnet=None, renderer=None, steps: int = 150, lr: float = 0.03):
        from .facemodel import default_model
        from .render import FaceRenderer

        if generator is None:
            raise EmbedError("photo embedding needs generator weights (assets/generator.safetensors)")
        self.gen = generator
        self.model = default_model()
        self.renderer = renderer or FaceRenderer(self.model)
        self.rnet = rnet
        self.idnet = idnet
        self.steps = steps
        self.lr = lr

    # -- components, loaded lazily ------------------------------------------------------------ #
    def _rnet(self):
        if self.rnet is None:
            from .perception.rnet import default_rnet

            self.rnet = default_rnet()
        return self.rnet

    def _idnet(self):
        if self.idnet is None:
            try:
                from .perception.identity import default_identity_net

                self.idnet = default_identity_net()
            except (ImportError, ValueError, OSError):
                self.idnet = False
        return self.idnet or None

    # -- the pipeline ------------------------------------------------------------------------- #
    def align(self, photo):
        from .perception import align as A

        img = A.load_image(photo) if not isinstance(photo, np.ndarray) else photo
        size = int(self.gen.resolution)
        crop, alignment = A.align_face(img, size=size)
        return img, crop, alignment

    def embed(self, photo, seed: int = 0, steps: int | None = None,
              progress: Callable[[int, int, float], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> EmbedResult:
        t0 = time.perf_counter()
        steps = self.steps if steps is None else int(steps)
        _, crop, alignment = self.align(photo)
        size = int(self.gen.resolution)
        target = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        lm_target = torch.as_tensor(np.asarray(alignment.landmarks_crop), dtype=torch.float32)[None]
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            init = self._rnet().predict(target).detach()
        init.exp_names = self.model.exp_names
        noise_dim = int(getattr(self.gen, "noise_dim", 32))
        noise = (torch.randn(1, noise_dim, generator=g) * 0.0).requires_grad_(True)
        coeffs = init.clone().requires_grad_(True)
        G = getattr(self.gen, "G", None)
        offsets = None
        if G is not None and hasattr(G, "ws") and hasattr(G, "synthesis"):
            with torch.no_grad():
                ws0 = G.ws(coeffs, noise)
            offsets = torch.zeros_like(ws0).requires_grad_(True)
        params = [coeffs.identity, coeffs.albedo, coeffs.expression, coeffs.light, coeffs.pose, noise]
        groups = [{"params": params, "lr": self.lr}]
        if offsets is not None:
            groups.append({"params": [offsets], "lr": self.lr * 0.3})
        opt = torch.optim.Adam(groups)
        idnet = self._idnet()
        with torch.no_grad():
            id_target = idnet.embed_crops(target) if idnet is not None else None
        best = None
        for step in range(steps):
            if cancel is not None and cancel():
                raise EmbedCancelled()
            img = self._synth(coeffs, noise, offsets)
            with torch.no_grad():
                mask = self.renderer(coeffs.detach(), size).mask
                mask = F.max_pool2d(mask, 5, 1, 2)
            face_l1 = ((img - target).abs() * mask).sum() / (mask.sum() * 3).clamp_min(1)
            all_l1 = (img - target).abs().mean()
            lm = self.renderer.landmarks(coeffs, size)
            lm_loss = ((lm - lm_target) / size).pow(2).sum(-1)[:, 17:].mean()
            prior = (coeffs.identity - init.identity).pow(2).mean() + (coeffs.albedo - init.albedo).pow(2).mean() \
                if coeffs.albedo.numel() else (coeffs.identity - init.identity).pow(2).mean()
            loss = face_l1 + 0.3 * all_l1 + 50.0 * lm_loss + 0.01 * prior + 0.01 * noise.pow(2).mean()
            if id_target is not None:
                loss = loss + 0.5 * (1 - F.cosine_similarity(idnet.embed_crops(img), id_target)).mean()
            if offsets is not None:
                loss = loss + 0.5 * offsets.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                coeffs.expression.clamp_(0.0, 1.0)
            if progress is not None:
                progress(step + 1, steps, float(loss))
            if best is None or float(loss) < best[0]:
                best = (float(loss), coeffs.detach().clone(), noise.detach().clone(),
                        None if offsets is None else offsets.detach().clone())
        _, c_best, n_best, o_best = best
        c_best.exp_names = self.model.exp_names
        with torch.no_grad():
            recon = self._synth(c_best, n_best, o_best).clamp(0, 1)
            mask = self.renderer(c_best, size).mask
        metrics = {"seconds": time.perf_counter() - t0, "steps": steps, "psnr_face": psnr(recon, target, mask),
                   "psnr_all": psnr(recon, target)}
        if idnet is not None:
            with torch.no_grad():
                metrics["id_distance"] = float((idnet.embed_crops(recon) - idnet.embed_crops(target)).norm())
        return EmbedResult(c_best, n_best, o_best, crop, alignment, recon, metrics)

    def _synth(self, coeffs, noise, offsets):
        """Reconstruction in [0, 1] (unclamped inside the optimisation so gradients never die)."""
        if offsets is not None:
            G = self.gen.G
            return G.synthesis(G.ws(coeffs, noise) + offsets) * 0.5 + 0.5
        return self.gen.synthesize(coeffs, noise, truncation_psi=1.0)


def main_embed(args) -> int:
    """``discoface embed photo.jpg -o me.json [--overlay grid.png]``: the CLI half (progress bar, clear errors)."""
    from tqdm import tqdm

    from .generator import load_default_generator
    from .io import save_image, write_json_atomic

    out = str(args.output)
    if not out.endswith(".json"):
        raise EmbedError("output must be a .json session file")
    gen = load_default_generator()
    if gen is None:
        raise EmbedError("no generator weights in assets/ (assets/generator.safetensors): cannot embed")
    emb = PhotoEmbedder(gen)
    bar = tqdm(total=args.steps or emb.steps, desc="embedding", unit="step")
    try:
        res = emb.embed(args.photo, seed=args.seed, steps=args.steps,
                        progress=lambda i, n, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    finally:
        bar.close()
    from .session import Session

    sess = Session.from_embedding(res, source=str(args.photo)) if hasattr(Session, "from_embedding") else None
    if sess is not None:
        sess.save(out)
    else:
        write_json_atomic(out, {"format": "discoface.embedding", "version": 1,
                                "coefficients": res.coeffs.to_json_dict(), "noise": res.noise[0].tolist(),
                                "metrics": res.metrics})
    print(f"wrote {out}  (face PSNR {res.metrics['psnr_face']:.1f} dB, {res.metrics['seconds']:.1f} s)")
    if args.overlay:
        grid = torch.cat([torch.from_numpy(res.crop).permute(2, 0, 1).float() / 255, res.reconstruction[0]], 2)
        save_image(args.overlay, grid)
        print(f"wrote {args.overlay}")
    return 0
