"""A face-specific 2× upsampling stage (64 → 128 px) that runs after the generator.

:class:`FaceSR` is a small residual conv net conditioned only on the low-resolution image: a bicubic 2× upsampling
plus a learned correction (residual blocks at the input size, a pixel-shuffle step, two convolutions at the output
size). It is trained by ``python -m training sr`` on UTKFace crops (pairs: area-downsampled 64 px → real 128 px, with
blur/noise degradations so soft, noisy generator outputs map to clean photos) plus a patch adversarial term on the
generator's own faces. :class:`engine.generator.networks.FaceGenerator` applies it when ``assets/face_sr.safetensors``
is present, so the generator's native output becomes 128 px; without the file the 64 px path is unchanged.

Files: safetensors with ``format`` = ``discoface.face-sr``, ``version`` ≤ :data:`SR_VERSION` and a JSON ``config``;
shapes are checked on load (:func:`engine.io.files.check_state_shapes`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine import config
from engine.io.files import WeightsError, check_state_shapes, load_safetensors, save_safetensors

SR_FORMAT = "discoface.face-sr"
SR_VERSION = 1
SR_FILE = "face_sr.safetensors"


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv0 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + 0.5 * self.conv1(F.leaky_relu(self.conv0(x), 0.2))


class FaceSR(nn.Module):
    """(B, 3, r, r) image in [-1, 1] → (B, 3, 2r, 2r) image in [-1, 1] (not clamped)."""

    def __init__(self, in_res: int = 64, channels: int = 32, blocks: int = 4, up_channels: int = 16):
        super().__init__()
        if in_res not in (32, 64, 128, 256):
            raise ValueError(f"unsupported input size {in_res}")
        self.cfg = {"in_res": int(in_res), "channels": int(channels), "blocks": int(blocks),
                    "up_channels": int(up_channels)}
        self.in_res, self.out_res = int(in_res), 2 * int(in_res)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])
        self.up = nn.Conv2d(channels, 4 * up_channels, 3, padding=1)
        self.conv_hr = nn.Conv2d(up_channels, up_channels, 3, padding=1)
        self.to_rgb = nn.Conv2d(up_channels, 3, 3, padding=1)
        with torch.no_grad():  # start as plain bicubic upsampling
            self.to_rgb.weight.mul_(0.1)
            self.to_rgb.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_res or x.shape[-2] != self.in_res:
            raise ValueError(f"the upsampler takes {self.in_res} px images, got {tuple(x.shape[-2:])}")
        return self.upsample_any(x)

    def upsample_any(self, x: torch.Tensor) -> torch.Tensor:
        """The same network on an input of any size (training on patches)."""
        base = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        h = self.head(x)
        h = h + self.body(h)
        h = F.pixel_shuffle(F.leaky_relu(self.up(h), 0.2), 2)
        h = F.leaky_relu(self.conv_hr(h), 0.2)
        return base + self.to_rgb(h)

    def upsample01(self, img01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images → [0, 1] images at twice the size (clamped)."""
        return (self(img01 * 2 - 1) * 0.5 + 0.5).clamp(0.0, 1.0)

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path, extra: dict | None = None) -> None:
        meta = {"config": json.dumps(self.cfg)}
        meta.update({k: str(v) for k, v in (extra or {}).items()})
        save_safetensors(path, self.state_dict(), SR_FORMAT, SR_VERSION, meta)

    @classmethod
    def load(cls, path=None) -> "FaceSR":
        """Load an upsampler file; any problem (missing, corrupt, wrong format / version / shapes, NaN) → WeightsError."""
        path = Path(path) if path else config.ASSETS_DIR / SR_FILE
        tensors, meta = load_safetensors(path, SR_FORMAT, SR_VERSION)
        try:
            cfg = json.loads(meta["config"])
            net = cls(**{k: int(cfg[k]) for k in ("in_res", "channels", "blocks", "up_channels")})
        except (KeyError, ValueError, TypeError) as exc:
            raise WeightsError(f"{path}: upsampler config metadata is missing or malformed ({exc})") from None
        net.load_state_dict(check_state_shapes(path, net, tensors), strict=True)
        for k, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise WeightsError(f"{path}: tensor {k!r} holds NaN or infinite values")
        net.meta = meta
        return net.eval().requires_grad_(False)


def load_default_sr() -> FaceSR | None:
    """The shipped upsampler, or None when ``assets/face_sr.safetensors`` is absent (a bad file still raises)."""
    path = config.ASSETS_DIR / SR_FILE
    return FaceSR.load(path) if path.exists() else None


def param_count(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def flops_per_image(net: FaceSR) -> float:
    """Multiply-adds of one forward pass (convolutions only), for the docs / latency estimates."""
    c, u, r = net.cfg["channels"], net.cfg["up_channels"], net.in_res
    lr = 9 * r * r * (3 * c + 2 * net.cfg["blocks"] * c * c + c * 4 * u)
    hr = 9 * (2 * r) ** 2 * (u * u + u * 3)
    return float(lr + hr)


