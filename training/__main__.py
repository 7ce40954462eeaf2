"""``python -m training <command> [options]``: every step that produces a weight the app uses.

Each command lives in its own module exposing ``main(argv: list[str]) -> int`` and is resumable.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": ("training.prepare", "align every UTKFace image into a cached dataset of crops + landmarks"),
    "fit": ("training.fit", "fit the 3DMM (shape, expression, pose, light, albedo) to the prepared crops"),
    "albedo": ("training.albedo", "learn the albedo PCA basis from the fits -> assets/albedo.safetensors"),
    "rnet": ("training.rnet", "train the coefficient regressor (R-Net) -> assets/rnet.safetensors"),
    "vae": ("training.vae", "train the factor VAEs on the fitted coefficients -> assets/decoders.safetensors"),
    "warmup": ("training.warmup", "CPU stage 0: paired reconstruction (GLO noise codes) + imitation warm start of G"),
    "gan": ("training.train_gan", "train the imitative-contrastive generator (stage 1, 2)"),
    "sr": ("training.sr", "train the face upsampler 64 -> 128 px -> assets/face_sr.safetensors"),
    "idprior": ("training.idprior", "fit the generator's identity prior to the photos' descriptors (folded into it)"),
    "idsampler": ("training.idsampler", "fit the identity sampler: random faces kept closer to the photos' descriptors"),
    "eval": ("training.evaluate", "disentanglement, control accuracy, identity preservation, FID-on-id-features"),
    "pack": ("training.pack", "pack a compact training set (<= 64 MiB) for the GPU machine"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m training <command> [options]\n\ncommands:")
        for name, (_, helptext) in COMMANDS.items():
            print(f"  {name:8s} {helptext}")
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        print(f"error: command {name!r} is not available in this build ({exc})", file=sys.stderr)
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
