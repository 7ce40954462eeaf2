"""DiscoFace engine: face model, renderer, perception, generator, session. No Qt imports here."""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP threads that spin while they wait for each other turn two torch threads on two busy cores into ~15x the CPU
# and 10-30x the wall time of one thread (bench/photo_latency.py, issue 24); sleeping waiters cost nothing measurable
# on an idle machine. libgomp reads this once, when torch loads it: hence here, at the first engine import.
TORCH_LOADED_FIRST = "torch" in _sys.modules
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
