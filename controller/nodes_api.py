"""The Nodes gRPC service: agents register, heartbeat, take assignments, report status.

Owns the conversion between the Nodes messages and the etcd records of
nodes, heartbeats and replicas. Register grants the node's liveness lease
(TTL `node_ttl`) and attaches /gantry/heartbeats/<node> to it; Heartbeat
refreshes that lease (any controller can, the lease id is in the key);
Assignments streams the node's full desired set, re-sent on every change;
ReportStatus writes observed phase/ready/ip/ports into the replica records.
Only the leader answers; writes are fenced by the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from controller import keys
from controller.discovery import wait_term_ready
from controller.election import Election, require_leader
from controller.errors import Invalid, streaming, unary
from controller.events import iso
from controller.settings import ControllerSettings
from controller.store import Json, Mirror, ModIs, Put, Store
from gantry.v1 import nodes_pb2, nodes_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

OBSERVED = (
    "phase",
    "ready",
    "ip",
    "ports",
    "restarts",
    "reason",
    "message",
    "exitCode",
    "containerId",
)


def node_record(node: types_pb2.Node, *, now: float, old: Json | None) -> Json:
    rec = json_format.MessageToDict(node)
    if not rec.get("name"):
        raise Invalid("node.name: required")
    if not rec.get("address"):
        raise Invalid(f"node {rec['name']}: node.address: required")
    rec.pop("allocated", None)
    rec.update(status="Ready", registeredAt=iso(now))
    if old and old.get("createdAt"):
        rec["createdAt"] = old["createdAt"]
    else:
        rec["createdAt"] = iso(now)
    return rec


def observe(rec: Json | None, status: Json, *, node: str, now: float) -> Json | None:
    """The replica record after one status report (pure); unchanged if it is not ours."""
    if rec is None or rec.get("node") != node:
        return rec
    if int(status.get("epoch", 0) or 0) and int(status["epoch"]) < int(rec.get("epoch", 0)):
        return rec
    new = dict(rec)
    for field in OBSERVED:
        if field in status:
            new[field] = status[field]
    new["ready"] = bool(status.get("ready", False))
    new["phase"] = status.get("phase") or rec.get("phase", "Starting")
    if rec.get("draining") and new["phase"] not in ("Exited", "Failed", "Stopped"):
        new["phase"] = "Terminating"
    if new["ready"] and not rec.get("ready"):
        new["readySince"] = now
    elif not new["ready"]:
        new.pop("readySince", None)
    return new


def assignment_set(replicas: dict[str, Json], node: str, version: int) -> nodes_pb2.AssignmentSet:
    out = nodes_pb2.AssignmentSet(version=version)
    for rec in sorted(replicas.values(), key=lambda r: str(r.get("name", ""))):
        if rec.get("node") != node:
            continue
        a = out.assignments.add(
            replica=str(rec.get("name", "")),
            deployment=str(rec.get("deployment", "")),
            epoch=int(rec.get("epoch", 0)),
            track=str(rec.get("track", "stable")),
            revision=int(rec.get("revision", 0)),
            desired=str(rec.get("desired", "run")),
            drain_seconds=float(rec.get("drainSeconds", 0.0)),
        )
        json_format.ParseDict(rec.get("template") or {}, a.template, ignore_unknown_fields=True)
    return out


class NodesService(nodes_pb2_grpc.NodesServicer):
    def __init__(
        self,
        store: Store,
        mirror: Mirror,
        election: Election,
        settings: ControllerSettings,
        *,
        term_ready: asyncio.Event | None = None,
    ) -> None:
        self.term_ready = term_ready
        self.store = store
        self.mirror = mirror
        self.election = election
        self.settings = settings
        self.leases: dict[str, int] = {}
        self.last_heartbeat: dict[str, float] = {}

    def _guard(self) -> None:
        require_leader(self.election, self.mirror["leader"].get(keys.LEADER))

    @unary
    async def Register(self, request: nodes_pb2.RegisterRequest, context: Any) -> Any:
        self._guard()
        now = time.time()
        name = request.node.name
        old = await self.store.get(keys.node(name)) if name else None
        rec = node_record(request.node, now=now, old=old.value if old else None)
        old_hb = await self.store.get(keys.heartbeat(name))
        lease = await self.store.grant(self.settings.node_ttl)
        await self.store.txn(
            [ModIs(keys.node(name), old.mod_revision if old else 0)],
            [
                Put(keys.node(name), rec),
                Put(keys.heartbeat(name), {"lease": lease, "at": now}, lease),
            ],
        )
        if old_hb is not None and old_hb.lease and old_hb.lease != lease:
            await self.store.revoke(old_hb.lease)
        self.leases[name] = lease
        self.last_heartbeat[name] = now
        await self._observe_all(name, list(request.running), now=now)
        log.info("node %s registered at %s (lease %x)", name, rec["address"], lease)
        return nodes_pb2.RegisterResponse(
            node=name,
            lease_ttl_seconds=self.settings.node_ttl,
            heartbeat_interval_seconds=self.settings.heartbeat_interval,
        )

    @unary
    async def Heartbeat(self, request: nodes_pb2.HeartbeatRequest, context: Any) -> Any:
        self._guard()
        name = request.node
        cached = self.leases.get(name)
        if cached and await self.store.keepalive(cached) > 0:
            self.last_heartbeat[name] = time.time()
            return nodes_pb2.HeartbeatResponse(known=True)
        item = await self.store.get(keys.heartbeat(name))
        if item is None or not item.lease or await self.store.keepalive(item.lease) <= 0:
            self.leases.pop(name, None)
            return nodes_pb2.HeartbeatResponse(known=False)
        self.leases[name] = item.lease
        self.last_heartbeat[name] = time.time()
        return nodes_pb2.HeartbeatResponse(known=True)

    @streaming
    async def Assignments(
        self, request: nodes_pb2.AssignmentsRequest, context: Any
    ) -> AsyncIterator[nodes_pb2.AssignmentSet]:
        self._guard()
        await self.mirror.wait_synced()
        await wait_term_ready(self.term_ready)
        last: bytes | None = None
        while True:
            version = self.mirror.version
            aset = assignment_set(self.mirror["replicas"], request.node, version)
            body = nodes_pb2.AssignmentSet(assignments=aset.assignments).SerializeToString()
            if body != last:
                last = body
                yield aset
            await self.mirror.wait_change(version, wait=5.0)
            self._guard()

    @unary
    async def ReportStatus(self, request: nodes_pb2.StatusReport, context: Any) -> Any:
        self._guard()
        await self._observe_all(request.node, list(request.replicas), now=time.time())
        return nodes_pb2.StatusAck()

    async def _observe_all(
        self, node: str, statuses: list[nodes_pb2.ReplicaStatus], *, now: float
    ) -> None:
        for st in statuses:
            status = json_format.MessageToDict(st)
            key = self._replica_key(st.replica, st.deployment)
            if key is None:
                continue

            def apply(cur: Json | None, s: Json = status) -> Json | None:
                return observe(cur, s, node=node, now=now)

            await self.store.update(key, apply)

    def _replica_key(self, replica: str, deployment: str) -> str | None:
        if deployment:
            return keys.replica(deployment, replica)
        for key, rec in self.mirror["replicas"].items():
            if rec.get("name") == replica:
                return key
        return None
