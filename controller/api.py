"""The Cluster gRPC service: what the CLI and the dashboard call.

Owns the Apply semantics: validate every document first (nothing is written
when one is invalid), then per deployment decide created / configured /
unchanged, bump `generation` on any change and the revision (with a
/gantry/revisions record) when the template changes, and write with a
compare on the record's mod_revision (retried on conflict). Reads come from
the Mirror; Describe adds the deployment's events and pending reasons.
Only the leader answers (standbys: FAILED_PRECONDITION naming the leader).
The pure record conversions live in `controller.api_records`, the rollout
calls in `controller.api_rollouts` (a mixin of `ClusterService`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import json_format

from controller import keys
from controller.api_records import applied_record, deployment_proto, replica_proto, validate
from controller.api_rollouts import RolloutCalls
from controller.election import Election, require_leader
from controller.errors import Conflict, Invalid, NotFound, streaming, unary
from controller.events import Events, iso
from controller.loop import (
    node_capacity,
    replica_state,
)
from controller.model import Capacity, template_hash
from controller.nodes import alive_nodes
from controller.rollout import revisions_to_prune
from controller.rollouts import RolloutEngine
from controller.store import Delete, Json, Mirror, ModIs, Op, Put, Store
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2


class ClusterService(RolloutCalls, cluster_pb2_grpc.ClusterServicer):
    def __init__(
        self,
        store: Store,
        mirror: Mirror,
        election: Election,
        *,
        events: Events,
        pending: Callable[[str], str] = lambda name: "",
        heartbeats: Callable[[], dict[str, float]] = dict,
        rollouts: RolloutEngine | None = None,
    ) -> None:
        self.rollouts = rollouts
        self.store = store
        self.mirror = mirror
        self.election = election
        self.events = events
        self.pending = pending
        self.heartbeats = heartbeats

    def _guard(self) -> None:
        require_leader(self.election, self.mirror["leader"].get(keys.LEADER))

    def _replicas(self, deployment: str = "", node: str = "") -> list[Json]:
        out = [
            r
            for r in self.mirror["replicas"].values()
            if (not deployment or r.get("deployment") == deployment)
            and (not node or r.get("node") == node)
        ]
        return sorted(out, key=lambda r: (str(r.get("deployment")), str(r.get("name"))))

    def _deployment(self, name: str) -> Json:
        rec = self.mirror["deployments"].get(keys.deployment(name))
        if rec is None:
            raise NotFound(f"deployment {name!r} not found")
        return rec

    # -- writes -----------------------------------------------------------

    @unary
    async def Apply(self, request: cluster_pb2.ApplyRequest, context: Any) -> Any:
        self._guard()
        docs, errors = [], []
        for i, d in enumerate(request.deployments):
            try:
                docs.append(validate(json_format.MessageToDict(d)))
            except Invalid as exc:
                errors.append(
                    f"document {i + 1}: {exc}" if len(request.deployments) > 1 else str(exc)
                )
        if errors:
            raise Invalid("; ".join(errors))
        out = cluster_pb2.ApplyResponse()
        for doc in docs:
            action = await self._apply_one(doc, dry_run=request.dry_run)
            out.results.add(kind="Deployment", name=doc["metadata"]["name"], action=action)
        return out

    async def _apply_one(self, doc: Json, *, dry_run: bool) -> str:
        name = doc["metadata"]["name"]
        key = keys.deployment(name)
        for _ in range(10):
            found, revs = await self.store.read(key, keys.revisions(name))
            item = found[0] if found else None
            known = {
                int(r.value.get("revision", 0)): template_hash(r.value.get("template") or {})
                for r in revs
            }
            action, rec, changed = applied_record(
                doc, item.value if item else None, now=time.time(), revisions=known
            )
            if dry_run or action == "unchanged":
                return action
            ops: list[Op] = [Put(key, rec)]
            if changed:
                rev = rec["status"]["revision"]
                limit = int(rec["spec"].get("revisionHistoryLimit", 10))
                prune = revisions_to_prune([*known, rev], current=rev, limit=limit)
                ops.extend(Delete(keys.revision(name, r)) for r in prune)
                template = rec["spec"].get("template") or {}
                cause = "created" if item is None else "template changed"
                ops.append(
                    Put(keys.revision(name, rev), {"revision": rev, "template": template, "createdAt": iso(time.time()), "cause": cause})
                )  # fmt: skip
            try:
                await self.store.txn([ModIs(key, item.mod_revision if item else 0)], ops)
            except Conflict:
                continue
            await self.events.record(
                "deployment",
                name,
                action.capitalize(),
                f"{action} (generation {rec['metadata']['generation']})",
            )
            return action
        raise Conflict(f"deployment {name}: too many concurrent writes")

    @unary
    async def Delete(self, request: cluster_pb2.DeleteRequest, context: Any) -> Any:
        self._guard()
        kind = (request.kind or "deployment").lower()
        if kind in ("deployment", "deployments", "deploy"):
            item = await self.store.get(keys.deployment(request.name))
            if item is None:
                raise NotFound(f"deployment {request.name!r} not found")
            await self.store.txn(
                [ModIs(item.key, item.mod_revision)],
                [
                    Delete(item.key),
                    Delete(keys.rollout(request.name)),
                    Delete(keys.revisions(request.name), prefix=True),
                    Delete(keys.events("deployment", request.name), prefix=True),
                ],
            )
            return cluster_pb2.DeleteResponse(deleted=True)
        if kind in ("node", "nodes"):
            item = await self.store.get(keys.node(request.name))
            if item is None:
                raise NotFound(f"node {request.name!r} not found")
            hb = await self.store.get(keys.heartbeat(request.name))
            await self.store.txn([], [Delete(item.key), Delete(keys.heartbeat(request.name))])
            if hb is not None and hb.lease:
                await self.store.revoke(hb.lease)
            return cluster_pb2.DeleteResponse(deleted=True)
        raise Invalid(f"delete: unknown kind {request.kind!r} (expected deployment or node)")

    @unary
    async def Scale(self, request: cluster_pb2.ScaleRequest, context: Any) -> Any:
        self._guard()
        if request.replicas < 0:
            raise Invalid(
                f"scale {request.name}: replicas: expected an integer >= 0, got {request.replicas}"
            )
        key = keys.deployment(request.name)

        def scale(cur: Json | None) -> Json | None:
            if cur is None:
                raise NotFound(f"deployment {request.name!r} not found")
            if (cur.get("spec") or {}).get("replicas") == request.replicas:
                return cur
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["replicas"] = request.replicas
            meta = new.setdefault("metadata", {})
            meta["generation"] = int(meta.get("generation", 1)) + 1
            return new

        rec = await self.store.update(key, scale)
        await self.events.record(
            "deployment", request.name, "Scaled", f"scaled to {request.replicas}"
        )
        return cluster_pb2.ScaleResponse(
            deployment=deployment_proto(rec or {}, self._replicas(request.name))
        )

    # -- reads ------------------------------------------------------------

    @unary
    async def Get(self, request: cluster_pb2.GetRequest, context: Any) -> Any:
        self._guard()
        return deployment_proto(self._deployment(request.name), self._replicas(request.name))

    @unary
    async def List(self, request: cluster_pb2.ListRequest, context: Any) -> Any:
        self._guard()
        out = cluster_pb2.ListResponse()
        for key, rec in sorted(self.mirror["deployments"].items()):
            name = keys.tail(keys.DEPLOYMENTS, key)
            out.deployments.append(deployment_proto(rec, self._replicas(name)))
        return out

    def _nodes(self) -> list[types_pb2.Node]:
        alive = alive_nodes(self.mirror["heartbeats"])
        beats = self.heartbeats()
        used: dict[str, Capacity] = {}
        for r in self.mirror["replicas"].values():
            st = replica_state(r)
            if st.node and not st.gone:
                used[st.node] = used.get(st.node, Capacity()) + st.requests
        out = []
        for rec in sorted(self.mirror["nodes"].values(), key=lambda r: str(r.get("name"))):
            node = json_format.ParseDict(rec, types_pb2.Node(), ignore_unknown_fields=True)
            node.status = "Ready" if node.name in alive else "NotReady"
            a = used.get(node.name, Capacity())
            node.allocated.CopyFrom(
                types_pb2.Capacity(
                    cpu_millis=a.cpu_millis, memory_bytes=a.memory_bytes, pods=a.pods
                )
            )
            cap = node_capacity(rec)
            node.capacity.pods = cap.pods
            if node.name in beats:
                node.last_heartbeat = iso(beats[node.name])
            out.append(node)
        return out

    @unary
    async def ListNodes(self, request: cluster_pb2.ListNodesRequest, context: Any) -> Any:
        self._guard()
        return cluster_pb2.ListNodesResponse(nodes=self._nodes())

    @unary
    async def ListReplicas(self, request: cluster_pb2.ListReplicasRequest, context: Any) -> Any:
        self._guard()
        reps = self._replicas(request.deployment, request.node)
        return cluster_pb2.ListReplicasResponse(replicas=[replica_proto(r) for r in reps])

    @unary
    async def Describe(self, request: cluster_pb2.DescribeRequest, context: Any) -> Any:
        self._guard()
        kind = (request.kind or "deployment").lower().rstrip("s")
        out = cluster_pb2.DescribeResponse()
        if kind in ("deployment", "deploy"):
            rec = self._deployment(request.name)
            reps = self._replicas(request.name)
            out.deployment.CopyFrom(deployment_proto(rec, reps))
            out.replicas.extend(replica_proto(r) for r in reps)
            ro = self.mirror["rollouts"].get(keys.rollout(request.name))
            if ro:
                json_format.ParseDict(ro, out.rollout, ignore_unknown_fields=True)
            events = await self.events.list("deployment", request.name)
            pending = self.pending(request.name)
            if pending:
                events.append(
                    {
                        "object": f"deployment/{request.name}",
                        "type": "Warning",
                        "reason": "Pending",
                        "message": pending,
                        "count": 1,
                        "lastSeen": iso(time.time()),
                    }
                )
        elif kind == "node":
            match = [n for n in self._nodes() if n.name == request.name]
            if not match:
                raise NotFound(f"node {request.name!r} not found")
            out.node.CopyFrom(match[0])
            out.replicas.extend(replica_proto(r) for r in self._replicas(node=request.name))
            events = await self.events.list("node", request.name)
        else:
            raise Invalid(f"describe: unknown kind {request.kind!r} (expected deployment or node)")
        for ev in events:
            out.events.append(
                json_format.ParseDict(ev, types_pb2.Event(), ignore_unknown_fields=True)
            )
        return out

    @streaming
    async def Watch(
        self, request: cluster_pb2.WatchRequest, context: Any
    ) -> AsyncIterator[cluster_pb2.WatchEvent]:
        self._guard()
        kind = (request.kind or "deployments").lower().rstrip("s") + "s"
        if kind not in ("deployments", "replicas", "nodes"):
            raise Invalid(
                f"watch: unknown kind {request.kind!r} (expected deployments, replicas or nodes)"
            )
        await self.mirror.wait_synced()
        last: dict[str, bytes] = {}
        while True:
            version = self.mirror.version
            current = self._watch_view(kind, request.name)
            for name, msg in current.items():
                body = msg.SerializeToString()
                if last.get(name) != body:
                    yield self._watch_event("ADDED" if name not in last else "MODIFIED", kind, msg)
            for name in last.keys() - current.keys():
                yield self._watch_event("DELETED", kind, self._empty(kind, name))
            last = {n: m.SerializeToString() for n, m in current.items()}
            await self.mirror.wait_change(version, wait=5.0)
            self._guard()

    def _watch_view(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "deployments":
            return {
                n: deployment_proto(rec, self._replicas(n))
                for key, rec in self.mirror["deployments"].items()
                if (n := keys.tail(keys.DEPLOYMENTS, key)) and (not name or n == name)
            }
        if kind == "replicas":
            return {str(r.get("name")): replica_proto(r) for r in self._replicas(name)}
        return {n.name: n for n in self._nodes() if not name or n.name == name}

    @staticmethod
    def _empty(kind: str, name: str) -> Any:
        if kind == "deployments":
            return types_pb2.Deployment(metadata=types_pb2.ObjectMeta(name=name))
        if kind == "replicas":
            return types_pb2.Replica(name=name)
        return types_pb2.Node(name=name)

    @staticmethod
    def _watch_event(type_: str, kind: str, msg: Any) -> cluster_pb2.WatchEvent:
        field = {"deployments": "deployment", "replicas": "replica", "nodes": "node"}[kind]
        ev = cluster_pb2.WatchEvent(type=type_)
        getattr(ev, field).CopyFrom(msg)
        return ev

    @unary
    async def Leader(self, request: cluster_pb2.LeaderRequest, context: Any) -> Any:
        rec = self.mirror["leader"].get(keys.LEADER) or {
            "id": self.election.leader_id,
            "address": self.election.leader_address,
        }
        if self.election.is_leader:
            rec = {"id": self.election.ident, "address": self.election.address}
        return cluster_pb2.LeaderResponse(
            leader_id=str(rec.get("id", "")),
            leader_address=str(rec.get("address", "")),
            is_leader=self.election.is_leader,
        )
