"""The Discovery gRPC service: the whole endpoint table, streamed to proxies.

Owns `endpoint_table`, a pure function from the mirrored records
(deployments, replicas, nodes, live heartbeats, rollouts) to the table's
plain-dict form, and the stream that re-sends it on every change. An
endpoint is a ready replica on a live node: the node's address and the host
port bound to the route's container port. Draining replicas stay in the
table flagged `draining` so proxies finish their requests and send no new
ones. Subscribers' admin URLs are remembered for the rollout engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from controller import keys
from controller.election import Election, require_leader
from controller.errors import streaming
from controller.nodes import alive_nodes
from controller.store import Json, Mirror
from gantry.v1 import discovery_pb2, discovery_pb2_grpc, types_pb2

log = logging.getLogger(__name__)


def host_of(address: str) -> str:
    """'10.0.0.2' from '10.0.0.2' or '10.0.0.2:7000' (IPv6 in brackets kept)."""
    if address.startswith("["):
        return address.split("]")[0] + "]"
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def route_port(spec: Json) -> int | None:
    """The container port traffic goes to: route.port (name or number), else the first."""
    ports = (spec.get("template") or {}).get("ports") or []
    want = str((spec.get("route") or {}).get("port") or "")
    for p in ports:
        if want and (str(p.get("name", "")) == want or str(p.get("containerPort", "")) == want):
            return int(p.get("containerPort", 0))
    if want.isdigit():
        return int(want)
    return int(ports[0].get("containerPort", 0)) if ports else None


def host_port(replica: Json, container_port: int | None) -> tuple[str, int] | None:
    for b in replica.get("ports") or []:
        if container_port is None or int(b.get("containerPort", 0)) == container_port:
            hp = int(b.get("hostPort", 0))
            if hp:
                return str(b.get("hostIp", "") or ""), hp
    return None


def endpoint_table(
    deployments: Mapping[str, Json],
    replicas: Mapping[str, Json],
    nodes: Mapping[str, Json],
    alive: set[str],
    rollouts: Mapping[str, Json],
) -> list[Json]:
    """The routes (plain dicts in the EndpointTable's JSON form), sorted by deployment."""
    by_dep: dict[str, list[Json]] = {}
    for rec in replicas.values():
        by_dep.setdefault(str(rec.get("deployment", "")), []).append(rec)
    routes = []
    for key, dep in sorted(deployments.items()):
        name = keys.tail(keys.DEPLOYMENTS, key)
        spec = dep.get("spec") or {}
        route = spec.get("route") or {}
        cport = route_port(spec)
        rollout = rollouts.get(keys.rollout(name)) or {}
        entry: Json = {
            "deployment": name,
            "host": route.get("host", ""),
            "pathPrefix": route.get("pathPrefix", ""),
            "canaryWeight": int(rollout.get("canaryWeight", 0) or 0),
            "endpoints": [],
        }
        for rec in sorted(by_dep.get(name, []), key=lambda r: str(r.get("name", ""))):
            node = str(rec.get("node", ""))
            if not rec.get("ready") or node not in alive:
                continue
            bound = host_port(rec, cport)
            if bound is None:
                continue
            bind_ip, port = bound
            address = host_of(str((nodes.get(keys.node(node)) or {}).get("address", "")))
            if bind_ip and bind_ip not in ("0.0.0.0", "::"):
                address = bind_ip
            entry["endpoints"].append(
                {
                    "deployment": name,
                    "track": rec.get("track", "stable"),
                    "revision": int(rec.get("revision", 0)),
                    "replica": rec.get("name", ""),
                    "address": address,
                    "port": port,
                    "ready": True,
                    "draining": bool(rec.get("draining", False)),
                    "weight": 1,
                    "node": node,
                }
            )
        routes.append(entry)
    return routes


async def wait_term_ready(event: asyncio.Event | None, limit: float = 5.0) -> None:
    """Wait (a bounded time) until a new leader term has adopted its nodes."""
    if event is None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            await event.wait()


@dataclass
class Subscriber:
    proxy_id: str
    admin_url: str
    since: float


class DiscoveryService(discovery_pb2_grpc.DiscoveryServicer):
    def __init__(
        self, mirror: Mirror, election: Election, *, term_ready: asyncio.Event | None = None
    ) -> None:
        self.mirror = mirror
        self.election = election
        self.term_ready = term_ready
        self.subscribers: dict[str, Subscriber] = {}
        self._cached: tuple[int, types_pb2.EndpointTable] | None = None

    def table(self) -> types_pb2.EndpointTable:
        """The table at the mirror's current version (built once, shared by all streams)."""
        m = self.mirror
        if self._cached is not None and self._cached[0] == m.version:
            return self._cached[1]
        routes = endpoint_table(
            m["deployments"], m["replicas"], m["nodes"], alive_nodes(m["heartbeats"]), m["rollouts"]
        )
        out = types_pb2.EndpointTable(version=m.version)
        json_format.ParseDict({"routes": routes}, out, ignore_unknown_fields=True)
        self._cached = (m.version, out)
        return out

    def admin_urls(self) -> dict[str, str]:
        """proxy id -> admin URL of every proxy now subscribed (the rollout engine reads these)."""
        return {s.proxy_id: s.admin_url for s in self.subscribers.values() if s.admin_url}

    @streaming
    async def Watch(
        self, request: discovery_pb2.DiscoveryRequest, context: Any
    ) -> AsyncIterator[types_pb2.EndpointTable]:
        require_leader(self.election, self.mirror["leader"].get(keys.LEADER))
        await self.mirror.wait_synced()
        await wait_term_ready(self.term_ready)
        sub_id = request.proxy_id or f"anon-{id(context):x}"
        self.subscribers[sub_id] = Subscriber(sub_id, request.admin_url, time.time())
        try:
            last: bytes | None = None
            while True:
                version = self.mirror.version
                table = self.table()
                body = types_pb2.EndpointTable(routes=table.routes).SerializeToString()
                if body != last:
                    last = body
                    yield table
                await self.mirror.wait_change(version, wait=5.0)
                require_leader(self.election, self.mirror["leader"].get(keys.LEADER))
        finally:
            self.subscribers.pop(sub_id, None)
