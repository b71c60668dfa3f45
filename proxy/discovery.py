"""The endpoint table from the controllers' Discovery stream, following the leader.

Owns the proxy's only gRPC seam: `Discovery.Watch` on the leading
controller, each message converted at once to a domain `Table`
(protobuf stays here). A standby answers FAILED_PRECONDITION with
`not leader; leader=host:port`: the client goes there next. Any other error
or a closed stream: back off (jittered, doubling, capped) and try the next
address. While no controller answers, the last table keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from gantry.client import LeaderChannel, leader_hint
from gantry.v1 import discovery_pb2, discovery_pb2_grpc, types_pb2
from proxy.table import Endpoint, Route, Table, TableError

log = logging.getLogger("gantry.proxy.discovery")


def table_from_proto(msg: types_pb2.EndpointTable) -> Table:
    routes = []
    for i, r in enumerate(msg.routes):
        if not r.deployment:
            raise TableError(f"routes[{i}]: missing deployment")
        if not 0 <= r.canary_weight <= 100:
            raise TableError(
                f"routes[{i}] ({r.deployment}): canary_weight {r.canary_weight} not in 0..100"
            )
        eps = []
        for j, e in enumerate(r.endpoints):
            if not e.address or not 0 < e.port < 65536:
                raise TableError(
                    f"routes[{i}] ({r.deployment}).endpoints[{j}]: bad address {e.address}:{e.port}"
                )
            eps.append(
                Endpoint(
                    deployment=r.deployment,
                    track="canary" if e.track == "canary" else "stable",
                    address=e.address,
                    port=e.port,
                    revision=e.revision,
                    replica=e.replica,
                    ready=e.ready,
                    draining=e.draining,
                    weight=max(1, e.weight),
                    node=e.node,
                )
            )
        routes.append(
            Route(
                deployment=r.deployment,
                host=r.host,
                path_prefix=r.path_prefix or "/",
                canary_weight=r.canary_weight,
                endpoints=tuple(eps),
            )
        )
    return Table(version=msg.version, routes=tuple(routes))


@dataclass
class DiscoveryState:
    connected_to: str | None = None
    tables: int = 0
    last_error: str = ""


def next_backoff(current: float, rng: random.Random, *, cap: float = 5.0) -> float:
    """Doubling back-off with +-20 % jitter, from 0.1 s to `cap`."""
    base = min(cap, max(0.1, current * 2))
    return base * (0.8 + 0.4 * rng.random())


class DiscoveryClient:
    """Runs the watch forever (until cancelled), calling `on_table` for each table."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        proxy_id: str,
        admin_url: str,
        on_table: Callable[[Table], Awaitable[None]],
        rng: random.Random | None = None,
    ) -> None:
        self.channels = LeaderChannel(addresses)
        self.request = discovery_pb2.DiscoveryRequest(proxy_id=proxy_id, admin_url=admin_url)
        self.on_table = on_table
        self.rng = rng or random.Random()
        self.state = DiscoveryState()

    async def run(self) -> None:
        addresses = self.channels.addresses
        index, hint, backoff = 0, None, 0.0
        try:
            while True:
                address = hint or addresses[index % len(addresses)]
                hint = None
                try:
                    await self._watch(address)
                    self.state.last_error = f"{address}: stream ended"
                except grpc.aio.AioRpcError as exc:
                    self.state.last_error = f"{address}: {exc.code().name} {exc.details()}"
                    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        hint = leader_hint(exc.details())
                if self.state.connected_to == address:
                    backoff = 0.0  # it was working: retry soon
                self.state.connected_to = None
                if hint is None:
                    index += 1
                    backoff = next_backoff(backoff, self.rng)
                    log.info("discovery: %s; retrying in %.2fs", self.state.last_error, backoff)
                    await asyncio.sleep(backoff)
                else:
                    log.info("discovery: %s is not the leader; trying %s", address, hint)
                    await asyncio.sleep(0.05)
        finally:
            await self.channels.close()

    async def _watch(self, address: str) -> None:
        stub = discovery_pb2_grpc.DiscoveryStub(self.channels.channel(address))
        call = stub.Watch(self.request)
        try:
            async for msg in call:
                try:
                    table = table_from_proto(msg)
                except TableError as exc:
                    log.warning("discovery: ignoring a bad table from %s: %s", address, exc)
                    continue
                if self.state.connected_to != address:
                    log.info("discovery: watching %s", address)
                self.state.connected_to = address
                self.state.tables += 1
                await self.on_table(table)
        finally:
            call.cancel()
