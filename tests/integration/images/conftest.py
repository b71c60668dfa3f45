"""Fixtures for image tests: a store and a busybox base image."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.images.demo import BUSYBOX_CONFIG, make_busybox_rootfs
from agent.images.service import Images
from gantry import hostclean

BUILD_PREFIX = "gantry-build"  # RUN steps' containers live under /<this>/<id> cgroups


@pytest.fixture(autouse=True, scope="module")
def no_build_cgroups_left() -> Iterator[None]:
    """RUN steps remove their own cgroups; the runtime leaves the parent, as Docker
    leaves /docker. Remove it after the module and fail if anything else is left."""
    yield
    hostclean.sweep(BUILD_PREFIX)
    assert hostclean.leftovers(BUILD_PREFIX) == []


@pytest.fixture
async def images(tmp_path: Path) -> AsyncIterator[Images]:
    async with Images(tmp_path / "store") as im:
        yield im


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busybox-rootfs")
    make_busybox_rootfs(root)
    return root


@pytest.fixture
async def busybox(images: Images, busybox_rootfs: Path) -> str:
    """busybox:latest imported into the test's store."""
    await images.import_rootfs(busybox_rootfs, "busybox:latest", config=BUSYBOX_CONFIG)
    return "busybox:latest"
