"""R-Net: a compact ResNet regressing 3DMM :class:`Coefficients` from a canonical aligned face crop.

Input: (B, 3, H, W) crops in [0, 1] (any size; resized inside to ``input_size``). Output: identity (100),
albedo (K), expression (53, clamped to [0, 1]), light (27), pose (3, radians). The head predicts standardised
values; ``coeff_mean``/``coeff_std`` (buffers saved with the weights, computed from the training fits) map them
back. Everything is differentiable w.r.t. the input (the GAN's landmark and light losses go through it).

Weights: ``assets/rnet.safetensors``, format ``discoface.rnet`` v1, with the albedo size and input size in the
metadata; shapes are checked on load and every problem is one :class:`RNetError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.face.model import N_EXP, N_ID, N_LIGHT, N_POSE, Coefficients

RNET_FORMAT = "discoface.rnet"
RNET_VERSION = 1
WIDTHS = (24, 48, 96, 160)


class RNetError(ValueError):
    """An R-Net weights file that cannot be used; the message says which and why."""


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)), inplace=True)


class RNet(nn.Module):
    def __init__(self, albedo_dim: int = 0, input_size: int = 80, exp_names=(), widths=WIDTHS):
        super().__init__()
        self.albedo_dim = int(albedo_dim)
        self.input_size = int(input_size)
        self.exp_names = tuple(exp_names)
        self.widths = tuple(int(v) for v in widths)
        self.sizes = [N_ID, self.albedo_dim, N_EXP, N_LIGHT, N_POSE]
        n_out = sum(self.sizes)
        w = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 5, 2, 2, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        layers = []
        cin = w[0]
        for i, c in enumerate(w):
            layers.append(_Block(cin, c, 1 if i == 0 else 2))
            cin = c
        layers.append(_Block(cin, cin, 1))
        self.body = nn.Sequential(*layers)
        self.fc1 = nn.Linear(cin * 4, 256)
        self.fc2 = nn.Linear(256, n_out)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.register_buffer("coeff_mean", torch.zeros(n_out))
        self.register_buffer("coeff_std", torch.ones(n_out))
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.42, 0.38]).view(1, 3, 1, 1))

    # -------------------------------------------------------------------------------------------- forward
    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        x = (x - self.pixel_mean) * 4.0
        x = self.body(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return F.relu(self.fc1(x), inplace=True)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) standardised coefficients (the regression target space)."""
        return self.fc2(self.features(x))

    def to_coefficients(self, raw: torch.Tensor) -> Coefficients:
        v = self.coeff_mean + self.coeff_std * raw
        ident, alb, expr, light, pose = torch.split(v, self.sizes, dim=1)
        return Coefficients(ident, alb, expr.clamp(0.0, 1.0), light, pose, exp_names=self.exp_names)

    def forward(self, x: torch.Tensor) -> Coefficients:
        return self.to_coefficients(self.forward_raw(x))

    def predict(self, crops: torch.Tensor) -> Coefficients:
        """Coefficients of (B, 3, H, W) canonical crops in [0, 1] (differentiable; call under no_grad if you
        do not need gradients)."""
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"R-Net expects (B, 3, H, W) crops, got {tuple(crops.shape)}")
        return self(crops.to(self.coeff_mean.device, self.coeff_mean.dtype))

    # ------------------------------------------------------------------------------------------------ I/O
    def save(self, path, extra: dict | None = None) -> None:
        from engine.io.files import save_safetensors

        meta = {"albedo_dim": str(self.albedo_dim), "input_size": str(self.input_size),
                "exp_names": ",".join(self.exp_names),
                "widths": ",".join(str(v) for v in self.widths)}
        meta.update({k: str(v) for k, v in (extra or {}).items()})
        save_safetensors(path, self.state_dict(), RNET_FORMAT, RNET_VERSION, extra=meta)

    @classmethod
    def load(cls, path=None, map_location: str = "cpu") -> "RNet":
        from engine import config
        from engine.io.files import WeightsError, check_state_shapes, load_safetensors

        path = Path(path) if path else Path(config.ASSETS_DIR) / "rnet.safetensors"
        try:
            tensors, meta = load_safetensors(path, RNET_FORMAT, RNET_VERSION)
            try:
                k, size = int(meta.get("albedo_dim", "0")), int(meta.get("input_size", "80"))
                widths = tuple(int(v) for v in meta.get("widths", ",".join(map(str, WIDTHS))).split(","))
                if len(widths) != 4 or min(widths) < 1:
                    raise ValueError
            except ValueError:
                raise WeightsError(f"{path}: metadata albedo_dim/input_size/widths are not valid integers") from None
            names = tuple(n for n in meta.get("exp_names", "").split(",") if n)
            if names and len(names) != N_EXP:
                raise WeightsError(f"{path}: lists {len(names)} expression names, expected {N_EXP}")
            if not names:
                from engine.face.model import default_model

                names = default_model().exp_names
            net = cls(k, size, names, widths)
            state = check_state_shapes(path, net, tensors)
        except WeightsError as exc:
            raise RNetError(str(exc)) from None
        net.load_state_dict(state)
        for t in state.values():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise RNetError(f"{path}: contains non-finite values")
        return net.to(map_location).eval()


_DEFAULT: RNet | None = None


def default_rnet() -> RNet:
    """The shipped R-Net (loaded once, eval mode, parameters frozen)."""
    global _DEFAULT
    if _DEFAULT is None:
        net = RNet.load()
        for p in net.parameters():
            p.requires_grad_(False)
        _DEFAULT = net
    return _DEFAULT
