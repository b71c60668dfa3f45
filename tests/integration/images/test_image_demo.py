"""The shipped images: ensure_demo_images pushes busybox and hello v1/v2; hello serves HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.images.buildrun import bundle_config
from agent.images.demo import ensure_demo_images, ensure_demo_images_async
from agent.images.service import Images
from agent.images.store import Image

FETCH = """
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
"""


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


class Running:
    """One container of an image in its own netns (named with the test prefix), run by runc."""

    def __init__(self, image: Image, work: Path, name: str, env: list[str]) -> None:
        self.name, self.work = name, work
        self.netns = f"/var/run/netns/{name}"
        merged = work / "rootfs"
        for d in ("upper", "work", "rootfs"):
            (work / d).mkdir(parents=True)
        lower = ":".join(str(p) for p in reversed(image.layer_dirs))
        opts = f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}"
        assert _sh("mount", "-t", "overlay", "overlay", "-o", opts, str(merged)).returncode == 0
        assert _sh("ip", "netns", "add", name).returncode == 0
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        cfg = bundle_config(
            merged, argv=image.argv, env=image.env + env, cwd="/app", uid=0, gid=0, hostname=name
        )
        for ns in cfg["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = self.netns
        (work / "config.json").write_text(json.dumps(cfg))
        with open(work / "out.log", "wb") as out:
            self.proc = subprocess.Popen(
                ["runc", "--root", str(work / "runc"), "run", "--bundle", str(work), name],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET http://127.0.0.1:8080<path> from inside the container's netns."""
        url = f"http://127.0.0.1:8080{path}"
        r = _sh("ip", "netns", "exec", self.name, sys.executable, "-c", FETCH, url)
        if r.returncode != 0:
            return 0, r.stderr.strip()[-200:]
        status, body = json.loads(r.stdout)
        return int(status), str(body)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/healthz")[0] == 200:
                return
            assert self.proc.poll() is None, (self.work / "out.log").read_text()
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready: {(self.work / 'out.log').read_text()}")

    def stop(self) -> None:
        _sh("runc", "--root", str(self.work / "runc"), "kill", self.name, "KILL")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        _sh("runc", "--root", str(self.work / "runc"), "delete", "--force", self.name)
        _sh("umount", str(self.work / "rootfs"))
        _sh("ip", "netns", "del", self.name)


@pytest.fixture
def containers() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for c in started:
        c.stop()


async def test_demo_images_pushed_pulled_and_served(
    registry: str, tmp_path: Path, host_sweep: str, containers: list[Running]
) -> None:
    refs = await ensure_demo_images_async(tmp_path / "build", registry)
    assert refs == [f"{registry}/busybox:latest", f"{registry}/hello:v1", f"{registry}/hello:v2"]
    # Idempotent, and through the launcher's sync entry point.
    assert await asyncio.to_thread(ensure_demo_images, tmp_path / "build", registry) == refs

    async with Images(tmp_path / "node") as node:
        v1 = await node.resolve(f"{registry}/hello:v1")
        v2 = await node.resolve(f"{registry}/hello:v2")
    assert v1.process["ExposedPorts"] == {"8080/tcp": {}}
    assert v1.layer_dirs[0] == v2.layer_dirs[0]  # the busybox layer is shared

    one = Running(v1, tmp_path / "c1", f"{host_sweep}a", [])
    containers.append(one)
    two = Running(v2, tmp_path / "c2", f"{host_sweep}b", ["FAIL_PERCENT=100"])
    containers.append(two)
    await asyncio.to_thread(one.wait_ready)
    await asyncio.to_thread(two.wait_ready)
    status, body = await asyncio.to_thread(one.get, "/")
    assert status == 200 and json.loads(body) == {"version": "v1", "hostname": one.name}
    status, body = await asyncio.to_thread(two.get, "/")
    assert status == 500 and json.loads(body)["version"] == "v2"
    assert (await asyncio.to_thread(two.get, "/healthz")) == (200, "ok\n")
    assert (await asyncio.to_thread(one.get, "/nope"))[0] == 404
