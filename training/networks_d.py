"""StyleGAN2 residual discriminator (equalised learning rate, minibatch standard deviation)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.generator.networks import EqLinear, default_channels


class EqConv(nn.Module):
    def __init__(self, cin, cout, k=3, bias=True, act=True, down=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1.0 / math.sqrt(cin * k * k)
        self.k, self.act, self.down = k, act, down

    def forward(self, x):
        if self.down:  # blur-ish 2x2 average before the stride-1 conv keeps it simple and alias-light
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.k // 2)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.act else x


class DBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv0 = EqConv(cin, cin)
        self.conv1 = EqConv(cin, cout, down=True)
        self.skip = EqConv(cin, cout, k=1, bias=False, act=False, down=True)

    def forward(self, x):
        return (self.skip(x) + self.conv1(self.conv0(x))) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """D(x) → (B,) logits for images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int = 64, channels: dict | None = None, mbstd_group: int = 4):
        super().__init__()
        ch = {int(k): int(v) for k, v in (channels or default_channels(resolution)).items()}
        self.cfg = {"resolution": resolution, "channels": ch, "mbstd_group": mbstd_group}
        self.resolution = resolution
        self.fromrgb = EqConv(3, ch[resolution], k=1)
        blocks, r = [], resolution
        while r > 4:
            blocks.append(DBlock(ch[r], ch[r // 2]))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        self.mbstd_group = mbstd_group
        c4 = ch[4]
        self.conv = EqConv(c4 + 1, c4)
        self.fc = EqLinear(c4 * 16, c4, act=True)
        self.out = EqLinear(c4, 1)

    def minibatch_std(self, x):
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w).float()
        y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt()  # (b/g, c, h, w)
        y = y.mean((1, 2, 3)).to(x.dtype)  # (b/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], 1)

    def forward(self, img):
        x = self.blocks(self.fromrgb(img))
        x = self.conv(self.minibatch_std(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN critic: D(x) → (B, P) logits, one per overlapping patch (receptive field ≈ 1/2 of the image
    at 64 px). Cheap enough for the CPU fine-tuning stage; it judges local texture (skin, hair, edges), which is
    what the reconstruction/imitation warm start lacks, while the imitation and landmark terms keep the layout."""

    def __init__(self, resolution: int = 64, channels: dict | None = None, n_down: int = 3, highpass: bool = False):
        super().__init__()
        ch = {int(k): int(v) for k, v in (channels or {resolution: 32, resolution // 2: 64,
                                                       resolution // 4: 128, resolution // 8: 128}).items()}
        self.cfg = {"resolution": resolution, "channels": ch, "n_down": n_down, "highpass": highpass}
        self.resolution = resolution
        self.highpass = highpass
        self.fromrgb = EqConv(6 if highpass else 3, ch[resolution], k=1)
        layers, r = [], resolution
        for _ in range(n_down):
            layers.append(EqConv(ch[r], ch[r // 2], down=True))
            r //= 2
        self.body = nn.Sequential(*layers)
        self.conv = EqConv(ch[r], ch[r])
        self.out = EqConv(ch[r], 1, k=1, act=False)

    def forward(self, img):
        if self.highpass:  # the image's own high frequencies (×4) as 3 more channels: texture is what D should judge
            img = torch.cat([img, 4.0 * (img - blur5(img))], 1)
        return self.out(self.conv(self.body(self.fromrgb(img)))).flatten(1)


def blur5(img: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable 5-tap Gaussian blur (replicate border), per channel."""
    r = torch.arange(5, device=img.device, dtype=img.dtype) - 2
    k = torch.exp(-r * r / (2 * sigma * sigma))
    k = k / k.sum()
    c = img.shape[1]
    x = F.pad(img, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def build_discriminator(resolution: int, arch: str = "resnet", channels: dict | None = None) -> nn.Module:
    """``resnet`` (StyleGAN2's), ``patch`` or ``patch-hp`` (the patch critic also shown the image's high-pass)."""
    if arch == "resnet":
        return Discriminator(resolution, channels)
    if arch in ("patch", "patch-hp"):
        return PatchDiscriminator(resolution, channels, highpass=arch == "patch-hp")
    raise ValueError(f"unknown discriminator {arch!r}; choose resnet, patch or patch-hp")
