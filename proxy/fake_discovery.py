"""A small stand-in for the controller's Discovery service (tests and benchmarks).

Serves `Discovery.Watch` from a grpc.aio server on a loopback port: every
watcher gets the current table at once and each new one `publish` sets. As a
standby (`leader=` set) it refuses with FAILED_PRECONDITION
`not leader; leader=host:port`, like a real standby controller. It exists to
test the proxy against, not to replace the controller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from gantry.client import not_leader_details
from gantry.v1 import discovery_pb2_grpc, types_pb2


def endpoint_table(version: int, routes: list[dict[str, Any]]) -> types_pb2.EndpointTable:
    """Build a table from plain dicts: [{"deployment", "host", "path_prefix",
    "canary_weight", "endpoints": [{"track", "address", "port", ...}]}]."""
    msg = types_pb2.EndpointTable(version=version)
    for r in routes:
        entry = msg.routes.add(
            deployment=r["deployment"],
            host=r.get("host", ""),
            path_prefix=r.get("path_prefix", "/"),
            canary_weight=r.get("canary_weight", 0),
        )
        for e in r.get("endpoints", []):
            entry.endpoints.add(
                deployment=r["deployment"],
                track=e.get("track", "stable"),
                revision=e.get("revision", 1),
                replica=e.get("replica", f"{r['deployment']}-{e['port']}"),
                address=e.get("address", "127.0.0.1"),
                port=e["port"],
                ready=e.get("ready", True),
                draining=e.get("draining", False),
                weight=e.get("weight", 1),
                node=e.get("node", "node1"),
            )
    return msg


class FakeDiscovery(discovery_pb2_grpc.DiscoveryServicer):
    def __init__(self, *, leader: str | None = None) -> None:
        self.table = types_pb2.EndpointTable()
        self.leader = leader  # set: act as a standby pointing there
        self.watchers: list[str] = []  # admin_url of each Watch call received
        self._changed = asyncio.Condition()
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def publish(self, table: types_pb2.EndpointTable) -> None:
        async with self._changed:
            self.table = table
            self._changed.notify_all()

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        self.watchers.append(request.admin_url)
        if self.leader is not None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, not_leader_details(self.leader)
            )
        sent: types_pb2.EndpointTable | None = None
        while True:
            async with self._changed:
                last = sent
                await self._changed.wait_for(lambda: self.table is not last)  # noqa: B023
                sent = self.table
            yield sent

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.server = grpc.aio.server()
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(self, self.server)
        bound = self.server.add_insecure_port(f"{host}:{port}")
        await self.server.start()
        self.address = f"{host}:{bound}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.1)
            self.server = None
