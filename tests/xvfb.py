"""An Xvfb server for the GUI tests and bench/gui_heartbeat.py (one home): started with ``-displayfd`` so the free
display number comes back from the server itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import time


class XvfbError(RuntimeError):
    """Xvfb is missing or did not start; the message says which."""


def start_xvfb(timeout: float = 20.0) -> tuple[subprocess.Popen, str]:
    """(the server process, its DISPLAY string such as ":1")."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise XvfbError("Xvfb binary not found on PATH (tools/test_setup.sh installs xvfb and the xcb libraries)")
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    num = b""
    deadline = time.time() + timeout
    os.set_blocking(r, False)
    while time.time() < deadline and not num.endswith(b"\n"):
        try:
            chunk = os.read(r, 16)
        except BlockingIOError:
            chunk = None
        if chunk:
            num += chunk
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    os.close(r)
    if not num.strip():
        proc.kill()
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        raise XvfbError(f"Xvfb did not start: {err}")
    return proc, f":{num.decode().strip()}"


def stop_xvfb(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
