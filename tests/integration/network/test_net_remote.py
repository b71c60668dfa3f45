"""A published port answers clients on other hosts (DNAT on prerouting).

The node is a netlab host (its own network namespace); the agent's side
(Core + NodeNetwork) runs in a child process that joined it, like an agent
on that host. A client in another lab host reaches the container through
the node's LAN address, and no longer once the container is gone.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from gantry import netlab

ROOT = Path(__file__).resolve().parents[3]

NODE = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/tests/integration/runtime")
from rtkit import io_for, make_bundle
from agent.network import NetworkConfig, NodeNetwork, PortMapping
from agent.runtime.core import Core
from agent.runtime.spec import SpecOptions

cfg = json.loads(sys.argv[2])
base, prefix = Path(cfg["base"]), cfg["prefix"]
core = Core.prefork(state_dir=base / "state", prefix=prefix)

async def main():
    net = NodeNetwork(NetworkConfig(state_dir=base / "net", prefix=prefix, subnet=cfg["subnet"],
                                    node_address=cfg["node"]))
    await net.setup()
    try:
        att = await net.attach("web", [PortMapping(cfg["port"], 8080)])
        opts = SpecOptions(args=("httpd", "-f", "-p", "8080", "-h", "/www"), netns_path=att.netns_path,
                           cgroups_path=f"/{prefix}/web")
        bundle = make_bundle(base, "web", Path(cfg["lower"]), opts)
        await core.create("web", bundle, io_for(base, "web"))
        try:
            await core.start("web")
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        finally:
            await core.delete("web", force=True)
            await net.detach("web")
    finally:
        await net.teardown()
    print("gone", flush=True)

try:
    asyncio.run(main())
finally:
    core.close()
"""


def read_line(proc: subprocess.Popen[str], within: float = 60.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], within)
    assert ready, "the node process said nothing"
    return proc.stdout.readline().strip()


def http_get(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def wait_http(host: str, port: int, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        try:
            return http_get(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def refused(host: str, port: int) -> bool:
    try:
        http_get(host, port)
        return False
    except OSError:
        return True


def test_published_port_answers_other_hosts(
    host_sweep: str, tmp_path: Path, busybox_root: Path
) -> None:
    lab = netlab.Lab(host_sweep, ["n1", "c1"]).create()
    try:
        node, port = lab.addresses["n1"], 18080
        cfg = {"base": str(tmp_path), "prefix": host_sweep, "subnet": "10.177.3.0/24", "node": node,
               "port": port, "lower": str(busybox_root)}  # fmt: skip
        proc = lab.popen("n1", [sys.executable, "-c", NODE, str(ROOT), json.dumps(cfg)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        try:
            assert read_line(proc) == "ready"
            reply = netlab.in_netns(lab.ns("c1"), wait_http, node, port)
            assert reply.startswith("HTTP/1.") and "hello from the container" in reply
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            assert read_line(proc) == "gone"
            assert netlab.in_netns(lab.ns("c1"), refused, node, port)
        finally:
            proc.kill()
            proc.wait()
    finally:
        lab.destroy()
