"""Random identities drawn closer to the photos' (issue 25): sampling-importance-resampling on the face descriptor.

The generator's random faces come from N(0, I) latents through the identity prior folded into its decoder
(``python -m training idprior``). The descriptors (dlib-ResNet port) of those faces still sit off the photos': their
mean along many minor directions and their spread along a few main ones (component 5 of the photos' PCA at 0.36 of
the photos' variance, component 8 at 1.7×) — an affine prior cannot fix what the synthesis makes non-linearly.

:class:`IdentitySampler` changes only *which* random faces are drawn, not the weights: for each face it draws
``candidates`` latents, reads each candidate's descriptor (G's own-size image at ``psi``, before any upsampler) and
keeps one of them with probability ∝ w(d)^β, w(d) = N(P d; photos) / N(P d; plain draws) — the ratio of two
Gaussians fitted in the ``k`` main directions P of the photos' descriptors (UTKFace **train** crops, their mean
shifted by the upsampler's mean change so the upsampled faces are the ones that match) and of the plain draws of this
generator. With many candidates and β = 1 the kept faces' descriptors follow the photos' Gaussian in those
directions. The same seed gives the same face on one machine; the choice reads floating-point descriptors, so a
near-tie may fall the other way on another CPU.

Files: safetensors ``format`` = ``discoface.identity-sampler``, ``version`` ≤ :data:`SAMPLER_VERSION`; metadata
``candidates``, ``beta``, ``psi`` and ``generator_fingerprint`` (of the generator weights it was fitted for: the
plain draws' Gaussian belongs to them; :func:`load_default_sampler` attaches it only to those). Made by
``python -m training idsampler``.
"""
from __future__ import annotations

import hashlib
import json

import torch

from engine import config
from engine.io.files import WeightsError, load_safetensors, save_safetensors

SAMPLER_FORMAT = "discoface.identity-sampler"
SAMPLER_VERSION = 1
SAMPLER_FILE = "identity_sampler.safetensors"
_KEYS = ("centre", "basis", "real_mean", "real_cov", "fake_mean", "fake_cov")


def generator_fingerprint(fg) -> str:
    """sha256 of the generator tensors that decide who its random faces are (the identity decoder, G's mapping and
    w̄_id: what ``python -m training idprior`` refits), read from the loaded weights (~1 ms, no file read)."""
    h = hashlib.sha256()
    sd = {**{f"d.{k}": v for k, v in fg.decoders.nets["identity"].state_dict().items()},
          **{f"m.{k}": v for k, v in fg.G.mapping.state_dict().items()}, "w_avg_id": fg.G.w_avg_id}
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _gaussian_logpdf(p: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """(N,) log N(p; mean, cov) up to the shared constant."""
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (p - mean).t(), upper=False)
    return -0.5 * z.square().sum(0) - torch.log(torch.diagonal(chol)).sum()


class IdentitySampler:
    """Density-ratio weights of face descriptors and the seeded choice of one candidate per face."""

    def __init__(self, centre: torch.Tensor, basis: torch.Tensor, real_mean: torch.Tensor, real_cov: torch.Tensor,
                 fake_mean: torch.Tensor, fake_cov: torch.Tensor, candidates: int = 8, beta: float = 1.0,
                 psi: float = 0.7, meta: dict | None = None):
        k, d = basis.shape
        shapes = {"centre": (d,), "real_mean": (k,), "real_cov": (k, k), "fake_mean": (k,), "fake_cov": (k, k)}
        given = {"centre": centre, "real_mean": real_mean, "real_cov": real_cov, "fake_mean": fake_mean,
                 "fake_cov": fake_cov}
        for name, shape in shapes.items():
            if tuple(given[name].shape) != shape:
                raise ValueError(f"identity sampler: {name} has shape {tuple(given[name].shape)}, expected {shape}")
        if int(candidates) < 1 or not float(beta) >= 0:
            raise ValueError("identity sampler: candidates must be >= 1 and beta >= 0")
        self.centre, self.basis = centre.double(), basis.double()
        self.real_mean, self.real_cov = real_mean.double(), real_cov.double()
        self.fake_mean, self.fake_cov = fake_mean.double(), fake_cov.double()
        self.candidates, self.beta, self.psi = int(candidates), float(beta), float(psi)
        self.meta = dict(meta or {})

    @property
    def dims(self) -> int:
        return self.basis.shape[0]

    def project(self, desc: torch.Tensor) -> torch.Tensor:
        return (desc.double() - self.centre) @ self.basis.t()

    def log_weights(self, desc: torch.Tensor) -> torch.Tensor:
        """(N,) β · log [N(P d; photos) / N(P d; plain draws)] of descriptors (N, 128)."""
        p = self.project(desc)
        return self.beta * (_gaussian_logpdf(p, self.real_mean, self.real_cov)
                            - _gaussian_logpdf(p, self.fake_mean, self.fake_cov))

    def choose(self, log_w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) index of the kept candidate in each row of ``log_w`` (n, M), drawn ∝ exp(log_w)."""
        prob = torch.softmax(log_w.double(), 1)
        return torch.multinomial(prob, 1, generator=generator).squeeze(1)

    # -- files ------------------------------------------------------------------------------------
    def save(self, path, extra: dict | None = None) -> None:
        meta = {"candidates": self.candidates, "beta": self.beta, "psi": self.psi}
        meta.update(self.meta)
        meta.update(extra or {})
        save_safetensors(path, {k: getattr(self, k).float() for k in _KEYS}, SAMPLER_FORMAT, SAMPLER_VERSION,
                         {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})

    @classmethod
    def load(cls, path) -> "IdentitySampler":
        """Any problem (missing, wrong format, shapes, values) → :class:`WeightsError` naming the file."""
        tensors, meta = load_safetensors(path, SAMPLER_FORMAT, SAMPLER_VERSION)
        missing = [k for k in _KEYS if k not in tensors]
        if missing:
            raise WeightsError(f"{path}: identity sampler lacks {', '.join(missing)}")
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise WeightsError(f"{path}: identity sampler holds NaN or infinite values")
        try:
            s = cls(*(tensors[k] for k in _KEYS), candidates=int(json.loads(meta.get("candidates", "8"))),
                    beta=float(json.loads(meta.get("beta", "1"))), psi=float(json.loads(meta.get("psi", "0.7"))),
                    meta={k: v for k, v in meta.items() if k not in ("format", "version", "candidates", "beta",
                                                                       "psi")})
            torch.linalg.cholesky(s.real_cov)
            torch.linalg.cholesky(s.fake_cov)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise WeightsError(f"{path}: not a usable identity sampler ({exc})") from None
        return s


def load_default_sampler(generator=None) -> IdentitySampler | None:
    """The shipped sampler (``assets/identity_sampler.safetensors``) when present and — given the loaded
    ``generator`` — fitted for those weights (:func:`generator_fingerprint`); None otherwise. A bad file raises
    :class:`WeightsError`."""
    path = config.ASSETS_DIR / SAMPLER_FILE
    if not path.exists():
        return None
    s = IdentitySampler.load(path)
    want = s.meta.get("generator_fingerprint")
    if generator is not None and want and generator_fingerprint(generator) != want:
        return None
    return s
