"""``python -m training prepare``: align every UTKFace image into cached shards of canonical crops + landmarks.

Output, per split (``train``, ``test``)::

    <cache>/aligned<size>/<split>/shard_00000.npz   images uint8 (N, size, size, 3), landmarks float32 (N, 68, 2)
                                                    (crop px, continuous coordinates), names (N,) str,
                                                    inputs (M,) str (the names this shard was asked to do),
                                                    failed (K,) str
    <cache>/aligned<size>/<split>/failures.json     {name: reason} for images where no face was aligned
    <cache>/aligned<size>/prepare_stats.json        counts and run time of the last run

Byte-identical duplicates (``duplicate_groups`` in splits.json) keep only their first name (sorted). Finished shards
are skipped, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHARD_SIZE = 1000
SPLITS = ("train", "test")


def out_dir(size: int, cache: Path | None = None) -> Path:
    from engine.config import cache_dir

    return Path(cache or cache_dir()) / f"aligned{size}"


def read_splits(utk: Path) -> dict:
    path = utk / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(f"UTKFace splits not found at {path} (set DISCOFACE_DATA to the shared data folder)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def split_names(splits: dict, split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(names to align, dropped duplicate copies) for ``split``; ``limit`` picks N evenly spread names."""
    dropped: set[str] = set()
    for group in splits.get("duplicate_groups", []):
        dropped.update(sorted(group)[1:])
    names = [n for n in splits[split] if n not in dropped]
    if limit is not None and limit < len(names):
        idx = np.linspace(0, len(names) - 1, max(limit, 0)).round().astype(int)
        names = [names[i] for i in sorted(set(idx.tolist()))]
    return names, sorted(dropped & set(splits[split]))


# --------------------------------------------------------------------------------------------------- worker side
_SIZE = 128
_IMAGES: Path | None = None


def _init_worker(size: int, images: str) -> None:
    global _SIZE, _IMAGES
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass
    _SIZE, _IMAGES = size, Path(images)
    from engine.perception import align

    align.template(size)  # load the face model once per worker


def _align_one(name: str):
    from engine.perception.align import AlignError, align_face, load_image

    try:
        img = load_image(_IMAGES / name)
        crop, al = align_face(img, _SIZE)
        return name, crop, al.landmarks_crop.astype(np.float32), None
    except AlignError as e:
        return name, None, None, str(e)
    except Exception as e:  # keep going: one bad image must not stop a 24k-image run
        return name, None, None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------------------- shards
def shard_ok(path: Path, inputs: list[str], size: int) -> bool:
    """True when ``path`` is a finished shard made from exactly ``inputs`` at ``size`` px."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return (list(z["inputs"]) == inputs and z["images"].shape[1:] == (size, size, 3)
                    and len(z["images"]) == len(z["names"]) == len(z["landmarks"]))
    except Exception:
        return False


class PrepareConflict(RuntimeError):
    """The output folder holds shards made with other settings."""


def _shard_conflicts(path: Path, chunks: list[list[str]], size: int) -> bool:
    try:
        i = int(path.stem.split("_")[1])
    except (IndexError, ValueError):
        return False
    if i >= len(chunks):
        return True
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z["inputs"]) != chunks[i] or z["images"].shape[1:] != (size, size, 3)
    except Exception:
        return False  # unreadable: simply redone


def write_shard(path: Path, inputs, names, images, landmarks, failed, size: int) -> None:
    from engine.io.files import atomic_path

    imgs = np.stack(images).astype(np.uint8) if images else np.zeros((0, size, size, 3), np.uint8)
    lms = np.stack(landmarks).astype(np.float32) if landmarks else np.zeros((0, 68, 2), np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=imgs, landmarks=lms, names=np.array(names, dtype=str),
                     inputs=np.array(inputs, dtype=str), failed=np.array(failed, dtype=str))


def prepare(size: int = 128, limit: int | None = None, workers: int = 2, shard_size: int = SHARD_SIZE,
            splits: tuple[str, ...] = SPLITS, cache: Path | None = None, progress: bool = True,
            force: bool = False) -> dict:
    """Align the UTKFace splits into shards; returns stats (counts, seconds)."""
    from tqdm import tqdm

    from engine.config import utkface_dir
    from engine.io.files import write_json_atomic

    utk = utkface_dir()
    sp = read_splits(utk)
    root = out_dir(size, cache)
    stats: dict = {"size": size, "limit": limit, "workers": workers, "splits": {}}
    t_start = time.time()

    jobs = []  # (split, shard path, inputs)
    for split in splits:
        names, dropped = split_names(sp, split, limit)
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        chunks = [names[i:i + shard_size] for i in range(0, len(names), shard_size)]
        # shards from a previous run with other inputs (another --limit or --shard-size) must not be mixed in
        conflicts = [p.name for p in sorted(d.glob("shard_*.npz")) if _shard_conflicts(p, chunks, size)]
        if conflicts:
            if not force:
                raise PrepareConflict(
                    f"{d} already holds shards made with other settings ({', '.join(conflicts[:3])}"
                    f"{', ...' if len(conflicts) > 3 else ''}); rerun with the same --limit/--shard-size, "
                    f"or add --force to replace them")
            for p in d.glob("shard_*.npz"):
                p.unlink()
        pending = [(split, d / f"shard_{i:05d}.npz", c) for i, c in enumerate(chunks)
                   if not shard_ok(d / f"shard_{i:05d}.npz", c, size)]
        stats["splits"][split] = {"images": len(names), "duplicates_dropped": len(dropped), "shards": len(chunks),
                                  "shards_done_before": len(chunks) - len(pending)}
        jobs += pending

    todo = [n for _, _, c in jobs for n in c]
    stats["aligned_this_run"] = len(todo)
    if todo:
        bar = tqdm(total=len(todo), desc=f"align {size}px", unit="img", disable=not progress, file=sys.stderr)
        if workers > 1:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # no fork of a torch/dlib process
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(size, str(utk / "images")))
            results = pool.imap(_align_one, todo, chunksize=8)
        else:
            pool = None
            _init_worker(size, str(utk / "images"))
            results = map(_align_one, todo)
        try:
            for split, path, inputs in jobs:
                names, images, lms, failed = [], [], [], []
                for _ in inputs:
                    name, crop, lm, err = next(results)
                    if err is None:
                        names.append(name)
                        images.append(crop)
                        lms.append(lm)
                    else:
                        failed.append(name)
                        _failure_reasons[name] = err
                    bar.update(1)
                write_shard(path, inputs, names, images, lms, failed, size)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()

    for split in splits:
        d = root / split
        fails_path = d / "failures.json"
        old = {}
        if fails_path.is_file():
            try:
                old = json.loads(fails_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
        fails, n_ok = {}, 0
        for p in sorted(d.glob("shard_*.npz")):
            with np.load(p, allow_pickle=False) as z:
                n_ok += len(z["names"])
                for n in z["failed"].tolist():
                    fails[n] = _failure_reasons.get(n, old.get(n, "no face aligned"))
        write_json_atomic(fails_path, fails)
        s = stats["splits"][split]
        s["aligned"], s["failed"] = n_ok, len(fails)
        s["failure_rate"] = round(len(fails) / max(1, n_ok + len(fails)), 5)
    stats["seconds"] = round(time.time() - t_start, 1)
    if todo:
        stats["ms_per_image"] = round(1000 * stats["seconds"] / len(todo), 2)
        write_json_atomic(root / "prepare_stats.json", stats)
    _failure_reasons.clear()
    return stats


_failure_reasons: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training prepare", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="crop size in px (default 128)")
    ap.add_argument("--limit", type=int, default=None, help="align only N images per split (evenly spread)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="images per shard (default 1000)")
    ap.add_argument("--force", action="store_true", help="replace shards made with other settings")
    ap.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits (default train,test)")
    args = ap.parse_args(argv)
    if not 16 <= args.size <= 1024:
        print(f"error: --size must be between 16 and 1024, got {args.size}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.workers < 1 or args.shard_size < 1:
        print("error: --workers and --shard-size must be >= 1", file=sys.stderr)
        return 2
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        print(f"error: unknown split(s) {bad}; choose from {', '.join(SPLITS)}", file=sys.stderr)
        return 2
    try:
        stats = prepare(args.size, args.limit, args.workers, args.shard_size, splits, force=args.force)
    except (FileNotFoundError, PrepareConflict) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled; finished shards are kept, run the same command again to resume", file=sys.stderr)
        return 130
    root = out_dir(args.size)
    for split, s in stats["splits"].items():
        print(f"{split}: {s['aligned']} aligned, {s['failed']} failed ({100 * s['failure_rate']:.2f}%), "
              f"{s['duplicates_dropped']} duplicate copies dropped -> {root / split}")
    if stats["aligned_this_run"]:
        print(f"aligned {stats['aligned_this_run']} images in {stats['seconds']:.0f} s "
              f"({stats['ms_per_image']:.1f} ms/img with {args.workers} workers)")
    else:
        print("nothing to do: all shards are finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
