"""The judges' yardsticks (``../shared/tools/judge.py``, beside the data folder): one place that finds and loads them
for every bench (``judge_path()`` to run it as a command, ``load_judge()`` to call its functions)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from engine import config


def judge_path() -> Path:
    return config.data_dir().parent / "tools" / "judge.py"


def load_judge():
    spec = importlib.util.spec_from_file_location("judge", judge_path())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
