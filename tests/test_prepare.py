"""``python -m training prepare`` (small --limit run into a temporary cache), load_aligned and the training pack."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def prepared(utk_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("DISCOFACE_CACHE", str(cache))
    from training import prepare

    rc = prepare.main(["--limit", "7", "--shard-size", "4", "--workers", "2"])
    assert rc == 0
    yield cache
    mp.undo()


def test_shards_have_the_right_shapes(prepared):
    from engine.perception.align import template

    root = prepared / "aligned128"
    for split in ("train", "test"):
        shards = sorted((root / split).glob("shard_*.npz"))
        assert [p.name for p in shards] == ["shard_00000.npz", "shard_00001.npz"]
        total = 0
        for p in shards:
            with np.load(p, allow_pickle=False) as z:
                n = len(z["names"])
                assert z["images"].shape == (n, 128, 128, 3) and z["images"].dtype == np.uint8
                assert z["landmarks"].shape == (n, 68, 2) and z["landmarks"].dtype == np.float32
                assert len(z["inputs"]) == n + len(z["failed"])
                total += len(z["inputs"])
                if n:  # the crops are aligned to the template
                    dev = np.linalg.norm(z["landmarks"][:, 17:] - template(128)[17:], axis=2).mean(1)
                    assert (dev < 8).all()
                    assert z["images"].std() > 20  # real pictures, not blank
        assert total == 7
        assert (root / split / "failures.json").is_file()
    assert (root / "prepare_stats.json").is_file()


def test_resume_does_nothing_and_conflicts_are_refused(prepared, monkeypatch, capsys):
    monkeypatch.setenv("DISCOFACE_CACHE", str(prepared))
    from training import prepare

    shard = prepared / "aligned128" / "train" / "shard_00000.npz"
    before = shard.stat().st_mtime_ns
    stats = prepare.prepare(128, limit=7, workers=1, shard_size=4, progress=False)
    assert stats["aligned_this_run"] == 0 and stats["splits"]["train"]["shards_done_before"] == 2
    assert shard.stat().st_mtime_ns == before
    capsys.readouterr()
    # another --limit must not silently mix with (or wipe) the existing shards
    assert prepare.main(["--limit", "5", "--shard-size", "4", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert shard.stat().st_mtime_ns == before


def test_duplicates_dropped(utk_dir):
    from training.prepare import read_splits, split_names

    sp = read_splits(utk_dir)
    names, dropped = split_names(sp, "train")
    assert len(names) + len(dropped) == len(sp["train"])
    assert not set(names) & set(dropped)
    for group in sp["duplicate_groups"]:  # exactly one survivor per group
        if group[0] in sp["train"]:
            assert len(set(group) & set(names)) == 1


def test_load_aligned(prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("DISCOFACE_CACHE", str(prepared))
    from training.data import DataError, load_aligned

    d = load_aligned("train")
    n = len(d["names"])
    assert n >= 5
    assert d["images"].shape == (n, 128, 128, 3) and str(d["images"].dtype) == "torch.uint8"
    assert d["landmarks"].shape == (n, 68, 2)
    assert len(load_aligned("train", limit=3)["names"]) == 3
    with pytest.raises(DataError, match="python -m training prepare --size 64"):
        load_aligned("train", size=64)


def test_pack_roundtrip(prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("DISCOFACE_CACHE", str(prepared))
    from training.data import DataError, load_aligned, load_pack
    from training.pack import main as pack_main, make_pack

    ref = load_aligned("train")
    # fitted coefficients are matched by name (a fits file listing them in another order)
    names = ref["names"]
    fits_dir = prepared / "fits"
    fits_dir.mkdir(exist_ok=True)
    order = list(reversed(range(len(names))))
    ident = np.arange(len(names) * 3, dtype=np.float32).reshape(-1, 3)
    np.savez(fits_dir / "train.npz", names=np.array([names[i] for i in order]), identity=ident,
             pose=ident[:, :1] * 0.01)
    out = tmp_path / "pack.npz"
    r = make_pack(out, 128, quality=90)
    assert out.is_file() and r["images"] == len(names) and r["coeffs"]
    p = load_pack(out)
    assert p["names"] == names
    assert p["images"].shape == ref["images"].shape
    mae = (p["images"].float() - ref["images"].float()).abs().mean().item()
    assert 0 < mae < 4
    assert (p["landmarks"] - ref["landmarks"]).abs().max().item() < 0.07
    assert p["coeff_names"][:3] == ["identity[0]", "identity[1]", "identity[2]"]
    back = np.empty_like(ident)
    back[order] = ident
    np.testing.assert_allclose(p["coeffs"][:, :3].numpy(), back, rtol=2e-3)
    # a tight size limit lowers the quality instead of writing an oversized file
    small = tmp_path / "small.npz"
    r2 = make_pack(small, 128, quality=90, max_bytes=out.stat().st_size // 2)
    assert r2["quality"] < r["quality"] and small.stat().st_size <= out.stat().st_size // 2
    # user mistakes: one clear message
    bad = tmp_path / "bad.npz"
    bad.write_text("not a pack")
    with pytest.raises(DataError, match="could not read training pack"):
        load_pack(bad)
    with pytest.raises(DataError, match="python -m training pack"):
        load_pack(tmp_path / "missing.npz")
    assert pack_main(["--size", "64", "--out", str(tmp_path / "x.npz")]) == 1
    assert not (tmp_path / "x.npz").exists()
