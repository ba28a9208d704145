"""Markers of the chaos tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml: only tests/chaos uses it.
    config.addinivalue_line(
        "markers", "slow: runs real chaos suites in subprocesses (tens of seconds)"
    )
