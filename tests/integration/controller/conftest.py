"""Fixtures for the controller's integration tests: controller processes on a real etcd."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctlharness import Ctl

from gantry import procs


@pytest.fixture
def controllers(etcd: str, tmp_path: Path) -> Iterator[Callable[..., Ctl]]:
    started: list[Ctl] = []

    def start(
        name: str = "c1",
        *,
        grace: float = 3.0,
        ttl: int = 5,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Ctl:
        port, mport = procs.free_port(), procs.free_port()
        address, metrics = f"127.0.0.1:{port}", f"127.0.0.1:{mport}"
        argv = [
            sys.executable, "-m", "controller", "--listen", address, "--metrics", metrics,
            "--etcd", etcd, "--id", name, "--node-grace", str(grace), "--leader-ttl", str(ttl),
            "--drain-seconds", "0.5", *(extra or []),
        ]  # fmt: skip
        ctl = Ctl(
            name,
            address,
            metrics,
            argv,
            tmp_path / f"{name}.log",
            env={**os.environ, **(env or {})},
        )
        ctl.start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()
