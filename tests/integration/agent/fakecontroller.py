"""A small grpc.aio controller for agent tests: Nodes + Cluster.Leader.

Records registrations, heartbeats and status reports (with the loop time),
and streams whatever AssignmentSet the test pushes to every Assignments
stream (the current set first, like the real controller).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from gantry import procs
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, nodes_pb2, nodes_pb2_grpc


@dataclass
class Seen:
    at: float
    status: nodes_pb2.ReplicaStatus


@dataclass
class FakeNodes(nodes_pb2_grpc.NodesServicer):
    registers: list[nodes_pb2.RegisterRequest] = field(default_factory=list)
    heartbeats: int = 0
    reports: list[Seen] = field(default_factory=list)
    current: nodes_pb2.AssignmentSet = field(default_factory=nodes_pb2.AssignmentSet)
    known: bool = True
    streams: int = 0
    _changed: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        self.registers.append(request)
        self.known = True
        return nodes_pb2.RegisterResponse(
            node=request.node.name, lease_ttl_seconds=10, heartbeat_interval_seconds=0.5
        )

    async def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        self.heartbeats += 1
        return nodes_pb2.HeartbeatResponse(known=self.known)

    async def ReportStatus(self, request, context):  # type: ignore[no-untyped-def]
        now = asyncio.get_running_loop().time()
        self.reports.extend(Seen(now, s) for s in request.replicas)
        return nodes_pb2.StatusAck()

    async def Assignments(self, request, context) -> AsyncIterator[nodes_pb2.AssignmentSet]:  # type: ignore[no-untyped-def,override]
        self.streams += 1
        cond = self._cond()
        sent = [-1]
        while True:
            async with cond:
                await cond.wait_for(lambda: self.current.version != sent[0])
                aset = self.current
            sent[0] = aset.version
            yield aset

    async def push(self, *assignments: nodes_pb2.Assignment) -> None:
        cond = self._cond()
        async with cond:
            self.current = nodes_pb2.AssignmentSet(
                version=self.current.version + 1, assignments=list(assignments)
            )
            cond.notify_all()

    def latest(self, replica: str, epoch: int | None = None) -> nodes_pb2.ReplicaStatus | None:
        for seen in reversed(self.reports):
            if seen.status.replica == replica and epoch in (None, seen.status.epoch):
                return seen.status
        return None

    def history(self, replica: str, epoch: int | None = None) -> list[Seen]:
        return [
            s
            for s in self.reports
            if s.status.replica == replica and epoch in (None, s.status.epoch)
        ]


class Leader(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, address: str) -> None:
        self.address = address

    async def Leader(self, request, context):  # type: ignore[no-untyped-def]
        return cluster_pb2.LeaderResponse(
            leader_id="fake", leader_address=self.address, is_leader=True
        )


async def start(nodes: FakeNodes) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    nodes_pb2_grpc.add_NodesServicer_to_server(nodes, server)
    # A port below the ephemeral range: a test may bring a server back on it, and
    # meanwhile no outgoing connection (the agent's own reconnects) can take it.
    address = f"127.0.0.1:{procs.free_port()}"
    server.add_insecure_port(address)
    cluster_pb2_grpc.add_ClusterServicer_to_server(Leader(address), server)
    await server.start()
    return server, address
