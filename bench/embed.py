"""Photo embedding benchmark: time per photo, reconstruction quality, identity kept under edits, and a before/after
grid.

    python bench/embed.py [--generator assets/generator.safetensors] [--utk 10] [--steps 100] [--threads 1]
                          [--grid out/embed_grid.png] [--json cache/bench_embed.json]

Photos: the 10 ffhq-samples and ``--utk`` held-out UTKFace photos (the "test" list of ``utkface/splits.json``, evenly
spaced). For each photo it prints
- seconds for the whole embedding (align + init + optimisation) and for the initialiser alone;
- face-region PSNR (render mask of the fit) and whole-crop PSNR of the reconstruction at the generator's resolution;
- identity-net (dlib ResNet port) distance photo crop ↔ reconstruction, ↔ yaw −20° and ↔ yaw +20° edits, and ↔ the
  initialiser's image (coefficients only, no optimisation) — lower is better; dlib calls < 0.6 "same person";
  for scale, the mean distance between *different* photos of the set is printed too;
- how much each edit changes the picture (mean |Δ| of 0..255 pixels), with the offsets and for the bare generator;
- with an R-Net: the yaw it re-estimates on the ±20° edits (does the edit do what it says).
The grid rows are photos; columns: photo | reconstruction | yaw −20 | yaw +20 | smile | relit (tiles upscaled to 128 px).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine import config  # noqa: E402


def photos(n_utk: int) -> list[Path]:
    ff = sorted((config.ffhq_samples_dir() / "images").glob("*.png"))
    utk = []
    sp = config.utkface_dir() / "splits.json"
    if n_utk > 0 and sp.exists():
        test = json.loads(sp.read_text())["test"]
        step = max(1, len(test) // n_utk)
        utk = [config.utkface_dir() / "images" / test[i] for i in range(0, len(test), step)][:n_utk]
    return ff + utk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=str(config.ASSETS_DIR / "generator.safetensors"))
    ap.add_argument("--utk", type=int, default=10)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    # local only (out/ is git-ignored): the grid shows ffhq and UTKFace photos, which are never committed
    ap.add_argument("--grid", default=str(config.REPO_ROOT / "out" / "embed_grid.png"))
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--paste", default=str(config.cache_dir() / "embed_paste.png"),
                    help="for the first photo: photo | reconstruction pasted | yaw +20 pasted | relit and smile "
                         "pasted as deltas (photo detail kept)")
    ap.add_argument("--json", default=str(config.cache_dir() / "bench_embed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engine.cli.photo import standard_edits
    from engine.editing.paste import paste_into_photo
    from engine.generator.embed import PhotoEmbedder, synthesize_embedding
    from engine.generator.networks import FaceGenerator
    from engine.io.files import save_image
    from engine.perception.align import AlignError, load_image
    from engine.perception.identity import default_identity_net

    gpath = Path(args.generator)
    if not gpath.exists():
        print(f"error: no generator at {gpath} (train one, or pass --generator runs/.../generator.safetensors)",
              file=sys.stderr)
        return 2
    gen = FaceGenerator.load(gpath)
    emb = PhotoEmbedder(gen)
    idnet = default_identity_net()
    edits = standard_edits()
    rnet = emb._rnet()
    try:
        seen = json.loads(getattr(gen, "meta", {}).get("training", "{}")).get("images_seen", "?")
    except ValueError:
        seen = "?"
    print(f"generator {gpath} ({gen.resolution} px, trained on {seen} images); "
          f"init: {'R-Net' if rnet is not None else '3DMM fit (no R-Net weights)'}; threads {args.threads}")
    rows, tiles, crops_emb = [], [], []
    paste_done = False
    for i, p in enumerate(photos(args.utk)):
        try:
            t0 = time.perf_counter()
            res = emb.embed(p, seed=args.seed, steps=args.steps)
            secs = time.perf_counter() - t0
        except AlignError as exc:
            print(f"{p.name}: skipped ({exc})")
            continue
        target = torch.from_numpy(res.crop).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            imgs = [res.reconstruction[0]] + [emb.render(res, fn(res.coeffs.clone()))[0] for fn in edits.values()]
            init_img = synthesize_embedding(gen, res.init_coeffs, torch.zeros_like(res.noise))
            e = idnet.embed_crops(torch.cat([target, torch.stack(imgs), init_img]))
        d = (e[1:] - e[0]).norm(dim=1)
        names = ["recon"] + list(edits) + ["init"]
        dist = {n: float(v) for n, v in zip(names, d)}
        # how much each edit changes the picture (mean |Δ| in 0..255), with the offsets and for the bare generator
        # (no offsets): a ratio near 1 means the offsets neither damp nor exaggerate the edits
        with torch.no_grad():
            bare = synthesize_embedding(gen, res.coeffs, res.noise)
            change = {n: 255 * float((imgs[k + 1] - imgs[0]).abs().mean()) for k, n in enumerate(edits)}
            bare_change = {n: 255 * float((synthesize_embedding(gen, fn(res.coeffs.clone()), res.noise) - bare).abs()
                                          .mean()) for n, fn in edits.items()}
        row = {"change": change, "bare_change": bare_change, "photo": p.name, "seconds": secs, "init_seconds": res.metrics["init_seconds"],
               "psnr_face": res.metrics["psnr_face"], "psnr_all": res.metrics["psnr_all"],
               "offset_rms": res.metrics["offset_rms"], "id": dist}
        if rnet is not None:
            with torch.no_grad():
                est = rnet.predict(torch.stack([imgs[1], imgs[2], imgs[0]]))
            yaw = [math.degrees(float(v)) for v in est.pose[:, 0]]
            row["rnet_yaw_delta"] = [yaw[0] - yaw[2], yaw[1] - yaw[2]]
        rows.append(row)
        crops_emb.append(e[0])
        print(f"{p.name[:28]:28s} {secs:5.1f} s (init {res.metrics['init_seconds']:.1f})  PSNR face "
              f"{row['psnr_face']:5.2f} all {row['psnr_all']:5.2f}  id: recon {dist['recon']:.3f} "
              f"yaw-20 {dist['yaw-20']:.3f} yaw+20 {dist['yaw+20']:.3f} init {dist['init']:.3f}"
              + (f"  R-Net yaw Δ {row['rnet_yaw_delta'][0]:+.0f}/{row['rnet_yaw_delta'][1]:+.0f}"
                 if "rnet_yaw_delta" in row else ""), flush=True)
        if len(tiles) < args.grid_rows and (i % 2 == 0 or i >= 10):  # mix ffhq and UTK rows
            tiles.append(torch.cat([target[0]] + imgs, 2))
        if not paste_done and args.paste:
            photo = load_image(p)
            c = res.coeffs.clone()
            c.set_pose_degrees(yaw=math.degrees(float(c.pose[0, 0])) + 20)
            lit, smile = edits["relit"](res.coeffs.clone()), edits["smile"](res.coeffs.clone())
            panels = [photo, paste_into_photo(res, res.reconstruction, photo, renderer=emb.renderer),
                      paste_into_photo(res, emb.render(res, c), photo, coeffs=c, renderer=emb.renderer),
                      paste_into_photo(res, emb.render(res, lit), photo, renderer=emb.renderer, mode="delta"),
                      paste_into_photo(res, emb.render(res, smile), photo, coeffs=smile, renderer=emb.renderer, mode="delta")]
            Path(args.paste).parent.mkdir(parents=True, exist_ok=True)
            save_image(args.paste, np.concatenate(panels, 1))
            paste_done = True
    if not rows:
        print("error: no photo could be embedded", file=sys.stderr)
        return 2
    emb_all = torch.stack(crops_emb)
    pd = torch.cdist(emb_all, emb_all)
    n = len(rows)
    between = float(pd.sum() / max(1, n * (n - 1)))

    def med(key, sub=None):
        vals = [r[key][sub] if sub else r[key] for r in rows]
        return statistics.median(vals), statistics.mean(vals)

    summary = {"n": n, "generator": str(gpath), "resolution": gen.resolution, "steps": args.steps or emb.steps,
               "threads": args.threads, "init": "rnet" if rnet is not None else "fit",
               "seconds_median": med("seconds")[0], "seconds_warm_median": statistics.median(
                   [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]),
               "psnr_face_median": med("psnr_face")[0], "psnr_all_median": med("psnr_all")[0],
               "id_recon_median": med("id", "recon")[0], "id_yaw-20_median": med("id", "yaw-20")[0],
               "id_yaw+20_median": med("id", "yaw+20")[0], "id_smile_median": med("id", "smile")[0],
               "id_relit_median": med("id", "relit")[0], "id_init_median": med("id", "init")[0],
               "id_between_photos_mean": between,
               "change_yaw+20_median": med("change", "yaw+20")[0], "bare_change_yaw+20_median":
                   med("bare_change", "yaw+20")[0], "change_smile_median": med("change", "smile")[0],
               "change_relit_median": med("change", "relit")[0]}
    if rows and "rnet_yaw_delta" in rows[0]:
        summary["rnet_yaw_delta_median"] = [statistics.median(r["rnet_yaw_delta"][k] for r in rows) for k in (0, 1)]
    print("\nsummary (medians over", n, "photos):")
    for k, v in summary.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    if tiles and args.grid:
        grid = torch.cat(tiles, 1)[None]
        s = gen.resolution
        up = max(1, 128 // s)
        grid = F.interpolate(grid, scale_factor=up, mode="bilinear", align_corners=False) if up > 1 else grid
        save_image(args.grid, grid[0].clamp(0, 1))
        print(f"wrote {args.grid} ({len(tiles)} rows: photo | reconstruction | yaw -20 | yaw +20 | smile | relit)")
    if paste_done:
        print(f"wrote {args.paste} (photo | reconstruction pasted | yaw +20 pasted | relit, delta paste | "
              f"smile, delta paste)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
