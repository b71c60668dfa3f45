"""Shared helpers for runtime and network integration tests: busybox bundles."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.runtime.base import ContainerIO, Runtime
from agent.runtime.core import Core
from agent.runtime.runc import Runc
from agent.runtime.spec import Overlay, SpecOptions, build_spec, write_bundle

BUSYBOX = Path("/bin/busybox")


def make_busybox_root(root: Path) -> Path:
    """A busybox-static root file system (the lower layer of every test bundle)."""
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "dev",
        "sys",
        "etc",
        "tmp",
        "mnt",
        "www",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s"], check=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"
    )
    (root / "www" / "index.html").write_text("hello from the container\n")
    return root


def make_bundle(base: Path, name: str, lower: Path, opts: SpecOptions) -> Path:
    """A bundle whose root is an overlay of `lower` with its own upper/work dirs."""
    upper, work = base / f"{name}-upper", base / f"{name}-work"
    upper.mkdir(parents=True)
    work.mkdir(parents=True)
    opts = replace(opts, overlay=Overlay(lower=(str(lower),), upper=str(upper), work=str(work)))
    return write_bundle(base / f"{name}-bundle", build_spec(opts))


def io_for(base: Path, name: str) -> ContainerIO:
    return ContainerIO(stdout=base / f"{name}.out", stderr=base / f"{name}.err")


async def run_capture(rt: Runtime, cid: str, bundle: Path, io: ContainerIO) -> tuple[int, str, str]:
    """Run to completion; returns (exit code, stdout, stderr). Always deletes."""
    try:
        code = await asyncio.wait_for(rt.run(cid, bundle, io), timeout=60)
    finally:
        await rt.delete(cid, force=True)
    assert io.stdout is not None and io.stderr is not None
    return code, io.stdout.read_text(), io.stderr.read_text()


def read_or_empty(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_text(path: Path, text: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    got = ""
    while time.monotonic() < deadline:
        got = read_or_empty(path)
        if text in got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} did not appear in {path} within {within}s: {got!r}")


def parse_kv(out: str) -> dict[str, str]:
    kv = {}
    for line in out.splitlines():
        if "=" in line:
            k, _, v = line.partition("=")
            kv[k.strip()] = v.strip()
        elif ":" in line:
            k, _, v = line.partition(":")
            kv[k.strip()] = v.strip()
    return kv


# ---- fixtures shared by the runtime and network tests (their conftests import them)


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("runtime and network tests need root (CI runs as root)")
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
