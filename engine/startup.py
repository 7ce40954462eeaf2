"""A process's start-up, shared by its entry points (``discoface``: engine/cli; the editor: main.py): torch-free.

``import torch`` makes ~10^6 objects that live as long as the process. With Python's cyclic garbage collector on,
its full passes over them (two or three during the import, more during the engine's imports, one at the
interpreter's exit) were ~0.4–0.7 s of CPU of a cached ``discoface edit`` (``bench/startup.py``: a third of a plain
``import torch`` process). :func:`pause_gc` turns the collector off for the start-up; :func:`start_up_done` moves
everything made until then to its permanent generation (``gc.freeze``: never walked again) and turns it back on,
so the work that follows collects as usual. :func:`import_torch` imports torch with two of :mod:`inspect`'s
look-ups answered the quick way (~0.1 s of CPU; the same answers). A process that imported torch already (the
tests, a caller of ``engine.cli.main``) is left as it is."""
from __future__ import annotations

import gc
import sys


def pause_gc() -> bool:
    """Turn the collector off for the start-up when torch is not imported yet (a process starting); returns whether
    it was turned off (give that to :func:`start_up_done`, and to :func:`resume_gc` on every way out)."""
    if "torch" in sys.modules or not gc.isenabled():
        return False
    gc.disable()
    return True


def start_up_done(paused: bool) -> None:
    """The start-up's imports are done: what exists now is frozen (``gc.freeze``) and the collector is on again."""
    if paused and not gc.isenabled():
        gc.freeze()
        gc.enable()


def resume_gc(paused: bool) -> None:
    """On the way out of an entry point that paused the collector (an error before :func:`start_up_done`)."""
    if paused and not gc.isenabled():
        gc.enable()


def import_torch() -> None:
    """``import torch`` with two of :mod:`inspect`'s look-ups answered the quick way (the answers are the same:
    tests/test_cli_startup.py). torch records where each of its ~115 custom ops was registered
    (``torch.library.Library._register_fake``): ``inspect.getframeinfo`` for the ``file:line`` — whose default also
    reads the line's source: ~30 of torch's files read (:func:`_frameinfo_without_source`) — and
    ``inspect.getmodule`` of the caller's frame, which walks the whole module list, resolving every new module's
    path (:func:`_frame_module`). Timed around those calls inside ``import torch`` (3 runs, load ~5): 64 → 5 ms and
    55 → 1 ms of CPU."""
    if "torch" in sys.modules:
        return
    import inspect

    frameinfo, getmodule = inspect.getframeinfo, inspect.getmodule
    inspect.getframeinfo, inspect.getmodule = _frameinfo_without_source(frameinfo), _frame_module(getmodule)
    try:
        import torch  # noqa: F401
    finally:
        inspect.getframeinfo, inspect.getmodule = frameinfo, getmodule


def _frameinfo_without_source(full):
    def frameinfo(frame, context=1):
        return full(frame, 0)  # filename, line, function: no source lines (code_context None)

    return frameinfo


def _frame_module(full):
    """``inspect.getmodule`` that answers for a frame from its globals' ``__name__`` when that module's file is the
    frame's file (what ``getmodule`` would find by the file); anything else: ``getmodule`` itself."""
    import types

    def getmodule(obj, _filename=None):
        if _filename is None and isinstance(obj, types.FrameType):
            m = sys.modules.get(obj.f_globals.get("__name__"))
            f = getattr(m, "__file__", None)
            if f is not None and f == obj.f_code.co_filename:
                return m
        return full(obj, _filename)

    return getmodule
