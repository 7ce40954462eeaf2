"""Runtime policy: OpenMP waiters sleep (set before torch loads), device selection with monkeypatched availability."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import runtime

ROOT = Path(__file__).resolve().parent.parent


def test_engine_import_makes_openmp_waiters_sleep_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, engine, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]  # set, and torch (libgomp) not loaded yet
    assert "OpenMP wait" in runtime.machine_note()


def _avail(monkeypatch, cuda=False, mps=False, env=None):
    monkeypatch.setattr(runtime, "cuda_available", lambda: cuda)
    monkeypatch.setattr(runtime, "mps_available", lambda: mps)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    if env is None:
        monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    else:
        monkeypatch.setenv(runtime.DEVICE_ENV, env)


@pytest.mark.parametrize("cuda,mps,want", [(False, False, "cpu"), (True, False, "cuda"), (False, True, "mps"),
                                           (True, True, "cuda")])
def test_best_present_device_is_picked(monkeypatch, cuda, mps, want):
    _avail(monkeypatch, cuda, mps)
    assert runtime.select_device().type == want


def test_env_overrides_and_absent_devices_are_one_line_errors(monkeypatch):
    _avail(monkeypatch, cuda=True, mps=False, env="cpu")
    assert runtime.select_device().type == "cpu"
    _avail(monkeypatch, cuda=True, env=" CUDA ")
    assert runtime.select_device() == torch.device("cuda")
    _avail(monkeypatch, cuda=False, mps=True, env="cuda")
    with pytest.raises(runtime.DeviceSettingError, match=r"DISCOFACE_DEVICE=cuda: .*no CUDA device.*cpu or mps"):
        runtime.select_device()
    _avail(monkeypatch, cuda=False, env="mps")
    with pytest.raises(runtime.DeviceSettingError, match="no Apple MPS device"):
        runtime.select_device()
    _avail(monkeypatch, cuda=True, env="cuda:3")
    with pytest.raises(runtime.DeviceSettingError, match="only 1 CUDA"):
        runtime.select_device()
    for bad in ("gpu", "cpu:1", "cuda:x"):
        _avail(monkeypatch, cuda=True, env=bad)
        with pytest.raises(runtime.DeviceSettingError, match="use one of cpu, cuda, mps"):
            runtime.select_device()
    # an explicit request (a command's --device) wins over the environment
    _avail(monkeypatch, cuda=False, env="cuda")
    assert runtime.select_device("cpu").type == "cpu"
    for e in (runtime.DeviceSettingError("x"),):
        assert isinstance(e, ValueError)  # the CLI prints it as one 'error:' line


def test_device_description(monkeypatch):
    _avail(monkeypatch)
    d = runtime.device_description(torch.device("cpu"))
    assert d.startswith("CPU (") and "DISCOFACE_DEVICE=cpu|cuda|mps overrides" in d
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.device_description(torch.device("cpu")).endswith("set by DISCOFACE_DEVICE=cpu")
    assert "MPS" in runtime.device_description(torch.device("mps"))


def test_usable_threads_are_the_caller_plus_the_idle_cores():
    assert runtime.usable_threads(1, cores=8, load=0.0) == 1
    assert runtime.usable_threads(2, cores=2, load=0.0) == 2  # an idle machine (the caller counts as one busy core)
    assert runtime.usable_threads(2, cores=2, load=1.0) == 2  # only the caller runs
    assert runtime.usable_threads(2, cores=2, load=1.6) == 1  # another job holds the second core
    assert runtime.usable_threads(2, cores=2, load=6.0) == 1
    assert runtime.usable_threads(4, cores=16, load=2.0) == 4
    assert runtime.usable_threads(8, cores=4, load=2.0) == 3
    assert runtime.usable_threads(0, cores=4, load=0.0) == 1
