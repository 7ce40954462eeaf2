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


def exit_now(code) -> None:
    """End a command-line process without the interpreter's tear-down (``os._exit``), which for a process holding
    torch freed its ~10^6 objects one by one and ran its libraries' destructors: ~0.1 s of CPU and 0.25 s of wall
    of a cached ``discoface edit`` at load ~6 (0.145 → 0.038 s CPU from ``main``'s return to the process's end,
    5 runs each). What the tear-down would do that matters is done first: stdout / stderr flushed and the
    :mod:`atexit` functions run (the engine's removal of partial outputs, temporary folders' finalizers,
    multiprocessing's and logging's clean-ups). Falls back to ``sys.exit`` — the ordinary end — when another
    non-daemon thread is still running (the interpreter would wait for it) or ``code`` is not an exit status."""
    import threading

    if code is None:
        code = 0
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not isinstance(code, int) or isinstance(code, bool) or others or sys.flags.inspect:
        sys.exit(code)
    import atexit
    import os

    try:
        atexit._run_exitfuncs()  # (what Py_Finalize runs first; exceptions in them are printed, as at a normal end)
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code & 0xFF)
