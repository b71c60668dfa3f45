"""Fixtures for network tests: the runtime tests' busybox root, core and runc."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))

from rtkit import make_busybox_root  # noqa: E402

from agent.runtime.core import Core  # noqa: E402
from agent.runtime.runc import Runc  # noqa: E402


@pytest.fixture(scope="session")
def net_busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("network tests need root (CI runs as root)")
    return make_busybox_root(tmp_path_factory.mktemp("netbusybox") / "root")


@pytest.fixture
def net_core(host_sweep: str, tmp_path: Path) -> Iterator[Core]:
    c = Core.prefork(state_dir=tmp_path / "core-state", prefix=host_sweep)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def net_runc(host_sweep: str, tmp_path: Path) -> Runc:
    return Runc(state_dir=tmp_path / "runc-state", prefix=host_sweep)
