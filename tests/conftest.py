"""Shared fixtures: private etcd and registry, host clean-up, leaked tasks.

Every fixture that starts something stops it, and every test that creates
host objects (netns, links, nft tables, cgroups, mounts) names them with its
own `host_prefix` so the `host_sweep` teardown removes them even on failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gantry import hostclean, procs

ROOT = Path(__file__).resolve().parent.parent


# Tests that fork the isolation core's zygote inside the pytest process. Forking
# a process in which gRPC (or any library) already runs threads can deadlock the
# child, so these run first, before any other test has started a thread.
FORKS_IN_PROCESS = ("tests/integration/runtime/", "tests/integration/network/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not any(d in str(item.path) for d in FORKS_IN_PROCESS))
    for item in items:
        tier = next(
            (p for p in ("unit", "integration", "e2e") if f"tests/{p}/" in str(item.path)), None
        )
        if tier and not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            item.fixturenames.append("no_leaked_tasks")


@pytest.fixture
async def no_leaked_tasks() -> object:
    """Fail an async test that leaves asyncio tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")


@pytest.fixture
def host_prefix() -> str:
    """A short unique prefix for every host object a test creates (<= 8 chars)."""
    return "gt" + secrets.token_hex(3)


@pytest.fixture
def host_sweep(host_prefix: str, tmp_path: Path) -> Iterator[str]:
    """Yields the test's prefix; afterwards removes all it created, even on failure."""
    yield host_prefix
    result = hostclean.sweep(host_prefix, state_dir=tmp_path)
    assert not result.left, f"could not remove: {result.left}"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")


@pytest.fixture
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private etcd on free loopback ports; yields 'host:port'."""
    svc = procs.start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield svc.extra["endpoint"]
    finally:
        svc.stop()


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private OCI registry (docker-registry) on a free port; yields 'host:port'."""
    svc = procs.start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield svc.extra["endpoint"]
    finally:
        svc.stop()
