"""The agent against a fake controller (real gRPC) and the fake runtime.

Shows: register with capacity, assignment -> start -> ready report with host
ports, drain -> SIGTERM only after the drain delay -> SIGKILL after the grace
period, restart with backoff after an exit, a newer epoch stops the older
one, adoption after the agent's restart (no duplicate), and the HTTP
endpoints (/metrics, /healthz, /logs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import fakecontroller
import grpc
import pytest

from agent import http
from agent.agent import Agent, container_id_for
from agent.fakes import FakeProvisioner, FakeRuntime
from agent.settings import AgentSettings
from gantry.v1 import nodes_pb2, types_pb2

PREFIX = "gtfake"


async def until(cond: Callable[[], object], limit: float = 30.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"not met before the deadline: {what}")
        await asyncio.sleep(0.02)


@dataclass
class Node:
    agent: Agent
    runtime: FakeRuntime
    provisioner: FakeProvisioner
    stop: asyncio.Event
    task: asyncio.Task[None]
    runner: object
    url: str

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        await self.runner.cleanup()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def fake_controller() -> AsyncIterator[tuple[fakecontroller.FakeNodes, str]]:
    """Started and stopped inside the test (grpc's tasks must not outlive it)."""
    nodes = fakecontroller.FakeNodes()
    server, address = await fakecontroller.start(nodes)
    try:
        yield nodes, address
    finally:
        await server.stop(0)


def settings_for(address: str, state_dir: Path, **kw: object) -> AgentSettings:
    return AgentSettings(
        controller=(address,),
        name="node-a",
        address="127.0.0.2",
        state_dir=state_dir,
        prefix=PREFIX,
        backoff_base=0.3,
        backoff_cap=1.0,
        **kw,  # type: ignore[arg-type]
    )


async def start_node(
    settings: AgentSettings, runtime: FakeRuntime, provisioner: FakeProvisioner
) -> Node:
    agent = Agent(settings, runtime=runtime, provisioner=provisioner)
    runner, port = await http.start(agent, "127.0.0.1", 0)
    agent.bound_port = port
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="test:agent")
    return Node(agent, runtime, provisioner, stop, task, runner, f"http://127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def env(tmp_path: Path, **kw: object) -> AsyncIterator[tuple[fakecontroller.FakeNodes, Node]]:
    """A fake controller and an agent on the fake runtime, both stopped at the end."""
    async with fake_controller() as (nodes, address):
        n = await start_node(
            settings_for(address, tmp_path / "agent", **kw),
            FakeRuntime(ignore_term={"stubborn"}),
            FakeProvisioner(tmp_path / "bundles"),
        )
        try:
            yield nodes, n
        finally:
            await n.close()


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 standing in for the container's port."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def assignment(
    replica: str,
    *,
    epoch: int = 1,
    port: int = 8080,
    probe: bool = True,
    policy: str = "Always",
    grace: int = 2,
    desired: str = "run",
    drain: float = 0.0,
) -> nodes_pb2.Assignment:
    template = types_pb2.PodTemplate(
        image="busybox:latest",
        command=["httpd", "-f"],
        ports=[types_pb2.ContainerPort(name="http", container_port=port)],
        restart_policy=policy,
        termination_grace_period_seconds=grace,
    )
    if probe:
        template.readiness_probe.CopyFrom(
            types_pb2.Probe(tcp_socket=types_pb2.TCPSocketAction(port="http"), period_seconds=1)
        )
    return nodes_pb2.Assignment(
        replica=replica,
        deployment="web",
        template=template,
        epoch=epoch,
        track="stable",
        revision=1,
        desired=desired,
        drain_seconds=drain,
    )


def ready(nodes: fakecontroller.FakeNodes, replica: str, epoch: int | None = None) -> bool:
    s = nodes.latest(replica, epoch)
    return s is not None and s.phase == "Running" and s.ready


async def test_register_assign_start_ready(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        await until(lambda: nodes.registers, what="register")
        reg = nodes.registers[0].node
        assert reg.name == "node-a" and reg.address == "127.0.0.2"
        assert reg.capacity.cpu_millis > 0 and reg.capacity.memory_bytes > 0
        assert reg.agent_url == node.url.replace("127.0.0.1", "127.0.0.2")
        await until(lambda: nodes.heartbeats >= 2, what="heartbeats")

        await nodes.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes, "web-1"), what="web-1 ready")
        s = nodes.latest("web-1")
        assert s is not None
        assert s.ip == "127.0.0.1" and s.container_id == container_id_for(PREFIX, "web-1", 1)
        assert [(p.container_port, p.host_port, p.host_ip) for p in s.ports] == [
            (listener, 31000, "127.0.0.2")
        ]
        phases = [seen.status.phase for seen in nodes.history("web-1")]
        assert phases[0] == "Starting" and "Running" in phases
        assert node.provisioner.pulls == ["busybox:latest"]

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{node.url}/metrics") as resp:
                text = await resp.text()
            assert 'gantry_agent_containers{phase="Running"} 1.0' in text
            assert "gantry_agent_container_start_seconds_count 1.0" in text
            async with session.get(f"{node.url}/healthz") as resp:
                health = await resp.json()
            assert health["registered"] and health["replicas"] == 1
            async with session.get(f"{node.url}/logs/web-1?tail=5") as resp:
                assert resp.status == 200
                assert "started gtfake-web-1-1" in await resp.text()
            async with session.get(f"{node.url}/logs/nope") as resp:
                assert resp.status == 404 and "nope" in await resp.text()
            async with session.get(f"{node.url}/logs/web-1?tail=x") as resp:
                assert resp.status == 400


async def test_readiness_failure_reports_unready(tmp_path: Path) -> None:
    async with env(tmp_path) as (nodes, node):
        closed_port = 1  # nothing listens on 127.0.0.1:1
        await nodes.push(assignment("web-1", port=closed_port))
        await until(lambda: (s := nodes.latest("web-1")) is not None and s.phase == "Running")
        await until(
            lambda: node.agent.metrics.probe_failures.labels("readiness", "tcp")._value.get() >= 1
        )
        s = nodes.latest("web-1")
        assert s is not None and not s.ready


async def test_drain_then_term_then_kill(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        a = assignment("stubborn-1", port=listener, grace=1)
        await nodes.push(a)
        await until(lambda: ready(nodes, "stubborn-1"), what="ready")
        cid = container_id_for(PREFIX, "stubborn-1", 1)
        loop = asyncio.get_running_loop()
        drain_began = loop.time()
        await nodes.push(
            assignment("stubborn-1", port=listener, grace=1, desired="drain", drain=2.0)
        )
        await until(lambda: (s := nodes.latest("stubborn-1")) is not None and s.phase == "Stopped")
        unready = next(
            x for x in nodes.history("stubborn-1") if not x.status.ready and x.at > drain_began
        )
        calls = {
            c.verb if c.arg is None else f"{c.verb}:{c.arg}": c.at
            for c in node.runtime.calls
            if c.container_id == cid
        }
        assert node.runtime.verbs(cid)[-3:] == ["kill:SIGTERM", "kill:SIGKILL", "delete"]
        # The unready report went out before SIGTERM, and SIGTERM waited for the drain.
        assert unready.at <= calls["kill:SIGTERM"]
        assert calls["kill:SIGTERM"] - drain_began >= 2.0
        # SIGKILL only after the grace period.
        assert calls["kill:SIGKILL"] - calls["kill:SIGTERM"] >= 1.0
        assert cid in node.provisioner.released
        await until(lambda: cid not in node.agent.workers, what="worker dropped")


async def test_removed_replica_stops_gracefully(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        await nodes.push(assignment("web-1", port=listener), assignment("web-2", port=listener))
        await until(lambda: ready(nodes, "web-1") and ready(nodes, "web-2"))
        await nodes.push(assignment("web-1", port=listener))  # scale down: web-2 removed
        await until(lambda: (s := nodes.latest("web-2")) is not None and s.phase == "Stopped")
        cid2 = container_id_for(PREFIX, "web-2", 1)
        assert node.runtime.verbs(cid2)[-2:] == ["kill:SIGTERM", "delete"]
        assert node.runtime.running() == [container_id_for(PREFIX, "web-1", 1)]


async def test_restart_with_backoff(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        await nodes.push(assignment("web-1", port=listener, probe=False))
        cid = container_id_for(PREFIX, "web-1", 1)
        await until(lambda: ready(nodes, "web-1"))
        for restarts in (1, 2, 3):
            await until(lambda: cid in node.runtime.running(), what="running")
            node.runtime.exit(cid, 1)
            await until(
                lambda r=restarts: (
                    (s := nodes.latest("web-1")) is not None
                    and s.restarts == r
                    and s.phase == "Running"
                ),
                what=f"restart {restarts}",
            )
        starts = [c.at for c in node.runtime.calls if c.container_id == cid and c.verb == "start"]
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert len(gaps) == 3
        # backoff 0.3, 0.6, 1.0 (capped) after each exit
        assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[2] >= 1.0
        reasons = {x.status.reason for x in nodes.history("web-1")}
        assert "CrashLoopBackOff" in reasons
        assert node.agent.metrics.restarts._value.get() == 3


async def test_never_policy_reports_failed(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        await nodes.push(assignment("job-1", port=listener, probe=False, policy="Never"))
        cid = container_id_for(PREFIX, "job-1", 1)
        await until(lambda: cid in node.runtime.running())
        node.runtime.exit(cid, 3)
        await until(lambda: (s := nodes.latest("job-1")) is not None and s.phase == "Failed")
        s = nodes.latest("job-1")
        assert s is not None and s.exit_code == 3 and s.restarts == 0


async def test_newer_epoch_stops_the_older(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path) as (nodes, node):
        await nodes.push(assignment("web-1", epoch=1, port=listener))
        await until(lambda: ready(nodes, "web-1", 1))
        await nodes.push(assignment("web-1", epoch=2, port=listener))
        await until(lambda: ready(nodes, "web-1", 2), what="epoch 2 ready")
        await until(lambda: (s := nodes.latest("web-1", 1)) is not None and s.phase == "Stopped")
        old, new = (container_id_for(PREFIX, "web-1", e) for e in (1, 2))
        assert node.runtime.verbs(old)[-2:] == ["kill:SIGTERM", "delete"]
        assert node.runtime.running() == [new]
        # A set that still names the old epoch (a stale controller) does not start it again.
        await nodes.push(
            assignment("web-1", epoch=1, port=listener), assignment("web-1", epoch=2, port=listener)
        )
        await until(lambda: node.agent.assignment_version == nodes.current.version)
        assert node.runtime.running() == [new]
        assert node.runtime.verbs(old).count("create") == 1


async def test_adopts_running_containers_after_restart(tmp_path: Path, listener: int) -> None:
    async with fake_controller() as (nodes, address):
        runtime = FakeRuntime()
        settings = settings_for(address, tmp_path / "agent")
        first = await start_node(settings, runtime, FakeProvisioner(tmp_path / "b"))
        await nodes.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes, "web-1"))
        await first.close()  # the agent goes away; the container stays
        cid = container_id_for(PREFIX, "web-1", 1)
        assert runtime.running() == [cid]

        registers = len(nodes.registers)
        second = await start_node(
            settings, runtime, FakeProvisioner(tmp_path / "b", first_port=32000)
        )
        try:
            await until(lambda: len(nodes.registers) > registers, what="re-register")
            running = nodes.registers[-1].running
            assert [(r.replica, r.epoch, r.container_id) for r in running] == [("web-1", 1, cid)]
            assert [p.host_port for p in running[0].ports] == [31000]
            await until(lambda: second.agent.assignment_version == nodes.current.version)
            await until(lambda: ready(nodes, "web-1"))
            assert runtime.verbs(cid).count("create") == 1  # no duplicate
            assert runtime.running() == [cid]
            # It still stops it properly once unassigned.
            await nodes.push()
            await until(lambda: runtime.running() == [])
            assert runtime.verbs(cid)[-2:] == ["kill:SIGTERM", "delete"]
        finally:
            await second.close()


async def test_stale_state_without_container_is_cleaned(tmp_path: Path, listener: int) -> None:
    async with fake_controller() as (nodes, address):
        runtime = FakeRuntime()
        settings = settings_for(address, tmp_path / "agent")
        first = await start_node(settings, runtime, FakeProvisioner(tmp_path / "b"))
        await nodes.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes, "web-1"))
        await first.close()
        cid = container_id_for(PREFIX, "web-1", 1)
        await runtime.delete(cid, force=True)  # the container died while no agent ran
        prov = FakeProvisioner(tmp_path / "b")
        second = await start_node(settings, runtime, prov)
        try:
            await until(lambda: len(nodes.registers) >= 2)
            assert list(nodes.registers[-1].running) == []
            assert cid in prov.released
            # The controller still assigns it: a fresh container starts.
            await until(lambda: runtime.running() == [cid])
        finally:
            await second.close()


async def test_stop_containers_on_exit(tmp_path: Path, listener: int) -> None:
    async with fake_controller() as (nodes, address):
        runtime = FakeRuntime()
        settings = settings_for(address, tmp_path / "agent", stop_containers_on_exit=True)
        n = await start_node(settings, runtime, FakeProvisioner(tmp_path / "b"))
        await nodes.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes, "web-1"))
        await n.close()
        assert runtime.running() == []
        assert runtime.verbs()[-2:] == ["kill:SIGTERM", "delete"]


async def test_reregisters_when_controller_forgets(tmp_path: Path) -> None:
    async with env(tmp_path) as (nodes, node):
        await until(lambda: len(nodes.registers) == 1)
        nodes.known = False
        await until(lambda: len(nodes.registers) == 2, what="register again")


async def test_follows_a_new_controller(tmp_path: Path, listener: int) -> None:
    nodes_a = fakecontroller.FakeNodes()
    server_a, address_a = await fakecontroller.start(nodes_a)
    n = await start_node(
        settings_for(address_a, tmp_path / "agent"), FakeRuntime(), FakeProvisioner(tmp_path / "b")
    )
    try:
        await nodes_a.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes_a, "web-1"))
        await server_a.stop(0)
        # The same address comes back (a restarted controller) with the same set.
        nodes_b = fakecontroller.FakeNodes()
        server_b = grpc.aio.server()
        fakecontroller.nodes_pb2_grpc.add_NodesServicer_to_server(nodes_b, server_b)
        fakecontroller.cluster_pb2_grpc.add_ClusterServicer_to_server(
            fakecontroller.Leader(address_a), server_b
        )
        server_b.add_insecure_port(address_a)
        await server_b.start()
        try:
            await nodes_b.push(assignment("web-1", port=listener))
            await until(lambda: nodes_b.streams >= 1, what="stream to the new controller")
            await until(lambda: nodes_b.heartbeats >= 1)
            assert n.runtime.verbs(container_id_for(PREFIX, "web-1", 1)).count("create") == 1
        finally:
            await server_b.stop(0)
    finally:
        await n.close()


async def test_drain_of_unknown_replica_reports_stopped(tmp_path: Path) -> None:
    async with env(tmp_path) as (nodes, node):
        # e.g. the agent stopped it, then restarted before its report went out
        await nodes.push(assignment("gone-1", desired="drain", drain=5))
        await until(lambda: (s := nodes.latest("gone-1")) is not None and s.phase == "Stopped")
        assert node.runtime.calls == []


async def test_heartbeats_continue_while_a_pull_is_slow(tmp_path: Path, listener: int) -> None:
    async with fake_controller() as (nodes, address):
        gate = asyncio.Event()
        prov = FakeProvisioner(tmp_path / "b", pull_gate=gate)
        n = await start_node(settings_for(address, tmp_path / "agent"), FakeRuntime(), prov)
        try:
            await nodes.push(assignment("web-1", port=listener))
            await until(lambda: prov.pulls, what="pull began")
            beats = nodes.heartbeats
            await until(lambda: nodes.heartbeats >= beats + 3, what="heartbeats during the pull")
            s = nodes.latest("web-1")
            assert s is not None and s.phase == "Starting" and s.reason == "Pulling"
            gate.set()
            await until(lambda: ready(nodes, "web-1"))
        finally:
            gate.set()
            await n.close()


async def test_pull_failure_backs_off_and_reports_why(tmp_path: Path, listener: int) -> None:
    async with fake_controller() as (nodes, address):
        prov = FakeProvisioner(tmp_path / "b", missing_images={"busybox:latest"})
        n = await start_node(settings_for(address, tmp_path / "agent"), FakeRuntime(), prov)
        try:
            await nodes.push(assignment("web-1", port=listener))
            await until(lambda: len(prov.pulls) >= 2, what="pull retried")
            s = nodes.latest("web-1")
            assert s is not None and s.phase == "Starting" and s.reason == "ImagePullBackOff"
            assert "not found in the registry" in s.message
            prov.missing_images.clear()
            await until(lambda: ready(nodes, "web-1"))
        finally:
            await n.close()


async def test_agent_caps_log_files(tmp_path: Path, listener: int) -> None:
    async with env(tmp_path, log_max_bytes=64) as (nodes, node):
        await nodes.push(assignment("web-1", port=listener))
        await until(lambda: ready(nodes, "web-1"))
        path = node.agent.logs.path("web-1")
        with path.open("ab") as f:
            f.write(b"x" * 200 + b"\n")
        await until(lambda: path.stat().st_size == 0, what="rotated")
        assert node.agent.logs.old_path("web-1").stat().st_size > 200
