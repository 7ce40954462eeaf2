"""The DiscoFaceGAN generator: factor decoders (z → 3DMM coefficients) and a StyleGAN2-style image generator
conditioned on the coefficients plus a noise latent, with attribute-preserving truncation.

* :class:`Latents` — z = (identity 128, expression 32, light 16, pose 3, noise 32), each ~ N(0, I).
* :class:`FactorDecoders` — the four VAE decoders (trained by ``python -m training vae``); each is an MLP plus
  a linear skip whose output is de-normalised with the training set's per-dimension mean/std, so sampling z gives
  plausible coefficients. Without trained decoders, :meth:`FactorDecoders.prior` gives a hand-made prior with the
  same interface (identity ~ N(0, 1) as the ICT modes are std-scaled, mild expressions, white-ish light, ±17° yaw).
* :class:`Generator` — mapping MLP over the normalised coefficient vector + noise → one w; synthesis from a learned
  4x4 constant with modulated/demodulated 3x3 convs, per-layer noise, skip RGB outputs. Channel widths fall with
  resolution (the editor's latency budget: ~30 ms at 128 px on two CPU cores, batch 1).
* :class:`FaceGenerator` — decoders + G_ema + the identity-mean latent w̄_id for truncation; what the app uses.
  With the 2× face upsampler (``engine/generator/sr.py``, ``assets/face_sr.safetensors``, attached by
  :func:`load_default_generator`) its native output is twice G's size; ``upsample=False`` (or no upsampler file)
  gives G's own image.

Truncation (DESIGN §1): w_id = mapping(identity coefficients only; expression/light/pose and noise zero),
w' = w + (1 − ψ)(w̄_id − w_id) on the first ``trunc_layers`` (8: everything up to 32 px) of the per-layer ws.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import config
from engine.face.model import N_EXP, N_ID, N_LIGHT, N_POSE, Coefficients
from engine.io.files import WeightsError, check_state_shapes, load_safetensors, save_safetensors
from engine.shapes import assert_shape

LATENT_DIMS = {"identity": 128, "expression": 32, "light": 16, "pose": 3, "noise": 32}
GENERATOR_FORMAT = "discoface.generator"
GENERATOR_VERSION = 2  # 2: optional identity noise (``identity_noise`` + the descriptor PCA buffers); reads 1 too
DECODERS_FORMAT = "discoface.decoders"
DECODERS_VERSION = 1
DEFAULT_PSI = 0.7


# --------------------------------------------------------------------------------------------- latents
@dataclass
class Latents:
    identity: torch.Tensor
    expression: torch.Tensor
    light: torch.Tensor
    pose: torch.Tensor
    noise: torch.Tensor

    @property
    def batch(self) -> int:
        return self.identity.shape[0]

    def map(self, fn) -> "Latents":
        return Latents(*(fn(getattr(self, f.name)) for f in fields(self)))

    def to(self, *a, **k) -> "Latents":
        return self.map(lambda t: t.to(*a, **k))

    def clone(self) -> "Latents":
        return self.map(lambda t: t.clone())

    def __getitem__(self, idx) -> "Latents":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return self.map(lambda t: t[idx])

    @staticmethod
    def cat(items: list["Latents"]) -> "Latents":
        return Latents(*(torch.cat([getattr(x, f.name) for x in items]) for f in fields(Latents)))

    def replace(self, **parts) -> "Latents":
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(parts)
        return Latents(**d)


def sample_latents(n: int, seed: int | None = None, device=None, generator: torch.Generator | None = None
                   ) -> Latents:
    """n latents ~ N(0, I). A seed gives the same latents on every machine (drawn on the CPU, then moved)."""
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    parts = {k: torch.randn(n, d, generator=generator) for k, d in LATENT_DIMS.items()}
    lat = Latents(**parts)
    return lat.to(device) if device is not None else lat


# --------------------------------------------------------------------------------------------- decoders
DECODER_SPECS = {  # factor: (latent dim, hidden width, number of hidden layers)
    "identity": (LATENT_DIMS["identity"], 512, 2),
    "expression": (LATENT_DIMS["expression"], 256, 2),
    "light": (LATENT_DIMS["light"], 128, 2),
    "pose": (LATENT_DIMS["pose"], 32, 2),
}


def factor_out_dims(albedo_dim: int) -> dict[str, int]:
    """Output size of each decoder; the identity decoder also produces the albedo coefficients."""
    return {"identity": N_ID + albedo_dim, "expression": N_EXP, "light": N_LIGHT, "pose": N_POSE}


class FactorMLP(nn.Module):
    """z → mean + std * (skip(z) + mlp(z)); mean/std are the training coefficients' statistics."""

    def __init__(self, z_dim: int, out_dim: int, hidden: int, layers: int):
        super().__init__()
        mods, d = [], z_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
            d = hidden
        mods.append(nn.Linear(d, out_dim))
        self.mlp = nn.Sequential(*mods)
        self.skip = nn.Linear(z_dim, out_dim, bias=False)
        self.register_buffer("out_mean", torch.zeros(out_dim))
        self.register_buffer("out_std", torch.ones(out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_mean + self.out_std * (self.skip(z) + self.mlp(z))


def _load_configured(path: Path, fmt: str, version: int, what: str, build):
    """(tensors, metadata, build(config)) of a weights file whose metadata holds a JSON ``config``; a missing or
    malformed config is one :class:`WeightsError` naming the file."""
    tensors, meta = load_safetensors(path, fmt, version)
    try:
        return tensors, meta, build(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: {what} config metadata is missing or malformed ({exc})") from None


class FactorDecoders(nn.Module):
    """The four VAE decoders: :meth:`decode` maps :class:`Latents` to :class:`Coefficients`."""

    def __init__(self, albedo_dim: int = 0, exp_names=()):
        super().__init__()
        self.albedo_dim = int(albedo_dim)
        self.exp_names = tuple(str(n) for n in exp_names)
        outs = factor_out_dims(self.albedo_dim)
        self.nets = nn.ModuleDict({k: FactorMLP(z, outs[k], h, n) for k, (z, h, n) in DECODER_SPECS.items()})

    def config(self) -> dict:
        return {"albedo_dim": self.albedo_dim, "exp_names": list(self.exp_names)}

    def decode(self, lat: Latents) -> Coefficients:
        ida = self.nets["identity"](lat.identity)
        exp = self.nets["expression"](lat.expression).clamp(0.0, 1.0)
        return Coefficients(ida[:, :N_ID], ida[:, N_ID:], exp, self.nets["light"](lat.light),
                            self.nets["pose"](lat.pose), exp_names=self.exp_names)

    forward = decode

    def coefficient_stats(self, n: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean/std of the decoded coefficient vector (``Coefficients.as_vector`` layout) over n samples."""
        dev = next(self.parameters()).device
        with torch.no_grad():
            v = self.decode(sample_latents(n, seed=seed, device=dev)).as_vector()
        return v.mean(0), v.std(0).clamp_min(1e-3)

    @classmethod
    def prior(cls, albedo_dim: int = 0, exp_names=(), seed: int = 0) -> "FactorDecoders":
        """Hand-made decoders used until the VAEs are trained on real fits (linear, Gaussian outputs)."""
        dec = cls(albedo_dim, exp_names)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for k, net in dec.nets.items():
                net.mlp[-1].weight.zero_()
                net.mlp[-1].bias.zero_()
                net.skip.weight.zero_()
            # identity: the ICT modes are std-scaled, so c ~ N(0, 1); albedo the same in its own units
            idn = dec.nets["identity"]
            n_out = N_ID + albedo_dim
            idn.skip.weight[:min(n_out, 128), :min(n_out, 128)] = torch.eye(min(n_out, 128))
            if n_out > 128:  # more outputs than latent dims: random unit-variance projections
                p = torch.randn(n_out - 128, 128, generator=g)
                idn.skip.weight[128:] = p / p.norm(dim=1, keepdim=True)
            idn.out_std.fill_(1.0)
            if albedo_dim:
                idn.out_std[N_ID:] = 0.5
            # expression: random sparse-ish mixtures, clamped to [0, 1] by decode()
            ex = dec.nets["expression"]
            p = torch.randn(N_EXP, 32, generator=g)
            ex.skip.weight.copy_(p / p.norm(dim=1, keepdim=True))
            ex.out_mean.fill_(0.02)
            ex.out_std.fill_(0.12)
            names = list(exp_names)
            for i, nm in enumerate(names):
                if nm == "mouthClose":  # a corrective shape, meaningless on its own
                    ex.out_std[i], ex.out_mean[i] = 0.0, 0.0
                elif nm == "jawOpen":
                    ex.out_std[i], ex.out_mean[i] = 0.2, 0.05
            # light: white light from z[:9], slight colour tint of the ambient from z[9:12]
            li = dec.nets["light"]
            band_std = torch.tensor([0.12, 0.2, 0.2, 0.2, 0.05, 0.05, 0.05, 0.05, 0.05])
            for c in range(3):
                li.skip.weight[c * 9:(c + 1) * 9, :9] = torch.eye(9)
                li.skip.weight[c * 9, 9 + c] = 0.3
                li.out_std[c * 9:(c + 1) * 9] = band_std
            li.out_mean.zero_()
            # pose: yaw 0.3 rad (17°), pitch 0.12 rad, roll 0.07 rad
            po = dec.nets["pose"]
            po.skip.weight.copy_(torch.eye(3))
            po.out_std.copy_(torch.tensor([0.30, 0.12, 0.07]))
        return dec.requires_grad_(False)

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path, extra: dict | None = None) -> None:

        meta = {"config": json.dumps(self.config())}
        meta.update({k: str(v) for k, v in (extra or {}).items()})
        save_safetensors(path, self.state_dict(), DECODERS_FORMAT, DECODERS_VERSION, meta)

    @classmethod
    def load(cls, path=None) -> "FactorDecoders":
        path = Path(path) if path else config.ASSETS_DIR / "decoders.safetensors"
        tensors, meta, dec = _load_configured(path, DECODERS_FORMAT, DECODERS_VERSION, "decoder",
                                              lambda cfg: cls(int(cfg["albedo_dim"]), cfg.get("exp_names", ())))
        dec.load_state_dict(check_state_shapes(path, dec, tensors))
        return dec.eval()


# --------------------------------------------------------------------------------------------- StyleGAN2 parts
class EqLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, act=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.w_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x):
        b = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.w_gain, b)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.act else x


class ModConv(nn.Module):
    """Modulated conv (StyleGAN2) written as scale-input → shared conv → demodulate, which equals the fused
    per-sample weight version but runs as one ordinary (cuDNN / oneDNN friendly) convolution for any batch."""

    def __init__(self, cin, cout, w_dim, k=3, demod=True, up=False, noise_res=None, act=True):
        super().__init__()
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = 1.0 / math.sqrt(cin * k * k)
        self.demod, self.up, self.k, self.act = demod, up, k, act
        if noise_res is not None:
            g = torch.Generator().manual_seed(noise_res * 1000 + cin * 7 + cout)
            self.register_buffer("noise_const", torch.randn(1, 1, noise_res, noise_res, generator=g))
            self.noise_strength = nn.Parameter(torch.zeros(()))
        else:
            self.noise_const = None

    def forward(self, x, w, noise_mode="const"):
        s = self.affine(w)  # (B, cin)
        wt = self.weight * self.gain
        x = x * s[:, :, None, None]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x, wt, padding=self.k // 2)
        if self.demod:
            d = torch.rsqrt((s * s) @ wt.pow(2).sum((2, 3)).t() + 1e-8)  # (B, cout)
            x = x * d[:, :, None, None]
        if self.noise_const is not None and noise_mode != "none":
            if noise_mode == "random":
                n = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            else:
                n = self.noise_const.to(x.dtype)
            x = x + n * self.noise_strength
        x = x + self.bias.to(x.dtype)[None, :, None, None]
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.act else x


class SynthesisBlock(nn.Module):
    def __init__(self, cin, cout, w_dim, res, first=False):
        super().__init__()
        self.first = first
        if first:
            self.const = nn.Parameter(torch.randn(cout, res, res))
            self.conv1 = ModConv(cout, cout, w_dim, noise_res=res)
            self.num_conv = 1
        else:
            self.conv0 = ModConv(cin, cout, w_dim, up=True, noise_res=res)
            self.conv1 = ModConv(cout, cout, w_dim, noise_res=res)
            self.num_conv = 2
        self.torgb = ModConv(cout, 3, w_dim, k=1, demod=False, act=False)

    def forward(self, x, img, ws, noise_mode):
        """ws: (B, num_conv + 1, w_dim) — the conv ws and the to-RGB w."""
        if self.first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv], noise_mode)
        if img is not None:
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            y = img + y
        return x, y


def default_channels(resolution: int, base: int = 256, min_ch: int = 16, max_ch: int = 256) -> dict[int, int]:
    """Widths that halve with every doubling above 8 px: 4,8→base, 16→base/2, … never below ``min_ch``."""
    out, r, c = {}, 4, base
    while r <= resolution:
        out[r] = int(max(min_ch, min(max_ch, c)))
        if r >= 8:
            c //= 2
        r *= 2
    return out


class Generator(nn.Module):
    """G(λ, z_noise): mapping(normalised coefficient vector ⊕ z_noise) → w; synthesis with one w per layer."""

    def __init__(self, resolution: int = 64, albedo_dim: int = 0, channels: dict | None = None, w_dim: int = 256,
                 map_layers: int = 4, trunc_layers: int = 8, noise_dim: int = LATENT_DIMS["noise"],
                 identity_noise: bool = False, descriptor_dim: int = 128):
        """``identity_noise``: the noise latent is an *identity code* (whitened PCA coordinates of the face
        descriptor, ``training/idcodes.py``), so it belongs to the identity — truncation includes it and the file
        carries the PCA (``id_mean``, ``id_basis``, ``id_std``) so a photo's descriptor can be turned into its code."""
        super().__init__()
        if resolution not in (16, 32, 64, 128, 256, 512):
            raise ValueError(f"unsupported resolution {resolution}")
        channels = {int(k): int(v) for k, v in (channels or default_channels(resolution)).items()}
        self.cfg = {"resolution": resolution, "albedo_dim": albedo_dim, "channels": channels, "w_dim": w_dim,
                    "map_layers": map_layers, "trunc_layers": trunc_layers, "noise_dim": noise_dim}
        self.identity_noise = bool(identity_noise)
        if self.identity_noise:
            self.cfg.update(identity_noise=True, descriptor_dim=int(descriptor_dim))
            self.register_buffer("id_mean", torch.zeros(descriptor_dim))
            self.register_buffer("id_basis", torch.zeros(noise_dim, descriptor_dim))
            self.register_buffer("id_std", torch.ones(noise_dim))
        self.resolution = resolution
        self.albedo_dim = albedo_dim
        self.coeff_dim = N_ID + albedo_dim + N_EXP + N_LIGHT + N_POSE
        self.noise_dim = noise_dim
        self.w_dim = w_dim
        self.register_buffer("coeff_mean", torch.zeros(self.coeff_dim))
        self.register_buffer("coeff_std", torch.ones(self.coeff_dim))
        self.register_buffer("w_avg_id", torch.zeros(w_dim))
        layers, d = [], self.coeff_dim + noise_dim
        for _ in range(map_layers):
            layers.append(EqLinear(d, w_dim, lr_mul=0.01, act=True))
            d = w_dim
        self.mapping = nn.Sequential(*layers)
        self.blocks = nn.ModuleList()
        r, prev = 4, None
        while r <= resolution:
            self.blocks.append(SynthesisBlock(prev or channels[r], channels[r], w_dim, r, first=(r == 4)))
            prev = channels[r]
            r *= 2
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.trunc_layers = min(trunc_layers, self.num_ws)

    # -- mapping -----------------------------------------------------------------------------------
    def set_coeff_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.coeff_mean.copy_(mean.reshape(-1))
        self.coeff_std.copy_(std.reshape(-1).clamp_min(1e-3))

    def _coeff_vector(self, coeffs) -> torch.Tensor:
        v = coeffs.as_vector() if isinstance(coeffs, Coefficients) else coeffs
        if v.shape[1] != self.coeff_dim:
            raise ValueError(f"generator expects {self.coeff_dim} coefficient values (albedo K={self.albedo_dim}), "
                             f"got {v.shape[1]}")
        return v

    def map(self, coeffs, noise: torch.Tensor) -> torch.Tensor:
        """(B, w_dim) w from coefficients (or their vector) and the noise latent."""
        v = (self._coeff_vector(coeffs) - self.coeff_mean) / self.coeff_std
        return self.mapping(torch.cat([v, noise.to(v)], 1))

    def _identity_only(self, v: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.zeros_like(v)
        keep[:, :N_ID + self.albedo_dim] = 1
        if self.identity_noise:
            return v * keep, noise.to(v)
        return v * keep, torch.zeros(v.shape[0], self.noise_dim, device=v.device, dtype=v.dtype)

    def identity_w(self, coeffs, noise: torch.Tensor | None = None) -> torch.Tensor:
        """w_id: the mapping of the identity (+ albedo) coefficients alone — and of the noise when it is an
        identity code (``identity_noise``); expression, light and pose zero."""
        v = self._coeff_vector(coeffs)
        if noise is None:
            noise = torch.zeros(v.shape[0], self.noise_dim, device=v.device, dtype=v.dtype)
        return self.map(*self._identity_only(v, noise))

    def set_identity_pca(self, mean: torch.Tensor, basis: torch.Tensor, std: torch.Tensor) -> None:
        """Store the descriptor PCA the identity codes were made with (``identity_noise`` generators only)."""
        if not self.identity_noise:
            raise ValueError("this generator's noise is not an identity code")
        self.id_mean.copy_(mean.reshape(-1))
        self.id_basis.copy_(basis.reshape(self.noise_dim, -1))
        self.id_std.copy_(std.reshape(-1))

    def identity_code(self, descriptors: torch.Tensor) -> torch.Tensor:
        """(B, noise_dim) identity codes of face descriptors (B, 128) — e.g. of a photo, to start an embedding."""
        if not self.identity_noise:
            raise ValueError("this generator's noise is not an identity code")
        d = descriptors.to(self.id_mean)
        return ((d - self.id_mean) @ self.id_basis.t()) / self.id_std

    def ws(self, coeffs, noise, truncation_psi: float = 1.0, w_avg_id: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_ws, w_dim) per-layer latents with attribute-preserving truncation on the first layers."""
        v = self._coeff_vector(coeffs)
        assert_shape(noise, [v.shape[0], self.noise_dim], "noise")
        if truncation_psi == 1.0:
            w = self.map(v, noise)
        else:  # w and w_id in one batched mapping pass (half the per-call overhead at batch 1)
            b = v.shape[0]
            vi, ni = self._identity_only(v, noise)
            both = self.map(torch.cat([v, vi]), torch.cat([noise.to(v), ni]))
            w, w_id = both[:b], both[b:]
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            w_bar = self.w_avg_id if w_avg_id is None else w_avg_id.to(w)
            delta = (1.0 - truncation_psi) * (w_bar - w_id)
            L = self.trunc_layers
            ws = torch.cat([ws[:, :L] + delta.unsqueeze(1), ws[:, L:]], 1)
        return ws

    # -- synthesis ---------------------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """(B, num_ws, w_dim) per-layer latents → (B, 3, H, W) image."""
        assert_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        x = img = None
        i = 0
        for blk in self.blocks:
            x, img = blk(x, img, ws[:, i:i + blk.num_conv + 1], noise_mode)
            i += blk.num_conv
        return img

    def forward(self, coeffs, noise: torch.Tensor, truncation_psi: float = 1.0, w_avg_id=None,
                noise_mode: str = "const") -> torch.Tensor:
        """(B, 3, H, W) image, nominally in [-1, 1] (not clamped: the discriminator sees the raw output)."""
        return self.synthesis(self.ws(coeffs, noise, truncation_psi, w_avg_id), noise_mode)

    @torch.no_grad()
    def compute_w_avg_id(self, decoders: FactorDecoders, n: int = 4096, seed: int = 123, batch: int = 1024
                         ) -> torch.Tensor:
        """Average w_id over many decoded identities; stored in ``w_avg_id``."""
        dev = self.coeff_mean.device
        acc = torch.zeros(self.w_dim, device=dev)
        g = torch.Generator().manual_seed(seed)
        done = 0
        while done < n:
            m = min(batch, n - done)
            lat = sample_latents(m, generator=g).to(dev)
            acc += self.identity_w(decoders.decode(lat), lat.noise).sum(0)
            done += m
        self.w_avg_id.copy_(acc / n)
        return self.w_avg_id


# --------------------------------------------------------------------------------------------- the app's object
class FaceGenerator(nn.Module):
    """Decoders + G_ema + w̄_id, loaded from ``assets/generator.safetensors`` (self-contained)."""

    def __init__(self, decoders: FactorDecoders, generator: Generator, sr=None):
        super().__init__()
        if decoders.albedo_dim != generator.albedo_dim:
            raise ValueError("decoders and generator disagree on the albedo size")
        self.decoders = decoders
        self.G = generator
        self.sr = None
        self.id_sampler = None
        if sr is not None:
            self.attach_sr(sr)

    def attach_sampler(self, sampler) -> "FaceGenerator":
        """Draw random faces through ``sampler`` (an ``engine.generator.idsampler.IdentitySampler`` fitted for these
        weights; None: plain N(0, I) draws): :meth:`sample` keeps one of its ``candidates`` draws per face, chosen by
        the descriptor's density ratio. Not part of the generator file."""
        self.id_sampler = sampler
        return self

    def attach_sr(self, sr) -> "FaceGenerator":
        """Upsample every image with ``sr`` (an ``engine.generator.sr.FaceSR`` taking G's size; None detaches it):
        the native output size becomes ``sr.out_res``. The upsampler is not part of the generator file."""
        if sr is not None and sr.in_res != self.G.resolution:
            raise WeightsError(f"the upsampler takes {sr.in_res} px images but the generator makes "
                               f"{self.G.resolution} px")
        self.sr = sr
        return self

    @property
    def resolution(self) -> int:
        """The native output size: the upsampler's when one is attached, else G's."""
        return self.sr.out_res if self.sr is not None else self.G.resolution

    @property
    def base_resolution(self) -> int:
        """G's own output size (what an embedding optimises at)."""
        return self.G.resolution

    @property
    def albedo_dim(self) -> int:
        return self.G.albedo_dim

    @property
    def exp_names(self) -> tuple:
        return self.decoders.exp_names

    def config(self) -> dict:
        return {"generator": self.G.cfg, "decoders": self.decoders.config()}

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path, extra: dict | None = None) -> None:

        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors.update({f"decoders.{k}": v for k, v in self.decoders.state_dict().items()})
        meta = {"config": json.dumps(self.config())}
        meta.update({k: str(v) for k, v in (extra or {}).items()})
        save_safetensors(path, tensors, GENERATOR_FORMAT, GENERATOR_VERSION, meta)

    @classmethod
    def load(cls, path=None) -> "FaceGenerator":
        """Load a generator file; any problem (missing, truncated, wrong format/shapes) → WeightsError."""
        path = Path(path) if path else config.ASSETS_DIR / "generator.safetensors"
        tensors, meta, (G, dec) = _load_configured(
            path, GENERATOR_FORMAT, GENERATOR_VERSION, "generator",
            lambda cfg: (Generator(**cfg["generator"]),
                         FactorDecoders(int(cfg["decoders"]["albedo_dim"]), cfg["decoders"].get("exp_names", ()))))
        G.load_state_dict(check_state_shapes(path, G, tensors, "G."), strict=True)
        dec.load_state_dict(check_state_shapes(path, dec, tensors, "decoders."), strict=True)
        for k, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise WeightsError(f"{path}: tensor {k!r} holds NaN or infinite values")
        fg = cls(dec, G).eval().to(memory_format=torch.channels_last)  # faster convs on CPU (bench/generator.py)
        fg.requires_grad_(False)
        fg.meta = meta
        return fg

    # -- use ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> tuple[Coefficients, torch.Tensor]:
        """Decoded coefficients and the noise latent of ``n`` random faces (same seed → same faces). The one home of
        random faces (editor, CLI, benches): with an identity sampler attached (:meth:`attach_sampler`) each face is
        the one kept of the sampler's candidates."""
        dev = self.G.coeff_mean.device
        s = self.id_sampler
        idnet = None
        if s is not None and s.candidates > 1:
            from engine.perception.identity import IdentityModelError, default_identity_net

            try:
                idnet = default_identity_net()
            except (IdentityModelError, OSError):  # no descriptor network (face_recognition_models): plain draws
                idnet = None
        if idnet is None:
            lat = sample_latents(n, seed=seed, device=dev)
            return self.decoders.decode(lat), lat.noise
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        lat = sample_latents(n * s.candidates, generator=g)
        # the candidates of one face differ in who they are (identity latent and code) only: expression, light and
        # pose are the face's one plain draw, so the choice cannot prefer a light or a turn the descriptor likes
        shared = {k: getattr(lat, k).view(n, s.candidates, -1)[:, :1].expand(-1, s.candidates, -1)
                  .reshape(n * s.candidates, -1) for k in ("expression", "light", "pose")}
        lat = lat.replace(**shared)
        c = self.decoders.decode(lat.to(dev))
        desc = torch.cat([idnet.embed_crops(self.synthesize(c[i:i + 64], lat.noise[i:i + 64], s.psi, upsample=False))
                          for i in range(0, n * s.candidates, 64)])
        pick = s.choose(s.log_weights(desc.cpu()).view(n, s.candidates), g)
        keep = torch.arange(n) * s.candidates + pick
        return c[keep.to(dev)], lat.noise[keep].to(dev)

    def synthesize(self, coeffs: Coefficients, noise: torch.Tensor, truncation_psi: float = DEFAULT_PSI,
                   upsample: bool = True) -> torch.Tensor:
        """(B, 3, H, W) image in [0, 1] at :attr:`resolution` (``upsample=False``: G's own size)."""
        dev = self.G.coeff_mean.device
        img = self.G(coeffs.to(dev), noise.to(dev), truncation_psi=truncation_psi, noise_mode="const")
        return self._finish(img, upsample)

    def _finish(self, img: torch.Tensor, upsample: bool) -> torch.Tensor:
        if upsample and self.sr is not None:  # the upsampler was trained on G's clamped images
            img = self.sr(img.clamp(-1.0, 1.0))
        return (img * 0.5 + 0.5).clamp(0.0, 1.0)

    def ws(self, coeffs: Coefficients, noise: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """(B, num_ws, w_dim) per-layer latents (an embedded photo adds its per-layer offsets to these)."""
        dev = self.G.coeff_mean.device
        return self.G.ws(coeffs.to(dev), noise.to(dev), truncation_psi)

    def synthesize_ws(self, ws: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        """(B, 3, H, W) image in [0, 1] from per-layer latents (at :attr:`resolution`, as :meth:`synthesize`)."""
        return self._finish(self.G.synthesis(ws, noise_mode="const"), upsample)

    def forward(self, coeffs, noise, truncation_psi: float = DEFAULT_PSI):
        return self.synthesize(coeffs, noise, truncation_psi)


def load_default_generator(upsampler: bool = True) -> FaceGenerator | None:
    """The shipped generator, or None when ``assets/generator.safetensors`` is absent (bad files still raise).
    With ``upsampler`` (default) the shipped 2× upsampler (``assets/face_sr.safetensors``, when present and made for
    this generator's size) is attached, so the native output is 128 px; without the file the 64 px path is used."""
    path = config.ASSETS_DIR / "generator.safetensors"
    if not path.exists():
        return None
    fg = FaceGenerator.load(path)
    from engine.generator.idsampler import load_default_sampler

    fg.attach_sampler(load_default_sampler(fg))
    if upsampler:
        from engine.generator.sr import load_default_sr

        sr = load_default_sr()
        if sr is not None and sr.in_res == fg.G.resolution:
            fg.attach_sr(sr.to(memory_format=torch.channels_last))
    return fg


def images_to_uint8(img: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] → (B, H, W, 3) uint8."""
    return (img.detach().clamp(0, 1).permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
