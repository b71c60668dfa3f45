"""Helpers for the controller's integration tests: controller processes, fake agents, polling."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakeagent import FakeAgent

from controller.store import Store
from gantry import procs
from gantry.client import LeaderChannel
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, discovery_pb2, discovery_pb2_grpc, types_pb2

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Ctl:
    name: str
    address: str
    metrics: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    svc: procs.Service | None = None

    def kill9(self) -> None:
        assert self.svc is not None
        os.killpg(self.svc.pid, signal.SIGKILL)
        self.svc.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop(timeout=10)

    def start(self) -> None:
        self.svc = procs.spawn(
            self.name, self.argv, log=self.log, health_url=f"http://{self.metrics}/metrics",
            cwd=ROOT, env=self.env, timeout=30,
        )  # fmt: skip


class Settle:
    """On exit, wait for tasks started inside (grpc.aio ends cancelled calls in its own tasks)."""

    def __init__(self) -> None:
        self._before: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Settle:
        self._before = set(asyncio.all_tasks())
        return self

    async def __aexit__(self, *exc: object) -> None:
        stray = set(asyncio.all_tasks()) - self._before - {asyncio.current_task()}
        if stray:
            await asyncio.wait(stray, timeout=5)


def settled(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run an async test inside `Settle`."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        async with Settle():
            await fn(*args, **kwargs)

    return wrapper


class Fleet:
    """Fake agents and client channels owned by one test; close them before the test ends."""

    def __init__(self) -> None:
        self.agents: list[FakeAgent] = []
        self.channels: list[LeaderChannel] = []
        self._before: set[asyncio.Task[Any]] = set()

    def agent(self, name: str, controllers: list[str], **kw: Any) -> FakeAgent:
        agent = FakeAgent(name, controllers, **kw)
        agent.start()
        self.agents.append(agent)
        return agent

    def client(self, addresses: list[str]) -> LeaderChannel:
        self.channels.append(LeaderChannel(addresses))
        return self.channels[-1]

    async def __aenter__(self) -> Fleet:
        self._before = set(asyncio.all_tasks())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for a in self.agents:
            await a.close()
        for c in self.channels:
            await c.close()
        # grpc.aio finishes cancelled calls in tasks of its own: let them end.
        stray = set(asyncio.all_tasks()) - self._before - {asyncio.current_task()}
        if stray:
            await asyncio.wait(stray, timeout=5)


async def wait_for(
    cond: Callable[[], Awaitable[Any]], *, deadline: float = 30.0, what: str = ""
) -> Any:
    """Poll cond() until it returns something truthy; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while loop.time() < end:
        try:
            last = await cond()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {deadline:.0f}s waiting for {what or cond}: last {last!r}")


def deployment(
    name: str, replicas: int, *, image: str = "busybox", port: int = 8080, host: str = ""
) -> types_pb2.Deployment:
    d = types_pb2.Deployment(api_version="gantry/v1", kind="Deployment")
    d.metadata.name = name
    d.spec.replicas = replicas
    d.spec.template.image = image
    d.spec.template.command.extend(["httpd", "-f", "-p", str(port)])
    d.spec.template.ports.add(name="http", container_port=port)
    d.spec.template.resources.requests.cpu = "100m"
    d.spec.template.resources.requests.memory = "64Mi"
    if host:
        d.spec.route.host = host
    return d


class Api:
    """Cluster calls through a leader-following channel."""

    def __init__(self, chan: LeaderChannel) -> None:
        self.chan = chan

    async def call(self, method: str, request: Any, *, deadline: float = 20.0) -> Any:
        return await self.chan.call(
            lambda ch: getattr(cluster_pb2_grpc.ClusterStub(ch), method)(request, timeout=5),
            deadline=deadline,
        )

    async def apply(self, *deps: types_pb2.Deployment, dry_run: bool = False) -> list[str]:
        resp = await self.call("Apply", cluster_pb2.ApplyRequest(deployments=deps, dry_run=dry_run))
        return [r.action for r in resp.results]

    async def get(self, name: str) -> types_pb2.Deployment:
        return await self.call("Get", cluster_pb2.GetRequest(name=name))

    async def scale(self, name: str, n: int) -> None:
        await self.call("Scale", cluster_pb2.ScaleRequest(name=name, replicas=n))

    async def delete(self, name: str) -> None:
        await self.call("Delete", cluster_pb2.DeleteRequest(kind="deployment", name=name))

    async def replicas(self, deployment: str = "", node: str = "") -> list[types_pb2.Replica]:
        req = cluster_pb2.ListReplicasRequest(deployment=deployment, node=node)
        return list((await self.call("ListReplicas", req)).replicas)

    async def nodes(self) -> dict[str, types_pb2.Node]:
        resp = await self.call("ListNodes", cluster_pb2.ListNodesRequest())
        return {n.name: n for n in resp.nodes}

    async def describe(self, name: str, kind: str = "deployment") -> cluster_pb2.DescribeResponse:
        return await self.call("Describe", cluster_pb2.DescribeRequest(kind=kind, name=name))

    async def nodes_ready(self, n: int) -> bool:
        nodes = await self.nodes()
        return sum(1 for x in nodes.values() if x.status == "Ready") == n

    async def converged(self, name: str, n: int) -> bool:
        """Exactly n replica records, all ready and not draining."""
        reps = await self.replicas(name)
        return len(reps) == n and all(r.ready and not r.draining for r in reps)


async def etcd_snapshot(etcd: str, *prefixes: str) -> dict[str, int]:
    """key -> mod_revision under the prefixes (read with a plain, unfenced store)."""
    store = Store([etcd])
    try:
        out: dict[str, int] = {}
        for prefix in prefixes:
            items, _ = await store.list(prefix)
            out.update({i.key: i.mod_revision for i in items})
        return out
    finally:
        await store.close()


async def endpoint_table(chan: LeaderChannel) -> types_pb2.EndpointTable:
    """One snapshot of the Discovery stream from the leader."""

    async def first(ch: Any) -> types_pb2.EndpointTable:
        stream = discovery_pb2_grpc.DiscoveryStub(ch).Watch(
            discovery_pb2.DiscoveryRequest(proxy_id="test"), timeout=5
        )
        try:
            async for table in stream:
                return table
        finally:
            stream.cancel()
        raise AssertionError("discovery stream ended without a table")

    return await chan.call(first)


async def leader_of(address: str) -> cluster_pb2.LeaderResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await cluster_pb2_grpc.ClusterStub(ch).Leader(cluster_pb2.LeaderRequest(), timeout=2)
