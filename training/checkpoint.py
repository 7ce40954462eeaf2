"""Checkpoints of the generator's training runs: save, resume, export — one module for ``gan`` and ``warmup``.

* GAN runs (``python -m training gan``): ``<out>/ckpt-<images>.safetensors`` (G, G_ema, D, both Adam states, RNG)
  plus ``<out>/state.json`` (images seen, stage, the run's config); written atomically, the last two kept.
* Warm-up runs (``python -m training warmup``): ``<out>/warmup.safetensors`` (G, G_ema, the per-image noise codes,
  state in the metadata).
* Export: both end in :func:`write_generator` — G_ema + the factor decoders + w̄_id as the editor's
  ``generator.safetensors`` (``engine.generator.networks.FaceGenerator``).
* Warm start: :func:`load_init_generator` reads a shipped ``generator.safetensors`` so a run can fine-tune it
  (``--init``).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from engine.generator.networks import FaceGenerator, FactorDecoders, Generator
from engine.io.files import (WeightsError, check_state_shapes, load_safetensors, save_safetensors,
                             write_json_atomic)

GAN_FORMAT = "discoface.gan-checkpoint"
GAN_VERSION = 1
WARMUP_FORMAT = "discoface.warmup-checkpoint"
WARMUP_VERSION = 1
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A run folder or weights file that cannot be resumed, exported or used as a warm start."""


# ----------------------------------------------------------------------------------------------- optimiser state


def _opt_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _opt_load(opt: torch.optim.Optimizer, tensors: dict, prefix: str, groups: dict, device) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        pid, k = key[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(pid), {})[k] = v.to(device) if k != "step" else v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def pack_training(modules: dict, optimisers: dict) -> tuple[dict, dict]:
    """Tensors of a resumable run: every module's weights under ``<name>.``, every optimiser's state under
    ``<name>.<param>.<key>`` and the torch RNG (``rng.torch``); plus the JSON metadata of the optimisers' groups."""
    tensors: dict = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    meta = {}
    for name, opt in optimisers.items():
        t, groups = _opt_tensors(opt, name)
        tensors.update(t)
        meta[name] = json.dumps(groups)
    tensors["rng.torch"] = torch.get_rng_state()
    return tensors, meta


def unpack_training(path: Path, tensors: dict, meta: dict, modules: dict, optimisers: dict, device) -> None:
    """The inverse of :func:`pack_training` (shapes checked: :class:`WeightsError`), RNG included."""
    for name, m in modules.items():
        m.load_state_dict(check_state_shapes(path, m, tensors, f"{name}."))
    for name, opt in optimisers.items():
        _opt_load(opt, tensors, name, json.loads(meta[name]), device)
    torch.set_rng_state(tensors["rng.torch"])


# ----------------------------------------------------------------------------------------------- GAN runs


def save_gan_checkpoint(out: Path, G, G_ema, D, optG, optD, state: dict, keep: int = 2) -> Path:
    """Write ``ckpt-<images>.safetensors`` + ``state.json`` atomically; prune all but the last ``keep``."""
    tensors, meta = pack_training({"G": G, "G_ema": G_ema, "D": D}, {"optG": optG, "optD": optD})
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name = f"ckpt-{state['images_seen']:010d}.safetensors"
    save_safetensors(out / name, tensors, GAN_FORMAT, GAN_VERSION, meta)
    st = dict(state, checkpoint=name, saved_at=time.time())
    write_json_atomic(out / STATE_FILE, st)
    old = sorted(p for p in out.glob("ckpt-*.safetensors") if p.name != name)
    for p in old[:max(0, len(old) - (keep - 1))]:
        with contextlib.suppress(OSError):
            p.unlink()
    return out / name


def read_state(out: Path) -> dict | None:
    """The run's ``state.json`` (None when the folder holds no run)."""
    p = out / STATE_FILE
    if not p.exists():
        return None
    try:
        st = json.loads(p.read_text())
        st["images_seen"] = int(st["images_seen"])
        st["checkpoint"] = str(st["checkpoint"])
        return st
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{p} is unreadable ({exc}); delete {out} to start over") from None


def load_gan_checkpoint(out: Path, st: dict, G, G_ema, D, optG, optD, device) -> None:
    """Restore networks, optimisers and RNG from the checkpoint ``st`` names."""
    path = out / st["checkpoint"]
    try:
        tensors, meta = load_safetensors(path, GAN_FORMAT, GAN_VERSION)
        unpack_training(path, tensors, meta, {"G": G, "G_ema": G_ema, "D": D}, {"optG": optG, "optD": optD}, device)
    except WeightsError as exc:
        raise CheckpointError(f"cannot resume: {exc}") from None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def run_decoders(out: Path) -> FactorDecoders:
    try:
        return FactorDecoders.load(out / "decoders.safetensors")
    except WeightsError as exc:
        raise CheckpointError(f"run folder lacks its decoders ({exc})") from None


def build_generator(cfg: dict, albedo_dim: int) -> Generator:
    """The G a run's config describes (``resolution``, ``g_channels``, ``w_dim``, ``map_layers``)."""
    ch = {int(k): int(v) for k, v in cfg["g_channels"].items()}
    return Generator(cfg["resolution"], albedo_dim, ch, cfg["w_dim"], cfg["map_layers"])


def export_gan_run(out: Path, dest: Path) -> Path:
    """Write ``dest/generator.safetensors`` (G_ema + decoders + w̄_id) from a GAN run's last checkpoint (and
    ``dest/decoders.safetensors`` when ``dest`` has none)."""
    st = read_state(out)
    if st is None:
        raise CheckpointError(f"nothing to export: no checkpoint in {out}")
    dec = run_decoders(out)
    G_ema = build_generator(st["config"], dec.albedo_dim)
    path = out / st["checkpoint"]
    try:
        tensors, _ = load_safetensors(path, GAN_FORMAT, GAN_VERSION)
        G_ema.load_state_dict(check_state_shapes(path, G_ema, tensors, "G_ema."))
    except WeightsError as exc:
        raise CheckpointError(f"cannot export: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "generator.safetensors"
    write_generator(G_ema, dec, target, {"images_seen": st["images_seen"], "preset": st.get("preset", "?"),
                                         "data": st.get("data", "?"), "decoders": st.get("decoders_source", "?"),
                                         "init": st.get("config", {}).get("init") or "none"})
    dpath = dest / "decoders.safetensors"
    if not dpath.exists():
        dec.save(dpath, {"source": st.get("decoders_source", "?")})
    return target


# ----------------------------------------------------------------------------------------------- warm-up runs


def save_warmup_checkpoint(path: Path, G, G_ema, codes: torch.Tensor, state: dict) -> None:
    t = {f"G.{k}": v for k, v in G.state_dict().items()}
    t.update({f"EMA.{k}": v for k, v in G_ema.state_dict().items()})
    t["codes"] = codes.detach()
    save_safetensors(path, t, WARMUP_FORMAT, WARMUP_VERSION, {"state": json.dumps(state)})


def load_warmup_checkpoint(path: Path) -> tuple[dict, dict, dict, torch.Tensor]:
    """(G state, G_ema state, run state, noise codes) of a warm-up checkpoint."""
    try:
        tensors, meta = load_safetensors(path, WARMUP_FORMAT, WARMUP_VERSION)
        state = json.loads(meta["state"])
    except WeightsError as exc:
        raise CheckpointError(f"cannot use warm-up checkpoint: {exc}") from None
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: warm-up checkpoint state is missing or malformed ({exc})") from None
    g = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("EMA.")}
    return g, ema, state, tensors["codes"]


def export_warmup_run(ckpt: Path, dest: Path, preset: dict, decoders: FactorDecoders) -> dict:
    """A warm-up run's G_ema + the decoders as the editor's generator file; returns the run state."""
    _, ema, st, _ = load_warmup_checkpoint(ckpt)
    G_ema = Generator(resolution=int(st["res"]), albedo_dim=decoders.albedo_dim, channels=preset["g_channels"],
                      w_dim=preset["w_dim"], map_layers=preset["map_layers"], identity_noise="id_mean" in ema,
                      descriptor_dim=int(ema["id_mean"].numel()) if "id_mean" in ema else 128)
    G_ema.load_state_dict(ema)
    write_generator(G_ema, decoders, dest, warmup_meta(st, checkpoint=ckpt.name))
    return st


def warmup_meta(state: dict, **extra) -> dict:
    """The generator file's ``training`` metadata of a warm-up run (``state``: its step, pairs, images seen)."""
    return {"training": json.dumps({"stage": "warmup (paired reconstruction + imitation)", "steps": state["step"],
                                    "pairs": state.get("pairs"), "images_seen": state.get("images_seen"), **extra})}


# ----------------------------------------------------------------------------------------------- the editor's file


def write_generator(G_ema: Generator, decoders: FactorDecoders, dest: Path, meta: dict) -> Path:
    """Compute w̄_id for ``decoders`` and save ``FaceGenerator(decoders, G_ema)`` to ``dest`` (atomic)."""
    G_ema = G_ema.eval().requires_grad_(False)
    G_ema.compute_w_avg_id(decoders)
    FaceGenerator(decoders, G_ema).save(dest, meta)
    return Path(dest)


def load_init_generator(path: Path | str) -> FaceGenerator:
    """A generator file to fine-tune (``--init``): trainable, contiguous memory, on the CPU."""
    try:
        fg = FaceGenerator.load(path)
    except WeightsError as exc:
        raise CheckpointError(f"cannot start from {path}: {exc}") from None
    fg = fg.to(memory_format=torch.contiguous_format)
    fg.G.requires_grad_(True).train()
    fg.decoders.requires_grad_(False)
    return fg


def run_log(out: Path | str):
    """``log(msg)`` for a training run in folder ``out``: prints the line with the time and appends it to
    ``out/log.txt`` (opened per line, so an interrupted or resumed run leaves every line written and no file open)."""
    path = Path(out) / "log.txt"

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    return log
