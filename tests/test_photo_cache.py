"""``discoface edit``'s photo cache (engine/editing/photo_cache.py): a later edit of the same photo reads the fit, layers,
turn range and faces back instead of computing them, writes the same pixels, and never reads a stale entry."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "assets" / "astronaut.jpg"


def edit(capsys, *args):
    from engine import cli

    rc = cli.main(["edit", *[str(a) for a in args]])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return cap.out, cap.err


@pytest.fixture
def counted(monkeypatch):
    """How often the fit and the layers were computed."""
    import engine.photo.fit as photo_fit
    import engine.photo.layers as photo_layers

    n = {"fit": 0, "layers": 0}
    fit, build = photo_fit.fit_photo, photo_layers.build_layers

    def fit_photo(*a, **k):
        n["fit"] += 1
        return fit(*a, **k)

    def build_layers(*a, **k):
        n["layers"] += 1
        return build(*a, **k)

    monkeypatch.setattr(photo_fit, "fit_photo", fit_photo)
    monkeypatch.setattr(photo_layers, "build_layers", build_layers)
    return n


def entries():
    return sorted(Path(os.environ["DISCOFACE_PHOTO_CACHE"]).glob("*/*.json"))


def test_a_second_edit_reads_the_cache_and_writes_the_same_pixels(tmp_path, ict_path, capsys, counted):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    out, err = edit(capsys, ASTRONAUT, "--set", "smile=0.6", "yaw=8", "-o", a)
    assert counted == {"fit": 1, "layers": 1} and "photo cache" not in out
    assert len(entries()) == 1 and entries()[0].with_suffix(".npz").is_file()
    out2, err2 = edit(capsys, ASTRONAUT, "--set", "smile=0.6", "yaw=8", "-o", b)
    assert counted == {"fit": 1, "layers": 1}  # nothing computed again
    assert "fit and layers from the photo cache" in out2
    assert a.read_bytes() == b.read_bytes()
    # the same lines on stderr (own pose, believable turn: the turn range is kept too)
    assert [ln for ln in err2.splitlines() if ln.startswith("photo's own pose")] == \
        [ln for ln in err.splitlines() if ln.startswith("photo's own pose")]
    # --no-cache: fitted afresh, nothing read or written, the same pixels
    before = [p.stat().st_mtime_ns for p in entries()]
    out3, _ = edit(capsys, ASTRONAUT, "--no-cache", "--set", "smile=0.6", "yaw=8", "-o", c)
    assert counted == {"fit": 2, "layers": 2} and "photo cache" not in out3
    assert [p.stat().st_mtime_ns for p in entries()] == before
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))


def test_another_photo_or_a_corrupt_entry_is_a_miss(tmp_path, ict_path, capsys, counted):
    photo = tmp_path / "me.png"
    img = np.asarray(Image.open(ASTRONAUT).convert("RGB")).copy()
    Image.fromarray(img).save(photo)
    edit(capsys, photo, "-o", tmp_path / "a.png")
    assert counted["fit"] == 1
    img[0, 0] = 255 - img[0, 0]  # one pixel changed: another photo (the file's bytes are the key, not its name)
    Image.fromarray(img).save(photo)
    out, _ = edit(capsys, photo, "-o", tmp_path / "b.png")
    assert counted["fit"] == 2 and "photo cache" not in out and len(entries()) == 2
    edit(capsys, photo, "-o", tmp_path / "c.png")
    assert counted["fit"] == 2
    newest = max(entries(), key=lambda p: p.stat().st_mtime_ns)
    newest.write_text("{ not json")
    out, _ = edit(capsys, photo, "-o", tmp_path / "d.png")
    assert counted["fit"] == 3 and "photo cache" not in out
    out, _ = edit(capsys, photo, "-o", tmp_path / "e.png")  # written again: a hit
    assert counted["fit"] == 3 and "photo cache" in out
    newest.with_suffix(".npz").write_bytes(b"broken")  # broken layers: computed again, the fit still read back
    out, _ = edit(capsys, photo, "-o", tmp_path / "f.png")
    assert counted == {"fit": 3, "layers": 4} and "photo cache" not in out
    assert (tmp_path / "f.png").read_bytes() == (tmp_path / "e.png").read_bytes()


def test_the_key_changes_with_the_engine_source_and_the_weights(tmp_path, monkeypatch):
    from engine.editing import photo_cache

    root = tmp_path / "repo"
    (root / "engine" / "photo").mkdir(parents=True)
    (root / "assets").mkdir()
    src, weights = root / "engine" / "photo" / "layers.py", root / "assets" / "rnet.safetensors"
    src.write_text("MATTE_RES = 320\n")
    weights.write_bytes(b"x" * 10)
    monkeypatch.setattr(photo_cache, "_ROOT", root)

    def fp():
        photo_cache.fingerprint.cache_clear()
        return photo_cache.fingerprint()

    try:
        first = fp()
        assert fp() == first
        src.write_text("MATTE_RES = 256\n")
        second = fp()
        assert second != first
        weights.write_bytes(b"y" * 11)
        assert fp() != second
    finally:
        photo_cache.fingerprint.cache_clear()


def test_off_writes_nothing(tmp_path, ict_path, capsys, monkeypatch, counted):
    monkeypatch.setenv("DISCOFACE_PHOTO_CACHE", "off")
    edit(capsys, ASTRONAUT, "-o", tmp_path / "a.png")
    edit(capsys, ASTRONAUT, "-o", tmp_path / "b.png")
    assert counted["fit"] == 2  # (and cache_root() is None: no folder is made anywhere)
    from engine.editing.photo_cache import cache_root

    assert cache_root() is None


def test_the_head_mirror_map_read_back_is_the_computed_one(tmp_path, ict_path):
    import torch

    from engine.editing.photo_cache import prime_head_mirror
    from engine.face.head import HeadModel
    from engine.face.model import default_model

    model = default_model()
    computed = HeadModel.load(model).mirror()
    first = HeadModel.load(model)
    assert prime_head_mirror(first, tmp_path) is False  # computed and stored
    assert torch.equal(first.mirror(), computed) and len(list(tmp_path.glob("head-mirror-*.npy"))) == 1
    again = HeadModel.load(model)
    assert prime_head_mirror(again, tmp_path) is True  # read back
    assert torch.equal(again.mirror(), computed)
    broken = HeadModel.load(model)
    next(tmp_path.glob("head-mirror-*.npy")).write_bytes(b"broken")
    assert prime_head_mirror(broken, tmp_path) is False and torch.equal(broken.mirror(), computed)


def test_a_first_edit_measures_the_turn_range_once(tmp_path, ict_path, capsys, monkeypatch):
    """(Asking the renderer for its range before its preview renderer existed measured it twice: once while the
    preview renderer was made, then again.)"""
    from engine.photo import renderer as R

    measured = []
    turn_range = R.PhotoRenderer.turn_range

    def counted(self, *a, **k):
        if R._range_of(self.fit) is None:
            measured.append(1)
        return turn_range(self, *a, **k)

    monkeypatch.setattr(R.PhotoRenderer, "turn_range", counted)
    edit(capsys, ASTRONAUT, "--set", "yaw=5", "-o", tmp_path / "a.png")
    assert len(measured) == 1
    edit(capsys, ASTRONAUT, "--set", "yaw=5", "-o", tmp_path / "b.png")  # cached: not measured at all
    assert len(measured) == 1


def test_the_editor_opens_a_photo_through_the_same_cache(tmp_path, ict_path, capsys, counted):
    """The editor's open-photo uses the photo cache too: a second open of the same photo (a new session, or after
    ``discoface edit``) skips the fit and the layers, and edits give the same pixels; the drag preview renderer is
    still built in the open job."""
    import torch

    from engine.editing.session import Session
    from engine.face.model import default_model

    torch.set_num_threads(1)
    model = default_model()
    frames = []
    for k in range(2):
        s = Session(model=model, generator=None)
        s.open_photo(ASTRONAUT)
        assert counted == {"fit": 1, "layers": 1}, k  # computed on the first open only
        assert s.mode == "photo" and s.frames._photo[1]._preview is not None
        frames.append(s.render_snapshot(s.set_control("yaw", s.control_value("yaw") + 8)).image)
    assert np.array_equal(frames[0], frames[1]) and len(entries()) == 1
    edit(capsys, ASTRONAUT, "--set", "yaw=8", "-o", tmp_path / "a.png")  # the command line reads the editor's entry
    assert counted == {"fit": 1, "layers": 1}


def test_the_source_head_is_kept_and_a_broken_one_is_computed_again(tmp_path, ict_path, capsys, monkeypatch):
    """A later edit takes the renderer's source head (visibility, harmonic and mirror fills, the model-skin set-up:
    ``<key>.src.npz``) from the entry instead of running the 150-step harmonic fill again, with the same pixels; a
    stored state of the wrong shape, with NaNs or unreadable is never used: computed again (the same pixels) and
    written again."""
    from engine.photo import flow
    from engine.photo import renderer as R

    n = {"fill": 0, "skin": 0}
    fill, skin = flow._harmonic_fill, R.PhotoRenderer._compute_skin

    def counted_fill(*a, **k):
        n["fill"] += 1
        return fill(*a, **k)

    def counted_skin(self):
        n["skin"] += 1
        return skin(self)

    hair = R.PhotoRenderer._hair_src

    def counted_hair(self):  # computed, not answered from the renderer's memo
        n["hair"] += getattr(self, "_hair_src_cache", None) is None
        return hair(self)

    n["hair"] = 0
    monkeypatch.setattr(flow, "_harmonic_fill", counted_fill)
    monkeypatch.setattr(R.PhotoRenderer, "_compute_skin", counted_skin)
    monkeypatch.setattr(R.PhotoRenderer, "_hair_src", counted_hair)
    first = tmp_path / "first.png"
    edit(capsys, ASTRONAUT, "--set", "yaw=12", "smile=0.4", "-o", first)
    assert n["fill"] >= 1 and n["skin"] >= 1 and n["hair"] >= 1
    src = entries()[0].with_suffix(".src.npz")
    assert src.is_file()
    good = dict(np.load(src))
    assert {"visible", "src_xy", "mirror_w", "turn_outer", "skin_model_w", "hair_src"} <= set(good)
    assert good["hair_src"].dtype == bool and good["hair_src"].ndim == 2 and good["hair_src"].any()

    def again(name):
        before = dict(n)
        out, _ = edit(capsys, ASTRONAUT, "--set", "yaw=12", "smile=0.4", "-o", tmp_path / name)
        assert (tmp_path / name).read_bytes() == first.read_bytes(), name
        return n["fill"] - before["fill"], n["skin"] - before["skin"], "photo cache" in out

    hair_before = n["hair"]
    assert again("cached.png") == (0, 0, True) and n["hair"] == hair_before  # the turn's hair mask too (Lab: ~50 ms)

    def broken(change):
        arrays = {k: v.copy() for k, v in good.items()}
        change(arrays)
        np.savez(src, **arrays)

    broken(lambda a: a.update(src_xy=a["src_xy"][:100]))  # another head's shape
    assert again("shape.png") == (1, 1, False)  # (the skin set-up derives from the rest: never taken alone)
    assert again("rewritten.png") == (0, 0, True)  # the entry was written again
    broken(lambda a: a["mirror_gain"].__setitem__((0, 0), np.nan))
    assert again("nan.png") == (1, 1, False)
    broken(lambda a: a.update(visible=a["visible"].astype(np.float32)))  # a wrong dtype
    assert again("dtype.png") == (1, 1, False)
    broken(lambda a: a.pop("turn_outer"))
    assert again("missing.png") == (0, 1, False)  # the turn's shell weights computed again
    broken(lambda a: a.update(skin_model_w=a["skin_model_w"][:-1]))  # the skin set-up alone: computed again
    assert again("skin.png") == (0, 1, True)
    broken(lambda a: a.update(hair_src=a["hair_src"][:-1]))  # the hair mask alone: computed again, same pixels
    hair_before = n["hair"]
    assert again("hair.png") == (0, 0, True) and n["hair"] == hair_before + 1
    src.write_bytes(b"PK\x03\x04 broken")
    assert again("unreadable.png") == (1, 1, False)
    assert again("fine.png") == (0, 0, True)


def test_a_cached_edit_imports_no_generator_scipy_or_numba(tmp_path, ict_path):
    """``discoface edit`` of a photo in the cache draws with the photo renderer: the generator's modules (~80 ms to
    import), scipy (the mirror map's KD-tree, ~0.25 s) and numba (the compiled rasterizer, deferred for one frame)
    stay unimported (``python -X importtime`` shows the rest)."""
    import subprocess
    import sys

    code = ("import sys; from engine.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'numba') "
            "or m.startswith('engine.generator')))")
    env = {**os.environ, "DISCOFACE_PHOTO_CACHE": str(tmp_path / "cache")}
    args = ["edit", str(ASTRONAUT), "--set", "yaw=8", "-o"]
    for k in range(2):
        r = subprocess.run([sys.executable, "-c", code, *args, str(tmp_path / f"{k}.png")], capture_output=True,
                           text=True, cwd=REPO, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
    assert "from the photo cache" in r.stdout and r.stdout.strip().splitlines()[-1] == "0 []", r.stdout


def test_the_layers_skin_mask_of_a_head_cut_by_the_border_is_kept(tmp_path, ict_path, capsys, monkeypatch):
    """A head the photo's top border cuts (the astronaut without her top 60 rows): the layers' skin mask
    (``layers.skin_on_grid``, whose Lab conversion builds OpenCV's tables: ~55 ms) is kept in the source state and
    not computed by a cached edit, with the same pixels; a stored mask of the wrong shape is computed again."""
    from engine.photo import layers as L

    n = [0]
    skin = L.skin_on_grid

    def counted(*a, **k):
        n[0] += 1
        return skin(*a, **k)

    monkeypatch.setattr(L, "skin_on_grid", counted)
    photo = tmp_path / "cut.png"
    Image.fromarray(np.asarray(Image.open(ASTRONAUT).convert("RGB"))[60:]).save(photo)
    first = tmp_path / "first.png"
    edit(capsys, photo, "--set", "yaw=10", "-o", first)
    assert n[0] >= 1
    src = entries()[0].with_suffix(".src.npz")
    good = dict(np.load(src))
    assert good["grid_skin"].dtype == bool and good["grid_skin"].ndim == 2 and good["grid_skin"].any()
    before = n[0]
    out, _ = edit(capsys, photo, "--set", "yaw=10", "-o", tmp_path / "cached.png")
    assert "photo cache" in out and n[0] == before
    assert (tmp_path / "cached.png").read_bytes() == first.read_bytes()
    np.savez(src, **{**good, "grid_skin": good["grid_skin"][:-1]})
    edit(capsys, photo, "--set", "yaw=10", "-o", tmp_path / "again.png")
    assert n[0] == before + 1 and (tmp_path / "again.png").read_bytes() == first.read_bytes()
