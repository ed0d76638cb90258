"""Shared pytest fixtures: where the reference fixtures and sample audio live."""

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
