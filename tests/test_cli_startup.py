"""Start-up of the ``discoface`` command (issue 24, ``bench/startup.py``): what a fresh process does before the
command's own work (engine/startup.py, used by engine/cli/__init__.py and main.py)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# runs engine.cli.main in a fresh process, then reports the collector's state and its passes over the oldest
# generation (a full collection walks every object torch made)
PROBE = """
import gc, sys
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == 'start' and info['generation'] == 2 else None)
from engine.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(rc, gc.isenabled(), gc.get_freeze_count(), len(full), 'torch' in sys.modules)
"""


def probe(*args):
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env={**os.environ, "DISCOFACE_PHOTO_CACHE": "off"})
    rc, enabled, frozen, full, torch = r.stdout.split()
    return int(rc), enabled == "True", int(frozen), int(full), torch == "True"


def test_a_fresh_command_starts_without_full_collections_and_collects_afterwards(tmp_path):
    """In a fresh process ``import torch`` and the engine's imports run with the cyclic collector paused (its full
    passes over torch's ~10^6 objects were ~0.4-0.7 s of CPU of a cached edit, at the import and at exit); the
    objects made by then are frozen (never walked again) and the collector is on again for the command's work."""
    rc, enabled, frozen, full, torch = probe("edit", tmp_path / "missing.jpg", "-o", tmp_path / "out.png")
    assert rc == 2 and torch  # the error comes from the command: torch was imported
    assert enabled  # the command's own work is collected as usual
    assert frozen > 100_000  # torch's objects in the permanent generation
    assert full == 0  # no full collection during the start-up (torch alone made 2-3)
    assert not (tmp_path / "out.png").exists()


def test_a_usage_error_leaves_the_collector_on(tmp_path):
    """argparse's own error (exit 2 before any import of torch): the collector is turned back on."""
    rc, enabled, frozen, _, torch = probe("edit", tmp_path / "a.jpg")  # no -o
    assert rc == 2 and enabled and frozen == 0 and not torch


def test_a_caller_that_imported_torch_keeps_its_collector(tmp_path, monkeypatch):
    """The tests and the editor call ``main`` in a process that already runs: its collector is not touched."""
    import gc

    import torch  # noqa: F401

    from engine import cli

    monkeypatch.setattr(cli, "_run", lambda args, paused=False: (gc.isenabled(), paused))
    before = gc.get_freeze_count()
    assert cli.main(["edit", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "b.png")]) == (True, False)
    assert gc.isenabled() and gc.get_freeze_count() == before


def test_torch_imported_by_the_command_records_the_same_sources_without_reading_them():
    """engine.startup (the command's start) imports torch with ``inspect.getframeinfo`` reading no source lines (torch only keeps the
    ``file:line`` of each custom op's registration): the same ``file:line`` for every op as a plain ``import
    torch``, and the registering files not read into ``linecache`` on the way (torch reads a few others itself)."""
    code = ("import linecache, sys\n{imp}\nfrom torch._library import simple_registry\n"
            "ops = {{k: e.fake_impl.kernel.source for k, e in simple_registry.singleton._data.items() "
            "if e.fake_impl.kernel is not None}}\n"
            "print(repr((ops, sorted(f for f in linecache.cache if 'torch' in f))))")
    out = []
    for imp in ("import torch", "from engine import startup; startup.import_torch()"):
        r = subprocess.run([sys.executable, "-c", code.format(imp=imp)], capture_output=True, text=True, cwd=REPO,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        out.append(eval(r.stdout))
    (plain_ops, plain_read), (cli_ops, cli_read) = out
    assert len(plain_ops) > 50 and cli_ops == plain_ops
    assert set(cli_read) < set(plain_read)
    assert any(f.endswith('custom_ops.py') for f in plain_read)
    import inspect

    assert inspect.getframeinfo.__module__ == "inspect"  # put back


def test_the_quick_module_look_up_gives_inspects_answer_for_every_call_torch_makes():
    """Every ``inspect.getmodule`` call made while engine.cli imports torch (~250: the custom ops' registering
    frames; functions, which ``getmodule`` answers from their ``__module__``) gets the module that
    ``inspect.getmodule`` itself finds, and the frames are answered without it."""
    code = ("import inspect, sys\nfrom engine import startup\nquick = startup._frame_module\nseen = []\n"
            "def checked(full):\n"
            "    fast = quick(lambda o, f=None: seen.append('slow' if type(o).__name__ == 'frame' else 'other') "
            "or full(o, f))\n"
            "    def both(o, f=None):\n"
            "        a = fast(o, f)\n"
            "        seen.append(a is full(o, f))\n"
            "        return a\n"
            "    return both\n"
            "startup._frame_module = checked\nstartup.import_torch()\n"
            "print(seen.count(True), seen.count(False), seen.count('slow'), inspect.getmodule.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    same, different, slow, module = r.stdout.split()
    assert int(same) > 100 and int(different) == 0 and int(slow) < 5
    assert module == "inspect"  # put back


def test_the_editor_starts_the_same_way():
    """main.py's editor branch imports torch, Qt and the editor's modules with the collector paused (no full pass),
    then freezes them and turns the collector back on before the window is built."""
    code = ("import gc, sys\nfull = []\n"
            "gc.callbacks.append(lambda p, i: full.append(1) if p == 'start' and i['generation'] == 2 else None)\n"
            "import main\nrun = main._editor()\n"
            "print(run.__module__, gc.isenabled(), gc.get_freeze_count(), len(full))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    module, enabled, frozen, full = r.stdout.split()
    assert module == "app.main" and enabled == "True" and int(frozen) > 100_000 and int(full) == 0


# a fresh discoface process: an atexit function, and a function the interpreter's own end runs (threading's shutdown,
# the first step of Py_Finalize: concurrent.futures registers its workers' joins there)
ENTRY = """
import atexit, sys, threading
from pathlib import Path
out = Path(sys.argv[1])
atexit.register(lambda: (out / 'atexit').write_text('ran'))
threading._register_atexit(lambda: (out / 'teardown').write_text('ran'))
{before}
sys.stdout.write('no newline at the end')
from engine.cli import entry
entry(sys.argv[2:])
"""


def run_entry(tmp_path, *args, before=""):
    r = subprocess.run([sys.executable, "-c", ENTRY.format(before=before), str(tmp_path), *map(str, args)],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "DISCOFACE_PHOTO_CACHE": "off"})
    return r, {p.name for p in tmp_path.iterdir()}


def test_the_command_ends_without_the_teardown_but_with_its_atexit_work(tmp_path):
    """``discoface`` (engine.cli.entry) ends with os._exit after flushing its output and running the atexit
    functions: the exit status is the command's, the output is all there, the interpreter's tear-down (freeing
    torch's objects one by one: ~0.1 s of CPU) is skipped."""
    r, files = run_entry(tmp_path, "edit", tmp_path / "missing.jpg", "-o", tmp_path / "out.png")
    assert r.returncode == 2 and "error:" in r.stderr and r.stdout == "no newline at the end"
    assert files == {"atexit"}  # no interpreter tear-down
    r, files = run_entry(tmp_path, "--help")
    assert r.returncode == 0 and "compute device" in r.stdout


def test_a_running_thread_gets_the_ordinary_end(tmp_path):
    """Another non-daemon thread still running: the process ends the ordinary way (the interpreter waits for it)."""
    before = ("import threading, time\nimport engine.cli as cli\ncommand = cli.main\n"
              "def main(argv=None):  # the command, then a thread that outlives it\n"
              "    rc = command(argv)\n"
              "    threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('done'))).start()\n"
              "    return rc\n"
              "cli.main = main")
    r, files = run_entry(tmp_path, "edit", tmp_path / "missing.jpg", "-o", tmp_path / "out.png", before=before)
    assert r.returncode == 2 and r.stdout == "no newline at the end"
    assert files == {"atexit", "thread", "teardown"}
