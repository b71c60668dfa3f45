"""A fake node agent for testing the controller: a small gRPC client, no containers.

It registers, heartbeats from its own asyncio loop, consumes its assignment
stream and reports every assigned replica Running and ready on a made-up
host port (draining ones it reports Stopped). `pause()` silences it
completely (a lost machine); `resume()` brings it back with the replicas it
still "runs". `busy(n)` adds n CPU-burning threads to its process.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence

import grpc

from gantry.client import LeaderChannel
from gantry.v1 import nodes_pb2, nodes_pb2_grpc, types_pb2

_ports = itertools.count(20000)


class FakeAgent:
    def __init__(
        self,
        name: str,
        controllers: Sequence[str],
        *,
        cpu_millis: int = 4000,
        memory_bytes: int = 8 * 2**30,
        labels: dict[str, str] | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.chan = LeaderChannel(controllers, call_timeout=2.0)
        self.node = types_pb2.Node(
            name=name,
            address=address,
            capacity=types_pb2.Capacity(cpu_millis=cpu_millis, memory_bytes=memory_bytes, pods=110),
            labels=labels or {},
            agent_url=f"http://{address}:1/{name}",
        )
        self.running: dict[str, nodes_pb2.ReplicaStatus] = {}
        self.assigned: set[str] = set()
        self.assignment_sets = 0
        self.registrations = 0
        self.heartbeats = 0
        self._task: asyncio.Task[None] | None = None
        self._stop_busy = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"fake-agent-{self.name}")

    async def pause(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def resume(self) -> None:
        self.start()

    async def close(self) -> None:
        await self.pause()
        self._stop_busy.set()
        for t in self._threads:
            t.join(timeout=5)
        await self.chan.close()

    def busy(self, threads: int) -> None:
        def burn() -> None:
            x = 0
            while not self._stop_busy.is_set():
                x = (x * 31 + 7) % 1000003

        for i in range(threads):
            t = threading.Thread(target=burn, name=f"busy-{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    async def _run(self) -> None:
        while True:
            try:
                address = await self.chan.find_leader(deadline=30.0)
                await self._session(nodes_pb2_grpc.NodesStub(self.chan.channel(address)))
            except (grpc.aio.AioRpcError, Exception):  # noqa: BLE001 - reconnect on anything
                self.chan._leader = None
            await asyncio.sleep(0.2)

    async def _session(self, stub: nodes_pb2_grpc.NodesStub) -> None:
        resp = await stub.Register(
            nodes_pb2.RegisterRequest(node=self.node, running=list(self.running.values())),
            timeout=5,
        )
        self.registrations += 1
        interval = resp.heartbeat_interval_seconds or 1.0
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._heartbeat(stub, interval), name=f"fake-hb-{self.name}")
            tg.create_task(self._assignments(stub), name=f"fake-as-{self.name}")

    async def _heartbeat(self, stub: nodes_pb2_grpc.NodesStub, interval: float) -> None:
        while True:
            resp = await stub.Heartbeat(nodes_pb2.HeartbeatRequest(node=self.name), timeout=2)
            if not resp.known:
                raise RuntimeError("controller forgot us: register again")
            self.heartbeats += 1
            await asyncio.sleep(interval)

    async def _assignments(self, stub: nodes_pb2_grpc.NodesStub) -> None:
        async for aset in stub.Assignments(nodes_pb2.AssignmentsRequest(node=self.name)):
            self.assignment_sets += 1
            self.assigned = {a.replica for a in aset.assignments}
            report = []
            for a in aset.assignments:
                if a.desired == "drain":
                    self.running.pop(a.replica, None)
                    report.append(
                        nodes_pb2.ReplicaStatus(
                            replica=a.replica,
                            deployment=a.deployment,
                            epoch=a.epoch,
                            phase="Stopped",
                        )
                    )
                    continue
                if a.replica not in self.running:
                    port = a.template.ports[0].container_port if a.template.ports else 8080
                    self.running[a.replica] = nodes_pb2.ReplicaStatus(
                        replica=a.replica, deployment=a.deployment, epoch=a.epoch, phase="Running",
                        ready=True, ip="10.0.0.2",
                        ports=[types_pb2.PortBinding(container_port=port, host_port=next(_ports))],
                    )  # fmt: skip
                    report.append(self.running[a.replica])
            for gone in set(self.running) - self.assigned:
                del self.running[gone]
            if report:
                await stub.ReportStatus(
                    nodes_pb2.StatusReport(node=self.name, replicas=report), timeout=5
                )
