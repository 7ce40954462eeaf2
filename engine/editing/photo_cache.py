"""The photo cache: what photo mode computes from the photo alone, kept between runs (issue 24: a cold edit in ~2 s).

A photo's fit (dlib's detector and 68-point predictor take ~1.7 s to load, the fit ~0.3 s), its layers (grabCut
matte and plate, ~1.5 s), its believable turn range (a second, coarser renderer) and the faces found in it depend
only on the photo's bytes, the face asked for and the code and weights that made them. The first open of a photo
computes them and stores them here; a later one (``discoface edit`` with any ``--set`` and output, or the editor's
open-photo: :func:`open_cached` serves both) reads them back.

An entry is keyed by the SHA-256 of the photo file's bytes, the face index and a fingerprint of everything else the
result depends on: the source of every ``engine`` module, the weight files in ``assets/`` (name, size, mtime) and
the installed torch, OpenCV, dlib and numpy (their files' size and mtime). Any change to one of them is another key: a stale entry is never read (old
entries age out: the folder keeps the :data:`MAX_ENTRIES` most recently used). A corrupt or unreadable entry is a
miss and is written again. The first run uses the fit *read back* from the JSON it stores (the landmarks rounded to
1e-4 px, as a session file does), so a first and a later edit write the same pixels. The renderer's source head (which
vertices the photo shows, the harmonic and mirror fills of the hidden ones: ~0.2 s) is kept too (``<key>.src.npz``,
:meth:`~engine.photo.renderer.PhotoRenderer.source_state`); arrays that do not fit are computed and written again.

Folder: ``$DISCOFACE_PHOTO_CACHE`` (``off`` or ``0``: no cache), else ``$XDG_CACHE_HOME/discoface/photos``, else
``~/.cache/discoface/photos``. ``discoface edit --no-cache`` neither reads nor writes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV = "DISCOFACE_PHOTO_CACHE"  # (numpy is imported where used: ``import engine.cli`` builds the parser only and
# reads this module before torch is imported)
FORMAT = "discoface.photocache"
VERSION = 2  # 2: the source head's arrays (``<key>.src.npz``)
MAX_ENTRIES = 64
_ROOT = Path(__file__).resolve().parents[2]  # the repository (engine/ and assets/ live here)


def cache_root() -> Path | None:
    """The cache folder, or None when ``$DISCOFACE_PHOTO_CACHE`` turns it off (:func:`engine.config.user_cache_root`)."""
    from engine.config import user_cache_root

    return user_cache_root()


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """Hash of what a cached entry depends on besides the photo: engine source, weights, library versions."""
    h = hashlib.sha256(f"{FORMAT} {VERSION}".encode())
    for p in sorted((_ROOT / "engine").rglob("*.py")):
        h.update(str(p.relative_to(_ROOT)).encode())
        h.update(p.read_bytes())
    assets = _ROOT / "assets"
    if assets.is_dir():
        for p in sorted(assets.glob("*.safetensors")):
            st = p.stat()
            h.update(f"{p.name} {st.st_size} {st.st_mtime_ns}".encode())
    for name in ("torch", "cv2", "_dlib_pybind11", "numpy"):  # the libraries' installed files, not imported
        h.update(f"{name} {_module_stamp(name)}".encode())
    return h.hexdigest()


def _module_stamp(name: str) -> str:
    """Where a top-level module is installed, its size and mtime, found without importing it (``import torch``
    is most of a cached edit's time; the key is computed before it, see :func:`engine.cli.photo.prefetch_faces`)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not os.path.exists(spec.origin):
        return "-"
    st = os.stat(spec.origin)
    return f"{spec.origin} {st.st_size} {st.st_mtime_ns}"


def photo_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Entry:
    """What one photo (and face) left in the cache; any part may be missing (None)."""

    fit: dict | None = None  # PhotoFit.to_json_dict()
    turn_range: dict | None = None  # {"yaw": (lo, hi), "pitch": (lo, hi)}
    faces: dict | None = None  # the CLI's face choice: {"choices": [[index, [x0, y0, x1, y1]], ...], "picked": i}
    layers: object | None = None  # engine.photo.layers.PhotoLayers
    source: dict | None = None  # PhotoRenderer.source_state(): name -> array (checked again by the renderer)


class PhotoCache:
    """The entries of one photo file (all faces) under :func:`cache_root`; ``root=None``: a cache that never hits."""

    def __init__(self, photo, root: Path | None = None):
        self.root = root
        self.photo = Path(photo)
        self._digest = None

    @classmethod
    def for_photo(cls, photo, enabled: bool = True) -> "PhotoCache":
        root = cache_root() if enabled else None
        if root is not None and not Path(photo).is_file():
            root = None  # the fit reports a missing / unreadable photo
        return cls(photo, root)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _key(self, face) -> str:
        if self._digest is None:
            self._digest = photo_digest(self.photo)
        return hashlib.sha256(f"{fingerprint()} {self._digest} {face}".encode()).hexdigest()

    def _paths(self, face) -> tuple[Path, Path]:
        k = self._key(face)
        d = self.root / k[:2]
        return d / f"{k}.json", d / f"{k}.npz"

    @staticmethod
    def _source_path(npz: Path) -> Path:
        return npz.with_suffix(".src.npz")

    # ------------------------------------------------------------------------------------------------ reading
    def has_entry(self, face=None) -> bool:
        """Whether an entry with layers is stored for ``face`` (not read: it may still turn out unusable)."""
        if not self.enabled:
            return False
        js, npz = self._paths(face)
        return js.is_file() and npz.is_file()

    def load(self, face=None) -> Entry:
        """The entry for ``face`` (None: the fit's own pick; "faces": the face list); an empty Entry on a miss."""
        if not self.enabled:
            return Entry()
        js, npz = self._paths(face)
        try:
            d = json.loads(js.read_text())
            if d.get("format") != FORMAT or d.get("version") != VERSION:
                return Entry()
        except (OSError, ValueError, AttributeError):
            return Entry()
        e = Entry(fit=d.get("fit"), faces=d.get("faces"))
        tr = d.get("turn_range")
        if isinstance(tr, dict):
            try:
                e.turn_range = {k: (float(tr[k][0]), float(tr[k][1])) for k in ("yaw", "pitch")}
            except (KeyError, TypeError, ValueError, IndexError):
                e.turn_range = None
        if d.get("layers") and npz.is_file():
            e.layers = _read_layers(npz, d["layers"])
        if d.get("source"):
            e.source = _read_arrays(self._source_path(npz))
        try:
            os.utime(js)  # most recently used: kept by the pruning
        except OSError:
            pass
        return e

    # ------------------------------------------------------------------------------------------------ writing
    def store(self, face=None, *, fit: dict | None = None, turn_range: dict | None = None,
              faces: dict | None = None, layers=None, source: dict | None = None) -> None:
        """Write (replace) the entry for ``face``; a cache folder that cannot be written is skipped silently (the
        edit itself never fails for the cache)."""
        if not self.enabled:
            return
        js, npz = self._paths(face)
        d = {"format": FORMAT, "version": VERSION, "photo": str(self.photo.name), "face": face, "fit": fit,
             "faces": faces,
             "turn_range": None if turn_range is None else {k: list(v) for k, v in turn_range.items()},
             "layers": None, "source": False}
        try:
            js.parent.mkdir(parents=True, exist_ok=True)
            if layers is not None:
                import numpy as np

                arrays, meta = _layer_parts(layers)
                d["layers"] = meta
                _atomic_write(npz, lambda f: np.savez(f, **arrays))
            if source:
                import numpy as np

                _atomic_write(self._source_path(npz), lambda f: np.savez(f, **source))
                d["source"] = True
            _atomic_write(js, lambda f: f.write(json.dumps(d).encode()))
            _prune(self.root)
        except (OSError, TypeError, ValueError):
            pass


def open_cached(path, face: int | None, cache: PhotoCache, model=None, *, progress=None, cancel=None,
                found=None, faces=None):
    """Photo mode's fit and renderer of the photo at ``path`` (``face``: ``fit_photo``'s index, None: its pick) from
    ``cache`` when it holds them (fit, layers and turn range), else computed and stored. Returns ``(fit, renderer,
    hit)``. Either way the fit is the one read back from its JSON, so a first and a later open give the same pixels.

    ``progress(fraction)`` / ``cancel()``: the fit's (only called when it runs); ``found()``: the photo's face search
    done elsewhere (``fit_photo``'s ``found``; asked only when a fit runs without ``face``); ``faces(fit, stored)``:
    the face list kept in the entry (the command line's several-faces note), given what was stored (None)."""
    from engine.face.head import default_head
    from engine.photo.fit import PhotoFit, PhotoFitError, fit_photo
    from engine.photo.renderer import PhotoRenderer, _store_range

    entry = cache.load(face)
    fit = None
    if entry.fit is not None:
        try:
            fit = PhotoFit.from_json_dict(entry.fit, str(path))
        except PhotoFitError:
            fit = None
    hit = fit is not None and entry.layers is not None and entry.turn_range is not None and entry.source is not None
    if fit is None:
        fitted = fit_photo(str(path), progress=progress, cancel=cancel, face=face,
                           found=found() if found is not None and face is None else None)
        fit = PhotoFit.from_json_dict(fitted.to_json_dict(), fitted.image)
        fit.seconds = fitted.seconds
        entry.layers = entry.turn_range = entry.faces = entry.source = None
    if entry.turn_range is not None:
        _store_range(fit, entry.turn_range)  # the renderer's turn_range() answers from it
    if model is None:
        from engine.face.model import default_model

        model = default_model()
    prime_head_mirror(default_head(model), cache.root)
    renderer = PhotoRenderer(fit, model=model, layers=entry.layers, source_state=entry.source)
    if faces is not None:
        entry.faces = faces(fit, entry.faces)
    hit = hit and renderer.source_restored  # a stored source state that does not fit is computed and written again
    if not hit:
        if entry.turn_range is None:
            # measured on the preview grid: made first (it measures the range as it is made; turn_range() first
            # would make it from inside and then measure again)
            renderer.preview_renderer()
        cache.store(face, fit=fit.to_json_dict(), turn_range=renderer.turn_range(), faces=entry.faces,
                    layers=renderer.layers, source=renderer.source_state())
    return fit, renderer, hit


def prime_head_mirror(head, root: Path | None) -> bool:
    """Give ``head`` (a :class:`~engine.face.head.HeadModel`) its mirror map (``HeadModel.mirror``) from the cache
    folder ``root``, keyed by the neutral mesh, its parts and :func:`fingerprint`; computed and stored there when
    missing. (The map is found with scipy's KD-tree, whose import alone is ~0.25 s of a cold edit.) Returns whether
    it was read from the cache."""
    if root is None or head._mirror is not None:
        return False
    import numpy as np

    h = hashlib.sha256(fingerprint().encode())
    for t in (head.model.mean, head.parts_mean, head.vertex_part):
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    h.update(" ".join(head.part_names).encode())
    path = root / f"head-mirror-{h.hexdigest()[:32]}.npy"
    try:
        m = np.load(path, allow_pickle=False)
        if m.shape == (head.n_vertices,) and m.dtype == np.int64 and m.min() >= 0 and m.max() < head.n_vertices:
            import torch

            head._mirror = torch.from_numpy(m)
            return True
    except (OSError, ValueError):
        pass
    m = head.mirror().numpy()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda f: np.save(f, m))
    except OSError:
        pass
    return False


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _layer_parts(layers) -> tuple[dict, dict]:
    """A PhotoLayers' arrays (for the .npz) and its other JSON-able attributes (``box``, the analysis grid …; the
    build timings are left out)."""
    import numpy as np

    arrays, meta = {}, {}
    for k, v in vars(layers).items():
        if isinstance(v, np.ndarray):
            arrays[k] = v
        elif k not in ("timings", "seconds"):
            json.dumps(v)  # (anything else a future PhotoLayers holds must be JSON-able, or the entry is not written)
            meta[k] = v
    return arrays, meta


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _read_arrays(path: Path) -> dict | None:
    """The arrays of an .npz (no pickles), or None when it is missing or unreadable."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _read_layers(npz: Path, meta: dict):
    import zipfile

    import numpy as np

    from engine.photo.layers import PhotoLayers

    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        layers = PhotoLayers(box=tuple(int(v) for v in meta["box"]), plate=arrays.pop("plate"), fg=arrays.pop("fg"))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None
    x0, y0, x1, y1 = layers.box
    if layers.plate.shape != (y1 - y0, x1 - x0, 3) or layers.fg.shape != (y1 - y0, x1 - x0, 4):
        return None
    for k, v in arrays.items():
        setattr(layers, k, v)
    for k, v in meta.items():
        if k != "box":
            setattr(layers, k, _tuples(v))
    return layers


def _prune(root: Path, keep: int = MAX_ENTRIES) -> None:
    """Keep the ``keep`` most recently used photo entries (the head's mirror map is one small file, kept)."""
    entries = sorted(root.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for js in entries[keep:]:
        js.unlink(missing_ok=True)
        js.with_suffix(".npz").unlink(missing_ok=True)
        js.with_suffix(".src.npz").unlink(missing_ok=True)
