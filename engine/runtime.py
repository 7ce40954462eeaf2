"""Thread policy: how many CPU threads torch may use, chosen for the machine and the job.

torch starts one intra-op thread per core. On a 2-core laptop that is already busy (a browser, a second job,
the editor's own render worker) those threads spin against each other: a fit or an embed then runs 6-12x
slower than with one thread (``bench/load.py`` measures it). The rules:

- ``interactive`` (the editor's render worker) and ``background`` (a fit / embed started from the editor while
  the worker renders): torch's thread count is global to the process, so the editor picks one number for both —
  1 thread on up to 2 cores, otherwise half the cores (at most 4) so a drag and a fit do not fight;
- ``batch`` (one CLI command): every core that is not already busy — the cores minus the 1-minute load average
  (rounded), at least 1;
- ``DISCOFACE_THREADS=N`` overrides every rule (a user who knows their machine).

Entry points call ``setup_entry_point("cli" | "app")`` once: it sets the threads and installs the handlers that
remove partial outputs on SIGTERM/SIGINT (``engine.io.files.install_cleanup_handlers``).
"""
from __future__ import annotations

import os

import torch

JOBS = ("interactive", "background", "batch")
ENV = "DISCOFACE_THREADS"


class ThreadSettingError(ValueError):
    """A bad DISCOFACE_THREADS value."""


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """The 1-minute load average (runnable processes), 0 where the OS does not say."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def _env_threads() -> int | None:
    v = os.environ.get(ENV, "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        raise ThreadSettingError(f"{ENV}={v!r} is not a whole number of threads") from None
    if n < 1:
        raise ThreadSettingError(f"{ENV}={v!r}: use 1 or more threads")
    return n


def threads_for(job: str, cores: int | None = None, load: float | None = None) -> int:
    """The torch thread count for ``job`` (one of ``JOBS``) on ``cores`` cores with ``load`` busy ones."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: one of {', '.join(JOBS)}")
    env = _env_threads()
    if env is not None:
        return env
    cores = cpu_count() if cores is None else max(1, int(cores))
    if job in ("interactive", "background"):
        return 1 if cores <= 2 else min(4, cores // 2)
    load = busy_cores() if load is None else max(0.0, float(load))
    return max(1, min(cores, cores - int(load + 0.5)))


def machine_note(threads: int | None = None) -> str:
    """One line for every bench figure: the machine's load (1/5/15 min), its cores and torch's thread count."""
    try:
        la = "/".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        la = "n/a"
    n = torch.get_num_threads() if threads is None else int(threads)
    return f"load {la} on {cpu_count()} cores, {n} thread{'s' if n != 1 else ''}"


def apply_threads(n: int) -> int:
    """Set torch's intra-op threads (and inter-op to 1 where it is still allowed); returns ``n``."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed before the first parallel work; harmless to skip
        pass
    return n


def configure(job: str) -> int:
    """Pick and apply the thread count for ``job``; returns it."""
    return apply_threads(threads_for(job))


def setup_entry_point(kind: str) -> int:
    """Once per process, from ``main.py`` / ``discoface`` (``kind="cli"``) or the editor (``kind="app"``):
    thread policy + removal of partial outputs on SIGTERM/SIGINT/exit. Returns the thread count."""
    from engine.io.files import install_cleanup_handlers

    if kind not in ("cli", "app"):
        raise ValueError(f"unknown entry point {kind!r}: 'cli' or 'app'")
    n = configure("batch" if kind == "cli" else "interactive")
    from engine.render import fast_raster

    if kind == "cli":
        fast_raster.defer()  # a few frames: not worth loading the compiled kernels (commands with many ask for them)
    else:
        fast_raster.warm_up(background=True)  # the editor: loaded while the window opens, before the first drag
    # the editor ends on Ctrl+C / SIGTERM after cleaning up (its autosave stays, to be offered back at the next
    # start); the CLI keeps Ctrl+C as KeyboardInterrupt ("cancelled", exit 130)
    install_cleanup_handlers(interrupt_raises=(kind == "cli"))
    return n
