"""Fixtures: a busybox lower layer, the core (zygote) and runc, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rtkit import busybox_root, core, runc  # noqa: F401 - shared fixtures

from agent.runtime.core import Core


@pytest.fixture
def cold_core(host_sweep: str, tmp_path: Path) -> Iterator[Core]:
    """The core with no prepared sandboxes: every container is cloned on request."""
    c = Core.prefork(state_dir=tmp_path / "cold-state", prefix=host_sweep, pool_size=0)
    try:
        yield c
    finally:
        c.close()
