"""Start-up of the command line (issue 24): fresh processes, wall and CPU time (user + sys of the child).

    python bench/startup.py [--photo PATH] [--repeat 3]

Rows: ``import engine.cli`` (building the parser imports no torch), ``discoface --help`` (prints the compute device,
so it imports torch), ``import torch`` alone, and again the way ``discoface`` imports it and ends (engine/startup.py:
the cyclic garbage collector paused during the import and torch's objects frozen after it, two of ``inspect``'s
look-ups answered the quick way, ``os._exit`` after the atexit work — the floor of any command that computes; the
collector's full passes over torch's objects, at the import and at exit, are a third of a plain ``import torch``),
``import numba`` alone (what
a torch-free path would still pay for the rasterizer), and a cold ``discoface edit``
of a 1 MP photo (front_man_darkskin_01, 910x1137: fit + one edited frame written as PNG), twice: the first edit of
the photo (an empty photo cache, ``engine/editing/photo_cache.py``: detect, fit, layers) and a later one (the cache
holds the photo's fit and layers). Median of ``--repeat``; the two edit rows run interleaved. Last, the editor's
open-photo (``Session.open_photo``, models loaded) of the same photo in a fresh cache, then again in a new session:
the second open reads the fit and layers from the same photo cache. The goal table is printed at the end.
On a machine shared with other jobs wall time includes waiting for a core (the load is printed); CPU time does not.
The cached edit runs a third way too, with Python's bytecode kept (``PYTHONPYCACHEPREFIX`` in the bench's folder,
written by a first run): where ``PYTHONDONTWRITEBYTECODE`` is set (this machine's shells) every other row compiles
the engine's modules from source, ~0.15 s of CPU that an installed package never pays.
For where an edit's time goes: ``python -X importtime -c "import engine.cli"`` and cProfile with
``time.process_time`` around ``engine.cli.main``.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], cache: Path | None = None, pycache: Path | None = None) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["DISCOFACE_PHOTO_CACHE"] = str(cache)
    if pycache is not None:  # bytecode written and read there (an installed package has its .pyc files)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    from engine import config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=config.data_dir() / "portraits" / "front_man_darkskin_01.jpg")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    py = sys.executable
    cli = "from engine.cli import entry; entry()"  # what the discoface console script runs (pyproject.toml)
    work = Path(tempfile.mkdtemp(prefix="startup_"))
    out = work / "edit.png"
    edit = [py, "-c", cli, "edit", str(a.photo), "--set", "yaw=10", "smile=0.5", "-o", str(out)]
    rows = [("import engine.cli", [py, "-c", "import engine.cli"]),
            ("discoface --help", [py, "-c", cli, "--help"]),
            ("import torch", [py, "-c", "import torch"]),
            ("import torch the way discoface does", [py, "-c", PAUSED_TORCH]),
            ("import numba (the compiled rasterizer's)", [py, "-c", "import numba"])]
    print(f"start-up, fresh processes, median of {a.repeat}; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"on {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'case':52s} {'wall s':>7s} {'CPU s':>7s}")

    def show(name, res):
        print(f"{name:52s} {statistics.median(r[0] for r in res):7.2f} {statistics.median(r[1] for r in res):7.2f}"
              f"   (load now {os.getloadavg()[0]:.1f})", flush=True)

    for name, cmd in rows:
        res = [run(cmd) for _ in range(a.repeat)]
        show(name, res)
        if name == "import torch":
            torch_rows = res
        if name.startswith("import torch the way"):
            paused_rows = res
        if name.startswith("import numba"):
            numba_rows = res
    first, again, compiled = [], [], []
    pyc = work / "pycache"
    run(edit, work / "cache-pyc", pyc)  # writes the bytecode (of every module: torch's own is read from there too)
    for i in range(a.repeat):  # interleaved: each first edit in a fresh cache, then the same edit again
        cache = work / f"cache{i}"
        first.append(run(edit, cache))
        again.append(run(edit, cache))
        compiled.append(run(edit, work / "cache-pyc", pyc))
    show("discoface edit, 1 MP photo, first time", first)
    show("discoface edit, the same photo again (cached)", again)
    show("  the same, with bytecode (.pyc) as installed", compiled)
    opens = []
    for i in range(a.repeat):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DISCOFACE_PHOTO_CACHE": str(work / f"editor{i}")}
        r = subprocess.run([py, "-c", EDITOR_OPEN, str(a.photo)], cwd=ROOT, check=True, capture_output=True,
                           text=True, env=env)
        opens.append([float(v) for v in r.stdout.split()[-4:]])
    for k, name in enumerate(("editor: open the photo, first time", "editor: open it again (a new session)")):
        show(name, [(o[2 * k], o[2 * k + 1]) for o in opens])
    med = lambda res, j: statistics.median(r[j] for r in res)  # noqa: E731
    bc = ("this shell sets PYTHONDONTWRITEBYTECODE=1: the rows above compile every engine module"
          if os.environ.get("PYTHONDONTWRITEBYTECODE") else "the rows above may have them too")
    print("\n| measure | wall s (CPU s) | goal |\n|---|---|---|")
    print(f"| `discoface edit` of a 1 MP photo, cold process, photo cache warm | {med(again, 0):.2f} "
          f"({med(again, 1):.2f}) | ≤ 2.0 s wall |")
    print(f"| the same with the engine's bytecode kept (.pyc, as an install has; {bc}) | {med(compiled, 0):.2f} "
          f"({med(compiled, 1):.2f}) | |")
    print(f"| the same, the photo's first edit | {med(first, 0):.2f} ({med(first, 1):.2f}) | |")
    print(f"| `import torch` alone (plain) | {med(torch_rows, 0):.2f} ({med(torch_rows, 1):.2f}) | |")
    print(f"| `import torch` the way `discoface` does (engine/startup.py: collector paused, quick look-ups, fast end) | "
          f"{med(paused_rows, 0):.2f} ({med(paused_rows, 1):.2f}) | |")
    print(f"| `import numba` alone | {med(numba_rows, 0):.2f} ({med(numba_rows, 1):.2f}) | |")
    print(f"| editor: open a photo opened before (fit and layers from the photo cache) | "
          f"{statistics.median(o[2] for o in opens):.2f} ({statistics.median(o[3] for o in opens):.2f}) | |")
    print(f"(load now {'/'.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


PAUSED_TORCH = ("from engine import startup; p = startup.pause_gc(); startup.import_torch(); startup.start_up_done(p); "
                "startup.exit_now(0)")  # how discoface imports torch and ends (engine/startup.py)
EDITOR_OPEN = """
import sys, time
from engine import runtime
runtime.apply_threads(1)
from engine.editing.session import Session
from engine.face.model import default_model
m = default_model()
out = []
for k in range(2):
    s = Session(model=m, generator=None)
    t, c = time.perf_counter(), time.process_time()
    s.open_photo(sys.argv[1])
    out += [time.perf_counter() - t, time.process_time() - c]
print(*out)
"""


if __name__ == "__main__":
    sys.exit(main())
