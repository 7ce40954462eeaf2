"""CI's skip rule, loaded by ``make test`` (``-p tests.skip_policy``): with ``CI`` set, a skipped test fails unless
its reason names a part the README calls optional. A missing data folder, Xvfb or test package must break CI, not
turn most of the suite into quiet skips. Outside CI (a developer without the data) skips stay skips."""
from __future__ import annotations

import os

import pytest

# the only optional part (README): the pytorch3d GPU rasterizer backend (needs pytorch3d and a CUDA device); and
# one check that cannot be made as root (an unwritable folder: root writes anywhere) — not a missing part
ALLOWED_SKIP_REASONS = ("pytorch3d", "root may write anywhere")


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_allowed(reason: str) -> bool:
    return any(word in reason for word in ALLOWED_SKIP_REASONS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not ci_enabled() or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if not skip_allowed(reason):
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, which is not allowed for this reason: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (``pytest.importorskip`` of a missing test package) fails CI too."""
    outcome = yield
    rep = outcome.get_result()
    if not ci_enabled() or not rep.skipped:
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if not skip_allowed(reason):
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, which is not allowed for this reason: {reason}"
