"""Identity codes for the generator's second latent: whitened principal components of the face-recognition
descriptor (the dlib ResNet port, ``engine.perception.identity``) of every fitted training photo.

Why: the 3DMM coefficients carry a head's shape, albedo and pose, but what makes a face *someone* — eyes, brows,
nose detail, skin — has no home in them. A learned per-image code (GLO) barely moves from its random start at CPU
scale (each code is seen once an epoch), so sampled codes fall between memorised photos and every random face looks
like the same blurred average (dlib: 63 % of random pairs "same person"). Here the code of photo *i* is instead the
whitened PCA coordinates of its own descriptor: photos of similar-looking people get nearby codes from the start,
``z ~ N(0, I)`` is by construction the Gaussian fitted to the training photos' codes, and the identity term
(``descriptor(G(λ, z)) ≈ mean + (σ·z) @ basis``) tells G what a code means, for reconstructions and random samples
alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.perception.identity import IdentityNet


@dataclass
class IdentityCodes:
    codes: torch.Tensor   # (n, k) whitened PCA coordinates of the photos' descriptors, ~ N(0, I)
    mean: torch.Tensor    # (128,) descriptor mean
    basis: torch.Tensor   # (k, 128) principal directions (rows, orthonormal)
    std: torch.Tensor     # (k,) standard deviation along each direction
    explained: float      # share of the descriptor variance the k directions hold

    def descriptors(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 128) descriptors a code ``z`` (B, k) stands for: the part of the descriptor the k components hold.
        The way back (descriptor → code) is ``Generator.identity_code``, from the PCA the exported file carries."""
        return self.mean.to(z) + (z * self.std.to(z)) @ self.basis.to(z)


@torch.no_grad()
def photo_descriptors(images01: torch.Tensor, net: IdentityNet, batch: int = 128) -> torch.Tensor:
    """(n, 128) descriptors of canonical crops (n, 3, H, W) in [0, 1], at the size given (the generator's)."""
    return torch.cat([net.embed_crops(images01[i:i + batch]) for i in range(0, len(images01), batch)])


def fit_codes(desc: torch.Tensor, k: int) -> IdentityCodes:
    """PCA of descriptors (n, 128) → k whitened codes per photo."""
    if desc.ndim != 2 or desc.shape[0] <= k:
        raise ValueError(f"need more than {k} descriptors (n, 128) to fit {k} identity components, got "
                         f"{tuple(desc.shape)}")
    d = desc.double()
    mean = d.mean(0)
    x = d - mean
    cov = x.t() @ x / (len(x) - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:k]
    std = evals[order].clamp_min(1e-12).sqrt()
    basis = evecs[:, order].t()
    codes = (x @ basis.t()) / std
    explained = float(evals[order].sum() / evals.sum())
    return IdentityCodes(codes.float(), mean.float(), basis.float(), std.float(), explained)
