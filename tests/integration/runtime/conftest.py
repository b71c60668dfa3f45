"""Fixtures: a busybox lower layer, the core (zygote) and runc, per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rtkit import make_busybox_root

from agent.runtime.core import Core
from agent.runtime.runc import Runc


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("runtime tests need root (CI runs as root)")
    return make_busybox_root(tmp_path_factory.mktemp("busybox") / "root")


@pytest.fixture
def core(host_sweep: str, tmp_path: Path) -> Iterator[Core]:
    c = Core.prefork(state_dir=tmp_path / "core-state", prefix=host_sweep)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def runc(host_sweep: str, tmp_path: Path) -> Runc:
    return Runc(state_dir=tmp_path / "runc-state", prefix=host_sweep)


@pytest.fixture
def cold_core(host_sweep: str, tmp_path: Path) -> Iterator[Core]:
    """The core with no prepared sandboxes: every container is cloned on request."""
    c = Core.prefork(state_dir=tmp_path / "cold-state", prefix=host_sweep, pool_size=0)
    try:
        yield c
    finally:
        c.close()
