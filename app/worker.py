"""Background work for the editor: the render worker (latest request wins) and one-shot jobs (export, photo).

The render worker lives in its own QThread. :meth:`RenderWorker.submit` only stores the request in a one-slot
mailbox and, if the worker is idle, wakes it; a request that arrives while a frame is being rendered replaces the
one waiting, so a fast slider drag never queues stale frames: the worker always renders the newest state next.
"""
from __future__ import annotations

import gc
import threading
import traceback
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot


@dataclass
class RenderRequest:
    snapshot: object  # engine.editing.state.Snapshot (immutable: the UI keeps editing new ones)
    size: int | None  # None: the view's own size (photo mode: the photo's resolution)
    final: bool  # False while dragging (a smaller frame), True on release
    view: str = "auto"  # "auto" | "generator" | "preview" (engine.editing.frames.VIEWS)
    serial: int = 0


class RenderWorker(QObject):
    frameReady = Signal(object, object, object)  # (RenderRequest, Frame, what ``prepare`` made of it or None)
    failed = Signal(object, str)  # (RenderRequest, message)
    _wake = Signal()

    def __init__(self, session):
        super().__init__()
        self.session = session
        self._lock = threading.Lock()
        self._latest: RenderRequest | None = None
        self._scheduled = False
        self.render_count = 0
        self.submitted = 0
        self.prepare = None  # optional ``fn(frame)``, run here in the render thread (the mesh panel's buffers)
        self._wake.connect(self._process)

    def submit(self, req: RenderRequest) -> None:
        """Thread-safe; never blocks. Replaces any request still waiting."""
        with self._lock:
            self.submitted += 1
            self._latest = req
            if self._scheduled:
                return
            self._scheduled = True
        self._wake.emit()  # queued: runs _process in the worker thread

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._scheduled

    @Slot()
    def _process(self) -> None:
        while True:
            with self._lock:
                req, self._latest = self._latest, None
                if req is None:
                    self._scheduled = False
                    return
            try:
                frame = self.session.render_snapshot(req.snapshot, req.size, final=req.final, view=req.view)
            except Exception as exc:  # an engine error must reach the user, never kill the editor
                traceback.print_exc()
                self.failed.emit(req, f"{type(exc).__name__}: {exc}")
                continue
            extra = None
            prepare = self.prepare
            if prepare is not None:
                try:
                    extra = prepare(frame)
                except Exception:  # the image still reaches the user
                    traceback.print_exc()
            self.render_count += 1
            self.frameReady.emit(req, frame, extra)


class RenderThread:
    """Owns the QThread the worker lives in."""

    def __init__(self, session):
        self.thread = QThread()
        self.thread.setObjectName("discoface-render")
        self.worker = RenderWorker(session)
        self.worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self, timeout_ms: int = 5000) -> None:
        self.thread.quit()
        self.thread.wait(timeout_ms)


class _JobRunner(QObject):
    """Lives in the job's thread and runs the call; its signals are relayed by :class:`Job` (main thread)."""

    progress = Signal(int, int)
    done = Signal(object)
    error = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn, cancel_types, cancel_event):
        super().__init__()
        self._fn, self._cancel_types, self._cancel_event = fn, cancel_types, cancel_event

    @Slot()
    def run(self) -> None:
        try:
            out = self._fn(lambda d, t: self.progress.emit(int(d), int(t)), self._cancel_event.is_set)
        except self._cancel_types:
            self.cancelled.emit()
        except (ValueError, OSError) as exc:  # the engine's user-facing errors
            self.error.emit(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        except Exception as exc:
            traceback.print_exc()
            self.error.emit(f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self.done.emit(out)
        finally:
            self.finished.emit()
            self.thread().quit()


class Job(QObject):
    """A one-shot background call ``fn(progress, cancel)`` in its own QThread.

    The Job itself stays in the thread that created it (the GUI thread), and the runner's signals are relayed
    through it with queued connections, so whatever is connected to ``progress``/``done``/``error``/``cancelled``/
    ``finished`` (lambdas included) runs in the GUI thread.
    """

    progress = Signal(int, int)
    done = Signal(object)  # the result
    error = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn, cancel_types: tuple = ()):
        super().__init__()
        self.cancel_event = threading.Event()
        self._thread = QThread()
        self._runner = _JobRunner(fn, cancel_types, self.cancel_event)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._finished = False
        self._started = False
        for name in ("progress", "done", "error", "cancelled"):
            getattr(self._runner, name).connect(getattr(self, name), Qt.QueuedConnection)
        self._runner.finished.connect(self._on_finished, Qt.QueuedConnection)

    def _on_finished(self) -> None:
        self._thread.wait(5000)
        self._finished = True
        self.finished.emit()

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms)

    @property
    def running(self) -> bool:
        """True from start() until the job's thread ended *and* its signals reached the GUI thread."""
        return self._started and not self._finished


def load_before_showing() -> None:
    """What must load before the window is shown: dlib's detector and landmark predictor hold Python's lock for the
    whole of their ~1-2.5 s load, and numba's import (the compiled rasterizer: photo frames and the mesh panel) for
    stretches of ~0.2-0.3 s; loaded in a background job they would freeze the visible window instead."""
    from engine.perception import dlib_files
    from engine.render import fast_raster

    for step in (dlib_files.detector, dlib_files.landmark_predictor, fast_raster.warm_up):
        try:
            step()
        except (OSError, ValueError, RuntimeError):  # missing files: the open-photo job reports them properly
            pass


def warm_up_engine(model, progress=None, cancel=None) -> None:
    """Load now, in a start-up job, what opening the first photo would otherwise load (dlib's detector and landmark
    predictor, R-Net, the head model, the compiled rasterizer): those loads hold Python's lock for seconds, which would
    freeze the window in the middle of the user's first open."""
    from engine.face.head import default_head
    from engine.perception import dlib_files
    from engine.perception.rnet import default_rnet
    from engine.render import fast_raster

    steps = [dlib_files.detector, dlib_files.landmark_predictor, default_rnet, lambda: default_head(model),
             fast_raster.warm_up]
    for i, step in enumerate(steps):
        if cancel is not None and cancel():
            return
        try:
            step()
        except (OSError, ValueError, RuntimeError):  # missing files: the open-photo job reports them properly
            pass
        if progress is not None:
            progress(i + 1, len(steps))
    settle_heap()


def settle_heap() -> None:
    """Move every object alive now (the models, the photo's fit and layers) out of the cyclic garbage collector's
    reach (``gc.freeze``; objects are still freed when nothing refers to them). Without it a full collection walks
    them all, holding Python's lock for 50–300 ms in the middle of a drag (seen with bench/gui_heartbeat.py and a
    gc.callbacks probe). Called when start-up has loaded the models and after each photo is opened."""
    gc.freeze()
