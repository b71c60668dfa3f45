"""The real agent process with the real isolation core, network and image store.

The node is a network namespace (gantry.netlab) with the address 10.213.0.2;
the agent runs in it (`nsenter --net`, so its netns mounts stay visible) and
reaches a fake controller through a unix socket. An assignment runs a busybox
httpd whose published port answers on the node's address; kill -9 of the
agent leaves the container running and the restarted agent adopts it (no
duplicate); removing the assignment stops it and the port stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fakecontroller
import grpc
import pytest

from agent.images.service import Images
from gantry import netlab
from gantry.v1 import cluster_pb2_grpc, nodes_pb2, nodes_pb2_grpc, types_pb2

ROOT = Path(__file__).resolve().parents[3]
NODE_ADDRESS = f"{netlab.LAN_PREFIX}.2"


def make_busybox_root(root: Path) -> Path:
    for d in ("bin", "proc", "dev", "sys", "etc", "tmp", "www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "www" / "index.html").write_text("hello from the container\n")
    return root


async def until(cond: Callable[[], object], limit: float = 60.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"not met before the deadline: {what}")
        await asyncio.sleep(0.05)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return str(resp.read().decode())


async def fetch_in(ns: str, url: str) -> str | None:
    """GET url from inside network namespace `ns`; None when it does not answer."""
    try:
        return await asyncio.to_thread(netlab.in_netns, ns, fetch, url)
    except OSError:
        return None


@contextlib.asynccontextmanager
async def controller(sock: str) -> AsyncIterator[fakecontroller.FakeNodes]:
    nodes = fakecontroller.FakeNodes()
    server = grpc.aio.server()
    nodes_pb2_grpc.add_NodesServicer_to_server(nodes, server)
    cluster_pb2_grpc.add_ClusterServicer_to_server(fakecontroller.Leader(sock), server)
    server.add_insecure_port(sock)
    await server.start()
    try:
        yield nodes
    finally:
        await server.stop(0)


class AgentProcess:
    def __init__(self, ns: str, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-m", "agent", *argv],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait(self, limit: float = 60.0) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), limit)

    def kill(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)


def assignment(replica: str, epoch: int = 1) -> nodes_pb2.Assignment:
    template = types_pb2.PodTemplate(
        image="busybox:latest",
        command=["httpd", "-f", "-p", "8080", "-h", "/www"],
        ports=[types_pb2.ContainerPort(name="http", container_port=8080)],
        readiness_probe=types_pb2.Probe(
            http_get=types_pb2.HTTPGetAction(path="/", port="http"), period_seconds=1
        ),
        liveness_probe=types_pb2.Probe(
            exec=types_pb2.ExecAction(command=["test", "-f", "/www/index.html"]), period_seconds=1
        ),
        resources=types_pb2.Resources(limits=types_pb2.ResourceList(memory="64Mi", cpu="500m")),
        termination_grace_period_seconds=5,
    )
    return nodes_pb2.Assignment(
        replica=replica, deployment="web", template=template, epoch=epoch, desired="run"
    )


@pytest.mark.parametrize("runtime", ["core", "runc"])
async def test_real_container_published_port_and_adoption(
    host_sweep: str, tmp_path: Path, runtime: str
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    prefix = host_sweep
    lab = netlab.Lab(prefix=prefix, hosts=["n1"]).create()
    ns = lab.ns("n1")
    state = tmp_path / "agent"
    sockdir = Path(tempfile.mkdtemp(prefix="gta", dir="/tmp"))
    sock = f"unix:{sockdir}/ctl.sock"
    async with Images(state / "images") as images:
        await images.import_rootfs(make_busybox_root(tmp_path / "rootfs"), "busybox:latest")
    argv = [
        "--controller", sock, "--name", "n1", "--address", NODE_ADDRESS,
        "--listen", f"{NODE_ADDRESS}:0", "--state-dir", str(state),
        "--runtime", runtime, "--prefix", prefix,
    ]  # fmt: skip
    log = tmp_path / "agent.log"
    agents: list[AgentProcess] = []
    try:
        async with controller(sock) as nodes:
            agents.append(AgentProcess(ns, argv, log))
            await until(lambda: nodes.registers, what=f"register; log:\n{log.read_text()}")
            await nodes.push(assignment("web-1"))

            def ready() -> bool:
                s = nodes.latest("web-1")
                return s is not None and s.phase == "Running" and s.ready

            await until(ready, what=f"web-1 ready; log:\n{log.read_text()}")
            status = nodes.latest("web-1")
            assert status is not None and status.ip.startswith("10.88.")
            (port,) = status.ports
            assert port.host_ip == NODE_ADDRESS and port.container_port == 8080
            url = f"http://{NODE_ADDRESS}:{port.host_port}/"
            assert await fetch_in(ns, url) == "hello from the container\n"
            cid = status.container_id
            # The exec liveness probe (test -f /www/index.html) runs inside the
            # container's root: it passes there and would fail on the host.
            metrics_url = nodes.registers[0].node.agent_url + "/metrics"

            async def liveness_checks() -> tuple[float, float]:
                text = await fetch_in(ns, metrics_url) or ""
                return (
                    metric(text, 'gantry_agent_probe_checks_total{kind="exec",probe="liveness"}'),
                    metric(text, 'gantry_agent_probe_failures_total{kind="exec",probe="liveness"}'),
                )

            for _ in range(600):
                checks, failures = await liveness_checks()
                if checks >= 2:
                    break
                await asyncio.sleep(0.1)
            assert checks >= 2 and failures == 0

            # kill -9 of the agent: the container keeps running and answering.
            agents[0].kill(signal.SIGKILL)
            await agents[0].wait()
            assert await fetch_in(ns, url) == "hello from the container\n"

            registers = len(nodes.registers)
            agents.append(AgentProcess(ns, argv, log))
            await until(lambda: len(nodes.registers) > registers, what="register again")
            running = nodes.registers[-1].running
            assert [(r.replica, r.container_id) for r in running] == [("web-1", cid)]
            await until(lambda: nodes.streams >= 2, what="second assignments stream")
            await until(ready, what="adopted replica ready")
            containers = sorted(p.name for p in (state / "runtime" / "containers").iterdir())
            assert containers == [cid]  # adopted, not duplicated
            assert await fetch_in(ns, url) == "hello from the container\n"

            # SIGTERM: the agent exits cleanly and leaves the container running.
            agents[-1].kill(signal.SIGTERM)
            assert await agents[-1].wait() == 0
            assert await fetch_in(ns, url) == "hello from the container\n"
            registers = len(nodes.registers)
            agents.append(AgentProcess(ns, argv, log))
            await until(lambda: len(nodes.registers) > registers, what="third register")
            assert [r.container_id for r in nodes.registers[-1].running] == [cid]
            await until(lambda: nodes.streams >= 3, what="third assignments stream")

            # Unassigned: stopped, cleaned, and the port stops answering.
            await nodes.push()
            await until(
                lambda: (s := nodes.latest("web-1")) is not None and s.phase == "Stopped",
                what="stopped",
            )
            assert await fetch_in(ns, url) is None
            assert list((state / "runtime" / "containers").iterdir()) == []
            agents[-1].kill(signal.SIGTERM)
            assert await agents[-1].wait() == 0
    finally:
        for a in agents:
            a.kill(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await a.wait(10)
        lab.destroy()
        shutil.rmtree(sockdir, ignore_errors=True)
