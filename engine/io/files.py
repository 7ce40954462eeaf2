"""Weights and files: safetensors with a format name + version, shape checks, atomic writes.

Nothing here unpickles: weights are safetensors only, and every file carries ``format`` and ``version``
metadata so a file meant for something else, or from a newer build, is refused with a clear message.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import torch


class WeightsError(ValueError):
    """A weights file that cannot be used (missing, truncated, wrong format/version, wrong shapes)."""


def save_safetensors(path: Path | str, tensors: Mapping[str, torch.Tensor], fmt: str, version: int,
                     extra: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"format": fmt, "version": str(version)}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: Path | str, fmt: str, max_version: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``path`` checking its ``format`` and ``version`` metadata. Returns (tensors, metadata)."""
    from safetensors import safe_open
    from safetensors import SafetensorError

    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != fmt:
                raise WeightsError(f"{path}: holds {meta.get('format')!r}, expected {fmt!r}")
            try:
                ver = int(meta.get("version", ""))
            except ValueError:
                raise WeightsError(f"{path}: has no valid format version") from None
            if ver < 1 or ver > max_version:
                raise WeightsError(f"{path}: format version {ver} is not supported (this build reads up to "
                                   f"{max_version}); update DiscoFace studio")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except WeightsError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, meta


def check_state_shapes(path, module: torch.nn.Module, state: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
    """Return ``module``'s state dict filled from ``state[prefix + name]``, refusing missing/extra/mis-shaped."""
    own = module.state_dict()
    out = {}
    for name, t in own.items():
        key = prefix + name
        if key not in state:
            raise WeightsError(f"{path}: missing tensor {key!r}")
        if tuple(state[key].shape) != tuple(t.shape):
            raise WeightsError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                               f"expected {tuple(t.shape)}")
        out[name] = state[key]
    extra = [k for k in state if k.startswith(prefix) and k[len(prefix):] not in own]
    if extra:
        raise WeightsError(f"{path}: unexpected tensors {extra[:5]}")
    return out


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    On any exception (including KeyboardInterrupt / a cancel) the temporary file is removed, so a
    failed or cancelled write never leaves a partial output file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path | str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))


def to_uint8_image(img: torch.Tensor):
    """(3, H, W) or (H, W, 3) float in [0, 1] → (H, W, 3) uint8 numpy."""
    import numpy as np

    t = img.detach().cpu().float()
    if t.dim() == 4:
        t = t[0]
    if t.shape[0] in (1, 3, 4) and t.shape[-1] not in (3, 4):
        t = t.permute(1, 2, 0)
    return (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy().astype(np.uint8)


def save_image(path: Path | str, img) -> None:
    """Save an image (tensor in [0,1] or uint8 array) atomically; format from the suffix."""
    from PIL import Image
    import numpy as np

    arr = to_uint8_image(img) if isinstance(img, torch.Tensor) else np.asarray(img)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(ext, "PNG")
