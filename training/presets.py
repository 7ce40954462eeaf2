"""Training presets for the generator (``python -m training gan --preset NAME``).

Images are counted as *real images shown to D* ("kimg" = thousands), as in StyleGAN. DiscoFaceGAN trained stage 1
for ~15M and stage 2 to ~25M images at minibatch 16 on 4 GPUs; the CPU presets are smoke-scale.
"""
from __future__ import annotations

import copy
from typing import TypedDict

from engine.generator.networks import default_channels


class _Arch(TypedDict):
    resolution: int  # px
    g_channels: dict  # {resolution: channels} of G's blocks
    d_channels: dict  # {resolution: channels} of D's blocks
    w_dim: int
    map_layers: int


class Preset(_Arch, total=False):
    """The keys a preset holds (every preset has the architecture; the rest fall back to ``TrainConfig``'s
    defaults in ``training/train_gan.py``, which reads a preset with ``TrainConfig.from_dict``)."""

    batch: int
    lr: float
    d_lr: float
    r1_gamma: float
    r1_every: int
    ema_kimg: float
    l1_kimg: float
    lm_kimg: float
    stage2_kimg: float
    total_kimg: float
    ckpt_every: int
    sample_every: int
    l1_res: int
    lm_weight_stage2: float
    pair_every: int
    d_arch: str
    augment: str
    adv_weight: float
    imit_yaw: float
    imit_expr: float
    noise_mode: str
    loss_weights: dict


PRESETS: dict[str, Preset] = {
    # unit tests / plumbing: 32 px, a few channels, a couple of seconds per hundred images
    "tiny": dict(resolution=32, g_channels=default_channels(32, 32, 8), d_channels=default_channels(32, 32, 8),
                 w_dim=64, map_layers=2, batch=8, lr=0.002, r1_gamma=10.0, r1_every=4, ema_kimg=0.05,
                 l1_kimg=1.0, stage2_kimg=0.2, total_kimg=0.5, ckpt_every=64, sample_every=128, l1_res=16,
                 lm_weight_stage2=100.0, pair_every=2),
    # CPU smoke training (2 shared cores): 64 px, widths 128 → 16
    "cpu64": dict(resolution=64, g_channels=default_channels(64, 128, 16), d_channels=default_channels(64, 128, 16),
                  w_dim=256, map_layers=4, batch=16, lr=0.0025, r1_gamma=10.0, r1_every=16, ema_kimg=2.0,
                  l1_kimg=200.0, stage2_kimg=300.0, total_kimg=500.0, ckpt_every=1024, sample_every=2048, l1_res=32,
                  lm_weight_stage2=100.0, pair_every=2),
    # CPU fine-tuning of a warm start (``--init assets/generator.safetensors``): a small patch discriminator with
    # DiffAugment and R1 adds texture (it also sees the image's high-pass: with RGB alone it could not even tell
    # real crops from their 32-px blur after 150 steps, with the high-pass its loss fell 1.39 -> 1.2 in 80); the 32-px L1 imitation (low frequencies only) and the R-Net landmark term stay
    # on throughout so colour, pose and expression control are kept; wide poses / strong expressions in the samples
    # as in the warm-up; the per-layer noise stays the fixed map the warm start and the editor use (with random noise
    # the first fine-tune lowered the noise strengths and got blurrier: sharpness 0.36 -> 0.32 in 8k images). The G
    # architecture comes from the init file.
    "cpu64ft": dict(resolution=64, g_channels=default_channels(64, 128, 16),
                    d_channels={64: 32, 32: 64, 16: 128, 8: 128}, d_arch="patch-hp", augment="color,translation",
                    w_dim=256, map_layers=4, batch=16, lr=0.001, d_lr=0.0025, r1_gamma=1.0, r1_every=8, ema_kimg=1.0,
                    l1_kimg=1e9, lm_kimg=0.0, stage2_kimg=1e9, total_kimg=200.0, ckpt_every=512, sample_every=1024,
                    l1_res=32, lm_weight_stage2=100.0, pair_every=2, adv_weight=1.0, imit_yaw=30.0, imit_expr=0.3,
                    noise_mode="const",
                    loss_weights={"l1": 20.0, "landmark": 1000.0, "light": 10.0, "identity": 0.0, "skin": 0.0}),
    # GPU presets (one H100/H200 or torchrun DDP): 128 px and 256 px
    "gpu128": dict(resolution=128, g_channels=default_channels(128, 256, 16), d_channels=default_channels(128, 256, 32),
                   w_dim=256, map_layers=8, batch=32, lr=0.002, r1_gamma=10.0, r1_every=16, ema_kimg=10.0,
                   l1_kimg=3000.0, stage2_kimg=15000.0, total_kimg=25000.0, ckpt_every=50_000, sample_every=50_000,
                   l1_res=32, lm_weight_stage2=100.0, pair_every=2),
    "gpu256": dict(resolution=256, g_channels=default_channels(256, 256, 16), d_channels=default_channels(256, 256, 32),
                   w_dim=256, map_layers=8, batch=32, lr=0.002, r1_gamma=10.0, r1_every=16, ema_kimg=10.0,
                   l1_kimg=3000.0, stage2_kimg=15000.0, total_kimg=25000.0, ckpt_every=50_000, sample_every=50_000,
                   l1_res=32, lm_weight_stage2=100.0, pair_every=2),
}


def get_preset(name: str) -> Preset:
    """A copy of preset ``name`` (``KeyError`` naming the choices when there is none)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
