"""Thread policy: how many CPU threads torch may use, chosen for the machine and the job.

torch starts one intra-op thread per core. On a 2-core laptop that is already busy (a browser, a second job,
the editor's own render worker) those threads spin against each other: a fit or an embed then runs 6-12x
slower than with one thread (``bench/load.py`` measures it). The rules:

- ``interactive`` (the editor's render worker) and ``background`` (a fit / embed started from the editor while
  the worker renders): torch's thread count is global to the process, so the editor picks one number for both —
  1 thread on up to 2 cores, otherwise half the cores (at most 4) so a drag and a fit do not fight;
- ``batch`` (one CLI command): every core that is not already busy — the cores minus the 1-minute load average
  (rounded), at least 1;
- ``DISCOFACE_THREADS=N`` overrides every rule (a user who knows their machine);
- OpenMP waiters sleep (``OMP_WAIT_POLICY=PASSIVE``, set by ``engine/__init__.py`` before torch loads): spinning
  waiters made 2 threads on 2 busy cores 15x the CPU and 10-30x the wall time of 1 thread; passive, 2 threads cost
  what 1 does (``bench/photo_latency.py --threads 1 2``).

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


def usable_threads(n: int, cores: int | None = None, load: float | None = None) -> int:
    """Of ``n`` threads one step may split its work over, how many have a core to run on now: the calling thread
    plus the cores the 1-minute load average leaves idle besides it (the caller itself counts as at least one busy
    core). On a busy machine that is 1: a second thread there only waits for a core another job holds, and the
    step waits for it (bench/photo_latency.py: 2 threads up to 1.3-2x slower than 1 at load 2-6 on 2 cores)."""
    n = max(1, int(n))
    if n == 1:
        return 1
    cores = cpu_count() if cores is None else max(1, int(cores))
    load = busy_cores() if load is None else max(0.0, float(load))
    idle = int(cores - max(load, 1.0) + 0.5)
    return max(1, min(n, 1 + idle))


def machine_note(threads: int | None = None) -> str:
    """One line for every bench figure: the machine's load (1/5/15 min), its cores and torch's thread count."""
    try:
        la = "/".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        la = "n/a"
    n = torch.get_num_threads() if threads is None else int(threads)
    return f"load {la} on {cpu_count()} cores, {n} thread{'s' if n != 1 else ''}, {omp_wait_note()}"


def omp_wait_note() -> str:
    """How torch's OpenMP threads wait (``engine/__init__.py`` asks for PASSIVE before torch loads)."""
    import engine

    policy = os.environ.get("OMP_WAIT_POLICY", "default").lower()
    return f"OpenMP wait {policy}" + (" (torch loaded before engine: spinning)" if engine.TORCH_LOADED_FIRST else "")


DEVICE_ENV = "DISCOFACE_DEVICE"
DEVICES = ("cpu", "cuda", "mps")


class DeviceSettingError(ValueError):
    """A bad DISCOFACE_DEVICE value, or a device that is not present."""


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(requested: str | None = None) -> torch.device:
    """The compute device: ``requested`` or ``$DISCOFACE_DEVICE`` (cpu | cuda | cuda:N | mps) when given — an absent
    one is a :class:`DeviceSettingError` with a one-line message —, else the best present: CUDA, Apple MPS, CPU."""
    from_env = requested is None
    name = (os.environ.get(DEVICE_ENV, "") if from_env else requested).strip().lower()
    where = f"{DEVICE_ENV}={name}" if from_env else f"device {name!r}"
    if not name:
        return torch.device("cuda" if cuda_available() else "mps" if mps_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceSettingError(f"{where}: use one of {', '.join(DEVICES)} (or cuda:N)")
    if kind == "cuda":
        if not cuda_available():
            raise DeviceSettingError(f"{where}: torch {torch.__version__} sees no CUDA device here; use "
                                     f"{DEVICE_ENV}=cpu" + (" or mps" if mps_available() else ""))
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceSettingError(f"{where}: only {torch.cuda.device_count()} CUDA device(s) here")
    if kind == "mps" and not mps_available():
        raise DeviceSettingError(f"{where}: no Apple MPS device here; use {DEVICE_ENV}=cpu"
                                 + (" or cuda" if cuda_available() else ""))
    return torch.device(name)


_device: torch.device | None = None


def device() -> torch.device:
    """The process's compute device (:func:`select_device` once; the generator, embedding, fitting and training
    put their networks there)."""
    global _device
    if _device is None:
        _device = select_device()
    return _device


def device_description(dev: torch.device | None = None) -> str:
    """One line for the status bar and ``--help``: which device computes, and why."""
    dev = device() if dev is None else torch.device(dev)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        what = f"GPU {torch.cuda.get_device_name(idx)} (CUDA)"
    elif dev.type == "mps":
        what = "Apple GPU (MPS)"
    else:
        n = torch.get_num_threads()
        what = f"CPU ({cpu_count()} cores, {n} thread{'s' if n != 1 else ''})"
    env = os.environ.get(DEVICE_ENV, "").strip()
    return what + (f", set by {DEVICE_ENV}={env}" if env else f"; {DEVICE_ENV}=cpu|cuda|mps overrides")


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
    # the editor ends on Ctrl+C / SIGTERM after cleaning up (its autosave stays, to be offered back at the next
    # start); the CLI keeps Ctrl+C as KeyboardInterrupt ("cancelled", exit 130)
    install_cleanup_handlers(interrupt_raises=(kind == "cli"))
    return n
