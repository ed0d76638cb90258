"""Shared pytest fixtures (where the reference fixtures and sample audio live), and CI's rule on skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$SGIM_SHARED_DIR`` or ``<repo>/../shared`` (where CI puts it)."""
    return Path(os.environ.get("SGIM_SHARED_DIR", REPO_ROOT.parent / "shared"))


def running_in_ci() -> bool:
    """CI services set ``CI=true``; there a missing fixture folder is a broken checkout, not a reason to skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def ci_skip_verdict(is_integration: bool, allowed_reason: str | None, skip_reason: str) -> str | None:
    """Under CI=true a skipped integration test is a failure (the server and browser tests gate every
    landing), unless the test states why it may skip with ``@pytest.mark.may_skip_in_ci(reason=...)``.
    Returns the failure message, or None when the skip stands."""
    if not running_in_ci() or not is_integration or (allowed_reason or "").strip():
        return None
    return (f"integration test skipped under CI=true ({skip_reason}); CI must run it: provide what it needs, "
            "or mark it @pytest.mark.may_skip_in_ci(reason=...) saying why it may skip")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):  # xfail keeps its own meaning
        return
    allowed = item.get_closest_marker("may_skip_in_ci")
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    verdict = ci_skip_verdict(item.get_closest_marker("integration") is not None,
                              allowed.kwargs.get("reason", allowed.args[0] if allowed.args else None) if allowed else None,
                              reason)
    if verdict is not None:
        report.outcome = "failed"
        report.longrepr = verdict


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "fixtures").is_dir():
        message = f"reference fixtures not found at {path} (set SGIM_SHARED_DIR)"
        if running_in_ci():
            pytest.fail(f"{message}; CI=true, so this fails instead of skipping", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def fixtures_dir(shared: Path) -> Path:
    return shared / "fixtures"


@pytest.fixture(scope="session")
def audio_dir(shared: Path) -> Path:
    return shared / "audio"


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: threads gain nothing there, and on a busy 2-core machine they lose
    up to 10x to contention. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
