"""Fixtures for the proxy's integration tests (helpers live in proxyharness)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proxyharness import Background, Proxy, Servers, launch_proxy


@pytest.fixture
def bg() -> Iterator[Background]:
    loop = Background()
    yield loop
    loop.close()


@pytest.fixture
def servers(bg: Background) -> Servers:
    return Servers(bg)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(controllers: list[str], *, workers: int = 1, **settings: Any) -> Proxy:
        p = launch_proxy(tmp_path, controllers, workers=workers, **settings)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
