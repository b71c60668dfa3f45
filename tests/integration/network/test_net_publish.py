"""Published ports, addresses and clean-up of the node network, with real containers."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
from rtkit import io_for, make_bundle

from agent.network import NetworkConfig, NetworkError, NodeNetwork, PortMapping
from agent.runtime.core import Core
from agent.runtime.runc import Runc
from agent.runtime.spec import SpecOptions

SERVE = "ip -4 addr show > /www/addr.txt; ls /sys/class/net > /www/ifaces.txt; exec httpd -f -p 8080 -h /www"


def random_subnet() -> str:
    return f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"


def http_get(host: str, port: int, path: str) -> tuple[int, str]:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


async def get_when_up(host: str, port: int, path: str, within: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.to_thread(http_get, host, port, path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def connect_fails(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def nft_table(prefix: str) -> str:
    return subprocess.run(
        ["nft", "list", "table", "ip", prefix], capture_output=True, text=True
    ).stdout


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_published_port_answers_then_goes_with_the_container(
    which: str,
    core: Core,
    runc: Runc,
    busybox_root: Path,
    tmp_path: Path,
    host_prefix: str,
) -> None:
    rt = core if which == "core" else runc
    subnet = random_subnet()
    net = NodeNetwork(NetworkConfig(state_dir=tmp_path / "net", prefix=host_prefix, subnet=subnet))
    node = net.gateway  # the node's address in this test: the bridge's
    net = NodeNetwork(
        NetworkConfig(
            state_dir=tmp_path / "net", prefix=host_prefix, subnet=subnet, node_address=node
        )
    )
    host_port = random.randint(20000, 29999)
    cid = f"web-{which}"
    await net.setup()
    try:
        att = await net.attach(cid, [PortMapping(host_port, 8080)])
        assert f"tcp . {host_port} : {att.ip} . 8080" in nft_table(host_prefix)
        opts = SpecOptions(
            args=("/bin/sh", "-c", SERVE),
            netns_path=att.netns_path,
            cgroups_path=f"/{host_prefix}/{cid}",
        )
        bundle = make_bundle(tmp_path, cid, busybox_root, opts)
        await rt.create(cid, bundle, io_for(tmp_path, cid))
        try:
            await rt.start(cid)
            status, body = await get_when_up(node, host_port, "/index.html")
            assert (status, body) == (200, "hello from the container\n")
            _, addrs = await get_when_up(node, host_port, "/addr.txt")
            assert f"inet {att.ip}/24" in addrs
            assert node not in addrs  # the container sees its own address, not the node's
            _, ifaces = await get_when_up(node, host_port, "/ifaces.txt")
            assert sorted(ifaces.split()) == ["eth0", "lo"]
        finally:
            await rt.delete(cid, force=True)
        await net.detach(cid)
        assert f"{host_port}" not in nft_table(host_prefix)
        assert await asyncio.to_thread(connect_fails, node, host_port)
        assert net.attachments() == {}
    finally:
        await net.teardown()


async def test_ipam_is_persisted_and_never_hands_out_a_live_address(
    tmp_path: Path, host_sweep: str
) -> None:
    cfg = NetworkConfig(state_dir=tmp_path / "net", prefix=host_sweep, subnet=random_subnet())
    net = NodeNetwork(cfg)
    await net.setup()
    try:
        a = await net.attach("a", [PortMapping(21000, 80)])
        b = await net.attach("b")
        restarted = NodeNetwork(cfg)  # a new agent process over the same state
        c = await restarted.attach("c")
        assert len({a.ip, b.ip, c.ip}) == 3
        assert net.gateway not in {a.ip, b.ip, c.ip}
        with pytest.raises(NetworkError, match="already published by a"):
            await restarted.attach("d", [PortMapping(21000, 80)])
        assert "d" not in restarted.attachments()
        await restarted.detach("a")
        e = await restarted.attach("e")
        assert e.ip not in {b.ip, c.ip}
        assert set(restarted.attachments()) == {"b", "c", "e"}
        assert await restarted.prune({"b"}) == ["c", "e"]
        assert set(restarted.attachments()) == {"b"}
    finally:
        await net.teardown()
    assert net.attachments() == {}
