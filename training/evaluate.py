"""``python -m training eval``: the paper's metrics for a generator, plus control accuracy and realism.

Every metric reads generated images back with our own perception networks, so a row is only as precise as they are;
the reference row evaluates the analytic 3DMM render itself (what a perfect imitation would score).

* **Disentanglement score** (DiscoFaceGAN §5): for each factor *i*, hold everything else fixed and re-sample factor
  *i* ``M`` times, for ``N`` base samples; re-estimate all coefficients from the images with the R-Net; σ_j = variance
  of the re-estimated factor-*j* coefficients within a group, averaged over groups and normalised by the variance of
  factor *j* over fully random samples; ``DS_i = Π_{j≠i} σ_i / σ_j`` (higher = changing *i* changes only *i*).
  Reported as log10.
* **Control accuracy**: requested vs re-estimated yaw/pitch (degrees, mean absolute), expression (mean absolute over
  the 53 weights) and light (mean |γ̂ − γ|); and the *yaw slope* (re-estimated on requested yaw, least squares), which
  says how far the head turns when asked, separately from the R-Net's offset errors.
* **Identity preservation**: identity-net distance between an image and the same image with one factor edited
  (pose / expression / light); share of edits with distance < 0.6 (dlib's same-person threshold).
* **Realism**: Fréchet distance between the identity-net descriptors (128-d, dlib ResNet port) of held-out real
  crops and of generated faces ("FID-id"; Inception weights are not available offline).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.face.model import Coefficients

FACTOR_FIELDS = {
    "identity": ("identity", "albedo"),
    "expression": ("expression",),
    "light": ("light",),
    "pose": ("pose",),
}


@dataclass
class Subject:
    """What is evaluated: ``sample(n, seed) -> (coeffs, noise)`` and ``synth(coeffs, noise) -> images in [0,1]``."""

    name: str
    sample: Callable[[int, int], tuple[Coefficients, torch.Tensor]]
    synth: Callable[[Coefficients, torch.Tensor], torch.Tensor]


def _swap(base: Coefficients, donor: Coefficients, factor: str) -> Coefficients:
    out = base.clone()
    for f in FACTOR_FIELDS[factor]:
        setattr(out, f, getattr(donor, f).clone())
    return out


def _factor_vec(c: Coefficients, factor: str) -> torch.Tensor:
    return torch.cat([getattr(c, f) for f in FACTOR_FIELDS[factor]], 1)


def _batched(fn, items: Coefficients, noise: torch.Tensor, bs: int = 16):
    outs = []
    for i in range(0, items.batch, bs):
        outs.append(fn(items[i:i + bs], noise[i:i + bs]))
    return outs


def _estimate(subject: Subject, rnet, coeffs: Coefficients, noise: torch.Tensor, bs: int = 16) -> Coefficients:
    with torch.no_grad():
        return Coefficients.cat(_batched(lambda c, n: rnet.predict(subject.synth(c, n)), coeffs, noise, bs))


def disentanglement(subject: Subject, rnet, n_groups: int = 8, per_group: int = 6, seed: int = 0) -> dict:
    """log10 DS per factor (see module doc)."""
    rand, rnoise = subject.sample(n_groups * per_group, seed + 999)
    est_rand = _estimate(subject, rnet, rand, rnoise)
    total_var = {f: _factor_vec(est_rand, f).var(0).mean().clamp_min(1e-12) for f in FACTOR_FIELDS}
    scores = {}
    for k, factor in enumerate(FACTOR_FIELDS):
        base, noise = subject.sample(n_groups, seed + 10 * k)
        donors, _ = subject.sample(n_groups * per_group, seed + 10 * k + 1)
        items = []
        for g in range(n_groups):
            for m in range(per_group):
                items.append(_swap(base[g], donors[g * per_group + m], factor))
        coeffs = Coefficients.cat(items)
        est = _estimate(subject, rnet, coeffs, noise.repeat_interleave(per_group, 0))
        sig = {}
        for f in FACTOR_FIELDS:
            v = _factor_vec(est, f).view(n_groups, per_group, -1).var(1).mean()
            sig[f] = float(v / total_var[f])
        log_ds = sum(math.log10(max(sig[factor], 1e-12) / max(sig[j], 1e-12)) for j in FACTOR_FIELDS if j != factor)
        scores[factor] = log_ds
    return scores


def control_accuracy(subject: Subject, rnet, n: int = 32, seed: int = 1) -> dict:
    coeffs, noise = subject.sample(n, seed)
    g = torch.Generator().manual_seed(seed)
    coeffs.pose[:, 0] = torch.empty(n).uniform_(-0.6, 0.6, generator=g)  # ±34°
    coeffs.pose[:, 1] = torch.empty(n).uniform_(-0.3, 0.3, generator=g)  # ±17°
    est = _estimate(subject, rnet, coeffs, noise)
    deg = lambda t: t * 180 / math.pi  # noqa: E731
    req = coeffs.pose[:, 0] - coeffs.pose[:, 0].mean()
    return {
        "yaw_err_deg": float(deg(est.pose[:, 0] - coeffs.pose[:, 0]).abs().mean()),
        # least-squares slope of re-estimated on requested yaw: 1 = the head turns as far as asked (as read by the
        # R-Net, which itself reads the reference render's yaw at a slope below 1: compare rows, not with 1)
        "yaw_slope": float((req * (est.pose[:, 0] - est.pose[:, 0].mean())).sum() / req.pow(2).sum()),
        "pitch_err_deg": float(deg(est.pose[:, 1] - coeffs.pose[:, 1]).abs().mean()),
        "expression_err": float((est.expression - coeffs.expression).abs().mean()),
        "light_err": float((est.light - coeffs.light).abs().mean()),
    }


def identity_preservation(subject: Subject, idnet, n: int = 24, seed: int = 2) -> dict:
    coeffs, noise = subject.sample(n, seed)
    donors, _ = subject.sample(n, seed + 1)
    with torch.no_grad():
        ref = torch.cat([idnet.embed_crops(x) for x in _batched(subject.synth, coeffs, noise)])
        out = {}
        kept_all = []
        for factor in ("pose", "expression", "light"):
            edited = Coefficients.cat([_swap(coeffs[i], donors[i], factor) for i in range(n)])
            emb = torch.cat([idnet.embed_crops(x) for x in _batched(subject.synth, edited, noise)])
            d = (emb - ref).norm(dim=1)
            out[f"{factor}_id_dist"] = float(d.mean())
            kept_all.append(d < 0.6)
        out["identity_kept_share"] = float(torch.cat(kept_all).float().mean())
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.asarray(linalg.sqrtm(s1 @ s2)).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def fid_id(subject: Subject, idnet, real_crops: torch.Tensor, n: int = 256, seed: int = 3) -> float:
    return fid_ids(subject, idnet, {"real": real_crops}, n, seed)["real"]


def fid_ids(subject: Subject, idnet, references: dict, n: int = 256, seed: int = 3) -> dict:
    """FID-id of the same ``n`` random faces against each named set of real crops (the faces embedded once)."""
    coeffs, noise = subject.sample(n, seed)
    out = {}
    with torch.no_grad():
        fake = torch.cat([idnet.embed_crops(x) for x in _batched(subject.synth, coeffs, noise)]).numpy()
        for name, crops in references.items():
            real = torch.cat([idnet.embed_crops(crops[i:i + 32]) for i in range(0, len(crops), 32)]).numpy()
            out[name] = frechet_distance(real.astype(np.float64), fake.astype(np.float64))
    return out


def reference_sampler(model) -> Callable[[int, int], tuple[Coefficients, torch.Tensor]]:
    """Coefficients for the 3DMM reference row: N(0, I) identity/albedo, mild expressions and light, yaw ±34°,
    pitch ±17°."""
    def sample(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        c = model.zeros(n)
        c.identity.normal_(generator=g)
        if model.albedo_dim:
            c.albedo.normal_(generator=g)
        c.expression.uniform_(0, 0.4, generator=g)
        c.light.normal_(0, 0.15, generator=g)
        c.pose[:, 0].uniform_(-0.6, 0.6, generator=g)
        c.pose[:, 1].uniform_(-0.3, 0.3, generator=g)
        return c, torch.zeros(n, 32)
    return sample


def render_subject(model, renderer, size: int, sampler) -> Subject:
    """The analytic 3DMM render as a 'generator' (reference row)."""
    def synth(c, noise):
        return renderer(c, size, background=0.5).image

    return Subject("3DMM render (reference)", sampler, synth)


def generator_subject(gen, name: str, psi: float = 0.7) -> Subject:
    return Subject(name, lambda n, s: gen.sample(n, s), lambda c, z: gen.synthesize(c, z, truncation_psi=psi))


def evaluate(subject: Subject, rnet, idnet, real_crops, quick: bool = False) -> dict:
    t = time.time()
    k = 0.5 if quick else 1.0
    res = {"subject": subject.name}
    res.update({f"DS_{f}": v for f, v in disentanglement(subject, rnet, n_groups=max(2, int(8 * k)),
                                                           per_group=max(3, int(6 * k))).items()})
    res.update(control_accuracy(subject, rnet, n=max(8, int(32 * k))))
    if idnet is not None:
        res.update(identity_preservation(subject, idnet, n=max(8, int(24 * k))))
        if real_crops is not None and len(real_crops) >= 32:
            res["fid_id"] = fid_id(subject, idnet, real_crops, n=max(64, int(256 * k)))
    res["seconds"] = round(time.time() - t, 1)
    return res


def format_table(rows: list[dict]) -> str:
    cols = ["subject", "DS_identity", "DS_expression", "DS_light", "DS_pose", "yaw_err_deg", "yaw_slope",
            "pitch_err_deg", "expression_err", "light_err", "identity_kept_share", "fid_id"]
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "---|" * len(cols)
    lines = [head, sep]
    for r in rows:
        vals = []
        for c in cols:
            v = r.get(c, "–")
            vals.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", action="append", default=None,
                    help="generator safetensors to evaluate (repeatable, e.g. stage-1 and stage-2 for the ablation); "
                         "default: the shipped assets/generator.safetensors")
    ap.add_argument("--no-reference", action="store_true", help="skip the 3DMM-render reference row")
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from engine.face.model import default_model
    from engine.io.files import WeightsError
    from engine.render import FaceRenderer

    try:
        from engine.perception.rnet import default_rnet

        rnet = default_rnet()
    except (ImportError, WeightsError, ValueError) as exc:
        print(f"error: the R-Net is needed to evaluate ({exc})", file=sys.stderr)
        return 2
    try:
        from engine.perception.identity import default_identity_net

        idnet = default_identity_net()
    except (ImportError, ValueError, OSError) as exc:
        print(f"warning: no identity net ({exc}); identity metrics skipped", file=sys.stderr)
        idnet = None
    real = None
    try:
        from training.data import load_aligned

        data = load_aligned("test", size=128, limit=512)
        real = data["images"].permute(0, 3, 1, 2).float() / 255.0
    except Exception as exc:  # noqa: BLE001 - realism metric is optional
        print(f"warning: no held-out crops ({exc}); FID-id skipped", file=sys.stderr)

    model = default_model()
    rows = []
    subjects = []
    if not args.no_reference:
        rend = FaceRenderer(model)

        subjects.append(render_subject(model, rend, args.size, reference_sampler(model)))
    from engine.generator.networks import FaceGenerator

    paths = args.generator or [None]
    for p in paths:
        try:
            gen = FaceGenerator.load(p)
        except (WeightsError, ValueError, OSError) as exc:
            print(f"warning: cannot evaluate generator {p or 'assets/generator.safetensors'}: {exc}", file=sys.stderr)
            continue
        gen.eval()
        subjects.append(generator_subject(gen, f"generator {Path(p).name if p else '(shipped)'}"))
    for s in subjects:
        print(f"evaluating {s.name} …", file=sys.stderr)
        rows.append(evaluate(s, rnet, idnet, real, quick=args.quick))
    print(format_table(rows))
    if args.json:
        from engine.io.files import write_json_atomic

        write_json_atomic(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
